package pebble

import "testing"

// TestLiveEntriesBounded: the set of recent entries holds what was put
// until it is removed or its client cleared, never more than
// maxLiveEntries, and an entry already there is updated even when full.
func TestLiveEntriesBounded(t *testing.T) {
	var l liveEntries
	for i := range uint64(maxLiveEntries + 10) {
		l.put("a", i, i+100)
	}
	if len(l.m) != maxLiveEntries || l.byClient["a"] != maxLiveEntries {
		t.Fatalf("%d entries (%d of a), want %d", len(l.m), l.byClient["a"], maxLiveEntries)
	}
	if _, ok := l.get("a", maxLiveEntries+1); ok {
		t.Fatal("an entry put while full is there")
	}
	l.put("a", 3, 7) // a change of state, full or not
	if id, ok := l.get("a", 3); !ok || id != 7 {
		t.Fatalf("entry 3: %d %v, want 7", id, ok)
	}
	l.remove("a", 3)
	if _, ok := l.get("a", 3); ok || l.byClient["a"] != maxLiveEntries-1 {
		t.Fatal("entry 3 still there after its removal")
	}
	l.put("b", 1, 1)
	l.clear("a")
	if len(l.m) != 1 || l.byClient["a"] != 0 {
		t.Fatalf("after a's session was deleted: %d entries, %d of a", len(l.m), l.byClient["a"])
	}
	if _, ok := l.get("b", 1); !ok {
		t.Fatal("b's entry went with a's")
	}
}
