package config

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/listener"
	"github.com/mqttd/mqttd/packet"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// served is a broker started from a configuration, as cmd/mqttd does.
type served struct {
	cfg   *Config
	auth  *Auth
	srv   *broker.Server
	addrs []string // per listener, as the broker names them
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveConfig parses text (with {PORT0}, {PORT1}... replaced by free ports
// and {DIR} by a temporary directory) and serves it on real sockets.
func serveConfig(t *testing.T, text string) *served {
	t.Helper()
	for i := 0; strings.Contains(text, "{PORT"); i++ {
		text = strings.ReplaceAll(text, "{PORT"+strconv.Itoa(i)+"}", strconv.Itoa(freePort(t)))
	}
	cfg, err := Parse(strings.NewReader(text), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	s := &served{cfg: cfg, logs: &syncBuffer{}}
	lg, err := newLoggingTo(cfg.Log, false, s.logs, s.logs)
	if err != nil {
		t.Fatal(err)
	}
	if s.auth, err = NewAuth(cfg); err != nil {
		t.Fatal(err)
	}
	o := cfg.Broker
	o.Logger = slog.New(lg.Handler())
	o.OnEvent = lg.Event
	o.SysInterval = -1
	s.auth.Apply(&o)
	s.srv = broker.New(o)
	var wg sync.WaitGroup
	for i, l := range cfg.Listeners {
		lc := cfg.ListenerConfig(l)
		lc.Logger = o.Logger
		ln, err := listener.Listen(lc)
		if err != nil {
			t.Fatal(err)
		}
		s.auth.Bind(ln.Addr().String(), i)
		s.addrs = append(s.addrs, ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.srv.ServeListener(ln, cfg.ListenerOptions(l))
		}()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.srv.Shutdown(ctx)
		wg.Wait()
		lg.Close()
	})
	return s
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func passwordLine(t *testing.T, user, password string) string {
	t.Helper()
	h, err := auth.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + h + "\n"
}

// connackCode dials addr and returns the CONNACK reason code for cp.
func connackCode(t *testing.T, addr string, cp *packet.Connect) packet.ReasonCode {
	t.Helper()
	c := brokertest.Dial(t, addr, cp.Version)
	cp.ProtocolName = "MQTT"
	c.Send(cp)
	ack, ok := c.Recv().(*packet.Connack)
	if !ok {
		t.Fatalf("no CONNACK")
	}
	return ack.ReasonCode
}

const aclText = `topic read public/#
user alice
topic readwrite alice/#
topic read shared/news
user bob
topic write alice/inbox
pattern readwrite clients/%c/#
`

func securityFiles(t *testing.T) (dir, pw, acl string) {
	dir = t.TempDir()
	pw = writeFile(t, dir, "pw", passwordLine(t, "alice", "secret")+passwordLine(t, "bob", "hunter2"))
	acl = writeFile(t, dir, "acl", aclText)
	return
}

// Password file and ACL end to end: CONNACK codes as Mosquitto 2.0 sends
// them ([MQTT-3.2.2-5]: refused with a non-zero code, then closed), publish
// needs write access, delivery read access.
func TestPasswordAndACL(t *testing.T) {
	_, pw, acl := securityFiles(t)
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			s := serveConfig(t, fmt.Sprintf("listener {PORT0} 127.0.0.1\npassword_file %s\nacl_file %s\n", pw, acl))
			addr := s.addrs[0]
			notAuth := packet.NotAuthorized // v3 return code 5 on the wire
			cases := []struct {
				name string
				cp   packet.Connect
				want packet.ReasonCode
			}{
				{"anonymous", packet.Connect{ClientID: "a", CleanStart: true}, notAuth},
				{"wrong password", packet.Connect{ClientID: "a", CleanStart: true, Username: "alice", HasUsername: true,
					Password: []byte("nope"), HasPassword: true}, notAuth},
				{"unknown user", packet.Connect{ClientID: "a", CleanStart: true, Username: "eve", HasUsername: true,
					Password: []byte("x"), HasPassword: true}, notAuth},
				{"no password", packet.Connect{ClientID: "a", CleanStart: true, Username: "alice", HasUsername: true}, notAuth},
				{"good", packet.Connect{ClientID: "a", CleanStart: true, Username: "alice", HasUsername: true,
					Password: []byte("secret"), HasPassword: true}, packet.Success},
			}
			for _, c := range cases {
				c.cp.Version = v
				if got := connackCode(t, addr, &c.cp); got != c.want {
					t.Errorf("%s: CONNACK %v, want %v", c.name, got, c.want)
				}
			}
			if n := s.srv.Stats().AuthFailures; n != 4 {
				t.Errorf("auth failures %d, want 4", n)
			}

			alice, _ := brokertest.DialConnect(t, addr, &packet.Connect{Version: v, ClientID: "alice1", CleanStart: true,
				Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true})
			// Mosquitto 2.0 grants every subscription and filters at delivery.
			ack := alice.Subscribe(1, 0, "alice/#", "secret/y", "clients/#")
			for i, rc := range ack.ReasonCodes {
				if rc != 0 {
					t.Errorf("SUBACK[%d] = %v, want granted", i, rc)
				}
			}
			bob, _ := brokertest.DialConnect(t, addr, &packet.Connect{Version: v, ClientID: "bob1", CleanStart: true,
				Username: "bob", HasUsername: true, Password: []byte("hunter2"), HasPassword: true})
			bob.Send(&packet.Publish{Topic: "secret/y", Payload: []byte("denied: bob cannot write")})
			bob.Send(&packet.Publish{Topic: "alice/other", Payload: []byte("denied: only alice/inbox")})
			bob.Send(&packet.Publish{Topic: "clients/alice1/x", Payload: []byte("denied: pattern is for bob1")})
			bob.Send(&packet.Publish{Topic: "alice/inbox", Payload: []byte("allowed")})
			if got := alice.ExpectPublish(); got.Topic != "alice/inbox" || string(got.Payload) != "allowed" {
				t.Fatalf("alice got %s", brokertest.Describe(got))
			}
			// alice may write her own tree but cannot read clients/bob1/... (the
			// pattern grants bob1 only).
			alice.Send(&packet.Publish{Topic: "clients/bob1/x", Payload: []byte("to bob")})
			alice.ExpectNothing(200 * time.Millisecond)
		})
	}
}

// acl_check_subscribe: a filter the ACL would never deliver is refused,
// 0x80 for 3.1.1 [MQTT-3.9.3-2] and 0x87 for 5.0 [MQTT-3.8.4-7].
func TestACLCheckSubscribe(t *testing.T) {
	_, pw, acl := securityFiles(t)
	s := serveConfig(t, fmt.Sprintf("listener {PORT0} 127.0.0.1\npassword_file %s\nacl_file %s\nacl_check_subscribe true\n", pw, acl))
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		c, _ := brokertest.DialConnect(t, s.addrs[0], &packet.Connect{Version: v, ClientID: "alice-" + v.String(),
			CleanStart: true, Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true})
		ack := c.Subscribe(1, 1, "alice/#", "secret/y", "shared/#", "#")
		fail := packet.UnspecifiedError
		if v == packet.V5 {
			fail = packet.NotAuthorized
		}
		want := []packet.ReasonCode{1, fail, 1, 1}
		for i := range want {
			if ack.ReasonCodes[i] != want[i] {
				t.Errorf("%v: SUBACK %v, want %v", v, ack.ReasonCodes, want)
				break
			}
		}
	}
}

// bad_credentials_code bad_username_or_password answers a wrong password
// with 4 (3.1.1) / 0x86 (5.0) [MQTT-3.1.4-?]; anonymous stays not authorized.
func TestBadCredentialsCode(t *testing.T) {
	_, pw, _ := securityFiles(t)
	s := serveConfig(t, fmt.Sprintf("listener {PORT0} 127.0.0.1\npassword_file %s\nbad_credentials_code bad_username_or_password\n", pw))
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		got := connackCode(t, s.addrs[0], &packet.Connect{Version: v, ClientID: "x", CleanStart: true,
			Username: "alice", HasUsername: true, Password: []byte("bad"), HasPassword: true})
		if got != packet.BadUserNameOrPassword {
			t.Errorf("%v: %v, want bad user name or password", v, got)
		}
		if got := connackCode(t, s.addrs[0], &packet.Connect{Version: v, ClientID: "x", CleanStart: true}); got != packet.NotAuthorized {
			t.Errorf("%v anonymous: %v", v, got)
		}
	}
}

// per_listener_settings: each listener has its own anonymous rule,
// password file and client-id rules; mount_point separates topic trees.
func TestPerListenerSecurityAndMountPoint(t *testing.T) {
	_, pw, _ := securityFiles(t)
	s := serveConfig(t, fmt.Sprintf(`per_listener_settings true
listener {PORT0} 127.0.0.1
allow_anonymous true
mount_point tenant/
allow_zero_length_clientid false
listener {PORT1} 127.0.0.1
password_file %s
auto_id_prefix dev-
`, pw))
	open, closed := s.addrs[0], s.addrs[1]
	if got := connackCode(t, open, &packet.Connect{Version: packet.V311, ClientID: "a", CleanStart: true}); got != 0 {
		t.Errorf("anonymous on the open listener: %v", got)
	}
	if got := connackCode(t, closed, &packet.Connect{Version: packet.V311, ClientID: "a", CleanStart: true}); got != packet.NotAuthorized {
		t.Errorf("anonymous on the password listener: %v", got)
	}
	// allow_zero_length_clientid false: identifier rejected [MQTT-3.1.3-8].
	if got := connackCode(t, open, &packet.Connect{Version: packet.V311, CleanStart: true}); got != packet.ClientIdentifierNotValid {
		t.Errorf("empty id on the open listener: %v", got)
	}
	// auto_id_prefix on the other listener: the assigned id starts with it.
	c, ack := brokertest.DialConnect(t, closed, &packet.Connect{Version: packet.V5, CleanStart: true,
		Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true})
	if ack.Props == nil || !strings.HasPrefix(ack.Props.AssignedClientID, "dev-") {
		t.Errorf("assigned id: %+v", ack.Props)
	}
	c.Subscribe(1, 0, "#")

	m, _ := brokertest.DialConnect(t, open, &packet.Connect{Version: packet.V311, ClientID: "m", CleanStart: true})
	m.Subscribe(1, 0, "t/#")
	m.Send(&packet.Publish{Topic: "t/1", Payload: []byte("mounted")})
	if got := m.ExpectPublish(); got.Topic != "t/1" {
		t.Errorf("mounted client sees %q, want the topic without the mount point", got.Topic)
	}
	if got := c.ExpectPublish(); got.Topic != "tenant/t/1" {
		t.Errorf("unmounted client sees %q, want tenant/t/1", got.Topic)
	}
	c.Send(&packet.Publish{Topic: "t/2", Payload: []byte("outside")})
	c.Send(&packet.Publish{Topic: "tenant/t/3", Payload: []byte("inside")})
	if got := m.ExpectPublish(); got.Topic != "t/3" {
		t.Errorf("mounted client got %q, want t/3 only", got.Topic)
	}
}

// max_connections: sockets past the cap are closed at once.
func TestMaxConnections(t *testing.T) {
	s := serveConfig(t, "listener {PORT0} 127.0.0.1\nallow_anonymous true\nmax_connections 1\n")
	a, _ := brokertest.DialConnect(t, s.addrs[0], &packet.Connect{Version: packet.V311, ClientID: "a", CleanStart: true})
	b := brokertest.Dial(t, s.addrs[0], packet.V311)
	b.ExpectClosed()
	if n := s.srv.ListenerRefusals(); n != 1 {
		t.Errorf("refusals %d", n)
	}
	a.NC.Close()
	brokertest.Eventually(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", s.addrs[0])
		if err != nil {
			return false
		}
		defer c.Close()
		packet.Write(c, &packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: "c", CleanStart: true}, packet.V311)
		c.SetReadDeadline(time.Now().Add(time.Second))
		p, err := packet.Read(bufioReader(c), packet.V311, 0)
		ack, ok := p.(*packet.Connack)
		return err == nil && ok && ack.ReasonCode == 0
	}, "a slot frees when a connection closes")
}

// The connection messages in Mosquitto 2.0.11's exact wording (checked
// against /usr/sbin/mosquitto -v).
func TestConnectionMessages(t *testing.T) {
	_, pw, _ := securityFiles(t)
	s := serveConfig(t, fmt.Sprintf("listener {PORT0} 127.0.0.1\npassword_file %s\nallow_anonymous true\n", pw))
	addr := s.addrs[0]
	_, port, _ := net.SplitHostPort(addr)
	c, _ := brokertest.DialConnect(t, addr, &packet.Connect{Version: packet.V311, ClientID: "alice1", CleanStart: true,
		KeepAlive: 60, Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true})
	local := c.NC.LocalAddr().String()
	c.Send(&packet.Disconnect{})
	c.ExpectClosed()
	// 5.0 DISCONNECT 0x04 (publish the will) is still a client disconnect.
	w, _ := brokertest.DialConnect(t, addr, &packet.Connect{Version: packet.V5, ClientID: "willer", CleanStart: true})
	w.Send(&packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
	w.ExpectClosed()
	d, _ := brokertest.DialConnect(t, addr, &packet.Connect{Version: packet.V5, ClientID: "anon1", KeepAlive: 30})
	dLocal := d.NC.LocalAddr().String()
	d.NC.Close()
	connackCode(t, addr, &packet.Connect{Version: packet.V311, ClientID: "x", CleanStart: true,
		Username: "alice", HasUsername: true, Password: []byte("bad"), HasPassword: true})
	want := []string{
		"New connection from " + local + " on port " + port + ".",
		"New client connected from " + local + " as alice1 (p2, c1, k60, u'alice').",
		"Client alice1 disconnected.",
		"Client willer disconnected.",
		"New client connected from " + dLocal + " as anon1 (p5, c0, k30).",
		"Client anon1 closed its connection.",
		"Client <unknown> disconnected, not authorised.",
	}
	brokertest.Eventually(t, 5*time.Second, func() bool {
		logs := s.logs.String()
		for _, w := range want {
			if !strings.Contains(logs, ": "+w+"\n") {
				return false
			}
		}
		return true
	}, "connection messages; got:\n%s", s.logs)
	if strings.Contains(s.logs.String(), ": client connected") {
		t.Errorf("the broker's own connection lines are debug-only:\n%s", s.logs)
	}
}

func TestLogTypesAndTimestamp(t *testing.T) {
	cases := []struct {
		conf    string
		level   slog.Level
		written bool
		prefix  string
	}{
		{"", slog.LevelInfo, true, "1700000000: "},
		{"", slog.LevelDebug, false, ""},
		{"log_type error\n", slog.LevelWarn, false, ""},
		{"log_type error\n", slog.LevelError, true, "1700000000: "},
		{"log_type all\n", slog.LevelDebug, true, "1700000000: "},
		{"log_type all\nlog_type none\n", slog.LevelError, false, ""},
		{"log_type notice\n", LevelNotice, true, "1700000000: "},
		{"log_timestamp false\n", slog.LevelInfo, true, ""},
		{"log_timestamp_format %Y-%m-%dT%H:%M:%S\n", slog.LevelInfo, true, "2023-11-14T22:13:20: "},
		{"connection_messages false\n", slog.LevelInfo, true, "1700000000: "},
		{"log_dest none\n", slog.LevelError, false, ""},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q/%v", c.conf, c.level), func(t *testing.T) {
			cfg := parse(t, c.conf)
			var out bytes.Buffer
			lg, err := newLoggingTo(cfg.Log, false, io.Discard, &out)
			if err != nil {
				t.Fatal(err)
			}
			lg.write(time.Unix(1700000000, 0).UTC(), c.level, "hello")
			lg.Close() // writes what waits
			got := out.String()
			if c.written != (got != "") || (c.written && got != c.prefix+"hello\n") {
				t.Errorf("got %q, want written=%v with prefix %q", got, c.written, c.prefix)
			}
		})
	}
	// log_dest file appends to the file; -v logs every type.
	path := filepath.Join(t.TempDir(), "m.log")
	cfg := parse(t, "log_dest file "+path+"\nlog_type error\n")
	lg, err := newLoggingTo(cfg.Log, true, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	slog.New(lg.Handler()).Debug("debug line", "k", "v w")
	lg.Close()
	if b, _ := os.ReadFile(path); !strings.HasSuffix(string(b), `: debug line k="v w"`+"\n") {
		t.Errorf("log file: %q", b)
	}
}

// Reload swaps the password file: new credentials work, old ones stop.
func TestAuthReload(t *testing.T) {
	dir, pw, _ := securityFiles(t)
	s := serveConfig(t, fmt.Sprintf("listener {PORT0} 127.0.0.1\npassword_file %s\n", pw))
	carol := &packet.Connect{Version: packet.V311, ClientID: "c", CleanStart: true, Username: "carol", HasUsername: true,
		Password: []byte("pw"), HasPassword: true}
	if got := connackCode(t, s.addrs[0], carol); got != packet.NotAuthorized {
		t.Fatalf("carol before reload: %v", got)
	}
	alice, _ := brokertest.DialConnect(t, s.addrs[0], &packet.Connect{Version: packet.V311, ClientID: "alice1",
		CleanStart: true, Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true})
	writeFile(t, dir, "pw", passwordLine(t, "carol", "pw"))
	if err := s.auth.Reload(nil); err != nil {
		t.Fatal(err)
	}
	if got := connackCode(t, s.addrs[0], carol); got != 0 {
		t.Fatalf("carol after reload: %v", got)
	}
	alice.Ping() // the connection made before the reload stays up
	// A broken file keeps the old one in force.
	writeFile(t, dir, "pw", "carol\n")
	if err := s.auth.Reload(nil); err == nil {
		t.Fatal("reload of a broken password file: no error")
	}
	if got := connackCode(t, s.addrs[0], carol); got != 0 {
		t.Fatalf("carol after failed reload: %v", got)
	}
	// A changed listener set is refused.
	next := parse(t, "listener 1\n")
	if err := s.auth.Reload(next); err == nil {
		t.Fatal("reload with other listeners: no error")
	}
}

// testPKI is a CA that issues certificates for tests; nothing is committed.
type testPKI struct {
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	next int64
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mqttd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{dir: t.TempDir(), ca: ca, key: key, next: 2}
	writeFile(t, p.dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return p
}

// issue writes a certificate and key for subject; server ones are for
// 127.0.0.1. It returns the file paths and the tls.Certificate.
func (p *testPKI) issue(t *testing.T, name string, subject pkix.Name, server bool) (string, string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.next++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.next), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert := writeFile(t, p.dir, name+".pem", string(certPEM))
	keyFile := writeFile(t, p.dir, name+".key", string(keyPEM))
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, keyFile, pair
}

func (p *testPKI) clientTLS(certs ...tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &tls.Config{RootCAs: pool, Certificates: certs, ServerName: "127.0.0.1"}
}

// TLS with client certificates: use_identity_as_username takes the user
// name from the certificate's CN (the ACL then applies to it),
// use_subject_as_username the whole subject; no certificate, no handshake.
func TestTLSClientCertificates(t *testing.T) {
	p := newPKI(t)
	cert, key, _ := p.issue(t, "server", pkix.Name{CommonName: "127.0.0.1"}, true)
	_, _, alice := p.issue(t, "alice", pkix.Name{CommonName: "alice", Organization: []string{"Example"}}, false)
	acl := writeFile(t, p.dir, "acl", "user alice\ntopic readwrite alice/#\nuser CN=bob,O=Example\ntopic readwrite bob/#\n")
	_, _, bob := p.issue(t, "bob", pkix.Name{CommonName: "bob", Organization: []string{"Example"}}, false)
	ca := filepath.Join(p.dir, "ca.pem")
	s := serveConfig(t, fmt.Sprintf(`acl_file %[4]s
listener {PORT0} 127.0.0.1
cafile %[1]s
certfile %[2]s
keyfile %[3]s
require_certificate true
use_identity_as_username true
listener {PORT1} 127.0.0.1
cafile %[1]s
certfile %[2]s
keyfile %[3]s
require_certificate true
use_subject_as_username true
listener {PORT2} 127.0.0.1
certfile %[2]s
keyfile %[3]s
allow_anonymous true
`, ca, cert, key, acl))
	dialTLS := func(addr string, conf *tls.Config) (*brokertest.Conn, error) {
		nc, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			return nil, err
		}
		if err := nc.Handshake(); err != nil {
			return nil, err
		}
		return brokertest.NewConn(t, nc, packet.V311), nil
	}
	for _, c := range []struct {
		name, addr, topic string
		cert              tls.Certificate
	}{
		{"identity", s.addrs[0], "alice/x", alice},
		{"subject", s.addrs[1], "bob/x", bob},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := dialTLS(c.addr, p.clientTLS(c.cert))
			if err != nil {
				t.Fatal(err)
			}
			// The CONNECT's own user name is replaced by the certificate's.
			conn.Connect(&packet.Connect{ClientID: "tls-" + c.name, CleanStart: true, Username: "mallory", HasUsername: true})
			conn.Subscribe(1, 0, "#")
			conn.Send(&packet.Publish{Topic: "other/x", Payload: []byte("denied")})
			conn.Send(&packet.Publish{Topic: c.topic, Payload: []byte("allowed")})
			if got := conn.ExpectPublish(); got.Topic != c.topic {
				t.Fatalf("got %s", brokertest.Describe(got))
			}
		})
	}
	// require_certificate: a client without one fails the handshake (TLS 1.3
	// reports it on the first read).
	if conn, err := dialTLS(s.addrs[0], p.clientTLS()); err == nil {
		conn.Send(&packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: "x", CleanStart: true})
		if _, err := conn.RecvTimeout(5 * time.Second); err == nil {
			t.Fatal("client without a certificate got an answer")
		}
	}
	// Plain TLS listener without client certificates.
	conn, err := dialTLS(s.addrs[2], p.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect(&packet.Connect{ClientID: "plain-tls", CleanStart: true})
}

// wsConn adapts a client websocket to net.Conn for the raw MQTT helpers.
type wsConn struct {
	*websocket.Conn
	r io.Reader
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// A broker on ws:// and wss:// with a real MQTT exchange across them.
func TestWebSockets(t *testing.T) {
	p := newPKI(t)
	cert, key, _ := p.issue(t, "server", pkix.Name{CommonName: "127.0.0.1"}, true)
	s := serveConfig(t, fmt.Sprintf(`allow_anonymous true
listener {PORT0} 127.0.0.1
protocol websockets
listener {PORT1} 127.0.0.1
protocol websockets
certfile %s
keyfile %s
`, cert, key))
	dial := func(url string, conf *tls.Config) *brokertest.Conn {
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: conf, HandshakeTimeout: 5 * time.Second}
		ws, resp, err := d.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		if ws.Subprotocol() != "mqtt" {
			t.Errorf("subprotocol %q", ws.Subprotocol())
		}
		resp.Body.Close()
		return brokertest.NewConn(t, &wsConn{Conn: ws}, packet.V311)
	}
	sub := dial("ws://"+s.addrs[0]+"/mqtt", nil)
	sub.Connect(&packet.Connect{ClientID: "ws-sub", CleanStart: true})
	sub.Subscribe(1, 1, "ws/#")
	pub := dial("wss://"+s.addrs[1]+"/mqtt", p.clientTLS())
	pub.Connect(&packet.Connect{ClientID: "wss-pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "ws/1", QoS: 1, PacketID: 7, Payload: []byte("over wss")}); rc != 0 {
		t.Fatalf("PUBACK %v", rc)
	}
	got := sub.ExpectPublish()
	if got.Topic != "ws/1" || string(got.Payload) != "over wss" || got.QoS != 1 {
		t.Fatalf("got %s", brokertest.Describe(got))
	}
	sub.Ack(got)
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
