package broker_test

// MQTT 5 enhanced authentication (section 4.12) with the built-in
// SCRAM-SHA-256 method, driven by a test client over a raw socket.

import (
	"testing"

	"github.com/mqttd/mqttd/auth/scram"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

func scramServer(t *testing.T) *brokertest.Server {
	t.Helper()
	creds, err := scram.NewCredentials("pencil", nil, scram.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	return brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.EnhancedAuth = map[string]broker.EnhancedAuthenticator{
			scram.Method: broker.SCRAMSHA256(scram.FromMap(map[string]scram.Credentials{"user": creds})),
		}
	})
}

func authPkt(rc packet.ReasonCode, data []byte) *packet.Auth {
	return &packet.Auth{ReasonCode: rc, Props: &packet.Properties{AuthMethod: scram.Method, AuthData: data}}
}

// expectAuth reads AUTH with reason code rc and SCRAM-SHA-256 as method
// [MQTT-4.12.0-5] and returns its data.
func expectAuth(t *testing.T, c *brokertest.Conn, rc packet.ReasonCode) []byte {
	t.Helper()
	got := c.Recv()
	a, ok := got.(*packet.Auth)
	if !ok || a.ReasonCode != rc || a.Props == nil || a.Props.AuthMethod != scram.Method {
		t.Fatalf("got %s, want AUTH 0x%02X with method %s", brokertest.Describe(got), byte(rc), scram.Method)
	}
	return a.Props.AuthData
}

// scramConnect runs the SCRAM exchange of a CONNECT as user/password up to
// the client-final message, which it sends; it returns the connection and
// the client for the server's final answer.
func scramConnect(t *testing.T, srv *brokertest.Server, id, user, password string) (*brokertest.Conn, *scram.Client) {
	t.Helper()
	c := brokertest.Dial(t, srv.Addr, packet.V5)
	sc := scram.NewClient(user, password)
	c.Send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: id, CleanStart: true,
		Props: &packet.Properties{AuthMethod: scram.Method, AuthData: sc.First()}})
	serverFirst := expectAuth(t, c, packet.ContinueAuthentication) // [MQTT-4.12.0-2]
	final, err := sc.Final(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	c.Send(authPkt(packet.ContinueAuthentication, final)) // [MQTT-4.12.0-3]
	return c, sc
}

func TestV5Auth_SCRAM_MQTT_4_12_0_5(t *testing.T) {
	srv := scramServer(t)
	c, sc := scramConnect(t, srv, "scram", "user", "pencil")
	ack, ok := c.Recv().(*packet.Connack)
	if !ok || ack.ReasonCode != packet.Success || ack.Props == nil || ack.Props.AuthMethod != scram.Method {
		t.Fatalf("CONNACK %s, want success with the method [MQTT-4.12.0-5]", brokertest.Describe(ack))
	}
	if err := sc.Verify(ack.Props.AuthData); err != nil {
		t.Fatalf("server signature: %v", err)
	}
	c.Ping()

	// Re-authentication [MQTT-4.12.1-1]: AUTH 0x19 ... AUTH 0x00, while
	// the connection goes on.
	re := scram.NewClient("user", "pencil")
	c.Send(authPkt(packet.ReAuthenticate, re.First()))
	final, err := re.Final(expectAuth(t, c, packet.ContinueAuthentication))
	if err != nil {
		t.Fatal(err)
	}
	c.Ping()
	c.Send(authPkt(packet.ContinueAuthentication, final))
	if err := re.Verify(expectAuth(t, c, packet.Success)); err != nil {
		t.Fatalf("re-authentication server signature: %v", err)
	}
	c.Ping()

	t.Run("[MQTT-4.12.1-2] failed re-authentication disconnects", func(t *testing.T) {
		c, _ := scramConnect(t, srv, "scram2", "user", "pencil")
		c.Recv()
		bad := scram.NewClient("user", "wrong")
		c.Send(authPkt(packet.ReAuthenticate, bad.First()))
		final, err := bad.Final(expectAuth(t, c, packet.ContinueAuthentication))
		if err != nil {
			t.Fatal(err)
		}
		c.Send(authPkt(packet.ContinueAuthentication, final))
		expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.NotAuthorized})
	})
	t.Run("[MQTT-4.12.1-1] re-authentication with another method", func(t *testing.T) {
		c, _ := scramConnect(t, srv, "scram3", "user", "pencil")
		c.Recv()
		c.Send(&packet.Auth{ReasonCode: packet.ReAuthenticate, Props: &packet.Properties{AuthMethod: "PLAIN"}})
		expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.ProtocolError})
	})
}

func TestV5Auth_Refusals_MQTT_4_12_0_1(t *testing.T) {
	srv := scramServer(t)
	t.Run("[MQTT-4.12.0-1] unknown method: 0x8C", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V5)
		c.Send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: "m", CleanStart: true,
			Props: &packet.Properties{AuthMethod: "KERBEROS"}})
		expectPacketReason(t, c, &packet.Connack{ReasonCode: packet.BadAuthenticationMethod})
		c.ExpectClosedWith()
	})
	for _, tc := range []struct{ name, user, pass string }{
		{"[MQTT-4.12.0-4] wrong password: 0x86", "user", "wrong"},
		{"[MQTT-4.12.0-4] unknown user: 0x86", "nobody", "pencil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := scramConnect(t, srv, "bad", tc.user, tc.pass)
			expectPacketReason(t, c, &packet.Connack{ReasonCode: packet.BadUserNameOrPassword})
			c.ExpectClosedWith()
		})
	}
	t.Run("[MQTT-3.1.2-30] only AUTH before CONNACK", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V5)
		sc := scram.NewClient("user", "pencil")
		c.Send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: "early", CleanStart: true,
			Props: &packet.Properties{AuthMethod: scram.Method, AuthData: sc.First()}})
		expectAuth(t, c, packet.ContinueAuthentication)
		c.Send(pub("a", "x", 0, 0))
		expectPacketReason(t, c, &packet.Connack{ReasonCode: packet.ProtocolError})
		c.ExpectClosedWith()
	})
	t.Run("[MQTT-4.12.0-6] no method: no AUTH, none in CONNACK", func(t *testing.T) {
		srv := brokertest.Start(t)
		c := brokertest.Dial(t, srv.Addr, packet.V5)
		c.Send(connectPkt(packet.V5, "plain", false))
		c.ExpectPacket(okConnack(packet.V5, false))
		c.Send(authPkt(packet.ReAuthenticate, nil)) // [MQTT-4.12.0-7]
		expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.ProtocolError})
	})
}
