package broker_test

// MQTT 5 Will Delay Interval (section 3.1.3.2.2).

import (
	"reflect"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// willConnect connects a v5 client with a will on topic "wd/<id>" delayed
// by delay seconds, in a session that expires after expiry seconds.
func willConnect(t *testing.T, srv *brokertest.Server, id string, delay, expiry uint32, clean bool) *brokertest.Conn {
	t.Helper()
	c := brokertest.Dial(t, srv.Addr, packet.V5)
	cp := &packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: id, CleanStart: clean,
		Props: &packet.Properties{SessionExpiry: packet.Ptr(expiry)},
		Will: &packet.Will{Topic: "wd/" + id, Payload: []byte("bye"),
			Props: &packet.Properties{WillDelay: packet.Ptr(delay), User: []packet.UserProperty{{Key: "k", Value: "v"}}}}}
	c.Send(cp)
	if ack, ok := c.Recv().(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK %v", ack)
	}
	return c
}

func TestV5WillDelay_MQTT_3_1_3_9(t *testing.T) {
	srv := brokertest.Start(t)
	watch := client(t, srv, packet.V311, "wd-watch")
	subscribe(t, watch, 1, 0, "wd/#")
	willMsg := func(id string) *packet.Publish { return pub("wd/"+id, "bye", 0, 0) }

	t.Run("[MQTT-3.1.2-8] published after the delay", func(t *testing.T) {
		t.Parallel()
		w5 := client(t, srv, packet.V5, "wd-watch5")
		subscribe(t, w5, 1, 0, "wd/late")
		c := willConnect(t, srv, "late", 1, 60, true)
		closed := time.Now()
		c.NC.Close()
		w5.ExpectNothing(600 * time.Millisecond)
		got := w5.ExpectPublish()
		if waited := time.Since(closed); waited < 900*time.Millisecond {
			t.Fatalf("will after %v, want about 1s", waited)
		}
		// Will properties travel with it, the delay does not.
		want := &packet.Publish{Topic: "wd/late", Payload: []byte("bye"),
			Props: &packet.Properties{User: []packet.UserProperty{{Key: "k", Value: "v"}}}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %s", brokertest.Describe(got))
		}
	})
	t.Run("[MQTT-3.1.3-9] cancelled by a reconnect within the delay", func(t *testing.T) {
		t.Parallel()
		w := client(t, srv, packet.V311, "wd-watch-back")
		subscribe(t, w, 1, 0, "wd/back")
		c := willConnect(t, srv, "back", 1, 60, true)
		c.NC.Close()
		waitConnectedGone := func() bool { return srv.Stats().ClientsDisconnected >= 1 }
		brokertest.Eventually(t, fiveSec, waitConnectedGone)
		willConnect(t, srv, "back", 1, 60, false) // resumes the session
		w.ExpectNothing(1300 * time.Millisecond)
	})
	t.Run("[MQTT-3.1.2-8] the session ends first: at once", func(t *testing.T) {
		t.Parallel()
		w := client(t, srv, packet.V311, "wd-watch-end")
		subscribe(t, w, 1, 0, "wd/end")
		c := willConnect(t, srv, "end", 60, 0, true) // session expiry 0: ends at close
		c.NC.Close()
		expectPub(t, w, willMsg("end"))
	})
	t.Run("[MQTT-3.1.2-8] a clean-start takeover ends the session: at once", func(t *testing.T) {
		t.Parallel()
		w := client(t, srv, packet.V311, "wd-watch-take")
		subscribe(t, w, 1, 0, "wd/take")
		willConnect(t, srv, "take", 60, 60, true)
		nc := brokertest.Dial(t, srv.Addr, packet.V5)
		nc.Connect(&packet.Connect{Version: packet.V5, ClientID: "take", CleanStart: true})
		expectPub(t, w, willMsg("take"))
	})
	t.Run("[MQTT-3.14.4-3] DISCONNECT 0x04 sends the delayed will", func(t *testing.T) {
		t.Parallel()
		w := client(t, srv, packet.V311, "wd-watch-dw")
		subscribe(t, w, 1, 0, "wd/dw")
		c := willConnect(t, srv, "dw", 1, 0, true)
		c.Send(&packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
		c.ExpectClosedWith()
		expectPub(t, w, willMsg("dw"))
	})
}
