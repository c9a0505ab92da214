package bridge_test

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
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/listener"
)

// selfSigned writes a certificate for 127.0.0.1 / localhost to dir and
// returns it with its PEM file.
func selfSigned(t *testing.T, dir string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, f
}

// TestBridgeTransports: a bridge to a remote over TLS (bridge_cafile,
// verified) and over mqttd's ws:// address form; a wrong CA is refused.
func TestBridgeTransports(t *testing.T) {
	remote := startNode(t, "", nil)
	cert, caFile := selfSigned(t, t.TempDir())
	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	go remote.srv.Serve(tl)
	wl, err := listener.Listen(listener.Config{Address: "127.0.0.1:0", Protocol: "websockets"})
	if err != nil {
		t.Fatal(err)
	}
	go remote.srv.Serve(wl)
	_, otherCA := selfSigned(t, t.TempDir())

	for _, c := range []struct {
		name  string
		lines []string
		ok    bool
	}{
		{"tls", []string{"address " + tl.Addr().String(), "bridge_cafile " + caFile}, true},
		{"ws", []string{"address ws://" + wl.Addr().String() + "/mqtt"}, true},
		{"tls-wrong-ca", []string{"address " + tl.Addr().String(), "bridge_cafile " + otherCA}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			local := startNode(t, "", nil)
			atRemote := subscribe(t, remote.addr, "sub-"+c.name, false, "r/"+c.name+"/#")
			b := startBridge(t, local.srv, append(c.lines, "restart_timeout 1", "notifications false",
				"remote_clientid tr-"+c.name, "topic "+c.name+"/# out 1 \"\" r/")...)
			if !c.ok {
				// The handshake fails: the bridge keeps trying and never connects.
				deadline := time.Now().Add(1500 * time.Millisecond)
				for time.Now().Before(deadline) {
					if b.Stats().Connected {
						t.Fatal("connected with an untrusted certificate")
					}
					time.Sleep(20 * time.Millisecond) // polling with a deadline
				}
				return
			}
			waitConnected(t, b)
			publish(t, publisher(t, local.addr), c.name+"/x", "over-"+c.name, 1, false)
			brokertest.Eventually(t, 10*time.Second, func() bool { return atRemote.count("r/"+c.name+"/x", "over-"+c.name) == 1 },
				"message over %s", c.name)
		})
	}
}
