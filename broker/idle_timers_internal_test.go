package broker

// White-box tests of idleTimers (conn_poll.go), the one heap that holds the
// keep-alive and connect deadlines of every polled connection.

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// checkHeap verifies the heap order, the entries' back-indexes and that no
// entry is keyed later than its connection's deadline.
func checkHeap(t *testing.T, tm *idleTimers, conns []*conn) {
	t.Helper()
	for i, e := range tm.heap {
		if p := (i - 1) / 2; i > 0 && tm.heap[p].key > e.key {
			t.Fatalf("heap order broken at %d: parent key %d > %d", i, tm.heap[p].key, e.key)
		}
		if int(e.c.dueIdx.Load()) != i+1 {
			t.Fatalf("entry %d has dueIdx %d", i, e.c.dueIdx.Load())
		}
		if d := e.c.due.Load(); d != 0 && e.key > d {
			t.Fatalf("entry %d keyed at %d, later than its deadline %d", i, e.key, d)
		}
	}
	in := 0
	for _, c := range conns {
		if c.dueIdx.Load() != 0 {
			in++
		}
	}
	if in != len(tm.heap) {
		t.Fatalf("%d connections claim a heap entry, the heap has %d", in, len(tm.heap))
	}
}

// Random deadlines that move later (a burst parking), earlier (a keep
// alive shorter than the connect timeout left) or go (keep alive 0, the
// end): the heap stays ordered, and expiring at a time returns exactly the
// connections whose deadline passed, each once, keeping the others.
func TestIdleTimers_HeapAndExpiry(t *testing.T) {
	tm := &idleTimers{next: -1} // stopped: no runtime timer, the heap alone
	rng := rand.New(rand.NewPCG(1, 2))
	conns := make([]*conn, 200)
	for i := range conns {
		conns[i] = &conn{}
	}
	for range 5000 {
		c := conns[rng.IntN(len(conns))]
		switch op := rng.IntN(10); {
		case op < 6: // later (or first)
			tm.schedule(c, c.due.Load()+1+rng.Int64N(1000))
		case op < 8: // earlier
			tm.schedule(c, 1+rng.Int64N(1000))
		default:
			tm.cancel(c)
		}
		checkHeap(t, tm, conns)
	}
	for _, now := range []int64{200, 600, 1 << 40} {
		var want []*conn
		for _, c := range conns {
			if d := c.due.Load(); c.dueIdx.Load() != 0 && d <= now {
				want = append(want, c)
			}
		}
		got := tm.expireLocked(now, nil)
		checkHeap(t, tm, conns)
		key := func(c *conn) int { return slices.Index(conns, c) }
		sortByIndex := func(s []*conn) { slices.SortFunc(s, func(a, b *conn) int { return key(a) - key(b) }) }
		sortByIndex(got)
		sortByIndex(want)
		if !slices.Equal(got, want) {
			t.Fatalf("expire at %d: %d connections, want %d", now, len(got), len(want))
		}
		for _, e := range tm.heap {
			if e.c.due.Load() <= now {
				t.Fatalf("a connection due at %d stayed in the heap after expiring at %d", e.c.due.Load(), now)
			}
		}
	}
	if len(tm.heap) != 0 || tm.heap != nil {
		t.Fatalf("%d entries left after expiring everything", len(tm.heap))
	}
}
