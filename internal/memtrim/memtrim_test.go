package memtrim

import (
	"runtime/metrics"
	"testing"
	"time"
)

var sink [][]byte

func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// garbage allocates n MiB that stays live until dropped, so that the heap
// grows and, once dropped, holds that much spare.
func garbage(n int) {
	for range n * 16 {
		sink = append(sink, make([]byte, 64<<10))
	}
}

// TestRoundReleasesWhenQuiet: after the heap grew and its objects died, a
// quiet process gets the pages back; a second round finds nothing to do.
func TestRoundReleasesWhenQuiet(t *testing.T) {
	var tr Trimmer
	tr.Round() // whatever the process did before: released or not, it is counted
	garbage(64)
	sink = nil
	tr.Round() // 64 MiB allocated since the last round: busy, left alone
	before := released()
	if !tr.Round() {
		t.Fatal("a quiet process with 64 MiB of garbage was not trimmed")
	}
	if got := released() - before; got < 32<<20 {
		t.Errorf("released %d bytes, want at least 32 MiB", got)
	}
	tr.notUntil = time.Time{}
	if tr.Round() {
		t.Error("trimmed again with nothing to give back")
	}
}

// TestRoundLeavesBusyProcess: a process that allocated more than a
// sixteenth of its live heap since the last round is not trimmed, however
// much it could give back: it will use the pages again.
func TestRoundLeavesBusyProcess(t *testing.T) {
	var tr Trimmer
	tr.Round()
	garbage(64)
	sink = nil
	if tr.Round() {
		t.Fatal("trimmed a process that just allocated 64 MiB")
	}
}

// TestRoundWaitsAfterRelease: after a release, the next waits 50 times as
// long as it took.
func TestRoundWaitsAfterRelease(t *testing.T) {
	var tr Trimmer
	tr.Round()
	garbage(64)
	sink = nil
	tr.Round()
	if !tr.Round() {
		t.Fatal("not trimmed")
	}
	garbage(64)
	sink = nil
	tr.Round()
	tr.notUntil = time.Now().Add(time.Hour)
	if tr.Round() {
		t.Error("trimmed before notUntil")
	}
	tr.notUntil = time.Time{}
	if !tr.Round() {
		t.Error("not trimmed after notUntil")
	}
}
