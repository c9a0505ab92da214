package broker_test

import (
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// dialSmallWindow connects with a 4 KB receive buffer, so that a client that
// stops reading pushes back on the server quickly.
func dialSmallWindow(t *testing.T, addr string, v packet.Version) *brokertest.Conn {
	t.Helper()
	d := net.Dialer{Timeout: fiveSec, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return brokertest.NewConn(t, nc, v)
}

// A subscriber that never reads does not stall the publisher or the other
// subscribers: past Options.MaxBacklogBytes its QoS 0 messages are dropped and
// counted in PublishDropped.
func TestSlowConsumer_DoesNotStallOthers(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxBacklogBytes = 1 << 20 })
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		slow := dialSmallWindow(t, srv.Addr, v)
		slow.Send(connectPkt(v, "slow"+v.String(), false))
		slow.ExpectPacket(okConnack(v, false))
		subscribe(t, slow, 1, 0, "flood")
		fast := client(t, srv, v, "fast"+v.String())
		subscribe(t, fast, 1, 0, "flood")

		const n, size = 400, 32 << 10 // 12.8 MB: more than the kernel buffers hold
		payload := strings.Repeat("x", size)
		var wg sync.WaitGroup
		wg.Add(1)
		got := 0
		go func() {
			defer wg.Done()
			for got < n {
				p, err := fast.RecvTimeout(fiveSec)
				if err != nil {
					return
				}
				if pp, ok := p.(*packet.Publish); ok && len(pp.Payload) == size {
					got++
				}
			}
		}()
		before := srv.Stats().PublishDropped
		p := client(t, srv, v, "flooder"+v.String())
		start := time.Now()
		for i := range n {
			p.Publish(pub("flood", payload, 1, uint16(i%1000+1))) // PUBACK each: the publisher is never held up
		}
		wg.Wait()
		if got != n {
			t.Fatalf("fast subscriber got %d of %d", got, n)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("publishing took %v", d)
		}
		if dropped := srv.Stats().PublishDropped - before; dropped == 0 {
			t.Fatalf("no QoS 0 message dropped for the stuck subscriber")
		}
		p.Ping()
		fast.Ping()
	})
}

// QoS 1 messages for a subscriber that does not acknowledge stop at the
// in-flight window (MaxInflight) and the queue (MaxQueuedMessages); the rest
// are dropped and counted, and the publisher goes on.
func TestSlowConsumer_QoS1Bounded(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.MaxInflight = 5
		o.ReceiveMaximum = 20 // the inbound window of okConnack, not MaxInflight's
		o.MaxQueuedMessages = 10
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		sub := client(t, srv, v, "noack")
		subscribe(t, sub, 1, 1, "q")
		before := srv.Stats().PublishDropped
		p := client(t, srv, v, "noack-pub")
		for i := range 30 {
			p.Publish(pub("q", "m", 1, uint16(i+1)))
		}
		st := srv.Stats()
		if st.Inflight != 5 || st.Queued != 10 || st.PublishDropped-before != 15 {
			t.Fatalf("inflight %d queued %d dropped %d, want 5, 10, 15", st.Inflight, st.Queued, st.PublishDropped-before)
		}
		msgs := sub.RecvPublishes(5)
		sub.ExpectNothing(quiet)
		for _, m := range msgs {
			sub.Ack(m)
		}
		for range 10 {
			sub.Ack(sub.ExpectPublish())
		}
		sub.ExpectNothing(quiet)
		disconnect(t, sub)
	})
}

// A client that reads nothing for Options.WriteTimeout is disconnected as a
// slow consumer, and its will is published.
func TestSlowConsumer_StuckClientDisconnected(t *testing.T) {
	t.Parallel()
	srv := brokertest.Start(t, func(o *broker.Options) { o.WriteTimeout = 300 * time.Millisecond })
	watch := client(t, srv, packet.V311, "stuck-watch")
	subscribe(t, watch, 1, 0, "stuck/will")
	stuck := dialSmallWindow(t, srv.Addr, packet.V311)
	cp := connectPkt(packet.V311, "stuck", false)
	cp.Will = &packet.Will{Topic: "stuck/will", Payload: []byte("too slow")}
	stuck.Send(cp)
	stuck.ExpectPacket(okConnack(packet.V311, false))
	subscribe(t, stuck, 1, 0, "big")
	p := client(t, srv, packet.V311, "stuck-pub")
	payload := strings.Repeat("y", 64<<10)
	for i := range 200 {
		p.Publish(pub("big", payload, 1, uint16(i+1)))
	}
	expectPub(t, watch, pub("stuck/will", "too slow", 0, 0))
	waitConnected(t, srv, 2)
}
