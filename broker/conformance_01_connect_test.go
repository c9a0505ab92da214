package broker_test

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// An accepted CONNECT is answered by CONNACK first [MQTT-3.2.0-1] with return
// code 0 [MQTT-3.1.4-4] (5.0 [MQTT-3.1.4-5]) and session present 0 for a clean
// session [MQTT-3.2.2-1] (5.0 [MQTT-3.2.2-2]); byte for byte per version.
func TestConnect_AcceptedConnackBytes_MQTT_3_2_0_1(t *testing.T) {
	srv := brokertest.Start(t)
	cases := []struct {
		name string
		in   []byte
		out  []byte
	}{
		{"v3.1", rawConnect("MQIsdp", 3, 0x02, 60, str("c31")), []byte{0x20, 0x02, 0x00, 0x00}},
		{"v3.1.1", rawConnect("MQTT", 4, 0x02, 60, str("c311")), []byte{0x20, 0x02, 0x00, 0x00}},
		// 5.0: flags 0, reason 0, properties: Receive Maximum 20
		// (max_inflight_messages, as Mosquitto), Topic Alias Maximum 10,
		// Maximum Packet Size 16 MiB.
		{"v5.0", rawConnect("MQTT", 5, 0x02, 60, str("c5")), []byte{0x20, 0x0E, 0x00, 0x00, 0x0B, 0x21, 0x00, 0x14,
			0x22, 0x00, 0x0A, 0x27, 0x01, 0x00, 0x00, 0x00}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := brokertest.Dial(t, srv.Addr, packet.V311)
			c.SendRaw(tc.in)
			c.ExpectBytes(tc.out)
			c.SendRaw([]byte{0xC0, 0x00}) // PINGREQ: the connection is open
			c.ExpectBytes([]byte{0xD0, 0x00})
		})
	}
}

// [MQTT-3.1.2-2]: a protocol level the server does not support gets CONNACK
// 0x01 (unacceptable protocol version) and the connection is closed
// [MQTT-3.2.2-5]; session present is 0 [MQTT-3.2.2-4].
func TestConnect_UnacceptableProtocolLevel_MQTT_3_1_2_2(t *testing.T) {
	srv := brokertest.Start(t)
	cases := []struct {
		name  string
		proto string
		level byte
	}{
		{"MQTT level 6", "MQTT", 6},
		{"MQTT level 3", "MQTT", 3},
		{"MQTT level 0", "MQTT", 0},
		{"MQIsdp level 4", "MQIsdp", 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := brokertest.Dial(t, srv.Addr, packet.V311)
			c.SendRaw(rawConnect(tc.proto, tc.level, 0x02, 60, str("badlevel")))
			c.ExpectBytes([]byte{0x20, 0x02, 0x00, 0x01})
			c.ExpectClosedWith()
		})
	}
	if n := srv.Stats().ClientsConnected; n != 0 {
		t.Fatalf("ClientsConnected = %d after refused connects", n)
	}
}

// [MQTT-3.1.2-1], [MQTT-3.1.4-1]: a CONNECT that is not MQTT at all (wrong
// protocol name) or breaks its format closes the connection without CONNACK.
// [MQTT-3.1.2-3]: the reserved connect flag must be 0. Will flags without a
// will [MQTT-3.1.2-13], [MQTT-3.1.2-15] (5.0 [MQTT-3.1.2-11], [MQTT-3.1.2-13]),
// will QoS 3 [MQTT-3.1.2-14] (5.0 [MQTT-3.1.2-12]), a password without a user
// name in 3.x [MQTT-3.1.2-22], invalid UTF-8 in the client id [MQTT-3.1.3-4]
// and trailing garbage are malformed too.
func TestConnect_MalformedClosesWithoutConnack_MQTT_3_1_4_1(t *testing.T) {
	srv := brokertest.Start(t)
	type tc struct {
		name string
		in   []byte
	}
	for _, level := range []byte{3, 4, 5} {
		name := "MQTT"
		if level == 3 {
			name = "MQIsdp"
		}
		cases := []tc{
			{"[MQTT-3.1.2-3] reserved flag", rawConnect(name, level, 0x03, 60, str("r"))},
			{"[MQTT-3.1.2-13] will QoS without will", rawConnect(name, level, 0x0A, 60, str("r"))},
			{"[MQTT-3.1.2-15] will retain without will", rawConnect(name, level, 0x22, 60, str("r"))},
			{"[MQTT-3.1.2-14] will QoS 3", rawConnect(name, level, 0x1E, 60, str("r"), willPayload(level, "w", "x"))},
			{"[MQTT-3.1.3-4] client id not UTF-8", rawConnect(name, level, 0x02, 60, []byte{0x00, 0x02, 0xC3, 0x28})},
			{"[MQTT-3.1.3-3] client id missing", rawConnect(name, level, 0x02, 60)},
			{"trailing bytes", rawConnect(name, level, 0x02, 60, str("r"), []byte{0x01})},
			{"[MQTT-3.1.2-19] user name flag without user name", rawConnect(name, level, 0x82, 60, str("r"))},
		}
		if level != 5 {
			cases = append(cases, tc{"[MQTT-3.1.2-22] password without user name", rawConnect(name, level, 0x42, 60, str("r"), str("pw"))})
		}
		t.Run("level"+string('0'+level), func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := brokertest.Dial(t, srv.Addr, packet.V311)
					c.SendRaw(tc.in)
					c.ExpectClosedWith()
				})
			}
			t.Run("[MQTT-3.1.2-1] protocol name MQTX", func(t *testing.T) {
				c := brokertest.Dial(t, srv.Addr, packet.V311)
				c.SendRaw(rawConnect("MQTX", level, 0x02, 60, str("r")))
				c.ExpectClosedWith()
			})
		})
	}
	c := client(t, srv, packet.V311, "survivor") // the server keeps serving
	c.Ping()
}

// willPayload is a will topic and message (preceded by empty will properties
// in 5.0).
func willPayload(level byte, topicName, msg string) []byte {
	var b []byte
	if level == 5 {
		b = append(b, 0)
	}
	return append(append(b, str(topicName)...), str(msg)...)
}

// [MQTT-3.1.0-1]: the first packet from the client must be CONNECT; anything
// else closes the connection, with nothing sent back.
func TestConnect_FirstPacketMustBeConnect_MQTT_3_1_0_1(t *testing.T) {
	srv := brokertest.Start(t)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"PINGREQ", []byte{0xC0, 0x00}},
		{"PUBLISH", frame(0x30, append(str("a/b"), 'x'))},
		{"SUBSCRIBE", frame(0x82, append(append([]byte{0, 1}, str("#")...), 0))},
		{"DISCONNECT", []byte{0xE0, 0x00}},
		{"CONNACK", []byte{0x20, 0x02, 0x00, 0x00}},
		{"reserved type 0", []byte{0x00, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := brokertest.Dial(t, srv.Addr, packet.V311)
			c.SendRaw(tc.in)
			c.ExpectClosedWith()
		})
	}
}

// [MQTT-3.1.0-2]: a second CONNECT is a protocol violation that closes the
// connection (5.0: DISCONNECT 0x82 protocol error first); the will of the
// connection is published, as for any close but DISCONNECT.
func TestConnect_SecondConnectCloses_MQTT_3_1_0_2(t *testing.T) {
	forVersions(t, allVersions, func(t *testing.T, v packet.Version) {
		srv := brokertest.Start(t)
		watcher := client(t, srv, packet.V311, "watcher")
		subscribe(t, watcher, 1, 0, "will/second")
		c := brokertest.Dial(t, srv.Addr, v)
		cp := connectPkt(v, "twice", false)
		cp.Will = &packet.Will{Topic: "will/second", Payload: []byte("gone")}
		c.Send(cp)
		c.ExpectPacket(okConnack(v, false))
		c.Send(connectPkt(v, "twice", false))
		if v == packet.V5 {
			expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.ProtocolError})
		} else {
			c.ExpectClosedWith()
		}
		watcher.ExpectPacket(pub("will/second", "gone", 0, 0))
	})
}

// Client identifiers: an empty id with clean session gets a unique assigned
// id [MQTT-3.1.3-6] (5.0: returned in CONNACK [MQTT-3.1.3-7]); 3.1.1 refuses
// an empty id with clean session 0 with 0x02 and closes [MQTT-3.1.3-8]; 5.0
// assigns one whatever Clean Start says; 3.1 always needs an id. Ids longer
// than 23 characters are accepted up to MaxClientIDLen [MQTT-3.1.3-5], longer
// ones refused with 0x02 (5.0 0x85) [MQTT-3.1.3-9] (5.0 [MQTT-3.1.3-8]).
func TestConnect_ClientIdentifier_MQTT_3_1_3_6(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxClientIDLen = 40 })
	refused := func(t *testing.T, v packet.Version, cp *packet.Connect) {
		t.Helper()
		c := brokertest.Dial(t, srv.Addr, v)
		c.Send(cp)
		c.ExpectPacket(&packet.Connack{ReasonCode: packet.ClientIdentifierNotValid}) // session present 0 [MQTT-3.2.2-4]
		c.ExpectClosedWith()                                                         // [MQTT-3.2.2-5]
	}
	t.Run("[MQTT-3.1.3-8] v3.1.1 empty id with clean session 0 refused 0x02", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		c.SendRaw(rawConnect("MQTT", 4, 0x00, 60, str("")))
		c.ExpectBytes([]byte{0x20, 0x02, 0x00, 0x02})
		c.ExpectClosedWith()
	})
	t.Run("v3.1 empty id refused 0x02", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V31)
		c.SendRaw(rawConnect("MQIsdp", 3, 0x02, 60, str("")))
		c.ExpectBytes([]byte{0x20, 0x02, 0x00, 0x02})
		c.ExpectClosedWith()
	})
	t.Run("[MQTT-3.1.3-6] v3.1.1 empty id with clean session assigned", func(t *testing.T) {
		a := client(t, srv, packet.V311, "")
		b := client(t, srv, packet.V311, "")
		// Both stay connected: their assigned ids differ (no takeover).
		a.Ping()
		b.Ping()
		a.Ping()
	})
	t.Run("[MQTT-3.1.3-7] v5 empty id assigned and returned in CONNACK", func(t *testing.T) {
		ids := map[string]bool{}
		for _, clean := range []bool{true, false} {
			c := brokertest.Dial(t, srv.Addr, packet.V5)
			ack := c.Connect(&packet.Connect{Version: packet.V5, CleanStart: clean})
			id := ""
			if ack.Props != nil {
				id = ack.Props.AssignedClientID
			}
			if id == "" || ids[id] {
				t.Fatalf("assigned client id %q (seen %v)", id, ids)
			}
			ids[id] = true
			want := okConnack(packet.V5, false)
			want.Props.AssignedClientID = id
			if !reflect.DeepEqual(ack, want) {
				t.Fatalf("CONNACK %s, want %s", brokertest.Describe(ack), brokertest.Describe(want))
			}
			c.Ping()
		}
	})
	forVersions(t, allVersions, func(t *testing.T, v packet.Version) {
		t.Run("[MQTT-3.1.3-5] 24 to MaxClientIDLen characters accepted", func(t *testing.T) {
			for _, n := range []int{23, 24, 40} {
				c := client(t, srv, v, strings.Repeat("x", n-2)+v.String()[:2])
				c.Ping()
			}
		})
		t.Run("[MQTT-3.1.3-9] longer than MaxClientIDLen refused", func(t *testing.T) {
			refused(t, v, connectPkt(v, strings.Repeat("y", 41), false))
		})
	})
}

// Authentication: bad credentials get CONNACK 0x04 (5.0 0x86) and anonymous
// clients when AllowAnonymous is false 0x05 (5.0 0x87); the connection is
// then closed [MQTT-3.2.2-5] (5.0 [MQTT-3.1.4-2], [MQTT-3.2.2-7]) and session
// present is 0 [MQTT-3.2.2-4] (5.0 [MQTT-3.2.2-6]).
func TestConnect_Authentication_MQTT_3_2_2_5(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []broker.ClientInfo
	)
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Authenticate = func(c *broker.ClientInfo) error {
			mu.Lock()
			seen = append(seen, *c)
			mu.Unlock()
			switch {
			case c.Username == "banned":
				return packet.NotAuthorized
			case c.Username != "alice" || string(c.Password) != "secret":
				return errors.New("wrong password")
			}
			return nil
		}
	})
	cases := []struct {
		name     string
		user     string
		pass     string
		hasUser  bool
		wantCode packet.ReasonCode
		v3Byte   byte
	}{
		{"good credentials", "alice", "secret", true, packet.Success, 0x00},
		{"bad password 0x04", "alice", "wrong", true, packet.BadUserNameOrPassword, 0x04},
		{"unknown user 0x04", "mallory", "secret", true, packet.BadUserNameOrPassword, 0x04},
		{"hook says not authorized 0x05", "banned", "secret", true, packet.NotAuthorized, 0x05},
		{"anonymous 0x05", "", "", false, packet.NotAuthorized, 0x05},
	}
	forVersions(t, allVersions, func(t *testing.T, v packet.Version) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := brokertest.Dial(t, srv.Addr, v)
				cp := connectPkt(v, "auth-"+tc.user, false)
				cp.Username, cp.HasUsername = tc.user, tc.hasUser
				if tc.pass != "" {
					cp.Password, cp.HasPassword = []byte(tc.pass), true
				}
				c.Send(cp)
				if tc.wantCode == packet.Success {
					c.ExpectPacket(okConnack(v, false))
					c.Ping()
					return
				}
				if v == packet.V5 {
					expectPacketReason(t, c, &packet.Connack{ReasonCode: tc.wantCode})
				} else {
					c.ExpectBytes([]byte{0x20, 0x02, 0x00, tc.v3Byte})
				}
				c.ExpectClosedWith()
			})
		}
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[0].Username != "alice" || string(seen[0].Password) != "secret" || !seen[0].HasPassword {
		t.Fatalf("Authenticate saw %+v", seen)
	}
	if st := srv.Stats(); st.AuthFailures != 12 {
		t.Fatalf("AuthFailures = %d, want 12", st.AuthFailures)
	}
}

// [MQTT-3.1.4-5] (5.0 [MQTT-3.1.4-6]): after refusing a CONNECT the server
// processes nothing the client sent after it.
func TestConnect_NothingProcessedAfterRefusal_MQTT_3_1_4_5(t *testing.T) {
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		srv := brokertest.Start(t, func(o *broker.Options) { o.AllowAnonymous = false })
		c := brokertest.Dial(t, srv.Addr, v)
		cp, err := connectPkt(v, "refused", false).Encode(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		p := pub("after/refusal", "x", 0, 0)
		p.Retain = true
		pb, err := p.Encode(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		c.SendRaw(append(cp, pb...))
		c.ExpectClosed()
		if n := srv.Stats().Retained; n != 0 {
			t.Fatalf("retained messages = %d: PUBLISH after a refused CONNECT was processed", n)
		}
	})
}

// 5.0 [MQTT-3.2.2-21]: a keep-alive above the server's maximum is answered
// with Server Keep Alive; 3.x clients, who cannot be told, are refused (as
// Mosquitto's max_keepalive does).
func TestConnect_ServerKeepAlive_MQTT_3_2_2_21(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxKeepAlive = 30 })
	t.Run("v5.0", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V5)
		cp := connectPkt(packet.V5, "ka5", false)
		cp.KeepAlive = 120
		c.Send(cp)
		want := okConnack(packet.V5, false)
		want.Props.ServerKeepAlive = packet.Ptr[uint16](30)
		c.ExpectPacket(want)
	})
	t.Run("v3.1.1", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		cp := connectPkt(packet.V311, "ka3", false)
		cp.KeepAlive = 120
		c.Send(cp)
		ack, ok := c.Recv().(*packet.Connack)
		if !ok || ack.ReasonCode == packet.Success {
			t.Fatalf("keep-alive above max_keepalive accepted: %v", brokertest.Describe(ack))
		}
		c.ExpectClosedWith()
	})
	t.Run("v3.1.1 within limit", func(t *testing.T) {
		cp := connectPkt(packet.V311, "ka3ok", false)
		cp.KeepAlive = 30
		c, _ := brokertest.DialConnect(t, srv.Addr, cp)
		c.Ping()
	})
}
