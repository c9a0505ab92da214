//go:build linux && !386

package broker

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// spinSample is how often the spinner measures the process's load, and
// spinHotLoad the load, in cores of work, from which it spins.
const (
	spinSample  = 5 * time.Millisecond
	spinHotLoad = 0.3
)

// A sample in which at least spinJudged spins ran and fewer than
// spinMinHits of them found an event is followed by spinCool samples
// without spinning; then the spinner tries again.
const (
	spinJudged  = 8
	spinMinHits = 0.8
	spinCool    = 7
)

// spinner decides whether the dispatcher, having found no more events,
// parks at once or first polls the epoll set for up to max.
//
// Parking costs a wake-up when the next event comes: the thread sleeps in
// the kernel, and on a virtual machine the virtual CPU halts and must be
// woken by the host. There that costs tens of microseconds to more than a
// hundred, and a flow bounded by round trips (QoS 1 fan-in: the
// subscriber's window of 20 in flight) pays it on every round trip while
// the broker's core sits idle. Polling for a while instead keeps the core
// and meets the next event at once, at the price of the CPU spent polling.
// So it spins only while the process is busy anyway: when its CPU time,
// less what spinning itself wasted, was at least spinHotLoad of a core
// over the last spinSample. A lightly loaded broker (a few thousand
// messages a second) parks exactly as before, and an idle one never wakes
// for this; each spin gives up after max of polling that found nothing.
//
// Nor does it spin while the store syncs writes (persistent sessions under
// persistence_sync always: any synced write in the last sample). There the
// spin cost more than it saved: the thread back from a sync found the
// processor taken, and the deliveries, served faster, brought the store
// one small batch at a time, so that its syncs, each a few hundred
// microseconds of the core on a virtual machine's disk, were no longer
// grouped (store/pebble's syncPause). QoS 1 fan-in to persistent sessions
// fell from 56k-65k to 38k-60k msg/s, a single persistent pair from 52k to
// 42k.
//
// Nor does it spin where spinning mostly fails (spinCool): in a storm of
// connections the next event is often a new connection, which waits in Go's
// network poller where the spin cannot see it, and about three spins in ten
// gave up after max. There the spin cost about 30 µs of the core per
// connection and saved nothing (19,500 connections, 100 at a time: 147-164
// µs of the broker's CPU per connection with the spin, 116-131 without;
// docs/performance.md). The flows that gain from it find an event in 97 to
// 99 spins in a hundred (QoS 1 and 2 fan-in, fan-out, pairs). After a
// failing sample it rests seven: a storm of connections keeps an eighth
// of its spins.
//
// Only run's goroutine uses a spinner; tests read its counters.
type spinner struct {
	max     time.Duration        // longest poll that finds nothing; 0: never spin
	hotLoad float64              // cores of work from which to spin
	cpu     func() time.Duration // the process's CPU time so far
	syncs   func() uint64        // the store's synced writes so far (store.SyncCounter); nil: none

	hot     bool
	sampled time.Time     // when load was last measured
	cpuAt   time.Duration // cpu() then
	waste   time.Duration // polling that ran nothing since then
	syncsAt uint64        // syncs() then
	tried   int           // spins since then
	found   int           // of them, those that found an event
	cool    int           // samples left without spinning (spinCool)

	spins atomic.Uint64 // spins started
	hits  atomic.Uint64 // spins that found an event
}

func newSpinner(max time.Duration) *spinner {
	return &spinner{max: max, hotLoad: spinHotLoad, cpu: processCPU}
}

// measure refreshes hot once per spinSample. The first sample after a long
// park spans the park, so a broker that was idle starts cold.
func (s *spinner) measure(now time.Time) {
	if now.Sub(s.sampled) < spinSample {
		return
	}
	cpu := s.cpu()
	var syncs uint64
	if s.syncs != nil {
		syncs = s.syncs()
	}
	if !s.sampled.IsZero() {
		work := cpu - s.cpuAt - s.waste
		s.hot = float64(work) >= s.hotLoad*float64(now.Sub(s.sampled)) && syncs == s.syncsAt
		switch {
		case s.cool > 0:
			s.cool--
			s.hot = false
		case s.tried >= spinJudged && float64(s.found) < spinMinHits*float64(s.tried):
			s.cool = spinCool
			s.hot = false
		}
	}
	s.sampled, s.cpuAt, s.waste, s.syncsAt = now, cpu, 0, syncs
	s.tried, s.found = 0, 0
}

// wait polls epfd for events while the broker is hot, letting every other
// runnable goroutine run between two polls (the bursts just dispatched,
// their writers). It returns what a poll found, or 0 when the spin gave up
// (or did not start): the caller then parks.
func (s *spinner) wait(epfd int, events []syscall.EpollEvent) (int, error) {
	if s.max <= 0 {
		return 0, nil
	}
	last := time.Now()
	s.measure(last)
	if !s.hot {
		return 0, nil
	}
	s.spins.Add(1)
	s.tried++
	var idle time.Duration
	for {
		runtime.Gosched()
		ran := time.Now()
		n, err := epollWaitNow(epfd, events)
		now := time.Now()
		// A yield that came back at once ran nothing: the whole round
		// was polling. One that took longer ran other goroutines, whose
		// time is work; only the poll after it was spent spinning.
		spent := now.Sub(ran)
		if ran.Sub(last) < 2*time.Microsecond {
			spent = now.Sub(last)
		}
		s.waste += spent
		idle += spent
		last = now
		if err != nil {
			return 0, err
		}
		if n > 0 {
			s.hits.Add(1)
			s.found++
			return n, nil
		}
		if idle >= s.max {
			return 0, nil
		}
	}
}

// spinCounts returns the spins started and those that found an event; a
// nil poller (none on this server) has none.
func (p *poller) spinCounts() (spins, hits int64) {
	if p == nil {
		return 0, 0
	}
	return int64(p.spin.spins.Load()), int64(p.spin.hits.Load())
}

// processCPU is the CPU time, user and system, of every thread of the
// process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
