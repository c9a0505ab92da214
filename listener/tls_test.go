package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// identity is what PeerIdentity said about one accepted connection.
type identity struct {
	cn, subject string
	ok          bool
}

// serveIdentityEcho accepts connections until l closes, reports each one's
// PeerIdentity on the returned channel, and echoes it.
func serveIdentityEcho(t *testing.T, l net.Listener) <-chan identity {
	t.Helper()
	ids := make(chan identity, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			cn, subject, ok := PeerIdentity(c)
			ids <- identity{cn, subject, ok}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ids
}

// tlsExchange dials l with conf and round-trips a few bytes. With TLS 1.3 a
// client's handshake completes before the server has checked its
// certificate, so a refusal shows up on the round trip.
func tlsExchange(l net.Listener, conf *tls.Config) (tls.ConnectionState, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: testTimeout}, Config: conf}
	c, err := d.DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	if err := roundTrip(c, []byte("ping")); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.(*tls.Conn).ConnectionState(), nil
}

func nextIdentity(t *testing.T, ids <-chan identity) identity {
	t.Helper()
	select {
	case id := <-ids:
		return id
	case <-time.After(testTimeout):
		t.Fatal("no connection accepted")
		return identity{}
	}
}

func TestTLSClientCertificates(t *testing.T) {
	p := newPKI(t, "main")
	other := newPKI(t, "other")
	subject := pkix.Name{CommonName: "client-1", Organization: []string{"Example"}, OrganizationalUnit: []string{"Sensors"}, Country: []string{"GB"}}
	valid, _ := p.issue(t, subject, false)
	foreign, _ := other.issue(t, pkix.Name{CommonName: "intruder"}, false)
	const wantSubject = "CN=client-1,OU=Sensors,O=Example,C=GB"

	type client struct {
		name  string
		certs []tls.Certificate
		force bool // send certs[0] even if the server's CA list does not name its issuer
	}
	none := client{"no certificate", nil, false}
	good := client{"certificate from the CA", []tls.Certificate{valid}, false}
	bad := client{"certificate from another CA", []tls.Certificate{foreign}, true}

	for _, tc := range []struct {
		mode     string
		require  bool
		request  bool
		accepted map[string]bool // client name -> handshake accepted
		identity bool            // PeerIdentity ok for the good client
	}{
		{"required", true, false, map[string]bool{none.name: false, good.name: true, bad.name: false}, true},
		{"requested", false, true, map[string]bool{none.name: true, good.name: true, bad.name: false}, true},
		{"not asked (mosquitto require_certificate false)", false, false,
			map[string]bool{none.name: true, good.name: true, bad.name: true}, false},
	} {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			for _, cl := range []client{none, good, bad} {
				name := tc.mode + "/" + tls.VersionName(version) + "/" + cl.name
				t.Run(name, func(t *testing.T) {
					tc2 := p.serverTLS(t)
					tc2.RequireCertificate, tc2.RequestCertificate = tc.require, tc.request
					cfg, hs := quietConfig(Config{Address: "127.0.0.1:0", TLS: tc2})
					l := listen(t, cfg)
					ids := serveIdentityEcho(t, l)
					conf := p.clientTLS(cl.certs...)
					conf.MaxVersion = version
					if cl.force {
						conf.Certificates = nil
						conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
							return &cl.certs[0], nil
						}
					}
					_, err := tlsExchange(l, conf)
					if want := tc.accepted[cl.name]; (err == nil) != want {
						t.Fatalf("exchange error %v, want accepted=%v", err, want)
					}
					if err != nil {
						eventually(t, "handshake failure report", func() bool { return hs.count() == 1 })
						return
					}
					id := nextIdentity(t, ids)
					wantOK := tc.identity && cl.name == good.name
					if id.ok != wantOK {
						t.Fatalf("PeerIdentity ok = %v, want %v", id.ok, wantOK)
					}
					if wantOK && (id.cn != "client-1" || id.subject != wantSubject) {
						t.Fatalf("PeerIdentity = %q, %q; want client-1, %q", id.cn, id.subject, wantSubject)
					}
					if hs.count() != 0 {
						t.Fatalf("handshake failures reported: %v", hs.last())
					}
				})
			}
		}
	}
}

func TestTLSMinVersion(t *testing.T) {
	p := newPKI(t, "version")
	for _, tc := range []struct {
		min       string
		clientMax uint16
		want      uint16 // 0 = refused
	}{
		{"", tls.VersionTLS12, tls.VersionTLS12},
		{"", tls.VersionTLS13, tls.VersionTLS13},
		{"tlsv1.2", tls.VersionTLS12, tls.VersionTLS12},
		{"TLSv1.2", tls.VersionTLS13, tls.VersionTLS13},
		{"tlsv1.3", tls.VersionTLS12, 0},
		{"tlsv1.3", tls.VersionTLS13, tls.VersionTLS13},
	} {
		t.Run(tc.min+"/client-max-"+tls.VersionName(tc.clientMax), func(t *testing.T) {
			tcfg := p.serverTLS(t)
			tcfg.MinVersion = tc.min
			cfg, hs := quietConfig(Config{Address: "127.0.0.1:0", TLS: tcfg})
			l := listen(t, cfg)
			serveEcho(t, l)
			conf := p.clientTLS()
			conf.MaxVersion = tc.clientMax
			cs, err := tlsExchange(l, conf)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("handshake succeeded with %s", tls.VersionName(cs.Version))
				}
				eventually(t, "handshake failure report", func() bool { return hs.count() == 1 })
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cs.Version != tc.want {
				t.Fatalf("negotiated %s, want %s", tls.VersionName(cs.Version), tls.VersionName(tc.want))
			}
		})
	}
}

func TestTLSCiphers(t *testing.T) {
	p := newPKI(t, "ciphers")
	tcfg := p.serverTLS(t)
	tcfg.Ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:!aNULL:!MD5"
	cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", TLS: tcfg})
	l := listen(t, cfg)
	serveEcho(t, l)
	for _, tc := range []struct {
		name   string
		client []uint16
		ok     bool
	}{
		{"allowed suite", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, true},
		{"other suite", []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := p.clientTLS()
			conf.MaxVersion = tls.VersionTLS12
			conf.CipherSuites = tc.client
			cs, err := tlsExchange(l, conf)
			if (err == nil) != tc.ok {
				t.Fatalf("exchange error %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
				t.Fatalf("negotiated %s", tls.CipherSuiteName(cs.CipherSuite))
			}
		})
	}
}

func TestTLSCRL(t *testing.T) {
	p := newPKI(t, "crl")
	second := newPKI(t, "second")
	good, _ := p.issue(t, pkix.Name{CommonName: "good"}, false)
	revoked, revokedLeaf := p.issue(t, pkix.Name{CommonName: "revoked"}, false)
	fromSecond, _ := second.issue(t, pkix.Name{CommonName: "second-ca-client"}, false)
	// One cafile trusting both CAs; the CRL covers only the first.
	caData, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	secondData, err := os.ReadFile(second.caFile)
	if err != nil {
		t.Fatal(err)
	}
	bothCAs := p.write(t, "both.crt", append(caData, secondData...))
	freshCRL := p.writeCRL(t, "fresh.crl", time.Now().Add(time.Hour), revokedLeaf.SerialNumber, big.NewInt(999))
	expiredCRL := p.writeCRL(t, "expired.crl", time.Now().Add(-time.Minute))

	for _, tc := range []struct {
		name    string
		crl     string
		client  tls.Certificate
		wantErr error // nil = accepted
	}{
		{"unrevoked certificate", freshCRL, good, nil},
		{"revoked certificate", freshCRL, revoked, ErrCertificateRevoked},
		{"issuer without a CRL", freshCRL, fromSecond, ErrCRLMissing},
		{"expired CRL", expiredCRL, good, ErrCRLExpired},
	} {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(tc.name+"/"+tls.VersionName(version), func(t *testing.T) {
				tcfg := p.serverTLS(t)
				tcfg.CAFile, tcfg.CRLFile, tcfg.RequireCertificate = bothCAs, tc.crl, true
				cfg, hs := quietConfig(Config{Address: "127.0.0.1:0", TLS: tcfg})
				l := listen(t, cfg)
				serveEcho(t, l)
				conf := p.clientTLS(tc.client)
				conf.MaxVersion = version
				_, err := tlsExchange(l, conf)
				if tc.wantErr == nil {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				if err == nil {
					t.Fatal("handshake accepted")
				}
				eventually(t, "handshake failure report", func() bool { return hs.count() == 1 })
				if !errors.Is(hs.last(), tc.wantErr) {
					t.Fatalf("server reported %v, want %v", hs.last(), tc.wantErr)
				}
			})
		}
	}

	t.Run("CRL from an unconfigured CA", func(t *testing.T) {
		tcfg := p.serverTLS(t)
		tcfg.CRLFile = second.writeCRL(t, "second.crl", time.Now().Add(time.Hour))
		if _, err := tcfg.Build(); !errors.Is(err, ErrTLSConfig) {
			t.Fatalf("Build: %v, want ErrTLSConfig", err)
		}
	})
}

func TestTLSReload(t *testing.T) {
	p := newPKI(t, "reload")
	certFile, keyFile, first := p.writeServerCert(t, "first", "server.crt", "server.key")
	tcfg := &TLSConfig{CertFile: certFile, KeyFile: keyFile}
	cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", TLS: tcfg})
	tcpListener := listen(t, cfg)
	serveEcho(t, tcpListener)
	wsCfg := cfg
	wsCfg.Protocol = ProtocolWebSockets
	wssListener := listen(t, wsCfg) // shares tcfg: one Reload serves both
	serveEcho(t, wssListener)

	served := func(t *testing.T) (tcp, wss *big.Int) {
		t.Helper()
		cs, err := tlsExchange(tcpListener, p.clientTLS())
		if err != nil {
			t.Fatal(err)
		}
		conf := p.clientTLS()
		var wssSerial *big.Int
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			wssSerial = cs.PeerCertificates[0].SerialNumber
			return nil
		}
		c, err := dialWS(t, "wss://"+wssListener.Addr().String()+"/mqtt", conf, "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		return cs.PeerCertificates[0].SerialNumber, wssSerial
	}
	if tcp, wss := served(t); tcp.Cmp(first.SerialNumber) != 0 || wss.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("serving serials %v/%v, want %v", tcp, wss, first.SerialNumber)
	}

	_, _, second := p.writeServerCert(t, "second", "server.crt", "server.key")
	if err := tcfg.Reload(); err != nil {
		t.Fatal(err)
	}
	if tcp, wss := served(t); tcp.Cmp(second.SerialNumber) != 0 || wss.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after Reload serving %v/%v, want %v", tcp, wss, second.SerialNumber)
	}

	// A broken file fails the Reload and leaves the current certificate.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tcfg.Reload(); !errors.Is(err, ErrTLSConfig) {
		t.Fatalf("Reload of a broken key: %v, want ErrTLSConfig", err)
	}
	if tcp, _ := served(t); tcp.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after failed Reload serving %v, want %v", tcp, second.SerialNumber)
	}
}

func TestTLSCAPath(t *testing.T) {
	p := newPKI(t, "capath")
	dir := t.TempDir()
	caData, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), caData, 0o600); err != nil {
		t.Fatal(err)
	}
	// c_rehash style link and an unrelated file, both tolerated.
	if err := os.Symlink("ca.pem", filepath.Join(dir, "1a2b3c4d.0")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tcfg := p.serverTLS(t)
	tcfg.CAFile, tcfg.CAPath, tcfg.RequireCertificate = "", dir, true
	cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", TLS: tcfg})
	l := listen(t, cfg)
	ids := serveIdentityEcho(t, l)
	client, _ := p.issue(t, pkix.Name{CommonName: "via-capath"}, false)
	if _, err := tlsExchange(l, p.clientTLS(client)); err != nil {
		t.Fatal(err)
	}
	if id := nextIdentity(t, ids); !id.ok || id.cn != "via-capath" {
		t.Fatalf("PeerIdentity = %+v", id)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t, "errors")
	base := p.serverTLS(t)
	empty := p.write(t, "empty.pem", []byte("no certificates here"))
	for _, tc := range []struct {
		name   string
		modify func(c *TLSConfig)
	}{
		{"missing certfile", func(c *TLSConfig) { c.CertFile = "" }},
		{"unreadable keyfile", func(c *TLSConfig) { c.KeyFile = filepath.Join(p.dir, "missing.key") }},
		{"key does not match", func(c *TLSConfig) { c.KeyFile = p.write(t, "other.key", []byte("x")) }},
		{"require without CA", func(c *TLSConfig) { c.CAFile, c.RequireCertificate = "", true }},
		{"request without CA", func(c *TLSConfig) { c.CAFile, c.RequestCertificate = "", true }},
		{"crl without CA", func(c *TLSConfig) { c.CAFile, c.CRLFile = "", p.writeCRL(t, "x.crl", time.Now().Add(time.Hour)) }},
		{"cafile without certificates", func(c *TLSConfig) { c.CAFile = empty }},
		{"capath without certificates", func(c *TLSConfig) { c.CAFile, c.CAPath = "", t.TempDir() }},
		{"crlfile without CRL", func(c *TLSConfig) { c.CRLFile = empty }},
		{"unknown tls_version", func(c *TLSConfig) { c.MinVersion = "sslv3" }},
		{"unsupported cipher", func(c *TLSConfig) { c.Ciphers = "DHE-RSA-AES256-GCM-SHA384" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &TLSConfig{CAFile: base.CAFile, CertFile: base.CertFile, KeyFile: base.KeyFile}
			tc.modify(c)
			if _, err := c.Build(); !errors.Is(err, ErrTLSConfig) {
				t.Fatalf("Build: %v, want ErrTLSConfig", err)
			}
			if _, err := Listen(Config{Address: "127.0.0.1:0", TLS: c}); !errors.Is(err, ErrTLSConfig) {
				t.Fatalf("Listen: %v, want ErrTLSConfig", err)
			}
		})
	}
}

// TestSlowHandshake checks that a client that never completes its handshake
// holds up neither Accept for others nor a goroutine past the timeout.
func TestSlowHandshake(t *testing.T) {
	p := newPKI(t, "slow")
	for _, tc := range []struct {
		name     string
		cfg      func(t *testing.T) Config
		dial     func(t *testing.T, l net.Listener) (net.Conn, error)
		reported bool // the stalled handshake reaches OnHandshakeError
	}{
		{"tls", func(t *testing.T) Config { return Config{Address: "127.0.0.1:0", TLS: p.serverTLS(t)} },
			func(t *testing.T, l net.Listener) (net.Conn, error) {
				d := tls.Dialer{Config: p.clientTLS()}
				return d.DialContext(context.Background(), "tcp", l.Addr().String())
			}, true},
		{"ws", func(t *testing.T) Config { return Config{Address: "127.0.0.1:0", Protocol: ProtocolWebSockets} },
			func(t *testing.T, l net.Listener) (net.Conn, error) {
				return dialWS(t, "ws://"+l.Addr().String()+"/", nil, "mqtt")
			}, false},
		{"wss", func(t *testing.T) Config {
			return Config{Address: "127.0.0.1:0", Protocol: ProtocolWebSockets, TLS: p.serverTLS(t)}
		}, func(t *testing.T, l net.Listener) (net.Conn, error) {
			return dialWS(t, "wss://"+l.Addr().String()+"/", p.clientTLS(), "mqtt")
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t) // issues certificates: before going parallel
			t.Parallel()
			const timeout = 1500 * time.Millisecond
			cfg.HandshakeTimeout = timeout
			cfg, hs := quietConfig(cfg)
			l := listen(t, cfg)
			start := time.Now()
			stalled, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer stalled.Close()
			if _, err := stalled.Write([]byte{0x16}); err != nil { // a first byte, then nothing
				t.Fatal(err)
			}
			c, err := tc.dial(t, l)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			acceptOne(t, l)
			if el := time.Since(start); el >= timeout {
				t.Fatalf("Accept took %v: it waited for the stalled handshake", el)
			}
			// The stalled connection is dropped once its handshake times out.
			_ = stalled.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := io.ReadAll(stalled); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("stalled handshake was never timed out")
				}
			}
			if tc.reported {
				eventually(t, "handshake timeout report", func() bool { return hs.count() == 1 })
				var ne net.Error
				if !errors.As(hs.last(), &ne) || !ne.Timeout() {
					t.Fatalf("reported %v, want a timeout", hs.last())
				}
			}
		})
	}
}
