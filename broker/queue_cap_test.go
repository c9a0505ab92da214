package broker_test

import (
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// TestMaxQueuedBytesTotal: the broker-wide bound on queued bytes holds across
// sessions; what does not fit is dropped and counted.
func TestMaxQueuedBytesTotal(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxQueuedBytesTotal = 100 })
	for _, id := range []string{"away-1", "away-2"} {
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		c.Connect(&packet.Connect{ClientID: id, CleanStart: false})
		c.Subscribe(1, 1, "cap/#")
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
	}
	pub := brokertest.Dial(t, srv.Addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	for i := range 10 {
		pub.Send(&packet.Publish{Topic: "cap/t", QoS: 1, PacketID: uint16(i + 1), Payload: make([]byte, 20)})
		pub.Recv() // PUBACK
	}
	// 20 payload bytes a message (the topic does not count, as in
	// Mosquitto): 5 fit in 100 bytes, over both queues.
	st := srv.Stats()
	if st.Queued != 5 || st.PublishDropped != 15 || st.DroppedQueueFull != 15 {
		t.Fatalf("queued %d, dropped %d (queue full %d); want 5 and 15", st.Queued, st.PublishDropped, st.DroppedQueueFull)
	}
}

// TestStatsByQoS: PUBLISH packets are counted by QoS both ways.
func TestStatsByQoS(t *testing.T) {
	srv := brokertest.Start(t)
	sub := brokertest.Dial(t, srv.Addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "s", CleanStart: true})
	sub.Subscribe(1, 2, "q/#")
	pub := brokertest.Dial(t, srv.Addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "p", CleanStart: true})
	for qos := range byte(3) {
		pub.Send(&packet.Publish{Topic: "q/x", QoS: qos, PacketID: uint16(qos), Payload: []byte("m")})
		if qos > 0 {
			pub.Recv() // PUBACK / PUBREC
		}
		sub.ExpectPublish()
	}
	brokertest.Eventually(t, 5*time.Second, func() bool {
		st := srv.Stats()
		return st.PublishReceivedQoS == [3]int64{1, 1, 1} && st.PublishSentQoS == [3]int64{1, 1, 1} && st.PublishReceived == 3
	}, "PUBLISH counted by QoS: %+v", srv.Stats())
}
