package client

import (
	"errors"
	"testing"

	"github.com/mqttd/mqttd/auth/scram"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
)

// The MQTT 5 AUTH exchange with mqttd's SCRAM-SHA-256, at CONNECT and when
// re-authenticating; a wrong password is refused.
func TestSCRAMAgainstMqttd(t *testing.T) {
	creds, err := scram.NewCredentials("s3cret", nil, scram.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	srv := startBroker(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.EnhancedAuth = map[string]broker.EnhancedAuthenticator{
			scram.Method: broker.SCRAMSHA256(scram.FromMap(map[string]scram.Credentials{"alice": creds})),
		}
	})
	c := dial(t, srv.URL(), Options{Version: packet.V5, Auth: NewSCRAMSHA256("alice", "s3cret")})
	if err := c.Reauthenticate(testCtx(t)); err != nil {
		t.Fatalf("Reauthenticate: %v", err)
	}
	if err := c.Publish(testCtx(t), "after/reauth", []byte("x"), PublishOptions{QoS: 1}); err != nil {
		t.Fatalf("publish after re-authentication: %v", err)
	}

	_, err = Dial(testCtx(t), srv.URL(), Options{Version: packet.V5, Auth: NewSCRAMSHA256("alice", "wrong")})
	var ce *ConnectError
	if !errors.As(err, &ce) || (ce.Connack.ReasonCode != packet.BadUserNameOrPassword && ce.Connack.ReasonCode != packet.NotAuthorized) {
		t.Fatalf("wrong password: %v", err)
	}
}

// A server that does not prove it knows the keys is not trusted.
func TestSCRAMServerSignatureChecked(t *testing.T) {
	fs := startFake(t)
	done := make(chan error, 1)
	go func() {
		c, err := Dial(testCtx(t), fs.url(), Options{Version: packet.V5, Auth: NewSCRAMSHA256("alice", "pw")})
		if err == nil {
			_ = c.Close()
		}
		done <- err
	}()
	rc, cp := fs.accept(packet.V5)
	if cp.Props == nil || cp.Props.AuthMethod != scram.Method || len(cp.Props.AuthData) == 0 {
		t.Fatalf("CONNECT without SCRAM client-first: %+v", cp.Props)
	}
	// A server that knows nothing about alice answers with its own keys.
	creds, err := scram.NewCredentials("other", nil, scram.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	conv, first, err := scram.NewServer(scram.FromMap(map[string]scram.Credentials{"alice": creds})).Start(cp.Props.AuthData)
	if err != nil {
		t.Fatal(err)
	}
	rc.send(&packet.Auth{ReasonCode: packet.ContinueAuthentication, Props: &packet.Properties{AuthMethod: scram.Method, AuthData: first}})
	a := recvAs[*packet.Auth](rc)
	if a.ReasonCode != packet.ContinueAuthentication || a.Props == nil || a.Props.AuthMethod != scram.Method {
		t.Fatalf("client AUTH %+v", a)
	}
	if _, err := conv.Finish(a.Props.AuthData); err == nil {
		t.Fatal("a proof for the wrong password was accepted")
	}
	// Pretend success with a made-up signature.
	rc.send(&packet.Connack{Props: &packet.Properties{AuthMethod: scram.Method, AuthData: []byte("v=AAAA")}})
	if err := waitErr(t, done); !errors.Is(err, ErrAuth) {
		t.Fatalf("Dial = %v, want ErrAuth", err)
	}
}
