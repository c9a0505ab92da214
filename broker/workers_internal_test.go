package broker

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// until polls cond every 5 ms until it holds, failing after timeout.
func until(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func idleWorkers(p *workerPool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// TestWorkerPoolReuses: jobs run one after another share the pool's
// goroutines (one, or two when a job is handed over before the goroutine
// that ran the previous one is idle again).
func TestWorkerPoolReuses(t *testing.T) {
	p := &workerPool{idleFor: time.Hour}
	defer p.stop()
	done := make(chan struct{})
	for range 1000 {
		p.run(job{fn: func(*conn, error) { done <- struct{}{} }})
		<-done
	}
	if n := p.running.Load(); n < 1 || n > 2 {
		t.Fatalf("%d goroutines for 1000 jobs one after another, want 1 or 2", n)
	}
}

// TestWorkerPoolRetires: a goroutine idle for idleFor exits.
func TestWorkerPoolRetires(t *testing.T) {
	p := &workerPool{idleFor: 20 * time.Millisecond}
	done := make(chan struct{})
	p.run(job{fn: func(*conn, error) { close(done) }})
	<-done
	until(t, 5*time.Second, func() bool { return p.running.Load() == 0 && idleWorkers(p) == 0 },
		"the idle goroutine exited")
}

// TestWorkerPoolRunsEveryJob: jobs handed over from many goroutines at
// once each run exactly once, also while idle goroutines are timing out
// (an idle time of a microsecond races every hand-over with an exit), and
// no more goroutines than maxIdleWorkers stay.
func TestWorkerPoolRunsEveryJob(t *testing.T) {
	for _, idle := range []time.Duration{time.Microsecond, time.Second} {
		p := &workerPool{idleFor: idle}
		var ran atomic.Int64
		var wg sync.WaitGroup
		const senders, each = 64, 300
		wg.Add(senders * each)
		for range senders {
			go func() {
				for range each {
					p.run(job{fn: func(*conn, error) { ran.Add(1); wg.Done() }})
				}
			}()
		}
		wg.Wait()
		if n := ran.Load(); n != senders*each {
			t.Fatalf("idle %v: %d jobs ran, want %d", idle, n, senders*each)
		}
		if n := idleWorkers(p); n > maxIdleWorkers {
			t.Fatalf("idle %v: %d goroutines kept, more than %d", idle, n, maxIdleWorkers)
		}
	}
}

var allocJobDone = make(chan struct{})

func allocJob(*conn, error) { allocJobDone <- struct{}{} }

// TestWorkerPoolAllocatesNothing: handing a job to a kept goroutine
// allocates nothing (a connection's writer is started this way for each
// burst of deliveries).
func TestWorkerPoolAllocatesNothing(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector allocates")
	}
	p := &workerPool{}
	p.run(job{fn: allocJob})
	<-allocJobDone
	if a := testing.AllocsPerRun(200, func() {
		p.run(job{fn: allocJob})
		<-allocJobDone
	}); a != 0 {
		t.Fatalf("%v allocations per job", a)
	}
}

// TestWorkerPoolStop: stop lets the idle goroutines go at once, and a job
// run after it still runs, on a goroutine that then exits.
func TestWorkerPoolStop(t *testing.T) {
	p := &workerPool{idleFor: time.Hour}
	var wg sync.WaitGroup
	wg.Add(20)
	for range 20 {
		p.run(job{fn: func(*conn, error) { time.Sleep(10 * time.Millisecond); wg.Done() }})
	}
	wg.Wait()
	until(t, 2*time.Second, func() bool { return idleWorkers(p) == 20 }, "20 goroutines kept")
	p.stop()
	until(t, 2*time.Second, func() bool { return p.running.Load() == 0 }, "the kept goroutines exited")
	done := make(chan struct{})
	p.run(job{fn: func(*conn, error) { close(done) }})
	<-done
	until(t, 2*time.Second, func() bool { return idleWorkers(p) == 0 && p.running.Load() == 0 },
		"a job after stop leaves no goroutine")
}
