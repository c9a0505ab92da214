// Package memtrim gives the heap's spare memory back to the operating
// system once a process has gone quiet.
//
// Go's collector runs when the heap has grown to about twice what the last
// collection found live (GOGC 100). A broker that took on ten thousand
// connections and then holds them idle for months may not reach that goal
// again for a long time: the garbage the connecting phase left (packets
// read, buffers, log records) is not collected, and the pages it occupies
// stay resident, about a fifth of the memory per idle connection
// (docs/operations.md, "Sizing"). Lowering GOGC would shrink that too, but
// charges a collection every time the heap grows by less, on every message.
// The Trimmer instead looks every few seconds whether the process has
// allocated a fair amount since the last release while it now allocates
// little; only then does it run one collection and release the free pages
// (debug.FreeOSMemory). A busy process is left alone: the memory it frees it
// uses again.
package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Metrics read each round (runtime/metrics).
const (
	mFree   = "/memory/classes/heap/free:bytes" // free, not yet released
	mLive   = "/gc/heap/live:bytes"             // marked live by the last collection
	mAllocs = "/gc/heap/allocs:bytes"           // allocated since the process started
)

// Defaults of a Trimmer whose fields are zero.
const (
	DefaultEvery   = 2 * time.Second
	DefaultMinFree = 4 << 20
)

// Trimmer decides when to release free heap pages. Its zero value uses the
// defaults.
type Trimmer struct {
	// Every is how often the heap is looked at.
	Every time.Duration
	// MinFree is the least spare memory (see Round) worth a collection.
	MinFree uint64
	// Logger, when set, gets one debug line per release.
	Logger *slog.Logger

	samples  []metrics.Sample
	lastAllc uint64    // allocated bytes at the last round
	trimAllc uint64    // at the last release (0: since the process started)
	notUntil time.Time // a release is not tried again before
}

// Run looks at the heap every t.Every until ctx ends.
func (t *Trimmer) Run(ctx context.Context) {
	every := t.Every
	if every <= 0 {
		every = DefaultEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Round()
		}
	}
}

// Round looks at the heap once and releases its free pages when the
// process is quiet and a collection may find something to give back.
// Quiet: it allocated less than a sixteenth of the live heap since the
// last round, so the pages would not be used again soon, and the
// collection that comes with the release costs little next to the time
// since. Something to give back: the free pages and what was allocated
// since the last release (garbage, or it joined the live heap; only a
// collection tells) come to an eighth of the live heap and to MinFree.
// After a release that took d, the next waits at least 50 d, so that
// releases never take more than about 2% of a core however large the heap.
// It reports whether it released.
func (t *Trimmer) Round() bool {
	if t.samples == nil {
		t.samples = []metrics.Sample{{Name: mFree}, {Name: mLive}, {Name: mAllocs}}
	}
	metrics.Read(t.samples)
	free, live, allocs := t.value(0), t.value(1), t.value(2)
	allocated := allocs - t.lastAllc
	t.lastAllc = allocs
	spare := free + allocs - t.trimAllc
	minFree := t.MinFree
	if minFree == 0 {
		minFree = DefaultMinFree
	}
	start := time.Now()
	if spare < minFree || spare < live/8 || allocated > live/16 || start.Before(t.notUntil) {
		return false
	}
	debug.FreeOSMemory()
	took := time.Since(start)
	t.notUntil = start.Add(50 * took)
	metrics.Read(t.samples)
	t.lastAllc, t.trimAllc = t.value(2), t.value(2)
	if t.Logger != nil {
		t.Logger.Debug("heap trimmed", "live_before", live, "live", t.value(1), "free_before", free,
			"allocated_since_last", spare-free, "took", took)
	}
	return true
}

func (t *Trimmer) value(i int) uint64 {
	if t.samples[i].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return t.samples[i].Value.Uint64()
}
