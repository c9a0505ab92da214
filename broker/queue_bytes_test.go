package broker_test

import (
	"strings"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// TestMaxQueuedBytesCountsPayloadOnly: max_queued_bytes and
// max_queued_bytes_total count payload bytes, as Mosquitto does; the topic,
// however long, does not count. With a bound of 100, two messages of 50
// payload bytes are queued for an offline session and the third is dropped
// and counted, for a short topic as for a 300-byte one.
func TestMaxQueuedBytesCountsPayloadOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  func(*broker.Options)
	}{
		{"max_queued_bytes", func(o *broker.Options) { o.MaxQueuedBytes = 100 }},
		{"max_queued_bytes_total", func(o *broker.Options) { o.MaxQueuedBytesTotal = 100 }},
	} {
		for _, topicName := range []string{"q/s", "q/" + strings.Repeat("long", 75)} {
			t.Run(tc.name+"/"+strings.Repeat("long ", len(topicName)/100)+"topic", func(t *testing.T) {
				srv := brokertest.Start(t, tc.opt)
				away := connect(t, srv, packet.V311, "away", true, false)
				subscribe(t, away, 1, 1, "q/#")
				disconnect(t, away)
				waitOffline(t, srv, 1) // the socket closes before the session is detached
				pubc := client(t, srv, packet.V311, "pub")
				for i := range 3 {
					pubc.Publish(&packet.Publish{Topic: topicName, QoS: 1, PacketID: uint16(i + 1),
						Payload: []byte(strings.Repeat(string(rune('a'+i)), 50))})
				}
				st := srv.Stats()
				if st.Queued != 2 || st.DroppedQueueFull != 1 {
					t.Fatalf("queued %d, dropped %d; want 2 and 1", st.Queued, st.DroppedQueueFull)
				}
				back := connect(t, srv, packet.V311, "away", true, true)
				for i, p := range back.RecvPublishes(2) {
					if want := strings.Repeat(string(rune('a'+i)), 50); p.Topic != topicName || string(p.Payload) != want {
						t.Fatalf("message %d: %s", i, brokertest.Describe(p))
					}
					back.Ack(p)
				}
				back.Ping() // the third is not coming
			})
		}
	}
}
