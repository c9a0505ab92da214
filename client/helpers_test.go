package client

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

var allVersions = []packet.Version{packet.V31, packet.V311, packet.V5}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects a client that is closed when the test ends.
func dial(t *testing.T, url string, o Options) *Client {
	t.Helper()
	c, err := Dial(testCtx(t), url, o)
	if err != nil {
		t.Fatalf("Dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// collector records the messages its handler receives.
type collector struct {
	mu   sync.Mutex
	msgs []*Message
}

func (c *collector) handle(m *Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

func (c *collector) get() []*Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Message(nil), c.msgs...)
}

// wait waits until n messages have arrived and returns them.
func (c *collector) wait(t *testing.T, n int) []*Message {
	t.Helper()
	brokertest.Eventually(t, 5*time.Second, func() bool { return len(c.get()) >= n },
		"want %d messages, have %d", n, len(c.get()))
	return c.get()
}

func subscribe(t *testing.T, c *Client, filter string, qos byte, h Handler) {
	t.Helper()
	if _, err := c.Subscribe(testCtx(t), []packet.Subscription{{Filter: filter, QoS: qos}}, h); err != nil {
		t.Fatalf("Subscribe %s: %v", filter, err)
	}
}

// proxy forwards connections from its listener to target. A paused
// connection swallows what the client sends, so its messages stay
// unacknowledged.
type proxy struct {
	l      net.Listener
	target string

	mu     sync.Mutex
	conns  []net.Conn
	paused []*atomic.Bool // per connection
	closed bool
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, l net.Listener, target string) *proxy {
	t.Helper()
	p := &proxy{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func startTCPProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startProxy(t, l, target)
}

func (p *proxy) url() string { return "mqtt://" + p.l.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, c, s)
		paused := new(atomic.Bool)
		p.paused = append(p.paused, paused)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			defer s.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 && !paused.Load() {
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			defer s.Close()
			_, _ = io.Copy(c, s)
		}()
	}
}

// pauseAll pauses the current connections (not later ones).
func (p *proxy) pauseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.paused {
		b.Store(true)
	}
}

// dropAll closes every forwarded connection.
func (p *proxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.paused = nil
}

// close stops the proxy: nothing can connect through it any more.
func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.l.Close()
	p.dropAll()
	p.wg.Wait()
}

// fakeServer is a listener whose connections the test drives packet by
// packet, to check exactly what the client sends.
type fakeServer struct {
	t *testing.T
	l net.Listener
}

func startFake(t *testing.T) *fakeServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &fakeServer{t: t, l: l}
}

func (f *fakeServer) url() string { return "mqtt://" + f.l.Addr().String() }

// rawConn is one accepted connection of a fakeServer.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
	v  packet.Version
}

// accept takes the next connection and reads its CONNECT.
func (f *fakeServer) accept(v packet.Version) (*rawConn, *packet.Connect) {
	f.t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := f.l.Accept(); ch <- res{c, err} }()
	var r res
	select {
	case r = <-ch:
	case <-time.After(5 * time.Second):
		f.t.Fatal("fake server: no connection within 5s")
	}
	if r.err != nil {
		f.t.Fatalf("fake server: accept: %v", r.err)
	}
	f.t.Cleanup(func() { r.c.Close() })
	rc := &rawConn{t: f.t, nc: r.c, r: bufio.NewReader(r.c), v: v}
	p := rc.recv()
	cp, ok := p.(*packet.Connect)
	if !ok {
		f.t.Fatalf("fake server: first packet %v, want CONNECT", p.Type())
	}
	return rc, cp
}

func (c *rawConn) send(p packet.Packet) {
	c.t.Helper()
	if err := packet.Write(c.nc, p, c.v); err != nil {
		c.t.Fatalf("fake server: send %v: %v", p.Type(), err)
	}
}

func (c *rawConn) recvTimeout(d time.Duration) (packet.Packet, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	defer c.nc.SetReadDeadline(time.Time{})
	return packet.Read(c.r, c.v, 0)
}

func (c *rawConn) recv() packet.Packet {
	c.t.Helper()
	p, err := c.recvTimeout(5 * time.Second)
	if err != nil {
		c.t.Fatalf("fake server: recv: %v", err)
	}
	return p
}

func (c *rawConn) expectNothing(d time.Duration) {
	c.t.Helper()
	p, err := c.recvTimeout(d)
	if err == nil {
		c.t.Fatalf("fake server: unexpected %v", p.Type())
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("fake server: connection failed: %v", err)
	}
}

func recvAs[T packet.Packet](c *rawConn) T {
	c.t.Helper()
	p := c.recv()
	v, ok := p.(T)
	if !ok {
		var zero T
		c.t.Fatalf("fake server: got %v, want %T", p.Type(), zero)
	}
	return v
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, also written as PEM files in dir.
type testPKI struct {
	pool       *x509.CertPool
	server     tls.Certificate
	client     tls.Certificate
	caFile     string
	clientCert string
	clientKey  string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mqttd test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, server bool) (tls.Certificate, []byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "mqttd test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
		}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
			tmpl.DNSNames = []string{"localhost"}
		} else {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c, certPEM, keyPEM
	}
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	p.server, _, _ = issue(2, true)
	var certPEM, keyPEM []byte
	p.client, certPEM, keyPEM = issue(3, false)
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caFile = write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	p.clientCert = write("client.pem", certPEM)
	p.clientKey = write("client.key", keyPEM)
	return p
}
