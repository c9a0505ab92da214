package broker_test

// Security finding 4 of issue 16: a session restored from the store keeps
// the listener its client came through, so that per-listener security
// (per_listener_settings) still applies to it after a restart; and when
// that listener is gone, no ACL decision is taken for it (fail closed)
// until the client connects again.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// restoreACL is the ACL of the restricted listener: victim may read and
// write ok/# only, watcher read everything, pub write everything.
const restoreACL = "user victim\ntopic readwrite ok/#\nuser watcher\ntopic read #\nuser pub\ntopic write #\n"

// perListenerBroker runs a broker on st, serving lns, whose Authorize hook
// applies acl to clients of the listener named restricted and allows
// everything on any other listener name (as config.Auth does with the
// global settings of per_listener_settings when they have no acl_file). It
// restores st first and stops when the test ends or stop is called.
func perListenerBroker(t *testing.T, st store.Store, acl *auth.ACL, restricted string, lns ...net.Listener) (stop func()) {
	t.Helper()
	srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1, Store: st, Logger: slog.New(slog.DiscardHandler),
		ListenerSecurity: true,
		Authorize: func(ci *broker.ClientInfo, topicName string, write bool) bool {
			if ci.Listener != restricted {
				return true
			}
			access := auth.Read
			if write {
				access = auth.Write
			}
			c := &auth.Client{ClientID: ci.ClientID, Username: ci.Username, HasUsername: ci.HasUsername}
			return acl.Authorize(context.Background(), c, topicName, access)
		},
		CheckSubscribe: func(*broker.ClientInfo, string) bool { return true }, // checked on delivery
	})
	if err := srv.Restore(); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, len(lns))
	for _, l := range lns {
		go func() { errs <- srv.Serve(l) }()
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range lns {
			if err := <-errs; !errors.Is(err, broker.ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func loadACL(t *testing.T, text string) *auth.ACL {
	t.Helper()
	p := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.LoadACLFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// v5Connect connects id as user over addr (v5); persistent asks for a
// session expiry of an hour; will, if set, is the will.
func v5Connect(t *testing.T, addr, id, user string, persistent bool, will *packet.Will) (*brokertest.Conn, bool) {
	t.Helper()
	c := brokertest.Dial(t, addr, packet.V5)
	cp := &packet.Connect{ClientID: id, CleanStart: !persistent, Username: user, HasUsername: true, Will: will}
	if persistent {
		cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}
	}
	return c, c.Connect(cp).SessionPresent
}

func delayedWill(topicName string, delay uint32) *packet.Will {
	return &packet.Will{Topic: topicName, Payload: []byte("gone"), QoS: 1,
		Props: &packet.Properties{WillDelay: packet.Ptr(delay)}}
}

// beforeRestart leaves, on st, victim's offline session (through listener
// a, subscribed to #) and, when withWills, two sessions of user victim
// whose delayed wills are owed: "dying" on secret/will (which victim may
// not publish to on a) after 2s, "control" on ok/will after 3s.
func beforeRestart(t *testing.T, st store.Store, acl *auth.ACL, a net.Listener, withWills bool) {
	stop := perListenerBroker(t, st, acl, a.Addr().String(), a)
	addr := a.Addr().String()
	victim, _ := v5Connect(t, addr, "victim-id", "victim", true, nil)
	if ack := victim.Subscribe(1, 1, "#"); ack.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", ack.ReasonCodes)
	}
	disconnect(t, victim)
	if withWills {
		v5Connect(t, addr, "dying", "victim", true, delayedWill("secret/will", 2))
		v5Connect(t, addr, "control", "victim", true, delayedWill("ok/will", 3))
	}
	stop() // the wills are owed, with what is left of their delays
}

// TestSecurityRestoreListenerACL: after a restart, the restored session of
// victim is still judged by the ACL of its listener: a message it may not
// read there is not queued for it, and the delayed will of a session
// there, which that ACL does not let it publish, is not published after
// the restart. (Before, a restored session had no listener: the
// Authorize hook fell back to the permissive global settings.)
func TestSecurityRestoreListenerACL(t *testing.T) {
	st := mem.New()
	acl := loadACL(t, restoreACL)
	a := listen(t, "127.0.0.1:0")
	addrA := a.Addr().String()
	beforeRestart(t, st, acl, a, true)

	// The same listener again (same name), and an unrestricted one.
	a2, b2 := listen(t, addrA), listen(t, "127.0.0.1:0")
	perListenerBroker(t, st, acl, addrA, a2, b2)
	watcher, _ := v5Connect(t, addrA, "watcher-id", "watcher", false, nil)
	subscribe(t, watcher, 1, 1, "secret/#", "ok/#")
	pb, _ := v5Connect(t, addrA, "pub-id", "pub", false, nil)
	pb.Publish(pub("secret/x", "denied to victim", 1, 1))
	pb.Publish(pub("ok/x", "allowed", 1, 2))

	// victim comes back through the unrestricted listener: everything that
	// was queued for it is readable there, so it gets exactly what was
	// queued.
	victim, present := v5Connect(t, b2.Addr().String(), "victim-id", "victim", true, nil)
	if !present {
		t.Fatal("session not restored")
	}
	if p := victim.ExpectPublish(); p.Topic != "ok/x" {
		t.Fatalf("victim received %s: queued after the restart although its listener's ACL denies it",
			brokertest.Describe(p))
	} else {
		victim.Ack(p)
	}
	expectNoPublishBefore(t, victim, "victim")

	// The watcher sees pub's messages, then control's will; never dying's.
	for {
		p := watcher.ExpectPublish()
		watcher.Ack(p)
		if p.Topic == "secret/will" {
			t.Fatal("the will denied by the listener's ACL was published after the restart")
		}
		if p.Topic == "ok/will" {
			break
		}
	}
	expectNoPublishBefore(t, watcher, "watcher")
}

// TestSecurityRestoreListenerGone: after a restart without the listener a
// session came through, the restored session fails closed: no message is
// queued for it, even one the old listener's ACL allowed, until its
// client connects again; from then on its new listener decides.
func TestSecurityRestoreListenerGone(t *testing.T) {
	st := mem.New()
	acl := loadACL(t, restoreACL)
	a := listen(t, "127.0.0.1:0")
	addrA := a.Addr().String()
	beforeRestart(t, st, acl, a, false)

	b2 := listen(t, "127.0.0.1:0") // listener a is gone
	perListenerBroker(t, st, acl, addrA, b2)
	addrB := b2.Addr().String()
	pb, _ := v5Connect(t, addrB, "pub-id", "pub", false, nil)
	pb.Publish(pub("ok/x", "no listener to decide", 1, 1))
	pb.Publish(pub("secret/x", "no listener to decide", 1, 2))

	victim, present := v5Connect(t, addrB, "victim-id", "victim", true, nil)
	if !present {
		t.Fatal("session not restored")
	}
	expectNoPublishBefore(t, victim, "victim")
	pb.Publish(pub("ok/y", "after the reconnect", 1, 3))
	if p := victim.ExpectPublish(); p.Topic != "ok/y" {
		t.Fatalf("victim received %s, want ok/y", brokertest.Describe(p))
	}
}
