package jwtauth_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth/jwtauth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

func startJWT(t *testing.T, cfg jwtauth.Config, anonymous bool) (*brokertest.Server, *jwtauth.Auth) {
	t.Helper()
	a, err := jwtauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = anonymous
		o.Hooks = []any{a}
		o.AuthFailureDelay = -1
	})
	return srv, a
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

func secretConfig(t *testing.T) jwtauth.Config {
	return jwtauth.Config{HS256SecretFiles: []string{writeFile(t, "secret", secret)}}
}

// TestConnectCodes: the CONNACK reason codes of each refusal over a real
// socket, for 5.0 and 3.1.1 clients.
func TestConnectCodes(t *testing.T) {
	testKeys(t)
	cfg := secretConfig(t)
	cfg.RS256KeyFiles = []string{writeFile(t, "rsa.pem", pemPublic(t, &rsaKey.PublicKey))}
	cfg.ES256KeyFiles = []string{writeFile(t, "ec.pem", pemPublic(t, &ecKey.PublicKey))}
	cfg.Audience, cfg.Issuer = "mqttd", "https://issuer.example"
	cfg.UsernameClaim = "sub"
	srv, _ := startJWT(t, cfg, false)
	good := valid(time.Hour, map[string]any{"sub": "alice", "aud": []string{"other", "mqttd"}, "iss": "https://issuer.example"})
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for k, v := range good {
			c[k] = v
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	tests := []struct {
		name  string
		user  string
		token string
		want  packet.ReasonCode
	}{
		{"HS256", "alice", hs(t, good), packet.Success},
		{"RS256", "alice", sign(t, map[string]any{"alg": "RS256"}, good, rsaKey), packet.Success},
		{"ES256", "alice", sign(t, map[string]any{"alg": "ES256"}, good, ecKey), packet.Success},
		{"bad signature", "alice", sign(t, map[string]any{"alg": "HS256"}, good, otherSecret), packet.BadUserNameOrPassword},
		{"RS256 bad signature", "alice", sign(t, map[string]any{"alg": "RS256"}, good, rsaKey2), packet.BadUserNameOrPassword},
		{"ES256 bad signature", "alice", sign(t, map[string]any{"alg": "ES256"}, good, ecKey2), packet.BadUserNameOrPassword},
		{"alg none", "alice", sign(t, map[string]any{"alg": "none"}, good, nil), packet.BadUserNameOrPassword},
		{"confusion", "alice", sign(t, map[string]any{"alg": "HS256"}, good, pemPublic(t, &rsaKey.PublicKey)), packet.BadUserNameOrPassword},
		{"expired", "alice", hs(t, with("exp", time.Now().Add(-time.Minute).Unix())), packet.BadUserNameOrPassword},
		{"no exp", "alice", hs(t, with("exp", nil)), packet.NotAuthorized},
		{"no sub", "alice", hs(t, with("sub", nil)), packet.NotAuthorized},
		{"other user name", "bob", hs(t, good), packet.NotAuthorized},
		{"wrong aud", "alice", hs(t, with("aud", "other")), packet.NotAuthorized},
		{"wrong iss", "alice", hs(t, with("iss", "https://evil.example")), packet.NotAuthorized},
		{"not a JWT (deferred, anonymous off)", "alice", "hunter2", packet.NotAuthorized},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []packet.Version{packet.V5, packet.V311} {
				c, ack := connect(t, srv.Addr, v, "c"+string(rune('a'+i)), tc.user, tc.token)
				if ack.ReasonCode != tc.want {
					t.Errorf("%v: CONNACK %v, want %v", v, ack.ReasonCode, tc.want)
				}
				if v == packet.V5 && tc.name == "expired" && (ack.Props == nil || !strings.Contains(ack.Props.ReasonString, "token expired")) {
					t.Errorf("expired: CONNACK reason string %+v, want it to say the token expired", ack.Props)
				}
				c.NC.Close()
			}
		})
	}
}

// TestDisconnectAtExp: a client whose token expires while connected is
// disconnected with 0x87 not authorized.
func TestDisconnectAtExp(t *testing.T) {
	srv, a := startJWT(t, secretConfig(t), false)
	c, ack := connect(t, srv.Addr, packet.V5, "short", "u", hs(t, valid(700*time.Millisecond, nil)))
	if ack.ReasonCode != packet.Success {
		t.Fatal(ack.ReasonCode)
	}
	t0 := time.Now()
	c.Ping()
	got := c.ExpectClosed()
	if len(got) != 1 {
		t.Fatalf("got %v, want one DISCONNECT", got)
	}
	d, ok := got[0].(*packet.Disconnect)
	if !ok || d.ReasonCode != packet.NotAuthorized {
		t.Fatalf("got %s, want DISCONNECT 0x87", brokertest.Describe(got[0]))
	}
	if e := time.Since(t0); e > 5*time.Second {
		t.Errorf("disconnected %v after connecting, token lived 700ms", e)
	}
	brokertest.Eventually(t, 5*time.Second, func() bool { return a.Tracked() == 0 }, "grant kept after expiry")
}

// TestExpiryCancelled: a client that leaves before its token expires is
// forgotten, and a client that then connects with the same client id
// without a token is not disconnected at the old expiry.
func TestExpiryCancelled(t *testing.T) {
	srv, a := startJWT(t, secretConfig(t), true)
	c, ack := connect(t, srv.Addr, packet.V5, "same", "u", hs(t, valid(500*time.Millisecond, nil)))
	if ack.ReasonCode != packet.Success {
		t.Fatal(ack.ReasonCode)
	}
	if a.Tracked() != 1 {
		t.Errorf("Tracked() = %d after connect", a.Tracked())
	}
	c.Send(&packet.Disconnect{})
	c.ExpectClosed()
	brokertest.Eventually(t, 5*time.Second, func() bool { return a.Tracked() == 0 }, "grant kept after DISCONNECT")
	c2, ack := connect(t, srv.Addr, packet.V5, "same", "", "")
	if ack.ReasonCode != packet.Success {
		t.Fatal(ack.ReasonCode)
	}
	c2.ExpectNothing(1200 * time.Millisecond) // past the old token's expiry
	c2.Ping()
}

// TestTakeoverByPassword: a token client taken over by a client without a
// token: the old token's expiry does not disconnect the new client.
func TestTakeoverByPassword(t *testing.T) {
	srv, a := startJWT(t, secretConfig(t), true)
	c, _ := connect(t, srv.Addr, packet.V5, "tk", "u", hs(t, valid(500*time.Millisecond, nil)))
	c2, ack := connect(t, srv.Addr, packet.V5, "tk", "", "")
	if ack.ReasonCode != packet.Success {
		t.Fatal(ack.ReasonCode)
	}
	c.ExpectClosed() // taken over
	brokertest.Eventually(t, 5*time.Second, func() bool { return a.Tracked() == 0 }, "grant kept after takeover")
	c2.ExpectNothing(1200 * time.Millisecond)
	c2.Ping()
}

// TestACLFromClaims: publish and subscribe lists from claims, with %c and
// %u, decide publish, subscribe and receive; "#" covers no '$' topic and
// only a '$' entry grants one [MQTT-4.7.2-1].
func TestACLFromClaims(t *testing.T) {
	cfg := secretConfig(t)
	cfg.UsernameClaim, cfg.PublishClaim, cfg.SubscribeClaim = "sub", "pub", "subs"
	srv, _ := startJWT(t, cfg, true)
	tok := hs(t, valid(time.Hour, map[string]any{"sub": "alice",
		"pub":  []string{"users/%u/#", "clients/%c"},
		"subs": []string{"users/%u/#", "news/+", "$SYS/broker/uptime"}}))
	c, ack := connect(t, srv.Addr, packet.V5, "dev1", "", tok)
	if ack.ReasonCode != packet.Success {
		t.Fatal(ack.ReasonCode)
	}
	sa := c.Subscribe(1, 1, "users/alice/in", "users/alice/#", "news/today", "news/#", "users/bob/in", "#", "$SYS/broker/uptime", "+/alice/x")
	want := []packet.ReasonCode{packet.GrantedQoS1, packet.GrantedQoS1, packet.GrantedQoS1, packet.NotAuthorized,
		packet.NotAuthorized, packet.NotAuthorized, packet.GrantedQoS1, packet.NotAuthorized}
	for i, rc := range sa.ReasonCodes {
		if rc != want[i] {
			t.Errorf("SUBACK[%d] = %v, want %v", i, rc, want[i])
		}
	}
	for _, tc := range []struct {
		topic string
		want  packet.ReasonCode
	}{
		{"users/alice/out", packet.Success}, {"clients/dev9", packet.Success},
		{"clients/dev1", packet.NotAuthorized}, {"users/bob/x", packet.NotAuthorized}, {"news/today", packet.NotAuthorized},
	} {
		pub, ack := connect(t, srv.Addr, packet.V5, "dev9", "", tok) // no user name: the claim's
		if ack.ReasonCode != packet.Success {
			t.Fatal(ack.ReasonCode)
		}
		if rc := pub.Publish(&packet.Publish{Topic: tc.topic, QoS: 1, PacketID: 7}); rc.IsError() != tc.want.IsError() {
			t.Errorf("publish %s: %v, want %v", tc.topic, rc, tc.want)
		}
		pub.NC.Close()
	}
	// Receive: c's subscription users/alice/# gets users/alice/out (sent
	// above, after the SUBSCRIBE); the server publishes news/today, which
	// c may receive, and nothing else reached it.
	p := c.ExpectPublish()
	if p.Topic != "users/alice/out" {
		t.Errorf("received %s", p.Topic)
	}
	c.Ack(p)
	// A client without a token (anonymous) is left to the next hook (none:
	// allowed).
	anon, _ := connect(t, srv.Addr, packet.V5, "anon", "", "")
	if rc := anon.Publish(&packet.Publish{Topic: "users/bob/x", QoS: 1, PacketID: 1}); rc.IsError() {
		t.Errorf("anonymous publish: %v (the JWT hook should defer)", rc)
	}
}

// TestReceiveFromClaims: a session resumed with a token that grants less
// than the one its subscriptions were made with receives only what the new
// token allows.
func TestReceiveFromClaims(t *testing.T) {
	cfg := secretConfig(t)
	cfg.SubscribeClaim = "subs"
	srv, _ := startJWT(t, cfg, true)
	dial := func(subs ...string) *brokertest.Conn {
		tok := hs(t, valid(time.Hour, map[string]any{"subs": subs}))
		cp := &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "r", CleanStart: false,
			KeepAlive: 30, Username: "u", HasUsername: true, Password: []byte(tok), HasPassword: true}
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		c.Connect(cp)
		return c
	}
	c := dial("a/#")
	if sa := c.Subscribe(1, 1, "a/#"); sa.ReasonCodes[0] != packet.GrantedQoS1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	c.Send(&packet.Disconnect{})
	c.ExpectClosed()
	c = dial("a/x") // the session and its a/# subscription resume
	for _, tp := range []string{"a/y", "a/x"} {
		if err := srv.Publish(&broker.Message{Topic: tp, Payload: []byte(tp), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if p := c.ExpectPublish(); p.Topic != "a/x" {
		t.Errorf("got %s, want a/x only", p.Topic)
	}
}

// TestReload: a JWKS file re-read by Reload: a token signed with a key added
// to the file is refused before and accepted after.
func TestReload(t *testing.T) {
	testKeys(t)
	path := writeFile(t, "jwks.json", jwks(t, &rsaKey.PublicKey))
	cfg := jwtauth.Config{JWKSFile: path}
	srv, a := startJWT(t, cfg, false)
	tok := sign(t, map[string]any{"alg": "ES256", "kid": "k1"}, valid(time.Hour, nil), ecKey)
	if _, ack := connect(t, srv.Addr, packet.V5, "e1", "u", tok); ack.ReasonCode != packet.BadUserNameOrPassword {
		t.Fatalf("before reload: %v", ack.ReasonCode)
	}
	if err := os.WriteFile(path, jwks(t, &rsaKey.PublicKey, &ecKey.PublicKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if _, ack := connect(t, srv.Addr, packet.V5, "e2", "u", tok); ack.ReasonCode != packet.Success {
		t.Fatalf("after reload: %v", ack.ReasonCode)
	}
	// A broken file keeps the keys in use.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(cfg); err == nil {
		t.Fatal("broken JWKS reloaded")
	}
	if _, ack := connect(t, srv.Addr, packet.V5, "e3", "u", tok); ack.ReasonCode != packet.Success {
		t.Fatalf("after a failed reload: %v", ack.ReasonCode)
	}
}

// TestDollarTopics: a "#" claim grants no '$' topic [MQTT-4.7.2-1].
func TestDollarTopics(t *testing.T) {
	cfg := secretConfig(t)
	cfg.SubscribeClaim = "subs"
	srv, _ := startJWT(t, cfg, true)
	c, ack := connect(t, srv.Addr, packet.V5, "d", "", hs(t, valid(time.Hour, map[string]any{"subs": "#"})))
	if ack.ReasonCode != packet.Success {
		t.Fatal(ack.ReasonCode)
	}
	sa := c.Subscribe(1, 0, "$SYS/broker/uptime", "$share/g/$SYS/#", "a/b", "+/b")
	want := []packet.ReasonCode{packet.NotAuthorized, packet.NotAuthorized, packet.Success, packet.Success}
	for i, rc := range sa.ReasonCodes {
		if rc != want[i] {
			t.Errorf("SUBACK[%d] = %v, want %v", i, rc, want[i])
		}
	}
}
