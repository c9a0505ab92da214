package broker_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// crashPublisher is a 3.1.1 publisher with a persistent session whose state
// (what is unacknowledged) outlives its connections, as a real client's
// does: after a reconnect it re-sends its unacknowledged PUBLISHes with DUP
// and its PUBRELs, in the original order [MQTT-4.4.0-1] [MQTT-4.6.0-1].
type crashPublisher struct {
	id      string
	qos     byte
	next    int            // next sequence to publish
	pending map[int]bool   // seq -> PUBREC received (QoS 2)
	acked   int            // completed acknowledgements
	byID    map[uint16]int // packet id -> seq
	window  int
	err     error         // why the last run ended early
	pace    time.Duration // between new messages: a run's budget outlasts the kill moment
}

func newCrashPublisher(id string, qos byte) *crashPublisher {
	return &crashPublisher{id: id, qos: qos, next: 1, pending: map[int]bool{}, byID: map[uint16]int{}, window: 5}
}

func (p *crashPublisher) pid(seq int) uint16 { return uint16(seq%60000 + 1) }

func (p *crashPublisher) publish(w *bufio.Writer, seq int, dup bool) error {
	return packet.Write(w, &packet.Publish{Topic: "corder/" + p.id, QoS: p.qos, PacketID: p.pid(seq), Dup: dup,
		Payload: []byte(fmt.Sprintf("%s-%d", p.id, seq))}, packet.V311)
}

// run connects, resumes, and publishes up to budget with window messages in
// flight until the budget is done (true) or the connection breaks (false).
func (p *crashPublisher) run(addr string, budget int) bool {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	r, w := bufio.NewReader(nc), bufio.NewWriter(nc)
	if packet.Write(nc, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: p.id, CleanStart: false}, packet.V311) != nil {
		return false
	}
	if a, err := packet.Read(r, packet.V311, 0); err != nil || a.Type() != packet.CONNACK || a.(*packet.Connack).ReasonCode != 0 {
		return false
	}
	seqs := make([]int, 0, len(p.pending))
	for s := range p.pending {
		seqs = append(seqs, s)
	}
	sort.Ints(seqs)
	for _, s := range seqs {
		var err error
		if p.pending[s] {
			err = packet.Write(w, &packet.Pubrel{PacketID: p.pid(s)}, packet.V311)
		} else {
			err = p.publish(w, s, true)
		}
		if err != nil {
			return false
		}
	}
	for {
		for p.next <= budget && len(p.pending) < p.window {
			if p.pace > 0 {
				if w.Flush() != nil {
					return false
				}
				time.Sleep(p.pace) // pacing the load, not a wait for a condition
			}
			p.pending[p.next] = false
			p.byID[p.pid(p.next)] = p.next
			if p.publish(w, p.next, false) != nil {
				return false
			}
			p.next++
		}
		if w.Flush() != nil {
			return false
		}
		if p.next > budget && len(p.pending) == 0 {
			packet.Write(nc, &packet.Disconnect{}, packet.V311)
			return true
		}
		a, err := packet.Read(r, packet.V311, 0)
		if err != nil {
			p.err = err
			return false
		}
		switch a := a.(type) {
		case *packet.Puback:
			delete(p.pending, p.byID[a.PacketID])
			p.acked++
		case *packet.Pubrec:
			p.pending[p.byID[a.PacketID]] = true
			if packet.Write(w, &packet.Pubrel{PacketID: a.PacketID}, packet.V311) != nil {
				return false
			}
		case *packet.Pubcomp:
			delete(p.pending, p.byID[a.PacketID])
			p.acked++
		}
	}
}

// crashSubscriber reads the persistent session "corder-sub" until its
// connection breaks, feeding oc (under mu).
func crashSubscriber(addr string, oc *orderChecker, mu *sync.Mutex) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	var wmu sync.Mutex
	send := func(p packet.Packet) {
		wmu.Lock()
		defer wmu.Unlock()
		packet.Write(nc, p, packet.V311)
	}
	send(&packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "corder-sub", CleanStart: false})
	if a, err := packet.Read(r, packet.V311, 0); err != nil || a.Type() != packet.CONNACK {
		return
	}
	for {
		nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		p, err := packet.Read(r, packet.V311, 0)
		if err != nil {
			return
		}
		mu.Lock()
		oc.handleWith(send, p)
		mu.Unlock()
	}
}

// TestCrashOrderExactlyOnce_MQTT_4_3_3_2: the kill -9 test with the default
// queue settings. Three publishers with persistent sessions (QoS 1 and 2,
// five messages in flight each) stream into a persistent subscriber's
// session; the broker is killed with SIGKILL at random moments and
// restarted; the publishers reconnect and resume (re-sending PUBLISH with
// DUP and PUBREL [MQTT-4.4.0-1]). In the end the subscriber drains its
// session: every message of every publisher is there, the first deliveries
// in each publisher's order [MQTT-4.6.0-6], each QoS 2 message exactly once
// across the crashes [MQTT-4.3.3-2] (the inbound packet ids are stored).
// The subscriber is offline until the end: the total stays within the
// default max_queued_messages (1000). With the subscriber online during the
// kills see TestCrashOrderOnlineSubscriber_MQTT_4_3_3_2.
func TestCrashOrderExactlyOnce_MQTT_4_3_3_2(t *testing.T) {
	crashOrder(t, false)
}

// TestStoreOrderOnlineSubscriber_MQTT_4_3_3_2: the same without a crash. A
// persistent subscriber is online and answers at once; four publishers
// stream QoS 2 (and QoS 1) messages into it with ten in flight. No store
// batch may be refused: every publisher completes (a refused batch makes
// the broker refuse QoS 1/2 messages and close the publisher), and the
// subscriber gets every message once, in order per publisher. The
// subscriber's queue holds all 2000: a publisher hears PUBACK/PUBREC once
// its message is stored, not once it is delivered, so the publishers run
// ahead of the subscriber (whose QoS 2 PUBREL waits for a synced write,
// 20 in flight) by as many messages as the timing allows, and past the
// default max_queued_messages (1000) the broker drops them, as it must.
func TestStoreOrderOnlineSubscriber_MQTT_4_3_3_2(t *testing.T) {
	dir := t.TempDir()
	srv, _ := startStored(t, dir, func(o *broker.Options) { o.MaxQueuedMessages = -1 })
	sub := brokertest.Dial(t, srv.Addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "online", CleanStart: false})
	sub.Subscribe(1, 2, "live/#")
	oc := newOrderChecker()
	const per = 500
	errc := make(chan error, 4)
	for i := range 4 {
		go func() {
			errc <- publishWindow(srv.Addr, fmt.Sprintf("lp%d", i), fmt.Sprintf("live/%d", i), byte(1+i%2), 1, per, 10)
		}()
	}
	for oc.delivered < 4*per {
		p, err := sub.RecvTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d: %v (dropped: queue full %d)", oc.delivered, 4*per, err, srv.Stats().DroppedQueueFull)
		}
		oc.handle(sub, p)
	}
	for range 4 {
		if err := <-errc; err != nil {
			t.Errorf("publisher: %v", err)
		}
	}
	for _, e := range oc.errs {
		t.Error(e)
	}
}

// TestCrashOrderOnlineSubscriber_MQTT_4_3_3_2: the kill -9 test with the
// persistent subscriber online during the stream and the kills. A QoS 1/2
// message routed to the online subscriber is written to it only once the
// publisher's store batch holding the message and its queue entry is
// applied (session.holdsFor, conn.releaseHeld), and PUBREL only once its
// "PUBREL sent" state is stored: otherwise the subscriber's acknowledgement
// puts a queue entry naming a message the store does not hold yet (the
// batch is refused), or the publisher's late batch puts back an entry the
// subscriber already completed, and a restart re-sends a QoS 2 message
// that was delivered (QoS 2 twice). Per publisher the order holds
// [MQTT-4.6.0-6]: a delivery released from its hold is not written before
// an earlier one still held by another pump (writeReleasedLocked), and a
// restart re-sends in queue order what the store left half in flight
// (promoteLocked). Before those two it failed about one run in twenty
// ("cq2b: got 104 after 105").
func TestCrashOrderOnlineSubscriber_MQTT_4_3_3_2(t *testing.T) {
	crashOrder(t, true)
}

func crashOrder(t *testing.T, online bool) {
	if testing.Short() {
		t.Skip("crash test: not in -short")
	}
	t.Setenv("MQTTD_CRASH_DEFAULTS", "1")
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(12, 34))
	runs := 4 // MQTTD_CRASH_RUNS raises it outside CI
	if n, err := strconv.Atoi(os.Getenv("MQTTD_CRASH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	pubs := []*crashPublisher{newCrashPublisher("cq1", 1), newCrashPublisher("cq2", 2), newCrashPublisher("cq2b", 2)}
	// Offline, the session holds everything: 900 messages at most, within
	// the default queue of 1000 (plus the window).
	perRun := max(300/(runs+1), 5)
	if online {
		perRun = 150
	}
	for _, p := range pubs {
		p.pace = 200 * time.Millisecond / time.Duration(perRun)
	}
	oc := newOrderChecker()
	oc.anyDup = true
	var mu sync.Mutex
	inFlightAtKill, killsInFlight := 0, 0
	for run := range runs + 1 {
		b := startCrashBroker(t, dir)
		if run == 0 {
			// The persistent subscriber's session and subscription.
			sub := brokertest.Dial(t, b.addr, packet.V311)
			sub.Connect(&packet.Connect{ClientID: "corder-sub", CleanStart: false})
			sub.Subscribe(1, 2, "corder/#")
			sub.Send(&packet.Disconnect{})
			sub.ExpectClosed()
		}
		budget := (run + 1) * perRun
		subDone := make(chan struct{})
		startSub := func() {
			go func() {
				defer close(subDone)
				crashSubscriber(b.addr, oc, &mu)
			}()
		}
		if online {
			startSub()
		}
		var wg sync.WaitGroup
		finished := make([]bool, len(pubs))
		for i, p := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				finished[i] = p.run(b.addr, budget)
			}()
		}
		if run < runs {
			time.Sleep(time.Duration(20+rng.IntN(150)) * time.Millisecond) // the kill moment, not a wait for a condition
			b.kill()
			wg.Wait()
			n := 0
			for _, p := range pubs {
				n += len(p.pending)
			}
			inFlightAtKill += n
			if n > 0 {
				killsInFlight++
			}
			if online {
				<-subDone
			}
			continue
		}
		// The last run: no kill; everything completes, then drains.
		wg.Wait()
		for i, p := range pubs {
			if !finished[i] {
				t.Fatalf("%s did not finish: %d pending: %v", p.id, len(p.pending), p.err)
			}
		}
		if !online {
			startSub()
		}
		want := len(pubs) * budget
		deadline := time.Now().Add(15 * time.Second)
		for {
			mu.Lock()
			n := oc.delivered
			mu.Unlock()
			if n >= want {
				break
			}
			if time.Now().After(deadline) {
				mu.Lock()
				t.Fatalf("delivered %d of %d (last per publisher %v; errors %v)", n, want, oc.last, oc.errs)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // a quiet period in which a late duplicate would show, not a wait for a condition
		b.kill()
		<-subDone
		mu.Lock()
		defer mu.Unlock()
		for _, e := range oc.errs {
			t.Error(e)
		}
		dups := 0
		for _, n := range oc.seen {
			dups += n - 1
		}
		for _, p := range pubs {
			if oc.last[p.id] != budget {
				t.Errorf("%s: last delivered %d, want %d", p.id, oc.last[p.id], budget)
			}
		}
		t.Logf("kill -9 runs: %d (%d with messages in flight), messages: %d, unacknowledged at the kills: %d, QoS 1 duplicates delivered: %d",
			runs, killsInFlight, want, inFlightAtKill, dups)
		if killsInFlight == 0 {
			t.Fatal("no kill hit a publisher with messages in flight: the test tested nothing")
		}
	}
}
