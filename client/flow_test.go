package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// memStore is a Store in memory, to preload messages as an earlier client
// would have left them.
type memStore struct {
	mu sync.Mutex
	m  map[uint16]*StoredMessage
}

func newMemStore(n int, qos byte) *memStore {
	s := &memStore{m: make(map[uint16]*StoredMessage)}
	for i := range n {
		id := uint16(i + 1)
		s.m[id] = &StoredMessage{Seq: uint64(i + 1), Publish: &packet.Publish{QoS: qos, PacketID: id, Topic: "stored", Payload: []byte(fmt.Sprint(i))}}
	}
	return s
}

func (s *memStore) Put(m *StoredMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[m.Publish.PacketID] = m
	return nil
}

func (s *memStore) Delete(id uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
	return nil
}

func (s *memStore) Load() ([]*StoredMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l []*StoredMessage
	for _, m := range s.m {
		l = append(l, m)
	}
	return l, nil
}

func (s *memStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Issue 15 bug 1: while the client is between connections, Publish and
// PublishAsync still end when their context does, however many messages
// are waiting (the write queue has 128 slots).
func TestPublishContextWhileDisconnected(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			fs := startFake(t)
			c, rc, _ := dialFake(t, fs, Options{Version: v, MaxInflight: 1000, AutoReconnect: true, MinBackoff: time.Hour}, nil)
			fs.l.Close() // the broker is down
			rc.nc.Close()
			brokertest.Eventually(t, 5*time.Second, func() bool { return !c.IsConnected() })

			finished := make(chan error, 1)
			go func() {
				for i := range 300 {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
					err := c.PublishAsync(ctx, "down", []byte(fmt.Sprint(i)), PublishOptions{QoS: 1}, nil)
					cancel()
					if err != nil {
						finished <- fmt.Errorf("PublishAsync %d: %w", i, err)
						return
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				defer cancel()
				finished <- c.Publish(ctx, "down", []byte("last"), PublishOptions{QoS: 1})
			}()
			select {
			case err := <-finished:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Publish while disconnected = %v, want the context's deadline", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Publish with a 20 ms deadline still blocked after 3 s while disconnected")
			}
			if p := c.Pending(); p != 301 {
				t.Fatalf("Pending() = %d, want 301 (accepted messages wait for the reconnect)", p)
			}
		})
	}
}

// Issue 15 bug 2: keep alive notices a link that swallows everything even
// while the client keeps publishing (its writes keep succeeding, so
// "nothing written for a while" never happens).
func TestKeepAliveDeadLinkWhilePublishing(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			t.Parallel()
			fs := startFake(t)
			c, rc, _ := dialFake(t, fs, Options{Version: v, KeepAlive: time.Second, MaxInflight: 65535}, nil)
			// The "proxy" reads and discards: nothing is ever answered.
			go func() { _, _ = io.Copy(io.Discard, rc.nc) }()
			go func() {
				// A steady stream, as a sensor publishes: the writes keep
				// succeeding and never exhaust the packet identifiers.
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				payload := make([]byte, 100)
				for range tick.C {
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					err := c.PublishAsync(ctx, "flood", payload, PublishOptions{QoS: 1}, nil)
					cancel()
					select {
					case <-c.Done():
						return
					default:
					}
					if err != nil && !errors.Is(err, context.DeadlineExceeded) {
						return
					}
				}
			}()
			select {
			case <-c.Done():
			case <-time.After(6 * time.Second):
				t.Fatalf("dead link not noticed after 6 s with keep alive 1 s (%d messages pending)", c.Pending())
			}
			if !errors.Is(c.Err(), ErrPingTimeout) {
				t.Fatalf("Err() = %v, want ErrPingTimeout", c.Err())
			}
		})
	}
}

// readPublishes reads n PUBLISH packets, failing on anything else.
func readPublishes(rc *rawConn, n int) []*packet.Publish {
	rc.t.Helper()
	out := make([]*packet.Publish, n)
	for i := range out {
		out[i] = recvAs[*packet.Publish](rc)
	}
	return out
}

// Issue 15 bug 3: [MQTT-3.3.4-7] the server's Receive Maximum also holds
// for messages re-sent from the store after Dial and for in-flight
// messages re-sent after a reconnect.
func TestReceiveMaximumOnResend(t *testing.T) {
	rm10 := &packet.Connack{Props: &packet.Properties{ReceiveMaximum: packet.Ptr(uint16(10))}}
	t.Run("store after Dial", func(t *testing.T) {
		st := newMemStore(200, 1)
		fs := startFake(t)
		c, rc, _ := dialFake(t, fs, Options{Version: packet.V5, Store: st}, rm10)
		sent := 0
		for sent < 200 {
			ps := readPublishes(rc, 10)
			sent += 10
			if sent < 200 {
				rc.expectNothing(50 * time.Millisecond) // 10 outstanding: the window is full
			}
			for _, p := range ps {
				if !p.Dup {
					t.Fatalf("stored message %d re-sent without DUP [MQTT-3.3.1-1]", p.PacketID)
				}
				rc.send(&packet.Puback{PacketID: p.PacketID})
			}
		}
		brokertest.Eventually(t, 5*time.Second, func() bool { return c.Pending() == 0 && st.len() == 0 })
	})
	t.Run("in flight after reconnect", func(t *testing.T) {
		fs := startFake(t)
		c, rc, _ := dialFake(t, fs, Options{Version: packet.V5, ClientID: "rm", PersistentSession: true,
			AutoReconnect: true, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}, nil)
		for i := range 50 {
			if err := c.PublishAsync(testCtx(t), "rm", []byte(fmt.Sprint(i)), PublishOptions{QoS: 1}, nil); err != nil {
				t.Fatal(err)
			}
		}
		readPublishes(rc, 50) // never acknowledged
		rc.nc.Close()
		rc2, _ := fs.accept(packet.V5)
		rc2.send(&packet.Connack{SessionPresent: true, Props: rm10.Props})
		got := 0
		for got < 50 {
			ps := readPublishes(rc2, 10)
			got += 10
			if got < 50 {
				rc2.expectNothing(50 * time.Millisecond)
			}
			for _, p := range ps {
				rc2.send(&packet.Puback{PacketID: p.PacketID})
			}
		}
		brokertest.Eventually(t, 5*time.Second, func() bool { return c.Pending() == 0 })
	})
}

// Issue 15 bug 4: the QoS 0 messages waiting for a slow handler are
// bounded by count and by bytes; the ones that arrive beyond the bound are
// dropped and counted. QoS 1 messages are never dropped.
func TestInboundQueueBounded(t *testing.T) {
	cases := []struct {
		name     string
		o        Options
		accepted int
	}{
		{"count", Options{MaxQueuedQoS0: 10, MaxQueuedBytes: -1}, 10},
		{"bytes", Options{MaxQueuedQoS0: -1, MaxQueuedBytes: 5 * 1030}, 5},
		{"default count", Options{}, defaultMaxQueuedQoS0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			var col collector
			o := tc.o
			o.Version = packet.V5
			o.DefaultHandler = func(m *Message) {
				col.handle(m)
				<-release
			}
			fs := startFake(t)
			c, rc, _ := dialFake(t, fs, o, nil)
			const sent = 2000
			payload := make([]byte, 1024)
			for i := range sent {
				rc.send(&packet.Publish{Topic: "qos0", Payload: payload})
				if i == 0 {
					// The first one is in the handler, and still counts.
					brokertest.Eventually(t, 5*time.Second, func() bool { return len(col.get()) == 1 })
				}
			}
			rc.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "qos1", Payload: []byte("kept")})
			want := uint64(sent - tc.accepted)
			brokertest.Eventually(t, 5*time.Second, func() bool { return c.Dropped() == want },
				"dropped %d, want %d", c.Dropped(), want)
			close(release)
			msgs := col.wait(t, tc.accepted+1)
			if last := msgs[len(msgs)-1]; last.Topic != "qos1" {
				t.Fatalf("last message %q, want the QoS 1 one", last.Topic)
			}
			if p := recvAs[*packet.Puback](rc); p.PacketID != 1 {
				t.Fatalf("PUBACK %d", p.PacketID)
			}
			if n := len(col.get()); n != tc.accepted+1 {
				t.Fatalf("%d messages handled, want %d", n, tc.accepted+1)
			}
		})
	}
}

// [MQTT-3.3.4-9] A server that sends more unacknowledged QoS 1/2 messages
// than our Receive Maximum is disconnected with 0x93.
func TestReceiveMaximumExceededByServer(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	fs := startFake(t)
	c, rc, cp := dialFake(t, fs, Options{Version: packet.V5, ReceiveMaximum: 2, DefaultHandler: func(*Message) { <-release }}, nil)
	if cp.Props == nil || cp.Props.ReceiveMaximum == nil || *cp.Props.ReceiveMaximum != 2 {
		t.Fatalf("CONNECT Receive Maximum %+v", cp.Props)
	}
	for id := range uint16(3) {
		rc.send(&packet.Publish{QoS: 1 + byte(id%2), PacketID: id + 1, Topic: "rm", Payload: []byte("x")})
	}
	if d := recvAs[*packet.Disconnect](rc); d.ReasonCode != packet.ReceiveMaximumExceeded {
		t.Fatalf("DISCONNECT %v, want Receive Maximum exceeded", d.ReasonCode)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client still running")
	}
}

// With ManualAck the acknowledgements wait for Ack and go in arrival order
// [MQTT-4.6.0-2], whatever order the application acknowledges in.
func TestManualAck(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			var col collector
			fs := startFake(t)
			c, rc, _ := dialFake(t, fs, Options{Version: v, ManualAck: true, DefaultHandler: col.handle}, nil)
			rc.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "m", Payload: []byte("1")})
			rc.send(&packet.Publish{QoS: 2, PacketID: 2, Topic: "m", Payload: []byte("2")})
			rc.send(&packet.Publish{QoS: 1, PacketID: 3, Topic: "m", Payload: []byte("3")})
			msgs := col.wait(t, 3)
			rc.expectNothing(100 * time.Millisecond) // nothing acknowledged yet
			if err := c.Ack(msgs[2]); err != nil {
				t.Fatal(err)
			}
			rc.expectNothing(50 * time.Millisecond) // 1 and 2 come first
			if err := c.Ack(msgs[0]); err != nil {
				t.Fatal(err)
			}
			if p := recvAs[*packet.Puback](rc); p.PacketID != 1 {
				t.Fatalf("PUBACK %d, want 1", p.PacketID)
			}
			rc.expectNothing(50 * time.Millisecond)
			if err := c.Ack(msgs[1]); err != nil {
				t.Fatal(err)
			}
			if p := recvAs[*packet.Pubrec](rc); p.PacketID != 2 {
				t.Fatalf("PUBREC %d, want 2", p.PacketID)
			}
			if p := recvAs[*packet.Puback](rc); p.PacketID != 3 {
				t.Fatalf("PUBACK %d, want 3", p.PacketID)
			}
			if err := c.Ack(msgs[1]); err == nil {
				t.Fatal("a second Ack of the same message succeeded")
			}
		})
	}
	t.Run("without ManualAck", func(t *testing.T) {
		fs := startFake(t)
		c, _, _ := dialFake(t, fs, Options{}, nil)
		if err := c.Ack(&Message{QoS: 1, PacketID: 1}); err == nil {
			t.Fatal("Ack succeeded without ManualAck")
		}
	})
}

// Messages loaded from the Store are reported when re-sent and when
// acknowledged, and WaitDrained returns once none is left.
func TestStoreResendCallbacksAndWaitDrained(t *testing.T) {
	st := newMemStore(3, 1)
	var mu sync.Mutex
	var resent []uint16
	results := make(chan error, 3)
	fs := startFake(t)
	c, rc, _ := dialFake(t, fs, Options{Version: packet.V5, Store: st,
		OnResend: func(p *packet.Publish, rel bool) {
			mu.Lock()
			resent = append(resent, p.PacketID)
			mu.Unlock()
		},
		OnStoreResult: func(p *packet.Publish, err error) { results <- err },
	}, nil)
	ps := readPublishes(rc, 3)
	drained := make(chan error, 1)
	go func() { drained <- c.WaitDrained(testCtx(t)) }()
	rc.send(&packet.Puback{PacketID: ps[0].PacketID})
	rc.send(&packet.Puback{PacketID: ps[1].PacketID, ReasonCode: packet.QuotaExceeded})
	if err := waitErr(t, results); err != nil {
		t.Fatal(err)
	}
	var ae *AckError
	if err := waitErr(t, results); !errors.As(err, &ae) || ae.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("second result %v, want the AckError", err)
	}
	select {
	case err := <-drained:
		t.Fatalf("WaitDrained returned %v with a message pending", err)
	default:
	}
	rc.send(&packet.Puback{PacketID: ps[2].PacketID})
	if err := waitErr(t, drained); err != nil {
		t.Fatalf("WaitDrained: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resent) != 3 || resent[0] != 1 || resent[2] != 3 {
		t.Fatalf("OnResend saw %v", resent)
	}
	if err := c.WaitDrained(testCtx(t)); err != nil {
		t.Fatalf("WaitDrained with nothing pending: %v", err)
	}
}
