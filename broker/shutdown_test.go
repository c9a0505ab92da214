package broker_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// closedStore is a memory store that counts the calls made after Close.
type closedStore struct {
	*mem.Store
	closed atomic.Bool
	late   atomic.Int64
}

func (s *closedStore) Apply(b *store.Batch) error {
	if s.closed.Load() {
		s.late.Add(1)
	}
	return s.Store.Apply(b)
}

func (s *closedStore) ApplyNoSync(b *store.Batch) error { return s.Apply(b) }

func (s *closedStore) Close() error {
	s.closed.Store(true)
	return s.Store.Close()
}

// A Shutdown past its deadline stops everything it started: the
// session-expiry and will-delay timers of offline sessions do not fire
// into the store after it (the delayed will stays in the store for the
// next start), the connections it force-closed have ended when it returns,
// and the goroutine count goes back to where it was.
func TestShutdown_PastDeadlineStopsTimers(t *testing.T) {
	base := runtime.NumGoroutine()
	st := &closedStore{Store: mem.New()}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })

	// An offline session that expires 1 s after its disconnect.
	exp := brokertest.Dial(t, srv.Addr, packet.V5)
	exp.Send(&packet.Connect{Version: packet.V5, ClientID: "sd-expiry",
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](1)}})
	exp.ExpectPacket(okConnack(packet.V5, false))
	subscribe(t, exp, 1, 1, "sd/x")
	disconnect(t, exp)
	// An offline session whose retained will waits 1 s (MQTT-3.1.2-8).
	wl := brokertest.Dial(t, srv.Addr, packet.V5)
	wl.Send(&packet.Connect{Version: packet.V5, ClientID: "sd-will",
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](60)},
		Will: &packet.Will{Topic: "sd/will", Payload: []byte("gone"), QoS: 1, Retain: true,
			Props: &packet.Properties{WillDelay: packet.Ptr[uint32](1)}}})
	wl.ExpectPacket(okConnack(packet.V5, false))
	wl.NC.Close()
	waitOffline(t, srv, 2)
	due := time.Now().Add(time.Second) // the timers were armed before now
	// A connected client with a persistent session, force-closed.
	live := connect(t, srv, packet.V311, "sd-live", true, false)
	subscribe(t, live, 1, 1, "sd/y")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Shutdown(ctx); err != context.Canceled {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	live.ExpectClosed()
	state, err := st.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var will *packet.Will
	for _, ss := range state.Sessions {
		if ss.Session.ClientID == "sd-will" {
			will = ss.Session.Will
		}
	}
	if will == nil || will.Topic != "sd/will" {
		t.Fatalf("the delayed will is not in the store: %+v", will)
	}
	st.Close()

	brokertest.Eventually(t, 10*time.Second, func() bool {
		return time.Now().After(due.Add(500*time.Millisecond)) && runtime.NumGoroutine() <= base
	}, "goroutines: %d, at the start %d", runtime.NumGoroutine(), base)
	if n := st.late.Load(); n != 0 {
		t.Fatalf("%d store writes after Shutdown returned and the store closed", n)
	}
}
