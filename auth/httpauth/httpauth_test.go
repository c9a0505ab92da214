package httpauth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth/httpauth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// service is an HTTP auth service started by a test: it lets in user
// "alice" with password "secret" (403 for user "banned", 401 otherwise),
// allows publish and subscribe under "alice/" and receive of "alice/#" and
// "public/#" (except topics with "secret"), and counts the requests it gets.
type service struct {
	mu       sync.Mutex
	requests []httpauth.Request
	headers  []http.Header
	fail     bool          // answer 503
	delay    chan struct{} // when not nil, block until closed (or the request is abandoned)
	srv      *httptest.Server
}

func newService(t *testing.T) *service {
	s := &service{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *service) serve(w http.ResponseWriter, r *http.Request) {
	var req httpauth.Request
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.headers = append(s.headers, r.Header.Clone())
	fail, delay := s.fail, s.delay
	s.mu.Unlock()
	if delay != nil {
		select {
		case <-delay:
		case <-r.Context().Done():
			return
		}
	}
	if fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	switch {
	case r.URL.Path == "/auth" && req.Username == "alice" && req.Password == "secret":
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/auth" && req.Username == "banned":
		w.WriteHeader(http.StatusForbidden)
	case r.URL.Path == "/auth":
		w.WriteHeader(http.StatusUnauthorized)
	case r.URL.Path == "/acl" && (req.Access == "publish" || req.Access == "subscribe" || req.Access == "unsubscribe") &&
		strings.HasPrefix(req.Topic, req.Username+"/"):
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/acl" && req.Access == "receive" && !strings.Contains(req.Topic, "secret") &&
		(strings.HasPrefix(req.Topic, req.Username+"/") || strings.HasPrefix(req.Topic, "public/")):
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusForbidden)
	}
}

func (s *service) count(access string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Access == access {
			n++
		}
	}
	return n
}

func (s *service) last() (httpauth.Request, http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[len(s.requests)-1], s.headers[len(s.headers)-1]
}

func start(t *testing.T, cfg httpauth.Config) (*brokertest.Server, *httpauth.Backend) {
	t.Helper()
	b, err := httpauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Hooks = []any{b}
		o.AuthFailureDelay = -1
	})
	return srv, b
}

func connect(t *testing.T, addr string, v packet.Version, id, user, pass string) (*brokertest.Conn, *packet.Connack) {
	t.Helper()
	cp := &packet.Connect{ProtocolName: "MQTT", Version: v, ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, HasUsername: user != "", Password: []byte(pass), HasPassword: pass != ""}
	c := brokertest.Dial(t, addr, v)
	c.Send(cp)
	ack, ok := c.Recv().(*packet.Connack)
	if !ok {
		t.Fatalf("expected CONNACK")
	}
	return c, ack
}

func TestAuthenticate(t *testing.T) {
	svc := newService(t)
	srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth",
		Headers: []httpauth.Header{{Name: "Authorization", Value: "Bearer svc-token"}}})

	c, ack := connect(t, srv.Addr, packet.V5, "c1", "alice", "secret")
	if ack.ReasonCode != packet.Success {
		t.Fatalf("alice: CONNACK %v, want success", ack.ReasonCode)
	}
	c.Ping()
	req, hdr := svc.last()
	if req.ClientID != "c1" || req.Username != "alice" || req.Password != "secret" || req.Access != "connect" ||
		req.Listener == "" || !strings.HasPrefix(req.Remote, "127.0.0.1:") {
		t.Errorf("request %+v", req)
	}
	if hdr.Get("Authorization") != "Bearer svc-token" {
		t.Errorf("Authorization header %q", hdr.Get("Authorization"))
	}

	_, ack = connect(t, srv.Addr, packet.V5, "c2", "alice", "wrong")
	if ack.ReasonCode != packet.BadUserNameOrPassword {
		t.Errorf("wrong password (401): CONNACK %v, want 0x86", ack.ReasonCode)
	}
	_, ack = connect(t, srv.Addr, packet.V5, "c3", "banned", "x")
	if ack.ReasonCode != packet.NotAuthorized {
		t.Errorf("403: CONNACK %v, want 0x87", ack.ReasonCode)
	}
	_, ack = connect(t, srv.Addr, packet.V311, "c4", "bob", "x")
	if ack.ReasonCode != packet.BadUserNameOrPassword {
		t.Errorf("3.1.1 401: CONNACK %v, want return code 4", ack.ReasonCode)
	}
}

// TestBinaryPassword: a password that is not UTF-8 travels base64-encoded.
func TestBinaryPassword(t *testing.T) {
	svc := newService(t)
	srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth"})
	connect(t, srv.Addr, packet.V5, "bin", "bob", "\xff\xfe")
	req, _ := svc.last()
	if req.Password != "" || req.PasswordBase64 != "//4=" {
		t.Errorf("binary password sent as %q / %q", req.Password, req.PasswordBase64)
	}
}

func TestAuthCache(t *testing.T) {
	svc := newService(t)
	srv, b := start(t, httpauth.Config{URL: svc.srv.URL + "/auth", CacheTTL: time.Minute})
	for i := range 3 {
		c, ack := connect(t, srv.Addr, packet.V5, "same", "alice", "secret")
		if ack.ReasonCode != packet.Success {
			t.Fatalf("connect %d: %v", i, ack.ReasonCode)
		}
		c.NC.Close()
	}
	if n := svc.count("connect"); n != 1 {
		t.Errorf("3 identical CONNECTs: %d requests to the service, want 1 (cached)", n)
	}
	// Another password is another question: never answered from the
	// cache entry of the right one.
	_, ack := connect(t, srv.Addr, packet.V5, "same", "alice", "secret2")
	if ack.ReasonCode != packet.BadUserNameOrPassword {
		t.Errorf("other password: %v", ack.ReasonCode)
	}
	if n := svc.count("connect"); n != 2 {
		t.Errorf("after another password: %d requests, want 2", n)
	}
	if b.Requests() != 2 {
		t.Errorf("Requests() = %d", b.Requests())
	}
}

func TestCacheExpires(t *testing.T) {
	svc := newService(t)
	srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth", CacheTTL: 50 * time.Millisecond})
	connect(t, srv.Addr, packet.V5, "ttl", "alice", "secret")
	brokertest.Eventually(t, 5*time.Second, func() bool {
		c, _ := connect(t, srv.Addr, packet.V5, "ttl", "alice", "secret")
		c.NC.Close()
		return svc.count("connect") >= 2
	}, "the cached answer never expired")
}

func TestNoCache(t *testing.T) {
	svc := newService(t)
	srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth", CacheTTL: -1})
	for range 2 {
		c, _ := connect(t, srv.Addr, packet.V5, "nc", "alice", "secret")
		c.NC.Close()
	}
	if n := svc.count("connect"); n != 2 {
		t.Errorf("CacheTTL -1: %d requests, want 2", n)
	}
}

func TestFailurePolicy(t *testing.T) {
	for _, allow := range []bool{false, true} {
		svc := newService(t)
		svc.fail = true
		srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth", ACLURL: svc.srv.URL + "/acl", FailureAllow: allow})
		c, ack := connect(t, srv.Addr, packet.V5, "f", "bob", "x")
		want := packet.ServerUnavailable
		if allow {
			want = packet.Success
		}
		if ack.ReasonCode != want {
			t.Fatalf("allow=%v: 503 gives CONNACK %v, want %v", allow, ack.ReasonCode, want)
		}
		if allow {
			rc := c.Publish(&packet.Publish{Topic: "x/y", QoS: 1, PacketID: 1})
			if rc.IsError() {
				t.Errorf("allow: publish refused %v", rc)
			}
		}
		// Failures are not cached.
		connect(t, srv.Addr, packet.V5, "f", "bob", "x")
		if n := svc.count("connect"); n != 2 {
			t.Errorf("allow=%v: failures cached (%d requests)", allow, n)
		}
	}
}

// TestTimeout: a service that does not answer within the timeout is a
// failure; the CONNECT is answered soon after the timeout, not held.
func TestTimeout(t *testing.T) {
	svc := newService(t)
	svc.delay = make(chan struct{})
	defer close(svc.delay)
	srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth", Timeout: 200 * time.Millisecond})
	t0 := time.Now()
	_, ack := connect(t, srv.Addr, packet.V5, "slow", "alice", "secret")
	d := time.Since(t0)
	if ack.ReasonCode != packet.ServerUnavailable {
		t.Errorf("timeout: CONNACK %v, want 0x88 server unavailable", ack.ReasonCode)
	}
	if ack.Props != nil && strings.Contains(ack.Props.ReasonString, "127.0.0.1") {
		t.Errorf("the reason string shows the service's address: %q", ack.Props.ReasonString)
	}
	if d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("timeout 200ms: answered after %v", d)
	}
}

func TestTimeoutAllow(t *testing.T) {
	svc := newService(t)
	svc.delay = make(chan struct{})
	defer close(svc.delay)
	srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth", Timeout: 100 * time.Millisecond, FailureAllow: true})
	_, ack := connect(t, srv.Addr, packet.V5, "slow", "alice", "wrong")
	if ack.ReasonCode != packet.Success {
		t.Errorf("timeout with allow: CONNACK %v", ack.ReasonCode)
	}
}

func TestAuthorize(t *testing.T) {
	svc := newService(t)
	srv, _ := start(t, httpauth.Config{URL: svc.srv.URL + "/auth", ACLURL: svc.srv.URL + "/acl", CacheTTL: time.Minute})
	c, ack := connect(t, srv.Addr, packet.V5, "a1", "alice", "secret")
	if ack.ReasonCode != packet.Success {
		t.Fatal(ack.ReasonCode)
	}
	sa := c.Subscribe(1, 1, "alice/sub/#", "bob/#", "public/news")
	want := []packet.ReasonCode{packet.GrantedQoS1, packet.NotAuthorized, packet.NotAuthorized}
	for i, rc := range sa.ReasonCodes {
		if rc != want[i] {
			t.Errorf("SUBACK[%d] = %v, want %v", i, rc, want[i])
		}
	}
	req, _ := svc.last()
	if req.Access != "subscribe" || req.Password != "" {
		t.Errorf("ACL request %+v", req)
	}
	if rc := c.Publish(&packet.Publish{Topic: "bob/x", QoS: 1, PacketID: 2}); rc != packet.NotAuthorized {
		t.Errorf("publish bob/x: %v, want 0x87", rc)
	}
	r, _ := connect(t, srv.Addr, packet.V5, "a2", "alice", "secret")
	if sa := r.Subscribe(1, 1, "alice/#"); sa.ReasonCodes[0] != packet.GrantedQoS1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	if rc := c.Publish(&packet.Publish{Topic: "alice/x", QoS: 1, PacketID: 3, Payload: []byte("hi")}); rc != packet.Success {
		t.Errorf("publish alice/x: %v", rc)
	}
	p := r.ExpectPublish()
	if p.Topic != "alice/x" || string(p.Payload) != "hi" {
		t.Errorf("got %s %q", p.Topic, p.Payload)
	}
	r.Ack(p)
	// A second message on the same topic: publish and receive answered
	// from the cache.
	pubs, recvs := svc.count("publish"), svc.count("receive")
	if rc := c.Publish(&packet.Publish{Topic: "alice/x", QoS: 1, PacketID: 4}); rc != packet.Success {
		t.Errorf("publish alice/x again: %v", rc)
	}
	r.Ack(r.ExpectPublish())
	if svc.count("publish") != pubs || svc.count("receive") != recvs {
		t.Errorf("cached ACL answers asked again: publish %d->%d receive %d->%d", pubs, svc.count("publish"),
			recvs, svc.count("receive"))
	}
	if recvs != 1 {
		t.Errorf("receive asked %d times, want 1", recvs)
	}
}

// TestReceiveRefused: a message the service refuses at delivery is not
// delivered; the next one is.
func TestReceiveRefused(t *testing.T) {
	svc := newService(t)
	acl, err := httpauth.New(httpauth.Config{ACLURL: svc.srv.URL + "/acl"})
	if err != nil {
		t.Fatal(err)
	}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = []any{acl} })
	sub, _ := connect(t, srv.Addr, packet.V5, "carol", "carol", "")
	if sa := sub.Subscribe(1, 0, "carol/#"); sa.ReasonCodes[0] != packet.Success {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	// Published by the server itself: no publish check, only receive.
	for _, topic := range []string{"carol/secret", "carol/ok"} {
		if err := srv.Publish(&broker.Message{Topic: topic, Payload: []byte(topic)}); err != nil {
			t.Fatal(err)
		}
	}
	if p := sub.ExpectPublish(); p.Topic != "carol/ok" {
		t.Errorf("delivered %s, want carol/ok only", p.Topic)
	}
	if n := svc.count("receive"); n != 2 {
		t.Errorf("receive asked %d times, want 2", n)
	}
}

// TestDeferWithoutURL: with no URL the backend has no opinion, and the
// broker's own rule (no anonymous, no other authenticator) refuses.
func TestDeferWithoutURL(t *testing.T) {
	svc := newService(t)
	srv, b := start(t, httpauth.Config{ACLURL: svc.srv.URL + "/acl"})
	_, ack := connect(t, srv.Addr, packet.V5, "d", "alice", "secret")
	if ack.ReasonCode != packet.NotAuthorized {
		t.Errorf("no auth URL, anonymous off: %v, want 0x87", ack.ReasonCode)
	}
	if b.Requests() != 0 {
		t.Errorf("%d requests without an auth URL", b.Requests())
	}
}

func TestConfigCheck(t *testing.T) {
	bad := []httpauth.Config{
		{URL: "ftp://x/auth"},
		{URL: "/relative"},
		{ACLURL: "http://"},
		{URL: "http://x", Timeout: time.Hour},
		{URL: "http://x", CacheSize: -1},
		{URL: "http://x", CAFile: "/nonexistent/ca.pem"},
	}
	for _, c := range bad {
		if _, err := httpauth.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	if _, err := httpauth.New(httpauth.Config{URL: "https://auth.example/x", ACLURL: "http://127.0.0.1:9/acl"}); err != nil {
		t.Errorf("good config refused: %v", err)
	}
}

// TestCacheBound: the cache keeps at most CacheSize answers, dropping the
// least recently used.
func TestCacheBound(t *testing.T) {
	svc := newService(t)
	b, err := httpauth.New(httpauth.Config{ACLURL: svc.srv.URL + "/acl", CacheTTL: time.Hour, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	c := &broker.ClientInfo{ClientID: "c", Username: "alice", HasUsername: true, Remote: "127.0.0.1:1", Listener: "l"}
	ask := func(topic string) {
		t.Helper()
		if err := b.Authorize(c, broker.AccessPublish, topic); err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
	}
	ask("alice/1")
	ask("alice/2")
	ask("alice/1") // cached; alice/2 is now the least recently used
	ask("alice/3") // drops alice/2
	if n := b.Requests(); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	ask("alice/1") // still cached
	if n := b.Requests(); n != 3 {
		t.Errorf("alice/1 dropped: %d requests", n)
	}
	ask("alice/2") // was dropped
	if n := b.Requests(); n != 4 {
		t.Errorf("alice/2 not dropped: %d requests, want 4", n)
	}
}

// TestSharedRequest: identical questions asked at once share one request.
func TestSharedRequest(t *testing.T) {
	svc := newService(t)
	svc.delay = make(chan struct{})
	b, err := httpauth.New(httpauth.Config{ACLURL: svc.srv.URL + "/acl", CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := &broker.ClientInfo{ClientID: "c", Username: "alice", HasUsername: true, Remote: "127.0.0.1:1", Listener: "l"}
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() { errs <- b.Authorize(c, broker.AccessReceive, "alice/x") }()
	}
	brokertest.Eventually(t, 5*time.Second, func() bool { return svc.count("receive") == 1 }, "no request")
	close(svc.delay)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := b.Requests(); got > n/2 {
		t.Errorf("%d callers sent %d requests", n, got)
	}
}
