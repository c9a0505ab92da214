package listener

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 5 * time.Second

// testPKI is a throwaway CA with helpers to issue server and client
// certificates and CRLs, all written under a temporary directory.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
	roots  *x509.CertPool
	serial int64
}

func newPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " CA", Organization: []string{"mqttd test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: t.TempDir(), ca: ca, caKey: key, roots: x509.NewCertPool(), serial: 1}
	p.roots.AddCert(ca)
	p.caFile = p.write(t, "ca.crt", pemBytes("CERTIFICATE", der))
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue signs a leaf certificate for subject; server certificates are valid
// for localhost and 127.0.0.1.
func (p *testPKI) issue(t *testing.T, subject pkix.Name, server bool) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key := newKey(t)
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// writeServerCert issues a server certificate named cn and writes it and its
// key to certName and keyName (overwriting them, as an operator rotating
// certificates would).
func (p *testPKI) writeServerCert(t *testing.T, cn, certName, keyName string) (certFile, keyFile string, leaf *x509.Certificate) {
	t.Helper()
	cert, leaf := p.issue(t, pkix.Name{CommonName: cn}, true)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile = p.write(t, certName, pemBytes("CERTIFICATE", cert.Certificate[0]))
	keyFile = p.write(t, keyName, pemBytes("PRIVATE KEY", keyDER))
	return certFile, keyFile, leaf
}

// serverTLS returns a TLSConfig with a fresh server certificate and this CA
// for client certificates.
func (p *testPKI) serverTLS(t *testing.T) *TLSConfig {
	t.Helper()
	certFile, keyFile, _ := p.writeServerCert(t, "localhost", "server.crt", "server.key")
	return &TLSConfig{CAFile: p.caFile, CertFile: certFile, KeyFile: keyFile}
}

// writeCRL writes a CRL signed by the CA revoking serials.
func (p *testPKI) writeCRL(t *testing.T, name string, nextUpdate time.Time, serials ...*big.Int) string {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(time.Now().UnixNano()),
		ThisUpdate:                time.Now().Add(-time.Hour),
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}, p.ca, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name, pemBytes("X509 CRL", der))
}

// clientTLS is a client configuration trusting this CA, presenting certs.
func (p *testPKI) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: p.roots, ServerName: "localhost", Certificates: certs}
}

// handshakeLog records OnHandshakeError calls.
type handshakeLog struct {
	mu   sync.Mutex
	errs []error
}

func (h *handshakeLog) record(_ net.Addr, err error) {
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
}

func (h *handshakeLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.errs)
}

func (h *handshakeLog) last() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) == 0 {
		return nil
	}
	return h.errs[len(h.errs)-1]
}

// quietConfig returns cfg with a discarding logger and a handshake log.
func quietConfig(cfg Config) (Config, *handshakeLog) {
	h := &handshakeLog{}
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.OnHandshakeError = h.record
	return cfg, h
}

// listen opens cfg and closes it when the test ends.
func listen(t *testing.T, cfg Config) net.Listener {
	t.Helper()
	l, err := Listen(cfg)
	if err != nil {
		t.Fatalf("Listen(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// serveEcho accepts connections until l closes and echoes each one.
func serveEcho(t *testing.T, l net.Listener) {
	t.Helper()
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
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// acceptOne waits for the next connection from l.
func acceptOne(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { _ = r.c.Close() })
		return r.c
	case <-time.After(testTimeout):
		t.Fatal("Accept did not return")
		return nil
	}
}

// roundTrip writes msg to c and reads it back (from an echo server).
func roundTrip(c net.Conn, msg []byte) error {
	if err := c.SetDeadline(time.Now().Add(testTimeout)); err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
