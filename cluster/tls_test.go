package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

var serial int64

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// node issues a certificate for a node, valid as server and client for
// 127.0.0.1, and returns the certificate and key files.
func (ca *testCA) node(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// logRecorder keeps the messages logged through it.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Message)
	r.mu.Unlock()
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) has(sub ...string) bool { return r.hasSince(0, sub...) }

// mark is where hasSince may start looking.
func (r *logRecorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// hasSince reports whether a message logged after mark i contains every
// string of sub.
func (r *logRecorder) hasSince(i int, sub ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs[i:] {
		all := true
		for _, s := range sub {
			all = all && strings.Contains(m, s)
		}
		if all {
			return true
		}
	}
	return false
}

// tlsPeer completes a TLS handshake with a node's cluster_listen as a
// node with certificate cert/key would, and returns the name the node's
// certificate gives.
func tlsPeer(addr, caFile, certFile, keyFile string) (string, error) {
	cfg, err := linkTLS(caFile, certFile, keyFile)
	if err != nil {
		return "", err
	}
	cfg.ServerName = "127.0.0.1"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// TLS 1.3: a refused client certificate shows on the first read; an
	// accepted one is followed by the node's INFO.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// TestTLSLinks: nodes linked by mutual TLS (cluster_cafile,
// cluster_certfile, cluster_keyfile) carry messages; the links refuse
// plain connections; a node whose certificate another CA signed is not
// admitted: no route to it forms, and its messages do not cross.
func TestTLSLinks(t *testing.T) {
	t.Parallel() // a cluster of its own
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	rec := &logRecorder{}
	var addrs []string
	var cfgs []Config
	nodes := startFresh(t, 3, func(a []string) []Config {
		addrs, cfgs = a, nil
		for i, name := range []string{"t0", "t1"} {
			cert, key := ca.node(t, dir, name)
			cfgs = append(cfgs, Config{Name: "tls", Node: name, Listen: addrs[i], Peers: addrs[:2],
				CAFile: ca.file, CertFile: cert, KeyFile: key})
		}
		cfgs[0].Logger = slog.New(rec)
		return cfgs
	}, nil)
	brokertest.Eventually(t, 20*time.Second, func() bool { return linked(nodes, 1) }, "the 2 TLS nodes linked")
	// The links speak TLS with the nodes' certificates.
	for i, a := range addrs[:2] {
		name, err := tlsPeer(a, ca.file, cfgs[1-i].CertFile, cfgs[1-i].KeyFile)
		if err != nil || name != cfgs[i].Node {
			t.Fatalf("TLS handshake with cluster_listen %s: %q, %v; want certificate %s", a, name, err, cfgs[i].Node)
		}
	}

	sub := connect(t, nodes[1], "tsub")
	sub.Subscribe(1, 1, "tls/#")
	waitInterest(t, nodes[0], "tls/x", nodes[1])
	pub := connect(t, nodes[0], "tpub")
	pub.Publish(&packet.Publish{Topic: "tls/x", QoS: 1, PacketID: 1, Payload: []byte("secret")})
	if p := sub.ExpectPublish(); p.Topic != "tls/x" || string(p.Payload) != "secret" {
		t.Fatalf("across TLS: %s", brokertest.Describe(p))
	}

	// A node that trusts the right CA but whose certificate another CA
	// signed: the others refuse its handshake.
	rogueCA := newTestCA(t, dir, "rogue-ca")
	cert, key := rogueCA.node(t, dir, "rogue")
	if name, err := tlsPeer(addrs[0], ca.file, cert, key); err == nil {
		t.Fatalf("TLS handshake with a certificate of another CA accepted by %s", name)
	}
	rogue, err := New(Config{Name: "tls", Node: "rogue", Listen: addrs[2], Peers: addrs, Dir: t.TempDir(),
		CAFile: ca.file, CertFile: cert, KeyFile: key, Logger: testLogger(), StartTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Start(t, func(o *broker.Options) { o.Hooks = append(o.Hooks, rogue) })
	startErr := make(chan error, 1)
	go func() { startErr <- rogue.Start(context.Background()) }()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-startErr:
			if err == nil {
				t.Fatal("the rogue node started: it reached JetStream through the TLS links")
			}
			t.Logf("rogue node: %v", err)
		case <-deadline:
			t.Fatal("the rogue node's Start did not return")
		case <-time.After(20 * time.Millisecond):
			for _, n := range nodes {
				if s := n.node.Stats(); s.LinksUp != 1 {
					t.Fatalf("%s has %d links with the rogue node trying: a route to it formed", n.node.Name(), s.LinksUp)
				}
			}
			continue
		}
		break
	}
	if !rec.has("TLS") && !rec.has("tls") && !rec.has("certificate") {
		t.Errorf("node t0 logged no TLS error for the rogue node: %q", rec.msgs)
	}
	// The good nodes still carry messages.
	pub.Publish(&packet.Publish{Topic: "tls/y", QoS: 1, PacketID: 2, Payload: []byte("still")})
	if p := sub.ExpectPublish(); p.Topic != "tls/y" {
		t.Fatalf("after the rogue node: %s", brokertest.Describe(p))
	}
}
