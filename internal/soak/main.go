// Command soak puts a mixed MQTT load on a running broker for a bounded time
// (connect/disconnect churn, session takeovers, persistent sessions that go
// offline and come back, retained churn, wildcard subscribers, QoS 0/1/2
// publishers) while sampling the broker process: resident memory, threads,
// open descriptors, goroutines (from its metrics endpoint) and the size of
// its store. It prints a table over time and exits 1 when something grows
// after the warm-up. scripts/soak.sh runs it against an mqttd it starts.
//
// What counts as growth. The broker's memory is the Go heap (sessions,
// messages, connections: where a leak of the broker's own shows) plus
// memory outside it, mostly Pebble's block cache and memtables, which cgo
// allocates and which fill up to their configured sizes over minutes of
// writes (store/pebble: a 32 MB cache, memtables of 32 MB, two at most
// before writes stall): filling them is not a leak. So the checks are:
//
//   - Go heap in use at the end of the load at most 2 x after the warm-up
//     plus 8 MB, and at rest after the load at most 16 MB above at rest
//     before it (what the sessions still hold: their bounded queues,
//     retained messages);
//
//   - RSS outside the Go heap at the end at most -store-mem-mb (the
//     store's cache budget, 96 MB) above what it was after the warm-up;
//
//   - sessions at rest (persistent ones only: the load keeps 9) and
//     messages queued at rest within what the load's sessions may hold;
//
//   - the store directory at most 4 x its size after the warm-up, or
//     within the warm-up size plus -store-disk-mb: Pebble keeps its
//     write-ahead log files (up to a 32 MB memtable of writes each) for
//     reuse, the active one and up to three flushed ones, so a busy
//     store's directory holds about 4 x 32 MB of log whatever its live
//     data (seen: four 27 MB logs beside a 16 kB table after 25 minutes);
//
//   - descriptors and goroutines at rest (all clients gone) no more than
//     at rest before the load.
//
// Usage:
//
//	go run ./internal/soak -addr 127.0.0.1:1883 -pid PID -metrics http://127.0.0.1:9100/metrics -store DIR -duration 60s
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
)

var (
	addr       = flag.String("addr", "127.0.0.1:1883", "broker address")
	pid        = flag.Int("pid", 0, "broker process id (sampled in /proc)")
	metricsURL = flag.String("metrics", "", "broker metrics URL (go_goroutines, mqttd_clients_connected)")
	storeDir   = flag.String("store", "", "broker store directory (its size is sampled)")
	duration   = flag.Duration("duration", 60*time.Second, "how long the load runs")
	samples    = flag.Int("samples", 12, "samples taken during the load")
	storeMemMB = flag.Int64("store-mem-mb", 96, "memory the store may fill outside the Go heap (Pebble cache and memtables), MB")
	storeDisk  = flag.Int64("store-disk-mb", 160, "disk the store may fill whatever its live data (Pebble's log files kept for reuse, tables), MB")
)

// The load's persistent sessions (durable-0..5, taken-0..2) and the
// broker's default max_queued_messages: at rest, nothing more may be held.
const (
	loadSessions   = 9
	maxQueuedPerSn = 1000
)

// counters of the load, printed with each sample.
var (
	nConnects  atomic.Int64
	nPublished atomic.Int64
	nReceived  atomic.Int64
	nTakeovers atomic.Int64
	nErrors    atomic.Int64
)

func main() {
	flag.Parse()
	if *pid == 0 {
		fmt.Fprintln(os.Stderr, "soak: -pid is required")
		os.Exit(2)
	}
	rest0, err := settle(10 * time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	fmt.Printf("at rest before the load: %s\n\n", rest0)
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	var wg sync.WaitGroup
	startLoad(ctx, &wg)

	fmt.Printf("%7s %9s %9s %7s %5s %6s %10s %7s %5s %6s %8s %9s %9s %6s %5s\n",
		"time", "rss_kb", "heap_kb", "threads", "fds", "gorout", "store_kb", "conns", "sess", "queued", "connects", "published", "received", "takeov", "errs")
	warmAt := *duration / 4
	var warm, last sample
	every := *duration / time.Duration(*samples)
	start := time.Now()
	tick := time.NewTicker(every)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		s := take()
		last = s
		if warm.rss == 0 && time.Since(start) >= warmAt {
			warm = s
		}
		fmt.Printf("%6.0fs %9d %9d %7d %5d %6d %10d %7d %5d %6d %8d %9d %9d %6d %5d\n", time.Since(start).Seconds(),
			s.rss, s.heapKB, s.threads, s.fds, s.goroutines, s.storeKB, s.conns, s.sessions, s.queued,
			nConnects.Load(), nPublished.Load(), nReceived.Load(), nTakeovers.Load(), nErrors.Load())
	}
	tick.Stop()
	cancel()
	wg.Wait()
	rest1, err := settle(15 * time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	fmt.Printf("\nat rest after the load:  %s\n", rest1)
	fmt.Printf("after the warm-up (%v): rss %d kB, store %d kB; at the end: rss %d kB, store %d kB\n",
		warmAt, warm.rss, warm.storeKB, last.rss, last.storeKB)

	fmt.Printf("outside the Go heap: %d kB after the warm-up, %d kB at the end (store budget %d MB)\n",
		warm.rss-warm.heapKB, last.rss-last.heapKB, *storeMemMB)
	var fail []string
	if warm.heapKB > 0 && last.heapKB > 2*warm.heapKB+8<<10 {
		fail = append(fail, fmt.Sprintf("Go heap in use grew from %d kB after the warm-up to %d kB", warm.heapKB, last.heapKB))
	}
	if rest0.heapKB > 0 && rest1.heapKB > rest0.heapKB+16<<10 {
		fail = append(fail, fmt.Sprintf("Go heap in use at rest grew from %d kB to %d kB", rest0.heapKB, rest1.heapKB))
	}
	if warm.rss > 0 && (last.rss-last.heapKB)-(warm.rss-warm.heapKB) > *storeMemMB<<10 {
		fail = append(fail, fmt.Sprintf("RSS outside the Go heap grew by %d kB after the warm-up (store budget %d MB)",
			(last.rss-last.heapKB)-(warm.rss-warm.heapKB), *storeMemMB))
	}
	if rest1.sessions > loadSessions {
		fail = append(fail, fmt.Sprintf("%d sessions at rest, the load keeps %d", rest1.sessions, loadSessions))
	}
	if rest1.queued > loadSessions*maxQueuedPerSn {
		fail = append(fail, fmt.Sprintf("%d messages queued at rest, the load's sessions hold at most %d", rest1.queued, loadSessions*maxQueuedPerSn))
	}
	if rest1.fds > rest0.fds+4 {
		fail = append(fail, fmt.Sprintf("descriptors at rest grew from %d to %d", rest0.fds, rest1.fds))
	}
	if rest0.goroutines > 0 && rest1.goroutines > rest0.goroutines+20 {
		fail = append(fail, fmt.Sprintf("goroutines at rest grew from %d to %d", rest0.goroutines, rest1.goroutines))
	}
	if warm.storeKB > 0 && last.storeKB > 4*warm.storeKB && last.storeKB > warm.storeKB+*storeDisk<<10 {
		fail = append(fail, fmt.Sprintf("store grew from %d kB after the warm-up to %d kB", warm.storeKB, last.storeKB))
	}
	if nPublished.Load() == 0 || nReceived.Load() == 0 {
		fail = append(fail, "no message went through")
	}
	for _, f := range fail {
		fmt.Println("FAIL:", f)
	}
	if len(fail) > 0 {
		os.Exit(1)
	}
	fmt.Println("OK: no growth after the warm-up")
}

// scraper holds no idle connection: the broker's goroutine count stays the
// same from one sample to the next.
var scraper = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

type sample struct {
	rss, threads, fds, goroutines, storeKB, conns, heapKB int64
	sessions, queued                                      int64 // from the metrics
}

func (s sample) String() string {
	return fmt.Sprintf("rss %d kB, heap in use %d kB, threads %d, fds %d, goroutines %d, store %d kB, clients connected %d, sessions %d, queued %d",
		s.rss, s.heapKB, s.threads, s.fds, s.goroutines, s.storeKB, s.conns, s.sessions, s.queued)
}

func take() sample {
	var s sample
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "VmRSS:":
				s.rss, _ = strconv.ParseInt(f[1], 10, 64)
			case "Threads:":
				s.threads, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", *pid)); err == nil {
		s.fds = int64(len(ents))
	}
	if *storeDir != "" {
		var n int64
		filepath.WalkDir(*storeDir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
		s.storeKB = n >> 10
	}
	s.goroutines, s.conns, s.sessions, s.queued = -1, -1, -1, -1
	if *metricsURL != "" {
		if r, err := scraper.Get(*metricsURL); err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					s.goroutines = int64(f)
				}
				if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					s.heapKB = int64(f) >> 10
				}
				if v, ok := strings.CutPrefix(line, "mqttd_clients_connected "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					s.conns = int64(f)
				}
				if v, ok := strings.CutPrefix(line, "mqttd_sessions "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					s.sessions = int64(f)
				}
				if v, ok := strings.CutPrefix(line, "mqttd_messages_queued "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					s.queued = int64(f)
				}
			}
		}
	}
	return s
}

// settle waits until no client is connected (when the metrics say so) and
// the descriptor count is stable, and returns that sample with the fewest
// goroutines seen over three samples (the broker's store runs background
// work that comes and goes).
func settle(d time.Duration) (sample, error) {
	deadline := time.Now().Add(d)
	prev := take()
	stable := 0
	for {
		time.Sleep(500 * time.Millisecond) // sampling interval
		s := take()
		if os.Getenv("SOAK_DEBUG") != "" {
			fmt.Println("settle:", s)
		}
		if s.conns <= 0 && s.fds == prev.fds {
			stable++
			s.goroutines = min(s.goroutines, prev.goroutines)
		} else {
			stable = 0
		}
		if stable >= 3 {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("broker not at rest after %v: %s", d, s)
		}
		prev = s
	}
}

// client is a raw MQTT connection.
type client struct {
	nc  net.Conn
	r   *bufio.Reader
	v   packet.Version
	wmu sync.Mutex
}

func dial(cp *packet.Connect) (*client, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", *addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	if cp.Version == 0 {
		cp.Version = packet.V311
	}
	cp.ProtocolName = "MQTT"
	c := &client{nc: nc, r: bufio.NewReader(nc), v: cp.Version}
	nConnects.Add(1)
	if err := c.send(cp); err != nil {
		nc.Close()
		return nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := packet.Read(c.r, c.v, 0)
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReasonCode != 0 {
		nc.Close()
		return nil, nil, fmt.Errorf("CONNACK: %v", p)
	}
	return c, ack, nil
}

func (c *client) send(p packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return packet.Write(c.nc, p, c.v)
}

// readLoop reads until the connection ends, acknowledging deliveries.
func (c *client) readLoop() {
	for {
		p, err := packet.Read(c.r, c.v, 0)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			nReceived.Add(1)
			switch p.QoS {
			case 1:
				c.send(&packet.Puback{PacketID: p.PacketID})
			case 2:
				c.send(&packet.Pubrec{PacketID: p.PacketID})
			}
		case *packet.Pubrel:
			c.send(&packet.Pubcomp{PacketID: p.PacketID})
		}
	}
}

// publish sends one message and waits for its acknowledgement (QoS 1/2);
// the connection must have no reader of its own.
func (c *client) publish(p *packet.Publish) error {
	if err := c.send(p); err != nil {
		return err
	}
	nPublished.Add(1)
	if p.QoS == 0 {
		return nil
	}
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		a, err := packet.Read(c.r, c.v, 0)
		if err != nil {
			return err
		}
		switch a := a.(type) {
		case *packet.Puback, *packet.Pubcomp:
			return nil
		case *packet.Pubrec:
			if err := c.send(&packet.Pubrel{PacketID: a.PacketID}); err != nil {
				return err
			}
		}
	}
}

func (c *client) subscribe(qos byte, filters ...string) error {
	sp := &packet.Subscribe{PacketID: 1}
	for _, f := range filters {
		sp.Subscriptions = append(sp.Subscriptions, packet.Subscription{Filter: f, QoS: qos})
	}
	return c.send(sp)
}

// closeWhenDone closes c when ctx ends.
func closeWhenDone(ctx context.Context, c *client) func() {
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	return func() { stop(); c.nc.Close() }
}

// pause waits d or until ctx ends, and reports whether to go on.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func startLoad(ctx context.Context, wg *sync.WaitGroup) {
	spawn := func(n int, f func(i int, rng *rand.Rand)) {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f(i, rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))))
			}()
		}
	}
	fail := func(err error) {
		if err != nil && ctx.Err() == nil {
			if nErrors.Add(1) <= 5 {
				fmt.Println("client error:", err)
			}
		}
	}

	// Wildcard subscribers, long-lived.
	filters := []string{"load/+/x", "#", "ret/#", "load/#"}
	spawn(len(filters), func(i int, _ *rand.Rand) {
		for ctx.Err() == nil {
			c, _, err := dial(&packet.Connect{ClientID: fmt.Sprintf("wild-%d", i), CleanStart: true, KeepAlive: 30})
			if err != nil {
				fail(err)
				pause(ctx, time.Second)
				continue
			}
			done := closeWhenDone(ctx, c)
			c.subscribe(byte(i%3), filters[i])
			c.readLoop()
			done()
		}
	})

	// Publishers at QoS 0, 1 and 2, paced.
	spawn(3, func(i int, rng *rand.Rand) {
		for ctx.Err() == nil {
			c, _, err := dial(&packet.Connect{ClientID: fmt.Sprintf("pub-%d", i), CleanStart: true, KeepAlive: 30})
			if err != nil {
				fail(err)
				pause(ctx, time.Second)
				continue
			}
			done := closeWhenDone(ctx, c)
			for id := 1; ctx.Err() == nil; id++ {
				p := &packet.Publish{Topic: fmt.Sprintf("load/%d/x", rng.IntN(20)), QoS: byte(i), Payload: make([]byte, 16+rng.IntN(512))}
				if i > 0 {
					p.PacketID = uint16(id%65535 + 1)
				}
				if err := c.publish(p); err != nil {
					fail(err)
					break
				}
				if !pause(ctx, 2*time.Millisecond) {
					break
				}
			}
			done()
		}
	})

	// Retained churn: set, replace and clear retained messages.
	spawn(1, func(_ int, rng *rand.Rand) {
		for ctx.Err() == nil {
			c, _, err := dial(&packet.Connect{ClientID: "retainer", CleanStart: true})
			if err != nil {
				fail(err)
				pause(ctx, time.Second)
				continue
			}
			done := closeWhenDone(ctx, c)
			for id := 1; ctx.Err() == nil; id++ {
				payload := make([]byte, rng.IntN(256))
				if rng.IntN(4) == 0 {
					payload = nil // clears the topic
				}
				p := &packet.Publish{Topic: fmt.Sprintf("ret/%d", rng.IntN(500)), QoS: 1, Retain: true, PacketID: uint16(id%65535 + 1), Payload: payload}
				if err := c.publish(p); err != nil {
					fail(err)
					break
				}
				if !pause(ctx, 5*time.Millisecond) {
					break
				}
			}
			done()
		}
	})

	// Connect/disconnect churn: short clean sessions, some subscribing,
	// some leaving without DISCONNECT, some 5.0.
	spawn(4, func(i int, rng *rand.Rand) {
		for n := 0; ctx.Err() == nil; n++ {
			v := packet.V311
			if rng.IntN(2) == 0 {
				v = packet.V5
			}
			c, _, err := dial(&packet.Connect{Version: v, ClientID: fmt.Sprintf("churn-%d-%d", i, n), CleanStart: true, KeepAlive: 10})
			if err != nil {
				fail(err)
				pause(ctx, 100*time.Millisecond)
				continue
			}
			if rng.IntN(2) == 0 {
				c.subscribe(1, fmt.Sprintf("load/%d/x", rng.IntN(20)), "ret/1")
			}
			c.publish(&packet.Publish{Topic: "churn/x", Payload: []byte("hi")})
			if rng.IntN(3) > 0 {
				c.send(&packet.Disconnect{})
			}
			c.nc.Close()
			if !pause(ctx, time.Duration(rng.IntN(20))*time.Millisecond) {
				return
			}
		}
	})

	// Takeovers: two goroutines keep connecting with the same few ids.
	spawn(2, func(i int, rng *rand.Rand) {
		for ctx.Err() == nil {
			c, ack, err := dial(&packet.Connect{ClientID: fmt.Sprintf("taken-%d", rng.IntN(3)), CleanStart: rng.IntN(2) == 0, KeepAlive: 10})
			if err != nil {
				fail(err)
				pause(ctx, 100*time.Millisecond)
				continue
			}
			if ack.SessionPresent {
				nTakeovers.Add(1)
			}
			c.subscribe(1, "load/1/x")
			wg.Add(1)
			go func() { // ends when taken over or closed
				defer wg.Done()
				done := closeWhenDone(ctx, c)
				c.readLoop()
				done()
			}()
			if !pause(ctx, time.Duration(50+rng.IntN(200))*time.Millisecond) {
				return
			}
			if rng.IntN(4) == 0 {
				c.nc.Close() // the others end taken over
			}
		}
	})

	// Persistent 5.0 sessions: online a while, offline a while (messages
	// queue), back again; some sessions are dropped with clean start.
	spawn(6, func(i int, rng *rand.Rand) {
		for ctx.Err() == nil {
			cp := &packet.Connect{Version: packet.V5, ClientID: fmt.Sprintf("durable-%d", i), CleanStart: rng.IntN(10) == 0, KeepAlive: 30,
				Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](30)}}
			c, _, err := dial(cp)
			if err != nil {
				fail(err)
				pause(ctx, time.Second)
				continue
			}
			done := closeWhenDone(ctx, c)
			c.subscribe(byte(1+i%2), fmt.Sprintf("load/%d/x", i))
			online := time.Duration(200+rng.IntN(1000)) * time.Millisecond
			go func() {
				pause(ctx, online)
				c.send(&packet.Disconnect{})
				c.nc.Close()
			}()
			c.readLoop()
			done()
			if !pause(ctx, time.Duration(200+rng.IntN(1500))*time.Millisecond) {
				return
			}
		}
	})
}
