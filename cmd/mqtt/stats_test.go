package main

import (
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	b := make([]byte, 20)
	putHeader(b, 7, 123456, 1_700_000_000_123_456_789)
	pub, seq, ts, ok := readHeader(b)
	if !ok || pub != 7 || seq != 123456 || ts != 1_700_000_000_123_456_789 {
		t.Errorf("got %d %d %d %v", pub, seq, ts, ok)
	}
	if _, _, _, ok := readHeader(b[:15]); ok {
		t.Error("a 15-byte payload has no header")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for v := int64(1); v <= 100_000; v++ {
		h.record(v * 1000) // 1 us .. 100 ms
	}
	for _, tt := range []struct {
		q    float64
		want int64
	}{{0.5, 50_000_000}, {0.9, 90_000_000}, {0.99, 99_000_000}} {
		got := h.quantile(tt.q)
		if got < tt.want || float64(got) > float64(tt.want)*1.02 {
			t.Errorf("quantile(%v) = %d, want %d within 2%%", tt.q, got, tt.want)
		}
	}
	if h.quantile(1) != 100_000_000 || h.max != 100_000_000 {
		t.Errorf("max = %d, quantile(1) = %d", h.max, h.quantile(1))
	}
	for v := uint64(0); v < 1<<20; v += 997 {
		if i := bucketOf(v); bucketValue(i) < v || (i > 0 && bucketValue(i-1) >= v) {
			t.Fatalf("value %d in bucket %d with bounds (%d, %d]", v, i, bucketValue(i-1), bucketValue(i))
		}
	}
}

func payloadOf(pub, seq uint32) []byte {
	b := make([]byte, benchHeader)
	putHeader(b, pub, seq, 0)
	return b
}

// TestAccount checks loss and duplicate counting for one subscriber per
// group (fanout, pairs) and for a shared group whose members split the
// messages.
func TestAccount(t *testing.T) {
	t.Run("fanout", func(t *testing.T) {
		a, b := newSubStats(1), newSubStats(1)
		for seq := range uint32(10) {
			a.add(payloadOf(0, seq), 0)
			if seq != 3 {
				b.add(payloadOf(0, seq), 0) // b loses seq 3
			}
		}
		b.add(payloadOf(0, 5), 0) // and gets 5 twice
		tl := account([]group{{subs: []*subStats{a}, pubs: []int{0}}, {subs: []*subStats{b}, pubs: []int{0}}}, []uint64{10})
		if tl.expected != 20 || tl.received != 20 || tl.unique != 19 || tl.lost != 1 || tl.dups != 1 {
			t.Errorf("got %+v", tl)
		}
	})
	t.Run("shared", func(t *testing.T) {
		a, b := newSubStats(2), newSubStats(2)
		for seq := range uint32(6) {
			a.add(payloadOf(0, seq), 0)
			b.add(payloadOf(1, seq), 0)
		}
		b.add(payloadOf(0, 2), 0) // delivered to two members: a duplicate
		a.add([]byte("short"), 0) // not from the bench
		tl := account([]group{{subs: []*subStats{a, b}, pubs: []int{0, 1}}}, []uint64{6, 7})
		if tl.expected != 13 || tl.unique != 12 || tl.lost != 1 || tl.dups != 1 || tl.foreign != 1 || tl.received != 14 {
			t.Errorf("got %+v", tl)
		}
	})
}

func TestParseRSS(t *testing.T) {
	status := "Name:\tmosquitto\nVmPeak:\t  12000 kB\nVmRSS:\t    9472 kB\nThreads:\t1\n"
	got, err := parseRSS(strings.NewReader(status))
	if err != nil || got != 9472 {
		t.Errorf("parseRSS = %d, %v; want 9472", got, err)
	}
	if _, err := parseRSS(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("no VmRSS line: want an error")
	}
}
