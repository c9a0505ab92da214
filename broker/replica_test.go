package broker_test

import (
	"context"
	"errors"
	"fmt"
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

// replicaRecorder is a ReplicaHook that records the client ids of the
// batches it copies and fails while failing is set.
type replicaRecorder struct {
	failing atomic.Bool
	mu      sync.Mutex
	entries int // queue entries copied
	local   int // batches seen marked Local (must stay 0)
}

func (r *replicaRecorder) Replicate(b *store.Batch, lazy bool) error {
	if b.Local {
		r.mu.Lock()
		r.local++
		r.mu.Unlock()
	}
	if r.failing.Load() {
		return errors.New("replica unreachable")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range b.Ops() {
		if op.Kind == store.OpPutQueueEntry {
			r.entries++
		}
	}
	return nil
}

func persistent(id string) *packet.Connect {
	return &packet.Connect{Version: packet.V5, ClientID: id, Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](600)}}
}

// TestReplicaHookWithholdsAcknowledgement: a QoS 1 message bound for a
// persistent session is acknowledged only once the ReplicaHook copied it
// [MQTT-4.3.2-2]; while the hook fails, the publisher gets no PUBACK (the
// connection closes, the client sends it again), and the failure is not
// taken for a failing disk.
func TestReplicaHookWithholdsAcknowledgement(t *testing.T) {
	rec := &replicaRecorder{}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New(); o.Hooks = []any{rec} })
	sub, _ := brokertest.DialConnect(t, srv.Addr, persistent("rep-sub"))
	sub.Subscribe(1, 1, "rep/t")
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed()

	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "rep-pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "rep/t", QoS: 1, PacketID: 1, Payload: []byte("a")}); rc != packet.Success {
		t.Fatalf("PUBACK %v", rc)
	}
	rec.mu.Lock()
	copied := rec.entries
	rec.mu.Unlock()
	if copied != 1 {
		t.Fatalf("queue entries copied: %d, want 1", copied)
	}

	rec.failing.Store(true)
	pub.Send(&packet.Publish{Topic: "rep/t", QoS: 1, PacketID: 2, Payload: []byte("b")})
	for _, p := range pub.ExpectClosed() {
		if _, ok := p.(*packet.Puback); ok {
			t.Fatal("PUBACK for a message its replica did not take")
		}
	}
	if st := srv.Server.Stats(); st.ReplicaFailures == 0 {
		t.Fatal("replica failure not counted")
	}
	rec.failing.Store(false)
	pub2, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "rep-pub2", CleanStart: true})
	if rc := pub2.Publish(&packet.Publish{Topic: "rep/t", QoS: 1, PacketID: 3, Payload: []byte("c")}); rc != packet.Success {
		t.Fatalf("after the replica is back: PUBACK %v (a replica failure must not refuse as a full disk does)", rc)
	}
}

// refusingHook is a ConnectHook that refuses one client id.
type refusingHook struct{ id string }

func (h refusingHook) BeforeSession(ctx context.Context, c *broker.ClientInfo, clean bool) error {
	if c.ClientID == h.id {
		return packet.ServerBusy
	}
	return nil
}

// TestConnectHookRefuses: a ConnectHook's error refuses the CONNECT with
// its reason code [MQTT-3.2.2-7]; other clients connect.
func TestConnectHookRefuses(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = []any{refusingHook{"held-elsewhere"}} })
	c := brokertest.Dial(t, srv.Addr, packet.V5)
	c.Send(&packet.Connect{Version: packet.V5, ClientID: "held-elsewhere", CleanStart: true})
	if ack, ok := c.Recv().(*packet.Connack); !ok || ack.ReasonCode != packet.ServerBusy {
		t.Fatalf("CONNACK %v, want Server busy", ack)
	}
	c.ExpectClosed()
	_, ack := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "other", CleanStart: true})
	if ack.ReasonCode != packet.Success {
		t.Fatalf("other client: %v", ack.ReasonCode)
	}
}

// endRecorder is an Authenticator (it refuses user "bad"), a ConnectHook
// (it refuses one client id) and a ConnectEndHook: it records how each
// CONNECT it saw ended, checking that the ClientInfo is the one
// BeforeSession got and that a connected client is registered (a takeover
// finds it) by then.
type endRecorder struct {
	srv    atomic.Pointer[broker.Server]
	refuse string
	mu     sync.Mutex
	seen   map[*broker.ClientInfo]bool
	ended  []string
}

func (h *endRecorder) Authenticate(c *broker.ClientInfo) error {
	if c.Username == "bad" {
		return packet.BadUserNameOrPassword
	}
	return nil
}

func (h *endRecorder) BeforeSession(ctx context.Context, c *broker.ClientInfo, clean bool) error {
	h.mu.Lock()
	h.seen[c] = true
	h.mu.Unlock()
	if c.ClientID == h.refuse {
		return packet.ServerBusy
	}
	return nil
}

func (h *endRecorder) ConnectEnded(c *broker.ClientInfo, connected bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := fmt.Sprintf("%s connected=%v", c.ClientID, connected)
	if !h.seen[c] {
		e += " (ClientInfo not seen by BeforeSession)"
	}
	if d, ok := h.srv.Load().ClientDetail(c.ClientID); connected && (!ok || !d.Connected) {
		e += " (not registered yet)"
	}
	h.ended = append(h.ended, e)
}

func (h *endRecorder) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ended...)
}

// TestConnectEndHook: each CONNECT whose ConnectHooks ran is ended once,
// with the same ClientInfo: connected (after the client is registered) or
// refused by a hook [MQTT-3.2.2-7]. A CONNECT refused before the hooks
// (bad password) is not.
func TestConnectEndHook(t *testing.T) {
	h := &endRecorder{refuse: "refused", seen: map[*broker.ClientInfo]bool{}}
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Hooks = []any{h}
		o.AllowAnonymous = false
	})
	h.srv.Store(srv.Server)
	c := brokertest.Dial(t, srv.Addr, packet.V5)
	c.Send(&packet.Connect{Version: packet.V5, ClientID: "refused", CleanStart: true, Username: "u", Password: []byte("p")})
	if ack, ok := c.Recv().(*packet.Connack); !ok || ack.ReasonCode != packet.ServerBusy {
		t.Fatalf("CONNACK %v, want Server busy", ack)
	}
	c.ExpectClosed()
	bad := brokertest.Dial(t, srv.Addr, packet.V5)
	bad.Send(&packet.Connect{Version: packet.V5, ClientID: "badpw", CleanStart: true, Username: "bad", Password: []byte("p")})
	if ack, ok := bad.Recv().(*packet.Connack); !ok || ack.ReasonCode != packet.BadUserNameOrPassword {
		t.Fatalf("CONNACK %v, want Bad user name or password", ack)
	}
	ok := brokertest.Dial(t, srv.Addr, packet.V5)
	ok.Send(&packet.Connect{Version: packet.V5, ClientID: "ok", CleanStart: true, Username: "u", Password: []byte("p")})
	if ack, isAck := ok.Recv().(*packet.Connack); !isAck || ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK %v, want Success", ack)
	}
	want := []string{"refused connected=false", "ok connected=true"}
	brokertest.Eventually(t, 5*time.Second, func() bool { return len(h.list()) >= len(want) },
		"ConnectEnded calls: %v, want %v", h.list(), want)
	if got := h.list(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ConnectEnded calls: %v, want %v", got, want)
	}
}

// TestImportAndHandOver: a session imported with a subscription, a
// message in flight and a queued one is resumed by the next CONNECT with
// session present [MQTT-3.2.2-3]; the in-flight message is sent again
// first with DUP [MQTT-4.4.0-1], then the queued one. HandOver then takes
// the client over (DISCONNECT 0x8E [MQTT-3.1.4-3]) and removes the
// session from this server with a store write its replicas do not get.
func TestImportAndHandOver(t *testing.T) {
	rec := &replicaRecorder{}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New(); o.Hooks = []any{rec} })
	msg := func(id uint64, payload string) *store.Message {
		return &store.Message{ID: id, Received: time.Now(),
			Publish: &packet.Publish{Topic: "imp/t", QoS: 1, PacketID: 1, Payload: []byte(payload)}}
	}
	st := &store.SessionState{
		Session: &store.Session{ClientID: "imported", Version: packet.V5, ExpiryInterval: 600,
			DisconnectedAt: time.Now()},
		Subscriptions: []*store.Subscription{{ClientID: "imported", Sub: packet.Subscription{Filter: "imp/#", QoS: 1}}},
		Queue: []*store.QueueEntry{
			{ClientID: "imported", Seq: 7, MessageID: 70, QoS: 1, PacketID: 5, State: store.PublishSent},
			{ClientID: "imported", Seq: 8, MessageID: 80, QoS: 1, State: store.Queued},
		},
	}
	if err := srv.Server.ImportSession(st, map[uint64]*store.Message{70: msg(70, "first"), 80: msg(80, "second")}); err != nil {
		t.Fatal(err)
	}
	c, ack := brokertest.DialConnect(t, srv.Addr, persistent("imported"))
	if !ack.SessionPresent {
		t.Fatal("imported session not present")
	}
	p := c.ExpectPublish()
	if string(p.Payload) != "first" || !p.Dup || p.PacketID != 5 {
		t.Fatalf("first: %s", brokertest.Describe(p))
	}
	c.Ack(p)
	if p := c.ExpectPublish(); string(p.Payload) != "second" {
		t.Fatalf("second: %s", brokertest.Describe(p))
	} else {
		c.Ack(p)
	}
	// The imported subscription routes.
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "imp-pub", CleanStart: true})
	pub.Publish(&packet.Publish{Topic: "imp/x", QoS: 1, PacketID: 1, Payload: []byte("third")})
	if p := c.ExpectPublish(); string(p.Payload) != "third" {
		t.Fatalf("third: %s", brokertest.Describe(p))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	had, err := srv.Server.HandOver(ctx, "imported", true)
	if !had || err != nil {
		t.Fatalf("HandOver: %v %v", had, err)
	}
	got := c.ExpectClosed()
	if len(got) == 0 {
		t.Fatal("no DISCONNECT")
	}
	if d, ok := got[len(got)-1].(*packet.Disconnect); !ok || d.ReasonCode != packet.SessionTakenOver {
		t.Fatalf("[MQTT-3.1.4-3] got %v, want DISCONNECT 0x8E", got)
	}
	if _, ok := srv.Server.ClientDetail("imported"); ok {
		t.Fatal("session still here after HandOver")
	}
	rec.mu.Lock()
	local := rec.local
	rec.mu.Unlock()
	if local != 0 {
		t.Fatalf("%d Local batches given to the ReplicaHook", local)
	}
	_, ack = brokertest.DialConnect(t, srv.Addr, persistent("imported"))
	if ack.SessionPresent {
		t.Fatal("session present after it was handed over")
	}
}

// TestResumeSurvivesFailedConnectWrite: when the store write of a CONNECT
// that resumes a session fails, the CONNECT is refused (Server
// unavailable) and the session stays as it was, its queued message
// included: the client's next try resumes it [MQTT-3.1.2-4].
func TestResumeSurvivesFailedConnectWrite(t *testing.T) {
	fs := &fullStore{st: mem.New()}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = fs })
	sub, _ := brokertest.DialConnect(t, srv.Addr, persistent("resumer"))
	sub.Subscribe(1, 1, "res/t")
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed()
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "res-pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "res/t", QoS: 1, PacketID: 1, Payload: []byte("kept")}); rc != packet.Success {
		t.Fatalf("PUBACK %v", rc)
	}

	fs.full.Store(true)
	c := brokertest.Dial(t, srv.Addr, packet.V5)
	c.Send(persistent("resumer"))
	if ack, ok := c.Recv().(*packet.Connack); !ok || ack.ReasonCode != packet.ServerUnavailable {
		t.Fatalf("CONNACK %v, want Server unavailable", ack)
	}
	c.ExpectClosed()
	fs.full.Store(false)
	back, ack := brokertest.DialConnect(t, srv.Addr, persistent("resumer"))
	if !ack.SessionPresent {
		t.Fatal("[MQTT-3.1.2-4] the session was lost with the failed write")
	}
	if p := back.ExpectPublish(); string(p.Payload) != "kept" {
		t.Fatalf("got %s", brokertest.Describe(p))
	}
}

// TestPublishAllOneWrite: PublishAll routes a burst in order with one
// store write (one copy by the ReplicaHooks) for all of it; a message the
// checks refuse gets its own error and does not stop the others; an
// offline persistent subscriber gets the rest in order [MQTT-4.6.0-6].
func TestPublishAllOneWrite(t *testing.T) {
	rec := &replicaRecorder{}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New(); o.Hooks = []any{rec} })
	sub, _ := brokertest.DialConnect(t, srv.Addr, persistent("burst-sub"))
	sub.Subscribe(1, 1, "burst/#")
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed()
	writes := srv.Server.Stats().StoreWrites
	ms := []*broker.Message{
		{Topic: "burst/1", QoS: 1, Payload: []byte("1")},
		{Topic: "burst/+", QoS: 1, Payload: []byte("bad")},
		{Topic: "burst/2", QoS: 1, Payload: []byte("2")},
		{Topic: "burst/3", QoS: 0, Payload: []byte("3")},
		{Topic: "burst/4", QoS: 1, Payload: []byte("4")},
	}
	errs := srv.Server.PublishAll(ms)
	for i, err := range errs {
		if (err != nil) != (i == 1) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if n := srv.Server.Stats().StoreWrites - writes; n != 1 {
		t.Fatalf("store writes for the burst: %d, want 1", n)
	}
	rec.mu.Lock()
	entries := rec.entries
	rec.mu.Unlock()
	if entries != 3 {
		t.Fatalf("queue entries copied: %d, want 3", entries)
	}
	back, _ := brokertest.DialConnect(t, srv.Addr, persistent("burst-sub"))
	for _, want := range []string{"1", "2", "4"} {
		p := back.ExpectPublish()
		if string(p.Payload) != want {
			t.Fatalf("got %s, want %s", brokertest.Describe(p), want)
		}
		back.Ack(p)
	}
	back.ExpectNothing(100 * time.Millisecond)
}

// kindRecorder is a ReplicaHook that records the kinds of the records it
// copies, by client id.
type kindRecorder struct {
	mu    sync.Mutex
	kinds map[string][]store.OpKind
}

func (r *kindRecorder) Replicate(b *store.Batch, lazy bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kinds == nil {
		r.kinds = make(map[string][]store.OpKind)
	}
	for _, op := range b.Ops() {
		id := op.ClientID
		switch {
		case op.Session != nil:
			id = op.Session.ClientID
		case op.Subscription != nil:
			id = op.Subscription.ClientID
		case op.Entry != nil:
			id = op.Entry.ClientID
		}
		r.kinds[id] = append(r.kinds[id], op.Kind)
	}
	return nil
}

func (r *kindRecorder) of(id string) []store.OpKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.OpKind(nil), r.kinds[id]...)
}

// TestStandbySession: a session held for a server out of reach queues what
// is published for it, and only those queue entries reach the ReplicaHook
// (the record, the subscriptions and the will owed stay the holder's); its
// will is neither published nor scheduled. ImportSession then makes it this
// server's own, the imported queue first [MQTT-4.6.0-6], and the resumed
// session gets everything; HandOver lets another standby go without a
// record for the replicas.
func TestStandbySession(t *testing.T) {
	rec := &kindRecorder{}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New(); o.Hooks = []any{rec} })
	watcher, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "sb-watch", CleanStart: true})
	watcher.Subscribe(1, 0, "sb/will")
	state := func(id string) *store.SessionState {
		return &store.SessionState{
			Session: &store.Session{ClientID: id, Version: packet.V5, ExpiryInterval: 1,
				Will: &packet.Will{Topic: "sb/will", Payload: []byte("owed")}},
			Subscriptions: []*store.Subscription{{ClientID: id, Sub: packet.Subscription{Filter: "sb/t", QoS: 1}}},
		}
	}
	if err := srv.Server.StandbySession(state("held")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Server.StandbySession(state("held")); !errors.Is(err, broker.ErrSessionBusy) {
		t.Fatalf("second standby of one id: %v, want ErrSessionBusy", err)
	}
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "sb-pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "sb/t", QoS: 1, PacketID: 1, Payload: []byte("during")}); rc != packet.Success {
		t.Fatalf("PUBACK %v", rc)
	}
	for _, k := range rec.of("held") {
		if k != store.OpPutQueueEntry && k != store.OpPutMessage {
			t.Fatalf("standby gave the replicas a record of kind %v: only queue entries are its own", k)
		}
	}
	if n := len(rec.of("held")); n == 0 {
		t.Fatal("the queued message did not reach the replicas")
	}
	// Past the session's expiry interval (1 s) it is still here.
	watcher.ExpectNothing(1500 * time.Millisecond)
	if d, ok := srv.Server.ClientDetail("held"); !ok || d.Queued != 1 {
		t.Fatalf("standby session: %v %+v, want 1 queued", ok, d)
	}

	// Taken for real: what the holder had queued goes first.
	st := state("held")
	st.Session.ExpiryInterval = 600
	st.Session.Will = nil
	st.Queue = []*store.QueueEntry{{ClientID: "held", Seq: 3, MessageID: 9, QoS: 1, State: store.Queued}}
	if err := srv.Server.ImportSession(st, map[uint64]*store.Message{9: {ID: 9, Received: time.Now(),
		Publish: &packet.Publish{Topic: "sb/t", QoS: 1, PacketID: 1, Payload: []byte("before")}}}); err != nil {
		t.Fatal(err)
	}
	if d, _ := srv.Server.ClientDetail("held"); d.Expiry != 600*time.Second {
		t.Fatalf("expiry %v after the import, want the imported record's 10m", d.Expiry)
	}
	c, ack := brokertest.DialConnect(t, srv.Addr, persistent("held"))
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	for _, want := range []string{"before", "during"} {
		p := c.ExpectPublish()
		if string(p.Payload) != want {
			t.Fatalf("got %s, want %s", brokertest.Describe(p), want)
		}
		c.Ack(p)
	}

	if err := srv.Server.StandbySession(state("let-go")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if had, err := srv.Server.HandOver(ctx, "let-go", true); !had || err != nil {
		t.Fatalf("HandOver: %v %v", had, err)
	}
	if len(rec.of("let-go")) != 0 {
		t.Fatalf("letting a standby go gave the replicas %v", rec.of("let-go"))
	}
	watcher.ExpectNothing(200 * time.Millisecond)
}

// TestDeliverQueued: deliveries another server queued for a session go to
// it as if routed now: to the connected client at once, at the entry's QoS
// [MQTT-3.3.4-1], and into the queue of an offline one, which gets them when
// it resumes; an expired message is dropped [MQTT-3.3.2-5]; an id with no
// session here is refused.
func TestDeliverQueued(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New() })
	msg := func(id uint64, payload string, expired bool) *store.Message {
		m := &store.Message{ID: id, Received: time.Now(),
			Publish: &packet.Publish{Topic: "dq/t", QoS: 1, PacketID: 1, Payload: []byte(payload)}}
		if expired {
			m.Expiry = time.Now().Add(-time.Second)
		}
		return m
	}
	st := &store.SessionState{Queue: []*store.QueueEntry{
		{Seq: 2, MessageID: 20, QoS: 1}, {Seq: 1, MessageID: 10, QoS: 1}, {Seq: 3, MessageID: 30, QoS: 1}}}
	msgs := map[uint64]*store.Message{10: msg(10, "one", false), 20: msg(20, "two", false), 30: msg(30, "stale", true)}

	if _, err := srv.Server.DeliverQueued("nobody", st, msgs); !errors.Is(err, broker.ErrSessionBusy) {
		t.Fatalf("no session: %v, want ErrSessionBusy", err)
	}
	online, _ := brokertest.DialConnect(t, srv.Addr, persistent("dq-online"))
	if n, err := srv.Server.DeliverQueued("dq-online", st, msgs); n != 2 || err != nil {
		t.Fatalf("DeliverQueued: %d %v, want 2 (the expired one dropped)", n, err)
	}
	for _, want := range []string{"one", "two"} {
		p := online.ExpectPublish()
		if string(p.Payload) != want || p.QoS != 1 {
			t.Fatalf("got %s, want %s at QoS 1 in sequence order", brokertest.Describe(p), want)
		}
		online.Ack(p)
	}

	off, _ := brokertest.DialConnect(t, srv.Addr, persistent("dq-off"))
	off.Send(&packet.Disconnect{})
	off.ExpectClosed()
	if n, err := srv.Server.DeliverQueued("dq-off", st, msgs); n != 2 || err != nil {
		t.Fatalf("DeliverQueued offline: %d %v", n, err)
	}
	if d, _ := srv.Server.ClientDetail("dq-off"); d.Queued != 2 {
		t.Fatalf("queued %d, want 2", d.Queued)
	}
	back, ack := brokertest.DialConnect(t, srv.Addr, persistent("dq-off"))
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	for _, want := range []string{"one", "two"} {
		p := back.ExpectPublish()
		if string(p.Payload) != want {
			t.Fatalf("got %s, want %s", brokertest.Describe(p), want)
		}
		back.Ack(p)
	}
}

// TestImportedSessionOfAnotherListener: a session imported from another
// server names that server's listener, which this one does not serve.
// Without per-listener security (Options.ListenerSecurity) the ACL decides
// its deliveries as anyone's, so what is published for it while its client
// is away is queued and delivered [MQTT-3.1.2-5]; with it, the identity gets
// no decision (mayDecide) and nothing is delivered until the client
// connects through a listener here.
func TestImportedSessionOfAnotherListener(t *testing.T) {
	for _, scoped := range []bool{false, true} {
		t.Run(fmt.Sprintf("ListenerSecurity=%v", scoped), func(t *testing.T) {
			srv := brokertest.Start(t, func(o *broker.Options) {
				o.Store = mem.New()
				o.ListenerSecurity = scoped
				o.Authorize = func(*broker.ClientInfo, string, bool) bool { return true }
			})
			st := &store.SessionState{
				Session: &store.Session{ClientID: "elsewhere", Version: packet.V5, ExpiryInterval: 600,
					Listener: "10.9.9.9:1883", DisconnectedAt: time.Now()},
				Subscriptions: []*store.Subscription{{ClientID: "elsewhere", Sub: packet.Subscription{Filter: "ol/t", QoS: 1}}},
			}
			if err := srv.Server.ImportSession(st, nil); err != nil {
				t.Fatal(err)
			}
			pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "ol-pub", CleanStart: true})
			// 5.0 says when no subscriber took it (0x10).
			if rc := pub.Publish(&packet.Publish{Topic: "ol/t", QoS: 1, PacketID: 1, Payload: []byte("while away")}); rc != packet.Success && rc != packet.NoMatchingSubscribers {
				t.Fatalf("PUBACK %v", rc)
			}
			want := 1
			if scoped {
				want = 0
			}
			if d, _ := srv.Server.ClientDetail("elsewhere"); d.Queued != want {
				t.Fatalf("queued %d for the imported session, want %d", d.Queued, want)
			}
		})
	}
}

// orderedHook is an OrderedReplicaHook whose copies of batches that are
// waited for (not lazy) are taken, once armed, only when release is
// closed; it says they are ordered at once.
type orderedHook struct {
	armed   atomic.Bool
	release chan struct{}
	waiting atomic.Int32 // copies waiting for release
}

func (h *orderedHook) Replicate(b *store.Batch, lazy bool) error {
	return h.ReplicateOrdered(b, lazy, nil)
}

func (h *orderedHook) ReplicateOrdered(b *store.Batch, lazy bool, ordered func()) error {
	if ordered != nil {
		ordered()
	}
	if !lazy && h.armed.Load() {
		h.waiting.Add(1)
		defer h.waiting.Add(-1)
		<-h.release
	}
	return nil
}

// TestOrderedReplicaLetsQoS1Go: with an OrderedReplicaHook, a QoS 1
// delivery to a persistent session goes once the copy of its publisher's
// batch is ordered, while the publisher's PUBACK waits until the copy is
// taken [MQTT-4.3.2-2]; a QoS 2 delivery waits for the copy (sent once, it
// must not be sent again as a new message [MQTT-4.3.3-3]), and so does a
// handover of the session (its new owner reads the copies).
func TestOrderedReplicaLetsQoS1Go(t *testing.T) {
	h := &orderedHook{release: make(chan struct{})}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New(); o.Hooks = []any{h} })
	sub, _ := brokertest.DialConnect(t, srv.Addr, persistent("or-sub"))
	sub.Subscribe(1, 2, "or/#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "or-pub", CleanStart: true})
	h.armed.Store(true)

	pub.Send(&packet.Publish{Topic: "or/1", QoS: 1, PacketID: 1, Payload: []byte("1")})
	if p := sub.ExpectPublish(); p.Topic != "or/1" || p.QoS != 1 {
		t.Fatalf("subscriber got %s", brokertest.Describe(p))
	}
	pub.ExpectNothing(200 * time.Millisecond) // the copy is not taken yet
	pub.Send(&packet.Publish{Topic: "or/2", QoS: 2, PacketID: 2, Payload: []byte("2")})
	sub.ExpectNothing(200 * time.Millisecond)
	close(h.release)
	if got, ok := pub.Recv().(*packet.Puback); !ok || got.PacketID != 1 {
		t.Fatalf("publisher got %s, want PUBACK 1", brokertest.Describe(got))
	}
	if p := sub.ExpectPublish(); p.Topic != "or/2" || p.QoS != 2 {
		t.Fatalf("subscriber got %s", brokertest.Describe(p))
	}
}

// TestHandOverWaitsForCopies: a session handed over (HandOver with keep)
// leaves only once the copies of the writes begun before are taken: a QoS 1
// message queued for it, let go when its copy was ordered, is in the
// replica the new owner reads [MQTT-4.6.0-6].
func TestHandOverWaitsForCopies(t *testing.T) {
	h := &orderedHook{release: make(chan struct{})}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New(); o.Hooks = []any{h} })
	sub, _ := brokertest.DialConnect(t, srv.Addr, persistent("ho-sub"))
	sub.Subscribe(1, 1, "ho/#")
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed()
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "ho-pub", CleanStart: true})
	h.armed.Store(true)
	pub.Send(&packet.Publish{Topic: "ho/1", QoS: 1, PacketID: 1, Payload: []byte("1")})
	brokertest.Eventually(t, 5*time.Second, func() bool {
		d, ok := srv.Server.ClientDetail("ho-sub")
		return ok && d.Queued == 1 && h.waiting.Load() == 1
	}, "queued, its copy not taken")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := srv.Server.HandOver(ctx, "ho-sub", true)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("handed over before the copy was taken: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(h.release)
	if err := <-done; err != nil {
		t.Fatalf("hand over: %v", err)
	}
	if got, ok := pub.Recv().(*packet.Puback); !ok || got.PacketID != 1 {
		t.Fatalf("publisher got %s, want PUBACK 1", brokertest.Describe(got))
	}
}
