package broker_test

// MaxBacklogBytes is an exact bound: every packet counts until the write that
// carries it has completed, so a subscriber that does not read never holds
// more than the bound plus one PUBLISH in the broker.

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// writeWatch reports the size of every Write the broker starts on a
// connection.
type writeWatch struct {
	net.Conn
	started chan int
}

func (w *writeWatch) Write(b []byte) (int, error) {
	select {
	case w.started <- len(b):
	default:
	}
	return w.Conn.Write(b)
}

// TestBacklogBound checks the bound for QoS 0 (past it messages are dropped
// and counted) and QoS 1 (past it messages stay queued in the session and
// are all delivered once the client reads). The subscriber is served over
// net.Pipe, which buffers nothing: every byte the broker has not handed to
// the reader is in its backlog. Once the writer is blocked on a large batch,
// more messages are published; what the subscriber then reads before the
// PINGRESP queued behind them must stay within the bound plus one PUBLISH.
// (Before the fix the batch being written left the count, letting a second
// bound's worth in; QoS 1/2 were not bounded at all.)
func TestBacklogBound(t *testing.T) {
	const (
		bound   = 64 << 10
		payload = 1000
		perHalf = 200
	)
	for _, qos := range []byte{0, 1} {
		t.Run("QoS"+string(rune('0'+qos)), func(t *testing.T) {
			srv := brokertest.Start(t, func(o *broker.Options) {
				o.MaxBacklogBytes = bound
				o.MaxInflight = -1 // the window does not bound QoS 1 here: the backlog must
				o.MaxQueuedMessages = -1
			})
			a, b := net.Pipe()
			ww := &writeWatch{Conn: a, started: make(chan int, 1024)}
			go srv.ServeConn(ww, "")
			sub := brokertest.NewConn(t, b, packet.V311)
			sub.Connect(&packet.Connect{Version: packet.V311, ClientID: "slow", CleanStart: true, KeepAlive: 0})
			subscribe(t, sub, 1, qos, "bl/#")
			pubc := client(t, srv, packet.V311, "fast")
			body := bytes.Repeat([]byte("x"), payload)
			var id uint16
			publishAll := func() {
				for range perHalf {
					id++
					pubc.Publish(&packet.Publish{Topic: "bl/t", QoS: qos, PacketID: id * uint16(qos), Payload: body})
				}
				pubc.Ping() // all routed
			}
			var got int    // PUBLISH received
			var bytesN int // their bytes, counted from mark
			counting := false
			recv := func() packet.Packet {
				t.Helper()
				p := sub.Recv()
				if pp, ok := p.(*packet.Publish); ok {
					got++
					if counting {
						enc, err := pp.Encode(nil, packet.V311)
						if err != nil {
							t.Fatal(err)
						}
						bytesN += len(enc)
					}
					sub.Ack(pp)
				}
				return p
			}

			publishAll()
			// Read until the writer has started a large batch and is blocked
			// on it (nothing reads the pipe meanwhile).
			for big := false; !big; {
				recv()
				for more := true; more && !big; {
					select {
					case n := <-ww.started:
						big = n >= bound/2
					default:
						more = false
					}
				}
			}
			// The test's reader may already hold bytes of the batch before
			// the blocked one (bufio reads ahead): they left the broker's
			// count when that batch was written, yet are read below.
			readAhead := sub.R.Buffered()
			publishAll()
			sent := srv.Stats().MessagesSent
			sub.Send(&packet.Pingreq{})
			brokertest.Eventually(t, 5*time.Second, func() bool { return srv.Stats().MessagesSent > sent },
				"PINGRESP not queued")
			counting = true
			for recv().Type() != packet.PINGRESP {
			}
			counting = false
			// One PUBLISH (1000 bytes of payload) more than the bound at most.
			if limit := bound + payload + 16 + readAhead; bytesN > limit {
				t.Errorf("%d bytes were waiting for the subscriber; the bound is %d (limit with one packet and %d bytes read ahead: %d)",
					bytesN, bound, readAhead, limit)
			}
			if qos == 0 {
				drops := srv.Stats().DroppedBacklog
				if drops == 0 {
					t.Error("no QoS 0 message dropped over the backlog")
				}
				sub.Ping() // everything before was read
				if int64(got)+drops != 2*perHalf {
					t.Errorf("received %d + dropped %d, published %d", got, drops, 2*perHalf)
				}
				return
			}
			// QoS 1: nothing dropped, everything arrives once the client reads.
			for got < 2*perHalf {
				recv()
			}
			if d := srv.Stats().PublishDropped; d != 0 {
				t.Errorf("%d QoS 1 messages dropped", d)
			}
		})
	}
}
