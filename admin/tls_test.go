package admin_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqttd/mqttd/admin"
	"github.com/mqttd/mqttd/broker"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into a new
// directory and returns their files and the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, der []byte) {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile, der
}

func TestTLS(t *testing.T) {
	certFile, keyFile, der := selfSigned(t)
	b := broker.New(broker.Options{SysInterval: -1})
	a, err := admin.New(b, admin.Config{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown(t.Context()) })
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := c.Get("https://" + a.Addr().String() + "/api/v1/broker")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil {
		t.Fatalf("HTTPS: %d %v", res.StatusCode, res.TLS)
	}
	// Go's TLS server answers plain HTTP with 400: the API is not served.
	if res, err := http.Get("http://" + a.Addr().String() + "/api/v1/broker"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain HTTP served on a TLS listener")
		}
	}
}

// TestReloadKeepsScheme: credentials read again may not turn an HTTPS
// listener into a plain one or the other way round: Reload refuses them,
// and the listener goes on with the credentials it had.
func TestReloadKeepsScheme(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t)
	withTLS := admin.Config{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}
	plain := admin.Config{Addr: "127.0.0.1:0"}
	b := broker.New(broker.Options{SysInterval: -1})

	for _, c := range []struct {
		name        string
		start, next admin.Config
	}{{"https to http", withTLS, plain}, {"http to https", plain, withTLS}} {
		t.Run(c.name, func(t *testing.T) {
			a, err := admin.New(b, c.start)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(); err != nil {
				t.Fatal(err)
			}
			defer a.Shutdown(t.Context())
			cr, err := admin.LoadCredentials(c.next)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Reload(cr); err == nil {
				t.Fatal("Reload changed the listener's scheme")
			}
			scheme := "http://"
			if c.start.CertFile != "" {
				scheme = "https://"
			}
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			res, err := hc.Get(scheme + a.Addr().String() + "/api/v1/broker")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("after the refused reload: %d", res.StatusCode)
			}
		})
	}
}
