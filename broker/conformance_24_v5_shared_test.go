package broker_test

// Shared subscriptions (MQTT 5.0 section 4.8.2), for v5 and v3.1.1 members.

import (
	"fmt"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// countShared publishes n QoS 0 messages from pubID to "sh/t" and counts
// what each member receives.
func countShared(t *testing.T, srv *brokertest.Server, pubID string, n int, members ...*brokertest.Conn) []int {
	t.Helper()
	p := client(t, srv, packet.V5, pubID)
	for i := range n {
		p.Publish(pub("sh/t", fmt.Sprint(i), 0, 0))
	}
	p.Ping()
	counts := make([]int, len(members))
	total := 0
	for total < n {
		progress := false
		for i, m := range members {
			if _, err := m.RecvTimeout(quiet); err == nil {
				counts[i]++
				total++
				progress = true
			}
		}
		if !progress {
			t.Fatalf("received %d of %d (%v)", total, n, counts)
		}
	}
	return counts
}

// Each message goes to one member of each group, under each policy; v5 and
// 3.1.1 clients share a group.
func TestV5Shared_Policies_MQTT_4_8_2_3(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy broker.SharedSubPolicy
		check  func(t *testing.T, counts []int)
	}{
		{"round-robin", broker.SharedRoundRobin, func(t *testing.T, c []int) {
			if c[0] != 5 || c[1] != 5 {
				t.Fatalf("round-robin split %v, want [5 5]", c)
			}
		}},
		{"random", broker.SharedRandom, func(t *testing.T, c []int) {
			if c[0] == 0 || c[1] == 0 { // all 40 to one member: 2^-39
				t.Fatalf("random split %v", c)
			}
		}},
		{"hash by client id", broker.SharedHashClientID, func(t *testing.T, c []int) {
			if c[0] != 0 && c[1] != 0 {
				t.Fatalf("one publisher's messages split %v, want all to one member", c)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := brokertest.Start(t, func(o *broker.Options) { o.SharedSubPolicy = tc.policy })
			a := client(t, srv, packet.V5, "sh-a")
			subscribe(t, a, 1, 0, "$share/g/sh/t")
			b := client(t, srv, packet.V311, "sh-b")
			subscribe(t, b, 1, 0, "$share/g/sh/t")
			n := 10
			if tc.policy == broker.SharedRandom {
				n = 40
			}
			tc.check(t, countShared(t, srv, "sh-pub", n, a, b))
			a.ExpectNothing(quiet) // each message went to one member only
			b.ExpectNothing(0)
		})
	}
}

// No retained message is sent on a shared subscribe (section 4.8.2).
func TestV5Shared_NoRetainedOnSubscribe(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		p := client(t, srv, v, "ret-pub")
		r := pub("shr/a", "kept", 1, 1) // QoS 1: retained before the subscriber comes
		r.Retain = true
		p.Publish(r)
		c := client(t, srv, v, "ret-sub")
		subscribe(t, c, 1, 1, "$share/g/shr/#")
		c.ExpectNothing(quiet)
	})
}

// A member that leaves with QoS 1 messages unacknowledged (its session
// ends): they go to the rest of the group. A QoS 2 delivery that started
// is not sent to another member [MQTT-4.8.2-5]; queued ones are.
func TestV5Shared_RedistributedWhenMemberLeaves_MQTT_4_8_2_5(t *testing.T) {
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		srv := brokertest.Start(t, func(o *broker.Options) {
			o.MaxInflight = 1
			o.ReceiveMaximum = 20 // the inbound window of okConnack, not MaxInflight's
		})
		a := client(t, srv, v, "leaver")
		subscribe(t, a, 1, 2, "$share/g/rd/#")
		p := client(t, srv, packet.V5, "rd-pub")
		p.Publish(pub("rd/1", "one", 1, 1))       // in flight to a
		p.Publish(pub("rd/2", "two", 1, 2))       // queued behind a's window
		expectPub(t, a, pub("rd/1", "one", 1, 0)) // not acknowledged
		b := client(t, srv, v, "stayer")
		subscribe(t, b, 1, 2, "$share/g/rd/#")
		a.NC.Close() // clean session: it ends
		got := map[string]bool{}
		for range 2 {
			m := b.ExpectPublish()
			got[string(m.Payload)] = true
			b.Ack(m)
		}
		if !got["one"] || !got["two"] {
			t.Fatalf("redistributed %v, want one and two", got)
		}

		// QoS 2 in flight to a member that leaves stays with it.
		c := client(t, srv, v, "leaver2")
		subscribe(t, c, 1, 2, "$share/h/q2/#")
		p.Publish(pub("q2/x", "exactly-once", 2, 3))
		expectPub(t, c, pub("q2/x", "exactly-once", 2, 0))
		d := client(t, srv, v, "stayer2")
		subscribe(t, d, 1, 2, "$share/h/q2/#")
		c.NC.Close()
		d.ExpectNothing(quiet)
	})
}
