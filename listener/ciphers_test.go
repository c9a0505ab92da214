package listener

import (
	"crypto/tls"
	"errors"
	"slices"
	"testing"
)

// TestCipherTableMatchesGo keeps the OpenSSL table honest: every suite Go
// implements for TLS 1.0-1.2 is in it once, with Go's own secure/insecure
// verdict.
func TestCipherTableMatchesGo(t *testing.T) {
	seen := map[uint16]bool{}
	for _, s := range suites {
		if seen[s.id] {
			t.Errorf("%s listed twice", s.name)
		}
		seen[s.id] = true
	}
	check := func(list []*tls.CipherSuite, secure bool) {
		for _, cs := range list {
			if !slices.Contains(cs.SupportedVersions, tls.VersionTLS12) {
				continue // TLS 1.3 suites are not configurable
			}
			i := slices.IndexFunc(suites, func(s suite) bool { return s.id == cs.ID })
			if i < 0 {
				t.Errorf("Go suite %s missing from the table", cs.Name)
				continue
			}
			if suites[i].secure != secure {
				t.Errorf("%s (%s): secure = %v, Go says %v", suites[i].name, cs.Name, suites[i].secure, secure)
			}
			delete(seen, cs.ID)
		}
	}
	check(tls.CipherSuites(), true)
	check(tls.InsecureCipherSuites(), false)
	for id := range seen {
		t.Errorf("table lists %s, which Go does not implement", tls.CipherSuiteName(id))
	}
}

func TestParseCiphers(t *testing.T) {
	secure := func() []uint16 {
		var ids []uint16
		for _, s := range suites {
			if s.secure {
				ids = append(ids, s.id)
			}
		}
		return ids
	}
	for _, tc := range []struct {
		list string
		want []uint16 // nil with wantErr false = Go's defaults
		err  bool
	}{
		{"", nil, false},
		{"ECDHE-RSA-AES128-GCM-SHA256", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, false},
		{"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305",
			[]uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, false},
		{"HIGH:!aNULL:!MD5", secure(), false},
		{"DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:@STRENGTH", secure(), false},
		{"kECDHE+AESGCM+aECDSA",
			[]uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, false},
		{"ECDHE+CHACHA20, ECDHE-RSA-AES128-SHA",
			[]uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
				tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}, false},
		{"AESGCM+aRSA:!kRSA", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}, false},
		{"!kRSA:AESGCM+aRSA", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}, false},
		{"CHACHA20:AES256-SHA:-AES256-SHA", []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, false},
		{"AES128-SHA:CHACHA20+aRSA:+AES128-SHA",
			[]uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_RSA_WITH_AES_128_CBC_SHA}, false},
		{"TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, false},
		{"DES-CBC3-SHA", []uint16{tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA}, false}, // named outright: honoured
		{"DHE-RSA-AES256-GCM-SHA384", nil, true},
		{"ECDHE-RSA-AES128-GCM-SHA256:CAMELLIA", nil, true},
		{"no-such-cipher", nil, true},
		{"HIGH:!HIGH", nil, true},
		{"TLS_AES_256_GCM_SHA384", nil, true}, // selects no TLS 1.2 suite
	} {
		t.Run(tc.list, func(t *testing.T) {
			got, err := parseCiphers(tc.list)
			if tc.err {
				if !errors.Is(err, ErrTLSConfig) {
					t.Fatalf("parseCiphers = %v, %v; want ErrTLSConfig", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				name := func(ids []uint16) (n []string) {
					for _, id := range ids {
						n = append(n, tls.CipherSuiteName(id))
					}
					return n
				}
				t.Fatalf("got %v\nwant %v", name(got), name(tc.want))
			}
		})
	}
}
