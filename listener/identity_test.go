package listener

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"net"
	"testing"
)

// opensslSubject is the DER subject of a certificate made with
//
//	openssl req -utf8 -subj '/DC=org/DC=example/O=Ünï "q"<>;/OU=#lead/OU= sp /CN=a,b\+c+UID=x=y/emailAddress=x@y.z/title=t\/s'
//
// and opensslRFC2253 is what `openssl x509 -noout -subject -nameopt RFC2253`
// (OpenSSL 3) printed for it: the form mosquitto's use_subject_as_username uses.
const (
	opensslSubject = "3081ab31133011060a0992268993f22c64011916036f726731173015060a0992268993f22c6401191607" +
		"6578616d706c6531153013060355040a0c0cc39c6ec3af202271223c3e3b310e300c060355040b0c05236c65" +
		"6164310d300b060355040b0c04207370203121300c06035504030c05612c622b633011060a0992268993f22c" +
		"6401010c03783d793114301206092a864886f70d01090116057840792e7a310c300a060355040c0c03742f73"
	opensslRFC2253 = `title=t/s,emailAddress=x@y.z,UID=x=y+CN=a\,b\+c,OU=\ sp\ ,OU=\#lead,` +
		`O=\C3\9Cn\C3\AF \"q\"\<\>\;,DC=example,DC=org`
)

func TestFormatSubject(t *testing.T) {
	raw, err := hex.DecodeString(opensslSubject)
	if err != nil {
		t.Fatal(err)
	}
	marshal := func(t *testing.T, n pkix.Name) []byte {
		t.Helper()
		der, err := asn1.Marshal(n.ToRDNSequence())
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	withExtra := func(t *testing.T, attrs ...pkix.AttributeTypeAndValue) []byte {
		t.Helper()
		var seq pkix.RDNSequence
		for _, a := range attrs {
			seq = append(seq, pkix.RelativeDistinguishedNameSET{a})
		}
		der, err := asn1.Marshal(seq)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	cnOID := asn1.ObjectIdentifier{2, 5, 4, 3}
	for _, tc := range []struct {
		name        string
		raw         func(t *testing.T) []byte
		wantCN      string
		wantSubject string
	}{
		{"openssl golden", func(*testing.T) []byte { return raw }, "a,b+c", opensslRFC2253},
		{"simple", func(t *testing.T) []byte {
			return marshal(t, pkix.Name{CommonName: "dev-1", Organization: []string{"Acme"}, Country: []string{"DE"}})
		}, "dev-1", "CN=dev-1,O=Acme,C=DE"},
		{"empty subject", func(t *testing.T) []byte { return marshal(t, pkix.Name{}) }, "", ""},
		{"first CN wins", func(t *testing.T) []byte {
			return withExtra(t, pkix.AttributeTypeAndValue{Type: cnOID, Value: "first"},
				pkix.AttributeTypeAndValue{Type: cnOID, Value: "second"})
		}, "first", "CN=second,CN=first"},
		{"CN with NUL is unusable", func(t *testing.T) []byte {
			return withExtra(t, pkix.AttributeTypeAndValue{Type: cnOID, Value: "evil\x00.example"})
		}, "", `CN=evil\00.example`},
		{"unknown attribute is dumped", func(t *testing.T) []byte {
			return withExtra(t, pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: "foo"},
				pkix.AttributeTypeAndValue{Type: cnOID, Value: "x"})
		}, "x", "CN=x,1.2.3.4=#1303666F6F"},
		{"leading and trailing spaces", func(t *testing.T) []byte {
			return withExtra(t, pkix.AttributeTypeAndValue{Type: cnOID, Value: " a b "})
		}, " a b ", `CN=\ a b\ `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cn, subject, err := formatSubject(tc.raw(t))
			if err != nil {
				t.Fatal(err)
			}
			if cn != tc.wantCN || subject != tc.wantSubject {
				t.Fatalf("formatSubject = %q, %q\nwant %q, %q", cn, subject, tc.wantCN, tc.wantSubject)
			}
		})
	}
}

func TestPeerIdentity(t *testing.T) {
	p := newPKI(t, "identity")
	client, _ := p.issue(t, pkix.Name{CommonName: "sensor-7", Organization: []string{"Plant"}}, false)
	const wantSubject = "CN=sensor-7,O=Plant"

	t.Run("plain tcp", func(t *testing.T) {
		l := listen(t, Config{Address: "127.0.0.1:0"})
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, _, ok := PeerIdentity(acceptOne(t, l)); ok {
			t.Fatal("PeerIdentity ok on plain tcp")
		}
	})
	t.Run("tls", func(t *testing.T) {
		tcfg := p.serverTLS(t)
		tcfg.RequireCertificate = true
		cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", TLS: tcfg})
		l := listen(t, cfg)
		ids := serveIdentityEcho(t, l)
		if _, err := tlsExchange(l, p.clientTLS(client)); err != nil {
			t.Fatal(err)
		}
		if id := nextIdentity(t, ids); !id.ok || id.cn != "sensor-7" || id.subject != wantSubject {
			t.Fatalf("PeerIdentity = %+v", id)
		}
	})
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		want  identity
	}{
		{"wss with certificate", []tls.Certificate{client}, identity{"sensor-7", wantSubject, true}},
		{"wss without certificate", nil, identity{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tcfg := p.serverTLS(t)
			tcfg.RequestCertificate = true
			cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", Protocol: ProtocolWebSockets, TLS: tcfg})
			l := listen(t, cfg)
			ids := serveIdentityEcho(t, l)
			c, err := dialWS(t, "wss://"+l.Addr().String()+"/mqtt", p.clientTLS(tc.certs...), "mqtt")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if id := nextIdentity(t, ids); id != tc.want {
				t.Fatalf("PeerIdentity = %+v, want %+v", id, tc.want)
			}
		})
	}
	t.Run("plain ws", func(t *testing.T) {
		_, s := wsPair(t)
		if _, _, ok := PeerIdentity(s); ok {
			t.Fatal("PeerIdentity ok on plain ws")
		}
	})
}

func TestDecodeDirectoryString(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tag    int
		bytes  []byte
		want   string
		wantOK bool
	}{
		{"UTF8String", asn1.TagUTF8String, []byte("h\xc3\xa9"), "hé", true},
		{"UTF8String invalid", asn1.TagUTF8String, []byte{0xff}, "", false},
		{"PrintableString", asn1.TagPrintableString, []byte("abc"), "abc", true},
		{"VisibleString", tagVisibleString, []byte("vis"), "vis", true},
		{"T61String as Latin-1", asn1.TagT61String, []byte{'a', 0xe9}, "aé", true},
		{"BMPString", asn1.TagBMPString, []byte{0x00, 'h', 0x00, 0xe9}, "hé", true},
		{"BMPString odd length", asn1.TagBMPString, []byte{0x00}, "", false},
		{"UniversalString", tagUniversalString, []byte{0, 0, 0, 'x', 0, 1, 0xf6, 0x00}, "x\U0001F600", true},
		{"UniversalString bad length", tagUniversalString, []byte{0, 0}, "", false},
		{"INTEGER is not a string", asn1.TagInteger, []byte{1}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := decodeDirectoryString(asn1.RawValue{Class: asn1.ClassUniversal, Tag: tc.tag, Bytes: tc.bytes})
			if got != tc.want || ok != tc.wantOK {
				t.Fatalf("decodeDirectoryString = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
