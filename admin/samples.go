package admin

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"
)

// sample is one point of the overview's charts.
type sample struct {
	Time        time.Time `json:"time"`
	Connected   int64     `json:"connected"`
	PublishIn   int64     `json:"publish_in"`  // PUBLISH packets received, total
	PublishOut  int64     `json:"publish_out"` // sent, total
	RateIn      float64   `json:"rate_in"`     // per second since the previous sample
	RateOut     float64   `json:"rate_out"`
	Dropped     int64     `json:"dropped"`
	HeapBytes   uint64    `json:"heap_bytes"`  // Go heap in use
	RSSBytes    uint64    `json:"rss_bytes"`   // resident set of the process (Linux); 0 elsewhere
	StoreBytes  int64     `json:"store_bytes"` // size of the store's directory; 0 without one
	Subscribers int64     `json:"subscriptions"`
	Retained    int64     `json:"retained"`
}

// sampler keeps the last hour of samples in a ring.
type sampler struct {
	a *Server

	mu   sync.Mutex
	ring []sample
	next int // where the next sample goes
	n    int // samples held

	storeAt   time.Time // when the store size was last measured
	storeSize int64
}

func newSampler(a *Server, n time.Duration) *sampler {
	return &sampler{a: a, ring: make([]sample, max(int(n), 2))}
}

func (sp *sampler) run(stop <-chan struct{}) {
	sp.take()
	t := time.NewTicker(sp.a.cfg.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			sp.take()
		}
	}
}

var memSamples = []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}

// take records one sample. The broker's counters are read without a broker
// lock held here; the store's size is measured at most every 30 s.
func (sp *sampler) take() {
	st := sp.a.b.Stats()
	now := time.Now()
	s := sample{Time: now, Connected: st.ClientsConnected, PublishIn: st.PublishReceived,
		PublishOut: st.PublishSent, Dropped: st.PublishDropped, Subscribers: st.Subscriptions,
		Retained: st.Retained, RSSBytes: rss()}
	ms := make([]metrics.Sample, len(memSamples))
	copy(ms, memSamples)
	metrics.Read(ms)
	if ms[0].Value.Kind() == metrics.KindUint64 {
		s.HeapBytes = ms[0].Value.Uint64()
	}
	if dir := sp.a.cfg.StoreDir; dir != "" && now.Sub(sp.storeAt) > 30*time.Second {
		sp.storeSize, sp.storeAt = dirSize(dir), now
	}
	s.StoreBytes = sp.storeSize
	sp.mu.Lock()
	if sp.n > 0 {
		prev := sp.ring[(sp.next-1+len(sp.ring))%len(sp.ring)]
		if dt := now.Sub(prev.Time).Seconds(); dt > 0 {
			s.RateIn = float64(max(s.PublishIn-prev.PublishIn, 0)) / dt
			s.RateOut = float64(max(s.PublishOut-prev.PublishOut, 0)) / dt
		}
	}
	sp.ring[sp.next] = s
	sp.next = (sp.next + 1) % len(sp.ring)
	sp.n = min(sp.n+1, len(sp.ring))
	sp.mu.Unlock()
}

// since returns the samples after t, oldest first.
func (sp *sampler) since(t time.Time) []sample {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]sample, 0, sp.n)
	for i := range sp.n {
		s := sp.ring[(sp.next-sp.n+i+len(sp.ring))%len(sp.ring)]
		if s.Time.After(t) {
			out = append(out, s)
		}
	}
	return out
}

// rss reads the resident set size from /proc/self/statm.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
