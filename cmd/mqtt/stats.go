package main

import (
	"encoding/binary"
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// benchHeader is the size of the header every bench message starts with:
// publisher index (4 bytes), sequence number (4 bytes), send time in Unix
// nanoseconds (8 bytes), all big-endian.
const benchHeader = 16

func putHeader(b []byte, pub, seq uint32, sentNanos int64) {
	binary.BigEndian.PutUint32(b[0:4], pub)
	binary.BigEndian.PutUint32(b[4:8], seq)
	binary.BigEndian.PutUint64(b[8:16], uint64(sentNanos))
}

func readHeader(b []byte) (pub, seq uint32, sentNanos int64, ok bool) {
	if len(b) < benchHeader {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint32(b[4:8]), int64(binary.BigEndian.Uint64(b[8:16])), true
}

// bitset records which sequence numbers arrived.
type bitset []uint64

// set marks n and reports whether it was already marked.
func (b *bitset) set(n uint32) bool {
	w := int(n / 64)
	if w >= len(*b) {
		grown := make(bitset, max(w+1, 2*len(*b)))
		copy(grown, *b)
		*b = grown
	}
	m := uint64(1) << (n % 64)
	dup := (*b)[w]&m != 0
	(*b)[w] |= m
	return dup
}

func (b bitset) count() uint64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

// or merges o into b.
func (b *bitset) or(o bitset) {
	if len(o) > len(*b) {
		grown := make(bitset, len(o))
		copy(grown, *b)
		*b = grown
	}
	for i, w := range o {
		(*b)[i] |= w
	}
}

// histogram is a log-linear latency histogram: 2^subBits buckets per power
// of two, so a percentile is exact to within 1/2^subBits (about 1.6%).
type histogram struct {
	counts [64 << subBits]uint64
	n      uint64
	max    int64
	sum    float64
}

const subBits = 6

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // shift that leaves subBits+1 significant bits
	return (e+1)<<subBits + int(v>>uint(e)) - 1<<subBits
}

// bucketValue is the upper bound of bucket i (inclusive).
func bucketValue(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	e := i>>subBits - 1
	m := uint64(i&(1<<subBits-1)) + 1<<subBits
	return (m+1)<<uint(e) - 1
}

func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(uint64(v))]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the value below which a fraction q of the samples lie
// (an upper bound within the bucket precision, never above the maximum).
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(int64(bucketValue(i)), h.max)
		}
	}
	return h.max
}

// subStats is what one bench subscriber saw. The client delivers its
// messages one at a time; the mutex makes the final read safe.
type subStats struct {
	mu       sync.Mutex
	received uint64
	dups     uint64
	foreign  uint64   // messages without a valid header or from an unknown publisher
	seen     []bitset // by publisher index
	hist     histogram
}

func newSubStats(publishers int) *subStats {
	return &subStats{seen: make([]bitset, publishers)}
}

// add records one received payload at time nowNanos.
func (s *subStats) add(payload []byte, nowNanos int64) {
	pub, seq, sent, ok := readHeader(payload)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received++
	if !ok || int(pub) >= len(s.seen) {
		s.foreign++
		return
	}
	if s.seen[pub].set(seq) {
		s.dups++
		return
	}
	s.hist.record(nowNanos - sent)
}

func (s *subStats) count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

// group is a set of subscribers that together should receive every message
// of the publishers pubs exactly once: one subscriber (fanin, fanout, pairs)
// or all members of a shared subscription.
type group struct {
	subs []*subStats
	pubs []int
	flow *flow
}

// flow counts, for one group, the messages published to it and received
// by it, so that publishers can pause while too many are outstanding
// (mqtt bench without --open-loop).
type flow struct {
	sent, recv atomic.Int64
	// writtenOff are outstanding messages given up on: QoS 0 messages the
	// broker dropped never arrive, and a publisher waiting for them would
	// wait forever. The final accounting counts them as lost anyway.
	writtenOff atomic.Int64
}

// outstanding is how many messages were published to the group and not
// yet received (nor written off).
func (f *flow) outstanding() int64 { return f.sent.Load() - f.recv.Load() - f.writtenOff.Load() }

// flowStall is how long a publisher waits for a group that receives
// nothing before it writes the outstanding messages off.
const flowStall = time.Second

// wait blocks while the group has limit or more messages outstanding,
// until stop; after flowStall without anything received it writes the
// outstanding messages off and goes on.
func (f *flow) wait(limit int64, stop *atomic.Bool) {
	if f.outstanding() < limit {
		return
	}
	last, since := f.recv.Load(), time.Now()
	for spins := 0; !stop.Load(); spins++ {
		out := f.outstanding()
		if out < limit {
			return
		}
		if r := f.recv.Load(); r != last {
			last, since = r, time.Now()
		} else if time.Since(since) > flowStall {
			off := f.writtenOff.Load()
			f.writtenOff.CompareAndSwap(off, off+out)
			since = time.Now()
			continue
		}
		if spins < 64 {
			runtime.Gosched()
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// tally is the accounting of a bench run.
type tally struct {
	expected, received, unique, dups, foreign uint64
	lost                                      int64
	hist                                      histogram
}

// account compares what the groups received with what each publisher sent.
func account(groups []group, sent []uint64) tally {
	var t tally
	for _, g := range groups {
		merged := make([]bitset, len(sent))
		for _, s := range g.subs {
			s.mu.Lock()
			t.received += s.received
			t.foreign += s.foreign
			t.hist.merge(&s.hist)
			for p, b := range s.seen {
				merged[p].or(b)
			}
			s.mu.Unlock()
		}
		for _, p := range g.pubs {
			t.expected += sent[p]
			t.unique += merged[p].count()
		}
	}
	t.dups = t.received - t.unique - t.foreign
	t.lost = int64(t.expected) - int64(t.unique)
	return t
}
