package broker

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A connection's short tasks (a read burst of a polled connection, a burst
// of writes, a teardown) run on goroutines that are kept between tasks
// rather than started for each one. A new goroutine starts with a small
// stack, and handling a CONNECT needs a deeper one: each connection's
// first burst grew its stack several times, copying it each time, and
// that copying was a third of the broker's user time in a connect storm.
// A kept goroutine has its stack grown already. Goroutines left idle for
// workerIdle exit, so a storm's peak does not stay.

// job is a task and its connection, passed by value: handing one over
// allocates nothing (fn is a function declared at package level).
type job struct {
	c   *conn
	fn  func(c *conn, err error)
	err error
}

// The tasks.
func pollBurstJob(c *conn, _ error)   { c.pollBurst() }
func writeLoopJob(c *conn, _ error)   { c.writeLoop() }
func endPolledJob(c *conn, err error) { c.endPolled(err) }
func pollTimeoutJob(c *conn, _ error) { c.pollTimeout() }

// workerIdle is how long a kept goroutine waits for its next task before
// it exits (workerPool.idleFor, when not set).
const workerIdle = 2 * time.Second

// maxIdleWorkers bounds the goroutines kept idle; one finishing a task
// when that many wait exits.
const maxIdleWorkers = 256

// workerPool runs jobs on kept goroutines. The zero value is ready.
type workerPool struct {
	idleFor time.Duration // 0: workerIdle

	mu      sync.Mutex
	idle    []*worker // the most recently idle last: its stack is likeliest in cache
	stopped bool      // stop was called: goroutines exit after their job

	running atomic.Int32 // goroutines of the pool, busy or idle
}

type worker struct {
	next  chan job // buffered (1): a job is handed over without waiting
	timer *time.Timer
}

// run starts j on an idle goroutine, or on a new one.
func (p *workerPool) run(j job) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.next <- j
		return
	}
	p.mu.Unlock()
	p.running.Add(1)
	go p.work(j)
}

// work runs j, then waits for more until idle for workerIdle.
func (p *workerPool) work(j job) {
	defer p.running.Add(-1)
	w := &worker{next: make(chan job, 1)}
	for j.fn != nil {
		j.fn(j.c, j.err)
		j = job{}
		if !p.park(w) {
			return
		}
		select {
		case j = <-w.next:
			w.timer.Stop()
		case <-w.timer.C:
			if p.leave(w) {
				return
			}
			// run took it off the list first: its job is on the way.
			j = <-w.next
		}
	}
}

// park puts w on the idle list and starts its idle timer; false (w
// should exit) when the list is full.
func (p *workerPool) park(w *worker) bool {
	p.mu.Lock()
	if p.stopped || len(p.idle) >= maxIdleWorkers {
		p.mu.Unlock()
		return false
	}
	p.idle = append(p.idle, w)
	p.mu.Unlock()
	d := p.idleFor
	if d == 0 {
		d = workerIdle
	}
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	return true
}

// leave takes w off the idle list; false if run took it already.
func (p *workerPool) leave(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.idle, w); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
		return true
	}
	return false
}

// stop lets the idle goroutines exit, and the busy ones once their job is
// done (Server.Shutdown). A job run later gets a goroutine of its own.
func (p *workerPool) stop() {
	p.mu.Lock()
	p.stopped = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, w := range idle {
		w.next <- job{} // no fn: exit
	}
}
