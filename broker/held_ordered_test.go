package broker_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// syncGateStore is a store.OrderedApplier whose "sync" the test holds: a
// batch putting a message is applied to memory and ordered at once, then,
// while armed, waits until the test opens the gate, as a write waits for
// the disk. Every batch the store refuses is recorded.
type syncGateStore struct {
	st      *mem.Store
	armed   atomic.Bool
	waiting chan struct{} // receives when a batch has been ordered and waits for the gate
	gate    chan struct{} // closed by the test: the sync is done

	mu      sync.Mutex
	refused []error
}

func newSyncGateStore() *syncGateStore {
	return &syncGateStore{st: mem.New(), waiting: make(chan struct{}, 16), gate: make(chan struct{})}
}

func (s *syncGateStore) Apply(b *store.Batch) error { return s.ApplyOrdered(b, nil) }

func (s *syncGateStore) ApplyOrdered(b *store.Batch, ordered func()) error {
	if err := s.st.Apply(b); err != nil {
		s.mu.Lock()
		s.refused = append(s.refused, err)
		s.mu.Unlock()
		return err
	}
	if ordered != nil {
		ordered()
	}
	if s.armed.Load() {
		for _, op := range b.Ops() {
			if op.Kind == store.OpPutMessage {
				s.waiting <- struct{}{}
				<-s.gate
				break
			}
		}
	}
	return nil
}

// asyncGateStore is syncGateStore as a store.AsyncApplier: ApplyAsync
// returns once the batch is ordered, and one goroutine calls the done of
// each batch in order, a batch putting a message only once the gate is open
// (while armed); failSync makes those syncs fail instead.
type asyncGateStore struct {
	*syncGateStore
	queue    chan asyncDone
	failSync atomic.Bool
	barrier  chan struct{} // receives when an empty batch (a barrier) is applied
}

type asyncDone struct {
	gated bool
	done  func(error)
}

func newAsyncGateStore(t *testing.T) *asyncGateStore {
	s := &asyncGateStore{syncGateStore: newSyncGateStore(), queue: make(chan asyncDone, 64),
		barrier: make(chan struct{}, 16)}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-stop:
				return
			case d := <-s.queue:
				var err error
				if d.gated {
					s.waiting <- struct{}{}
					<-s.gate
					if s.failSync.Load() {
						err = errors.New("sync failed (test)")
					}
				}
				d.done(err)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-finished })
	return s
}

func (s *asyncGateStore) ApplyAsync(b *store.Batch, ordered func(), done func(error)) error {
	if b.Empty() {
		select {
		case s.barrier <- struct{}{}:
		default:
		}
	}
	if err := s.st.Apply(b); err != nil {
		return err
	}
	if ordered != nil {
		ordered()
	}
	gated := false
	if s.armed.Load() {
		for _, op := range b.Ops() {
			gated = gated || op.Kind == store.OpPutMessage
		}
	}
	s.queue <- asyncDone{gated: gated, done: done}
	return nil
}

func (s *syncGateStore) Load(now time.Time) (*store.State, error) { return s.st.Load(now) }
func (s *syncGateStore) Close() error                             { return s.st.Close() }

func (s *syncGateStore) waitOrdered(t *testing.T) {
	t.Helper()
	select {
	case <-s.waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("no message batch reached the store")
	}
}

// TestHeldQoS1GoesBeforeSync_MQTT_4_3_3_2: a QoS 1 delivery to an online
// persistent session is written as soon as the publisher's batch is
// ordered in the store, before the write is on stable storage, while the
// publisher's PUBACK still waits for it; the subscriber's PUBACK, which
// deletes the entry, is accepted by the store. A QoS 2 delivery waits for
// stable storage: sent once, it must not be lost and sent again as a new
// message [MQTT-4.3.3-2]. Its PUBREC to the publisher waits too.
func TestHeldQoS1GoesBeforeSync_MQTT_4_3_3_2(t *testing.T) {
	t.Run("ordered", func(t *testing.T) {
		st := newSyncGateStore()
		heldQoS1BeforeSync(t, st, st)
	})
	t.Run("async", func(t *testing.T) {
		st := newAsyncGateStore(t)
		heldQoS1BeforeSync(t, st, st.syncGateStore)
	})
}

func heldQoS1BeforeSync(t *testing.T, s store.Store, st *syncGateStore) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = s })
	sub := brokertest.Dial(t, srv.Addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "keeper", CleanStart: true, KeepAlive: 60,
		Props: &packet.Properties{SessionExpiry: packet.Ptr(uint32(3600))}})
	sub.Subscribe(1, 2, "held/#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "pub", CleanStart: true})

	st.armed.Store(true)
	pub.Send(&packet.Publish{Topic: "held/1", QoS: 1, PacketID: 1, Payload: []byte("one")})
	st.waitOrdered(t)
	p := sub.ExpectPublish() // while the store still holds the publisher's write
	if p.Topic != "held/1" || p.QoS != 1 {
		t.Fatalf("got %s, want held/1 at QoS 1", brokertest.Describe(p))
	}
	sub.Ack(p)
	st.gate <- struct{}{} // the sync of the publisher's write
	if ack, ok := pub.Recv().(*packet.Puback); !ok || ack.PacketID != 1 || ack.ReasonCode != packet.Success {
		t.Fatalf("publisher: got %s, want PUBACK 1", brokertest.Describe(ack))
	}
	// The subscriber's PUBACK was read and its write applied. (Not before
	// the publisher's sync: a PINGRESP in the same burst as a store write
	// keeps its place behind the store's earlier writes.)
	sub.Ping()

	pub.Send(&packet.Publish{Topic: "held/2", QoS: 2, PacketID: 2, Payload: []byte("two")})
	st.waitOrdered(t)
	// Had the QoS 2 delivery gone when the batch was ordered, it would be
	// in the subscriber's output before this PINGRESP.
	sub.Ping()
	close(st.gate)
	p = sub.ExpectPublish()
	if p.Topic != "held/2" || p.QoS != 2 {
		t.Fatalf("got %s, want held/2 at QoS 2", brokertest.Describe(p))
	}
	if rec, ok := pub.Recv().(*packet.Pubrec); !ok || rec.PacketID != 2 {
		t.Fatalf("publisher: got %s, want PUBREC 2", brokertest.Describe(rec))
	}
	sub.Send(&packet.Pubrec{PacketID: p.PacketID})
	sub.ExpectPacket(&packet.Pubrel{PacketID: p.PacketID})
	sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
	sub.Ping()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, err := range st.refused {
		t.Errorf("the store refused a batch: %v", err)
	}
}

// asyncPair starts a broker on an asyncGateStore (opts add to its
// options) with a persistent 3.1.1 subscriber "keeper" of held/# at QoS 1
// and a clean publisher "pub" of version v.
func asyncPair(t *testing.T, v packet.Version, opts ...func(*broker.Options)) (*asyncGateStore, *brokertest.Conn, *brokertest.Conn) {
	t.Helper()
	st := newAsyncGateStore(t)
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Store = st
		for _, f := range opts {
			f(o)
		}
	})
	sub := brokertest.Dial(t, srv.Addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "keeper", KeepAlive: 60})
	sub.Subscribe(1, 1, "held/#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: v, ClientID: "pub", CleanStart: true})
	return st, sub, pub
}

// TestAsyncAcksKeepOrder_MQTT_4_6_0_2: with a store that need not be waited
// for (store.AsyncApplier), a publisher's connection reads on while its
// PUBACK waits for the disk: its next PUBLISH is routed and delivered
// meanwhile, and its acknowledgements still come in the order of its
// packets (PUBACK 1, PINGRESP, PUBACK 2) once the writes are durable
// [MQTT-4.6.0-2].
func TestAsyncAcksKeepOrder_MQTT_4_6_0_2(t *testing.T) {
	st, sub, pub := asyncPair(t, packet.V311)

	st.armed.Store(true)
	pub.Send(&packet.Publish{Topic: "held/1", QoS: 1, PacketID: 1, Payload: []byte("one")})
	st.waitOrdered(t) // the first write waits for its sync
	pub.Send(&packet.Pingreq{})
	pub.Send(&packet.Publish{Topic: "held/2", QoS: 1, PacketID: 2, Payload: []byte("two")})
	for _, want := range []string{"held/1", "held/2"} {
		p := sub.ExpectPublish()
		if p.Topic != want {
			t.Fatalf("subscriber: got %s, want %s", brokertest.Describe(p), want)
		}
		sub.Ack(p)
	}
	close(st.gate)
	pub.ExpectPacket(&packet.Puback{PacketID: 1})
	pub.ExpectPacket(&packet.Pingresp{})
	pub.ExpectPacket(&packet.Puback{PacketID: 2})
	sub.Ping()
}

// TestAsyncAcksCountForReceiveMaximum_MQTT_3_3_4_7: PUBACKs waiting for the
// disk while the connection reads on still count against the server's
// Receive Maximum: a v5 client that sends one QoS 1 PUBLISH more than it
// allows, each in a burst of its own, is disconnected with 0x93, after the
// PUBACKs of what it sent before.
func TestAsyncAcksCountForReceiveMaximum_MQTT_3_3_4_7(t *testing.T) {
	st, sub, pub := asyncPair(t, packet.V5, func(o *broker.Options) { o.ReceiveMaximum = 2 })
	st.armed.Store(true)
	for id := uint16(1); id <= 2; id++ {
		pub.Send(&packet.Publish{Topic: "held/x", QoS: 1, PacketID: id, Payload: []byte("x")})
		sub.Ack(sub.ExpectPublish()) // read and routed: its PUBACK waits
	}
	st.waitOrdered(t)
	pub.Send(&packet.Publish{Topic: "held/x", QoS: 1, PacketID: 3, Payload: []byte("x")})
	// Refused: the connection waits for what it owes before it closes
	// (a barrier in the store's order), then answers it.
	select {
	case <-st.barrier:
	case <-time.After(5 * time.Second):
		t.Fatal("the third PUBLISH was not refused")
	}
	close(st.gate)
	pub.ExpectPacket(&packet.Puback{PacketID: 1})
	pub.ExpectPacket(&packet.Puback{PacketID: 2})
	ps := pub.ExpectClosed()
	if len(ps) != 1 {
		t.Fatalf("got %v, want DISCONNECT 0x93", ps)
	}
	if d, ok := ps[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.ReceiveMaximumExceeded {
		t.Fatalf("got %s, want DISCONNECT 0x93", brokertest.Describe(ps[0]))
	}
}

// TestAsyncSyncFails: when the disk fails a write whose PUBACK waited for it
// while the connection read on, the PUBACK is not sent and the publisher is
// disconnected (0x80), so that it sends the message again; the
// subscriber's QoS 1 delivery had gone when the write was ordered.
func TestAsyncSyncFails(t *testing.T) {
	st, sub, pub := asyncPair(t, packet.V5)
	st.armed.Store(true)
	st.failSync.Store(true)
	pub.Send(&packet.Publish{Topic: "held/1", QoS: 1, PacketID: 1, Payload: []byte("one")})
	st.waitOrdered(t)
	sub.Ack(sub.ExpectPublish())
	close(st.gate)
	ps := pub.ExpectClosed()
	for _, p := range ps {
		if _, ok := p.(*packet.Puback); ok {
			t.Fatalf("PUBACK sent for a write that failed: %v", ps)
		}
	}
	if len(ps) == 0 {
		t.Fatal("closed without DISCONNECT 0x80")
	}
	if d, ok := ps[len(ps)-1].(*packet.Disconnect); !ok || d.ReasonCode != packet.UnspecifiedError {
		t.Fatalf("got %v, want DISCONNECT 0x80", ps)
	}
}

// TestAsyncAcksBeforeDisconnect: a PUBLISH and a DISCONNECT sent together:
// the connection ends only after the PUBACK that waited for the disk is
// sent.
func TestAsyncAcksBeforeDisconnect(t *testing.T) {
	st, sub, pub := asyncPair(t, packet.V311)
	st.armed.Store(true)
	pub.Send(&packet.Publish{Topic: "held/1", QoS: 1, PacketID: 1, Payload: []byte("one")})
	pub.Send(&packet.Disconnect{})
	st.waitOrdered(t)
	close(st.gate)
	ps := pub.ExpectClosed()
	if len(ps) != 1 {
		t.Fatalf("before the close: %v, want PUBACK 1", ps)
	}
	if a, ok := ps[0].(*packet.Puback); !ok || a.PacketID != 1 {
		t.Fatalf("before the close: %s, want PUBACK 1", brokertest.Describe(ps[0]))
	}
	sub.Ack(sub.ExpectPublish())
}

// lazyRecorder records which of a store's entry points applied each batch.
type lazyRecorder struct {
	*mem.Store
	mu   sync.Mutex
	lazy []bool // one per batch holding a queue entry's deletion
}

func (r *lazyRecorder) note(b *store.Batch, lazy bool) {
	for _, op := range b.Ops() {
		if op.Kind == store.OpDeleteQueueEntry {
			r.mu.Lock()
			r.lazy = append(r.lazy, lazy)
			r.mu.Unlock()
			return
		}
	}
}

func (r *lazyRecorder) Apply(b *store.Batch) error {
	r.note(b, false)
	return r.Store.Apply(b)
}

func (r *lazyRecorder) ApplyNoSync(b *store.Batch) error {
	r.note(b, true)
	return r.Store.Apply(b)
}

// TestPingDoesNotSyncDeletions: a subscriber's PUBACK (deleting its queue
// entry) and a PINGREQ in one burst: the PINGRESP tells the client nothing
// was stored, so the deletion is written without waiting for the disk, as
// without the PINGREQ (losing it costs a redelivery).
func TestPingDoesNotSyncDeletions(t *testing.T) {
	st := &lazyRecorder{Store: mem.New()}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
	sub := brokertest.Dial(t, srv.Addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "keeper", KeepAlive: 60})
	sub.Subscribe(1, 1, "lazy/#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "pub", CleanStart: true})
	pub.Publish(&packet.Publish{Topic: "lazy/1", QoS: 1, PacketID: 1, Payload: []byte("x")})
	p := sub.ExpectPublish()
	var both []byte
	both, _ = (&packet.Puback{PacketID: p.PacketID}).Encode(both, packet.V311)
	both, _ = (&packet.Pingreq{}).Encode(both, packet.V311)
	sub.SendRaw(both) // one write: one burst
	sub.ExpectPacket(&packet.Pingresp{})
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.lazy) != 1 || !st.lazy[0] {
		t.Fatalf("deletions applied lazily: %v, want [true]", st.lazy)
	}
}

// TestAsyncAcksReleaseReceiveQuota_MQTT_3_3_4_7: a PUBACK sent once the
// disk has the write frees its place in the Receive Maximum before the
// client can see it. A client that sends its next QoS 1 PUBLISH the moment
// a PUBACK arrives, at exactly the server's Receive Maximum, is never
// disconnected with 0x93.
func TestAsyncAcksReleaseReceiveQuota_MQTT_3_3_4_7(t *testing.T) {
	_, sub, pub := asyncPair(t, packet.V5, func(o *broker.Options) { o.ReceiveMaximum = 1 })
	const n = 10000 // the quota used to come back after the PUBACK: 0x93 within a few thousand
	for i := range n {
		id := uint16(i%60000 + 1)
		pub.Send(&packet.Publish{Topic: "held/x", QoS: 1, PacketID: id, Payload: []byte("x")})
		p := pub.Recv()
		if a, ok := p.(*packet.Puback); !ok || a.PacketID != id {
			t.Fatalf("message %d: got %s, want PUBACK %d", i, brokertest.Describe(p), id)
		}
		if i%10 == 9 { // the persistent subscriber takes them in tens
			for range 10 {
				sub.Ack(sub.ExpectPublish())
			}
		}
	}
}
