package broker_test

// Security finding 3 of issue 16: a client id is no credential. A user who
// resumes another user's persistent session (same client id, clean
// session 0) must not receive the messages queued or in flight for the
// session's previous owner that the new user may not read.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// aclOptions sets up a password file and an ACL file: alice may read
// alice/#, bob may read bob/#, pub may write everything.
func aclOptions(t *testing.T) func(*broker.Options) {
	t.Helper()
	dir := t.TempDir()
	var pw []byte
	for _, u := range []string{"alice", "bob", "pub"} {
		h, err := auth.HashPassword("pw-" + u)
		if err != nil {
			t.Fatal(err)
		}
		pw = append(pw, u+":"+h+"\n"...)
	}
	pwPath, aclPath := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	acl := "user alice\ntopic read alice/#\nuser bob\ntopic read bob/#\nuser pub\ntopic write #\n"
	if err := os.WriteFile(pwPath, pw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclPath, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	pf, err := auth.LoadPasswordFile(pwPath)
	if err != nil {
		t.Fatal(err)
	}
	af, err := auth.LoadACLFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	client := func(ci *broker.ClientInfo) *auth.Client {
		return &auth.Client{ClientID: ci.ClientID, Username: ci.Username, HasUsername: ci.HasUsername,
			Password: ci.Password, HasPassword: ci.HasPassword}
	}
	return func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Authenticate = func(ci *broker.ClientInfo) error {
			return pf.Authenticate(context.Background(), client(ci))
		}
		o.Authorize = func(ci *broker.ClientInfo, topicName string, write bool) bool {
			access := auth.Read
			if write {
				access = auth.Write
			}
			return af.Authorize(context.Background(), client(ci), topicName, access)
		}
	}
}

// userConnect connects as user with client id id, persistent (clean
// session 0 / clean start 0 with a session expiry), and returns the
// connection and whether the server said session present.
func userConnect(t *testing.T, srv *brokertest.Server, v packet.Version, id, user string) (*brokertest.Conn, bool) {
	t.Helper()
	c := brokertest.Dial(t, srv.Addr, v)
	cp := connectPkt(v, id, true)
	cp.Username, cp.HasUsername = user, true
	cp.Password, cp.HasPassword = []byte("pw-"+user), true
	return c, c.Connect(cp).SessionPresent
}

// expectNoPublishBefore asserts that the next packet c receives is not a
// PUBLISH: ping proves everything the server had to send came first.
func expectNoPublishBefore(t *testing.T, c *brokertest.Conn, who string) {
	t.Helper()
	c.Send(&packet.Pingreq{})
	if p := c.Recv(); p.Type() != packet.PINGRESP {
		t.Fatalf("%s received %s, want nothing before PINGRESP", who, brokertest.Describe(p))
	}
}

// TestSecurityResumeOtherUserQueued: alice's persistent session (alice/#)
// has a QoS 1 message queued; bob connects with her client id and clean
// session 0. bob resumes the session (session present) but receives
// nothing of alice's: the queued message is dropped, as bob may not read
// it. The subscriptions stay: bob gets what he may read, alice, back
// later, gets new messages again.
func TestSecurityResumeOtherUserQueued(t *testing.T) {
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		srv := brokertest.Start(t, aclOptions(t))
		alice, _ := userConnect(t, srv, v, "alice-id", "alice")
		subscribe(t, alice, 1, 1, "alice/#")
		disconnect(t, alice)
		waitOffline(t, srv, 1)

		pb, _ := userConnect(t, srv, v, "pub-id", "pub")
		if rc := pb.Publish(pub("alice/secret", "for alice only", 1, 1)); rc != packet.Success {
			t.Fatalf("PUBACK %v", rc)
		}

		bob, present := userConnect(t, srv, v, "alice-id", "bob")
		if !present {
			t.Fatal("session present = 0: the session was not resumed")
		}
		expectNoPublishBefore(t, bob, "bob")
		subscribe(t, bob, 2, 1, "bob/#")
		pb.Publish(pub("alice/secret2", "for alice only", 1, 2))
		pb.Publish(pub("bob/hello", "for bob", 1, 3))
		if p := bob.ExpectPublish(); p.Topic != "bob/hello" {
			t.Fatalf("bob received %s, want only bob/hello", brokertest.Describe(p))
		} else {
			bob.Ack(p)
		}
		expectNoPublishBefore(t, bob, "bob")
		disconnect(t, bob)
		waitOffline(t, srv, 1)

		// alice is back: the message was dropped when bob resumed (not
		// kept for her); her subscription still delivers.
		alice, _ = userConnect(t, srv, v, "alice-id", "alice")
		expectNoPublishBefore(t, alice, "alice")
		pb.Publish(pub("alice/later", "new", 1, 4))
		if p := alice.ExpectPublish(); p.Topic != "alice/later" {
			t.Fatalf("alice received %s, want alice/later", brokertest.Describe(p))
		}
	})
}

// TestSecurityResumeOtherUserInflight: a QoS 1 message was sent to alice,
// who went away without PUBACK. bob resumes her session: the DUP resend
// does not reach him, the in-flight slot is freed (with a window of one,
// bob's own message still gets through) and the store entry is deleted.
func TestSecurityResumeOtherUserInflight(t *testing.T) {
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		st := mem.New()
		srv := brokertest.Start(t, aclOptions(t), func(o *broker.Options) {
			o.Store = st
			o.MaxInflight = 1
		})
		alice, _ := userConnect(t, srv, v, "alice-id", "alice")
		subscribe(t, alice, 1, 1, "alice/#")
		pb, _ := userConnect(t, srv, v, "pub-id", "pub")
		pb.Publish(pub("alice/inflight", "for alice only", 1, 1))
		if p := alice.ExpectPublish(); p.Topic != "alice/inflight" {
			t.Fatalf("alice received %s", brokertest.Describe(p))
		}
		alice.NC.Close() // no PUBACK, no DISCONNECT
		waitOffline(t, srv, 1)

		bob, present := userConnect(t, srv, v, "alice-id", "bob")
		if !present {
			t.Fatal("session present = 0: the session was not resumed")
		}
		expectNoPublishBefore(t, bob, "bob")
		subscribe(t, bob, 2, 1, "bob/#")
		pb.Publish(pub("bob/hello", "for bob", 1, 2))
		if p := bob.ExpectPublish(); p.Topic != "bob/hello" || p.Dup {
			t.Fatalf("bob received %s, want bob/hello", brokertest.Describe(p))
		} else {
			bob.Ack(p)
		}
		expectNoPublishBefore(t, bob, "bob")
		brokertest.Eventually(t, 5*time.Second, func() bool {
			state, err := st.Load(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			for _, ss := range state.Sessions {
				if ss.Session.ClientID == "alice-id" {
					return len(ss.Queue) == 0
				}
			}
			return false
		}, "alice's in-flight message is still in the store")
	})
}
