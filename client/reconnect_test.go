package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// A session takeover drops the client's connection; it reconnects and
// re-sends the messages that were in flight [MQTT-4.4.0-1].
func TestReconnectAfterTakeover(t *testing.T) {
	srv := startBroker(t)
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			id := "takeover-" + v.String()
			topic := "take/" + v.String()
			var col collector
			sub := dial(t, srv.URL(), Options{Version: v})
			subscribe(t, sub, topic, 2, col.handle)

			px := startTCPProxy(t, srv.Addr)
			lost := make(chan error, 4)
			var connects atomic.Int32
			a := dial(t, px.url(), Options{
				Version: v, ClientID: id, PersistentSession: true,
				AutoReconnect: true, MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
				OnConnectionLost: func(_ *Client, err error) { lost <- err },
				OnConnect:        func(*Client, *packet.Connack) { connects.Add(1) },
			})
			brokertest.Eventually(t, 5*time.Second, func() bool { return connects.Load() == 1 })
			px.pauseAll() // what a sends now never reaches the broker
			const n = 6
			var wg sync.WaitGroup
			var failed atomic.Int32
			for i := range n {
				wg.Add(1)
				err := a.PublishAsync(testCtx(t), topic, []byte(fmt.Sprint(i)), PublishOptions{QoS: byte(1 + i%2)}, func(err error) {
					if err != nil {
						failed.Add(1)
					}
					wg.Done()
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if a.Pending() != n {
				t.Fatalf("Pending() = %d, want %d", a.Pending(), n)
			}
			// Another client with the same id takes the session over.
			b := dial(t, srv.URL(), Options{Version: v, ClientID: id, PersistentSession: true})
			var err error
			select {
			case err = <-lost:
			case <-time.After(5 * time.Second):
				t.Fatal("connection loss not reported")
			}
			if v == packet.V5 && takeoverDisconnect && !errors.Is(err, packet.SessionTakenOver) {
				t.Fatalf("connection lost with %v, want session taken over", err)
			}
			// a reconnects (taking the session back) and re-sends.
			waitGroup(t, &wg, 10*time.Second)
			if failed.Load() != 0 {
				t.Fatalf("%d publishes failed", failed.Load())
			}
			// OnConnect runs once the re-sent messages are on their way: the
			// acknowledgements may come first.
			brokertest.Eventually(t, 5*time.Second, func() bool { return connects.Load() >= 2 },
				"OnConnect called %d times, want 2", connects.Load())
			msgs := col.wait(t, n)
			seen := map[string]bool{}
			for _, m := range msgs {
				seen[string(m.Payload)] = true
			}
			for i := range n {
				if !seen[fmt.Sprint(i)] {
					t.Fatalf("message %d lost; got %d messages", i, len(msgs))
				}
			}
			_ = b.Close()
		})
	}
}

// With a clean session the server forgets subscriptions; after
// reconnecting the client subscribes again.
func TestReconnectResubscribes(t *testing.T) {
	srv := startBroker(t)
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			topic := "resub/" + v.String()
			px := startTCPProxy(t, srv.Addr)
			var connects atomic.Int32
			var col collector
			a := dial(t, px.url(), Options{
				Version: v, AutoReconnect: true, MinBackoff: 10 * time.Millisecond,
				OnConnect: func(*Client, *packet.Connack) { connects.Add(1) },
			})
			subscribe(t, a, topic, 1, col.handle)
			px.dropAll()
			brokertest.Eventually(t, 5*time.Second, func() bool { return connects.Load() == 2 && a.IsConnected() })
			pub := dial(t, srv.URL(), Options{Version: v})
			// The resubscription may still be on its way: publish until it lands.
			brokertest.Eventually(t, 5*time.Second, func() bool {
				if err := pub.Publish(testCtx(t), topic, []byte("again"), PublishOptions{QoS: 1}); err != nil {
					t.Fatal(err)
				}
				return len(col.get()) > 0
			})
		})
	}
}

// Without AutoReconnect a lost connection stops the client.
func TestConnectionLostStops(t *testing.T) {
	srv := startBroker(t)
	px := startTCPProxy(t, srv.Addr)
	lost := make(chan error, 1)
	c := dial(t, px.url(), Options{OnConnectionLost: func(_ *Client, err error) { lost <- err }})
	errs := make(chan error, 1)
	px.pauseAll()
	if err := c.PublishAsync(testCtx(t), "x", nil, PublishOptions{QoS: 1}, func(err error) { errs <- err }); err != nil {
		t.Fatal(err)
	}
	px.dropAll()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client still running")
	}
	cause := <-lost
	if cause == nil || !errors.Is(c.Err(), ErrConnectionLost) || !errors.Is(c.Err(), cause) {
		t.Fatalf("Err() = %v, OnConnectionLost got %v", c.Err(), cause)
	}
	if err := waitErr(t, errs); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("in-flight publish ended with %v", err)
	}
	if _, err := c.Subscribe(testCtx(t), []packet.Subscription{{Filter: "a"}}, nil); err == nil {
		t.Fatal("Subscribe on a stopped client succeeded")
	}
}

// A client that restarts with the same file store sends what the earlier
// one could not.
func TestFileStoreSurvivesRestart(t *testing.T) {
	srv := startBroker(t)
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			topic := "store/" + v.String()
			var col collector
			sub := dial(t, srv.URL(), Options{Version: v})
			subscribe(t, sub, topic, 2, col.handle)

			dir := t.TempDir()
			st, err := NewFileStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			px := startTCPProxy(t, srv.Addr)
			a := dial(t, px.url(), Options{Version: v, Store: st, AutoReconnect: true, MinBackoff: 20 * time.Millisecond})
			px.close() // the server is unreachable from now on
			brokertest.Eventually(t, 5*time.Second, func() bool { return !a.IsConnected() })
			const n = 5
			for i := range n {
				props := &packet.Properties{ContentType: "n/" + fmt.Sprint(i)}
				if err := a.PublishAsync(testCtx(t), topic, []byte(fmt.Sprint(i)), PublishOptions{QoS: byte(1 + i%2), Props: props}, nil); err != nil {
					t.Fatal(err)
				}
			}
			files, _ := filepath.Glob(filepath.Join(dir, "*.msg"))
			if len(files) != n {
				t.Fatalf("%d files in the store, want %d", len(files), n)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := NewFileStore(dir); !errors.Is(err, ErrStoreLocked) {
				t.Fatalf("second NewFileStore on a directory in use = %v, want ErrStoreLocked", err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			st2, err := NewFileStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st2.Close() })
			b := dial(t, srv.URL(), Options{Version: v, Store: st2})
			msgs := col.wait(t, n)
			next := map[byte]int{1: 0, 2: 1}
			for _, m := range msgs {
				if string(m.Payload) != fmt.Sprint(next[m.QoS]) {
					t.Fatalf("QoS %d message %q, want %d", m.QoS, m.Payload, next[m.QoS])
				}
				if v == packet.V5 && (m.Props == nil || m.Props.ContentType != "n/"+string(m.Payload)) {
					t.Fatalf("stored properties lost: %+v", m.Props)
				}
				next[m.QoS] += 2
			}
			brokertest.Eventually(t, 5*time.Second, func() bool {
				files, _ := filepath.Glob(filepath.Join(dir, "*.msg"))
				return b.Pending() == 0 && len(files) == 0
			}, "acknowledged messages left in the store")
		})
	}
}

func TestFileStore(t *testing.T) {
	dir := t.TempDir()
	st, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	msgs := []*StoredMessage{
		{Seq: 3, Publish: &packet.Publish{QoS: 1, PacketID: 9, Topic: "a", Payload: []byte("x"), Retain: true}},
		{Seq: 1, Released: true, Publish: &packet.Publish{QoS: 2, PacketID: 2, Topic: "b",
			Props: &packet.Properties{MessageExpiry: packet.Ptr(uint32(60)), User: []packet.UserProperty{{Key: "k", Value: "v"}}}}},
		{Seq: 2, Publish: &packet.Publish{QoS: 2, PacketID: 65535, Topic: "c", Payload: make([]byte, 70000)}},
	}
	for _, m := range msgs {
		if err := st.Put(m); err != nil {
			t.Fatal(err)
		}
	}
	// Put replaces.
	if err := st.Put(&StoredMessage{Seq: 3, Publish: &packet.Publish{QoS: 1, PacketID: 9, Topic: "a2"}}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Seq != 1 || got[1].Seq != 2 || got[2].Seq != 3 {
		t.Fatalf("Load order wrong: %d messages", len(got))
	}
	if !got[0].Released || got[0].Publish.Topic != "b" || *got[0].Publish.Props.MessageExpiry != 60 || got[0].Publish.Props.User[0].Value != "v" {
		t.Fatalf("message 2: %+v", got[0].Publish)
	}
	if len(got[1].Publish.Payload) != 70000 || got[1].Publish.PacketID != 65535 {
		t.Fatalf("message 65535: %d bytes", len(got[1].Publish.Payload))
	}
	if got[2].Publish.Topic != "a2" || got[2].Released {
		t.Fatalf("replaced message: %+v", got[2].Publish)
	}
	if err := st.Delete(2); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(2); err != nil {
		t.Fatalf("deleting a missing message: %v", err)
	}
	if got, _ := st.Load(); len(got) != 2 {
		t.Fatalf("%d messages after Delete", len(got))
	}

	t.Run("leftover temporary file is removed", func(t *testing.T) {
		tmp := filepath.Join(dir, ".tmp-123")
		if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(tmp); !os.IsNotExist(err) {
			t.Fatalf("temporary file still there: %v", err)
		}
	})
	t.Run("corrupt file", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, "00077.msg"), []byte("MQCS\x01\x00garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(); !errors.Is(err, ErrCorruptStore) {
			t.Fatalf("Load = %v, want ErrCorruptStore", err)
		}
		if _, err := Dial(testCtx(t), "mqtt://127.0.0.1:1", Options{Store: st}); !errors.Is(err, ErrCorruptStore) {
			t.Fatalf("Dial with a corrupt store = %v", err)
		}
	})
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("not done within %v", d)
	}
}

// Close from the callbacks does not deadlock.
func TestCloseFromCallbacks(t *testing.T) {
	srv := startBroker(t)
	t.Run("OnConnect", func(t *testing.T) {
		c := dial(t, srv.URL(), Options{OnConnect: func(c *Client, _ *packet.Connack) { _ = c.Close() }})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("client did not stop")
		}
	})
	t.Run("OnConnectionLost", func(t *testing.T) {
		px := startTCPProxy(t, srv.Addr)
		c := dial(t, px.url(), Options{AutoReconnect: true, MinBackoff: 10 * time.Millisecond,
			OnConnectionLost: func(c *Client, _ error) { _ = c.Close() }})
		px.dropAll()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("client did not stop")
		}
		if !errors.Is(c.Err(), ErrClosed) {
			t.Fatalf("Err() = %v", c.Err())
		}
	})
}
