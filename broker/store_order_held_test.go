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

// slowStore applies the batches that put a message body late while armed:
// it waits delay before handing them to the store, so that the window in
// which a message is routed but not yet stored is wide. Other batches (a
// subscriber's acknowledgements, a CONNECT's session record) go through at
// once. Every batch the store refuses is recorded.
type slowStore struct {
	st      *mem.Store
	delay   time.Duration
	armed   atomic.Bool
	oneShot bool                   // only the first such batch once armed is late
	lateIf  func(op store.Op) bool // which batches are late (default: those putting a message)
	delayed chan struct{}          // receives when a delayed batch starts waiting

	mu      sync.Mutex
	refused []error
}

func newSlowStore(delay time.Duration) *slowStore {
	return &slowStore{st: mem.New(), delay: delay, delayed: make(chan struct{}, 16)}
}

func (s *slowStore) Apply(b *store.Batch) error {
	if s.armed.Load() {
		for _, op := range b.Ops() {
			late := op.Kind == store.OpPutMessage
			if s.lateIf != nil {
				late = s.lateIf(op)
			}
			if late && (!s.oneShot || s.armed.CompareAndSwap(true, false)) {
				s.delayed <- struct{}{}
				time.Sleep(s.delay) // the slow disk under test, not a wait for a condition
				break
			}
		}
	}
	err := s.st.Apply(b)
	if err != nil {
		s.mu.Lock()
		s.refused = append(s.refused, err)
		s.mu.Unlock()
	}
	return err
}
func (s *slowStore) Load(now time.Time) (*store.State, error) { return s.st.Load(now) }
func (s *slowStore) Close() error                             { return s.st.Close() }

func (s *slowStore) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, err := range s.refused {
		t.Errorf("the store refused a batch: %v", err)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("(not an invalid batch: %v)", err)
		}
	}
}

// waitDelayed waits until a batch putting a message is being applied late.
func (s *slowStore) waitDelayed(t *testing.T) {
	t.Helper()
	select {
	case <-s.delayed:
	case <-time.After(5 * time.Second):
		t.Fatal("no message batch reached the store")
	}
}

// heldSources are the ways a message is routed outside a publisher's read
// burst, each with its own store batch: a will, Server.Publish.
var heldSources = []struct {
	name string
	// arm connects what is needed; fire routes the QoS 2 message to
	// "held/1" (not waiting for its store write).
	arm func(t *testing.T, srv *brokertest.Server) (fire func())
}{
	{"will", func(t *testing.T, srv *brokertest.Server) func() {
		w := brokertest.Dial(t, srv.Addr, packet.V311)
		w.Connect(&packet.Connect{ClientID: "willer", CleanStart: true, KeepAlive: 60,
			Will: &packet.Will{Topic: "held/1", QoS: 2, Payload: []byte("last words")}})
		return func() { w.NC.Close() } // no DISCONNECT: the will goes [MQTT-3.1.2-10]
	}},
	{"Server.Publish", func(t *testing.T, srv *brokertest.Server) func() {
		return func() {
			go srv.Publish(&broker.Message{Topic: "held/1", QoS: 2, Payload: []byte("last words")})
		}
	}},
}

// expectHeldDelivery completes the QoS 2 delivery of "last words" on sub:
// PUBLISH, PUBREC, PUBREL (the subscriber stays connected: its PUBREC's
// store write was accepted), PUBCOMP; then a PINGREQ round trip.
func expectHeldDelivery(t *testing.T, sub *brokertest.Conn) {
	t.Helper()
	p := sub.ExpectPublish()
	if string(p.Payload) != "last words" || p.QoS != 2 {
		t.Fatalf("got %s", brokertest.Describe(p))
	}
	sub.Send(&packet.Pubrec{PacketID: p.PacketID})
	got, err := sub.RecvTimeout(5 * time.Second)
	if rel, ok := got.(*packet.Pubrel); err != nil || !ok || rel.PacketID != p.PacketID {
		t.Fatalf("after PUBREC: %s, %v; want PUBREL %d (a refused store write closes the subscriber)",
			brokertest.Describe(got), err, p.PacketID)
	}
	sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
	sub.Ping()
}

// TestHeldOutsideBurst_OnlineSubscriber_MQTT_4_3_3_2: a QoS 2 message routed
// outside a read burst (a will, Server.Publish) to a persistent subscriber
// that is online is written to it only once the batch holding the message
// is applied. Otherwise the subscriber's PUBREC, whose "PUBREL sent" state
// names the message, reaches the store first: the store refuses that batch
// and the broker closes the subscriber without PUBREL.
func TestHeldOutsideBurst_OnlineSubscriber_MQTT_4_3_3_2(t *testing.T) {
	for _, src := range heldSources {
		t.Run(src.name, func(t *testing.T) {
			st := newSlowStore(400 * time.Millisecond)
			srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
			sub := brokertest.Dial(t, srv.Addr, packet.V5)
			sub.Connect(&packet.Connect{ClientID: "keeper", CleanStart: true, KeepAlive: 60,
				Props: &packet.Properties{SessionExpiry: packet.Ptr(uint32(3600))}})
			sub.Subscribe(1, 2, "held/#")
			fire := src.arm(t, srv)
			st.armed.Store(true)
			fire()
			st.waitDelayed(t)
			expectHeldDelivery(t, sub)
			st.check(t)
		})
	}
}

// TestHeldOutsideBurst_ResumedSession_MQTT_4_3_3_2: the same message queued
// for an offline persistent session that resumes while the batch holding
// the message is not yet applied: the resume (attachLocked's refill, which
// stores the QoS 2 delivery's "PUBLISH sent" state) waits for that batch
// instead of writing an entry naming a message the store does not hold.
func TestHeldOutsideBurst_ResumedSession_MQTT_4_3_3_2(t *testing.T) {
	for _, src := range heldSources {
		t.Run(src.name, func(t *testing.T) {
			st := newSlowStore(400 * time.Millisecond)
			srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
			cp := &packet.Connect{ClientID: "keeper", CleanStart: true, KeepAlive: 60,
				Props: &packet.Properties{SessionExpiry: packet.Ptr(uint32(3600))}}
			sub := brokertest.Dial(t, srv.Addr, packet.V5)
			sub.Connect(cp)
			sub.Subscribe(1, 2, "held/#")
			sub.Send(&packet.Disconnect{})
			sub.ExpectClosed()
			fire := src.arm(t, srv)
			st.armed.Store(true)
			fire()
			st.waitDelayed(t)
			again := brokertest.Dial(t, srv.Addr, packet.V5)
			resumed := *cp
			resumed.CleanStart = false
			if ack := again.Connect(&resumed); !ack.SessionPresent || ack.ReasonCode != 0 {
				t.Fatalf("resume: %s", brokertest.Describe(ack))
			}
			expectHeldDelivery(t, again)
			st.check(t)
		})
	}
}

// TestHeldBatch_CleanStartReplacesSession_MQTT_3_1_2_4: a publisher's batch
// that puts a QoS 1 message into an offline persistent session is applied
// late; meanwhile a clean start replaces the session [MQTT-3.1.2-4], the
// new session subscribes and is sent a QoS 2 message. The late batch must
// neither replace the new session's queue entry (the store would then drop
// the new message while the new session still names it, and refuse the
// subscriber's PUBREC: "names unknown message") nor leave an entry of the
// replaced session behind (its message kept forever, and handed to the
// new session after a restart).
func TestHeldBatch_CleanStartReplacesSession_MQTT_3_1_2_4(t *testing.T) {
	st := newSlowStore(400 * time.Millisecond)
	st.oneShot = true
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
	cp := &packet.Connect{ClientID: "keeper", CleanStart: true, KeepAlive: 60,
		Props: &packet.Properties{SessionExpiry: packet.Ptr(uint32(3600))}}
	old := brokertest.Dial(t, srv.Addr, packet.V5)
	old.Connect(cp)
	old.Subscribe(1, 2, "held/#")
	old.Send(&packet.Disconnect{})
	old.ExpectClosed()

	st.armed.Store(true)
	late := brokertest.Dial(t, srv.Addr, packet.V311)
	late.Connect(&packet.Connect{ClientID: "late-pub", CleanStart: true, KeepAlive: 60})
	late.Send(&packet.Publish{Topic: "held/old", QoS: 1, PacketID: 1, Payload: []byte("for the old session")})
	st.waitDelayed(t)

	sub := brokertest.Dial(t, srv.Addr, packet.V5)
	if ack := sub.Connect(cp); ack.SessionPresent {
		t.Fatal("clean start: session present")
	}
	sub.Subscribe(1, 2, "held/#")
	pub := brokertest.Dial(t, srv.Addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 60})
	pub.Publish(&packet.Publish{Topic: "held/new", QoS: 2, PacketID: 1, Payload: []byte("last words")})
	p := sub.ExpectPublish()
	if string(p.Payload) != "last words" {
		t.Fatalf("the new session got %s", brokertest.Describe(p))
	}
	// The late batch is applied (its publisher hears PUBACK) before the
	// subscriber answers.
	late.ExpectPacket(&packet.Puback{PacketID: 1})
	sub.Send(&packet.Pubrec{PacketID: p.PacketID})
	got, err := sub.RecvTimeout(5 * time.Second)
	if rel, ok := got.(*packet.Pubrel); err != nil || !ok || rel.PacketID != p.PacketID {
		t.Fatalf("after PUBREC: %s, %v; want PUBREL %d", brokertest.Describe(got), err, p.PacketID)
	}
	sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
	sub.Ping()
	st.check(t)
	// Nothing of the replaced session is left in the store.
	brokertest.Eventually(t, 5*time.Second, func() bool {
		state, err := st.st.Load(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, ss := range state.Sessions {
			if ss.Session.ClientID == "keeper" {
				return len(ss.Queue) == 0 && len(state.Messages) == 0
			}
		}
		return false
	}, "the replaced session's queue entry (and its message) are deleted")
}

// TestTakeoverRaceLoser_LetsOldSessionGo_MQTT_3_1_4_3: two CONNECTs race for
// a client id whose persistent session is online. The first detaches the
// old connection and replaces the session, then waits for its store write
// (made slow here); the second wins meanwhile, and the first is refused.
// The loser must still finish what it started: the old connection is
// closed as taken over [MQTT-3.1.4-3] and the replaced session ends (it
// was removed from the store). Before, both lived on unreachable: the
// socket open, and the session in the subscription index queueing every
// matching message for good (the soak's session count and heap grew by
// one full queue per lost race).
func TestTakeoverRaceLoser_LetsOldSessionGo_MQTT_3_1_4_3(t *testing.T) {
	st := newSlowStore(400 * time.Millisecond)
	st.oneShot = true
	st.lateIf = func(op store.Op) bool { return op.Kind == store.OpDeleteSession && op.ClientID == "tk" }
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
	first := brokertest.Dial(t, srv.Addr, packet.V311)
	first.Connect(&packet.Connect{ClientID: "tk", CleanStart: false, KeepAlive: 60})
	first.Subscribe(1, 1, "tk/#")

	st.armed.Store(true)
	loser := brokertest.Dial(t, srv.Addr, packet.V311)
	loser.Send(&packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "tk", CleanStart: true, KeepAlive: 60})
	st.waitDelayed(t)
	winner := brokertest.Dial(t, srv.Addr, packet.V311)
	winner.Connect(&packet.Connect{ClientID: "tk", CleanStart: true, KeepAlive: 60})
	if ack, ok := loser.Recv().(*packet.Connack); !ok || ack.ReasonCode == 0 {
		t.Fatalf("the CONNECT that lost the race: %s, want a refusal", brokertest.Describe(ack))
	}
	first.ExpectClosed() // taken over, by whichever CONNECT

	pub := brokertest.Dial(t, srv.Addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "tk-pub", CleanStart: true, KeepAlive: 60})
	pub.Publish(&packet.Publish{Topic: "tk/1", QoS: 1, PacketID: 1, Payload: []byte("x")})
	winner.Ping()
	brokertest.Eventually(t, 5*time.Second, func() bool {
		s := srv.Stats()
		return s.ClientsDisconnected == 0 && s.Queued == 0 && s.Subscriptions == 0
	}, "the replaced session ended: %+v", srv.Stats())
	st.check(t)
}
