package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/storetest"
)

func open(t *testing.T, dir string, policy store.SyncPolicy) *Store {
	t.Helper()
	s, err := Open(dir, Options{Sync: policy})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func closeStore(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// fill writes records of every kind.
func fill(t *testing.T, s store.Store) {
	t.Helper()
	storetest.Apply(t, s, func(b *store.Batch) {
		b.PutSession(&store.Session{ClientID: "alice", Username: "u", Version: packet.V5, ExpiryInterval: 3600,
			DisconnectedAt: storetest.Base, Will: &packet.Will{Topic: "w", Payload: []byte("bye"), QoS: 1,
				Props: &packet.Properties{WillDelay: packet.Ptr[uint32](5)}}})
		b.PutSession(storetest.Sess("bob"))
		b.PutSubscription(&store.Subscription{ClientID: "alice", Sub: packet.Subscription{Filter: "a/#", QoS: 2}, SubID: 4})
		b.PutSubscription(&store.Subscription{ClientID: "bob", Group: "g", Sub: packet.Subscription{Filter: "a/+", QoS: 1}})
		m := storetest.Msg(10, "a/b", "hello")
		m.Publish.Props = &packet.Properties{ContentType: "text", User: []packet.UserProperty{{Key: "k", Value: "v"}}}
		m.Expiry = storetest.Base.Add(time.Hour)
		b.PutMessage(m)
		b.PutMessage(storetest.Msg(11, "a/c", "world"))
		b.PutQueueEntry(&store.QueueEntry{ClientID: "alice", Seq: 1, MessageID: 10, QoS: 2, PacketID: 7,
			State: store.PubrelSent, SubIDs: []uint32{4}})
		b.PutQueueEntry(storetest.Entry("alice", 2, 11))
		b.PutQueueEntry(storetest.Entry("bob", 1, 10))
		b.PutInbound("alice", 300)
		b.PutRetained(&store.Message{ID: 12, Received: storetest.Base,
			Publish: &packet.Publish{Retain: true, Topic: "a/r", Payload: []byte("kept")}})
	})
}

func TestRestart(t *testing.T) {
	for _, policy := range []store.SyncPolicy{store.SyncAlways, store.SyncBatch, store.SyncNever} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, policy)
			fill(t, s)
			before := storetest.Dump(storetest.Load(t, s, storetest.Base))
			closeStore(t, s)

			s = open(t, dir, policy)
			defer closeStore(t, s)
			if after := storetest.Dump(storetest.Load(t, s, storetest.Base)); after != before {
				t.Fatalf("after restart:\n%s\nbefore:\n%s", after, before)
			}
			// Reference counts were rebuilt on open: message 10 goes with
			// its second entry, not its first.
			storetest.Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("bob", 1) })
			if !storetest.MessageExists(t, s, 10) {
				t.Fatalf("message 10 deleted while alice's entry names it")
			}
			storetest.Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("alice", 1) })
			if storetest.MessageExists(t, s, 10) {
				t.Fatalf("message 10 kept after its last entry was deleted")
			}
		})
	}
}

// TestRestartWithoutLoad reopens a store that was written to but never
// loaded, so that open alone must get the reference counts right.
func TestRestartWithoutLoad(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, store.SyncAlways)
	fill(t, s)
	closeStore(t, s)
	s = open(t, dir, store.SyncAlways)
	defer closeStore(t, s)
	// Replacing bob's entry must release message 10 (open rebuilt the
	// sequence bounds that tell a replacement from a new entry) ...
	storetest.Apply(t, s, func(b *store.Batch) { b.PutQueueEntry(storetest.Entry("bob", 1, 11)) })
	storetest.Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("alice", 1) })
	if storetest.MessageExists(t, s, 10) {
		t.Errorf("message 10 kept after both its entries were replaced or deleted")
	}
	// ... and deleting a session releases what its queue names.
	storetest.Apply(t, s, func(b *store.Batch) { b.DeleteSession("alice") })
	if !storetest.MessageExists(t, s, 11) {
		t.Errorf("message 11 deleted while bob's entry names it")
	}
	storetest.Apply(t, s, func(b *store.Batch) { b.DeleteSession("bob") })
	if storetest.MessageExists(t, s, 11) {
		t.Errorf("message 11 kept after bob, its last holder, was deleted")
	}
}

// TestSyncBatchSyncs checks that under SyncBatch the background loop syncs
// what Apply wrote within the interval.
func TestSyncBatchSyncs(t *testing.T) {
	fs := newCountingFS()
	s, err := Open(t.TempDir(), Options{Sync: store.SyncBatch, SyncInterval: time.Millisecond, fs: fs})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer closeStore(t, s)
	base := fs.walSyncs.Load()
	storetest.Apply(t, s, func(b *store.Batch) { b.PutSession(storetest.Sess("c")) })
	deadline := time.Now().Add(5 * time.Second)
	for fs.walSyncs.Load() == base {
		if time.Now().After(deadline) {
			t.Fatalf("no WAL sync within 5 s of an Apply under SyncBatch")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDamagedRecords: records that Pebble reads back intact but that mqttd
// cannot decode, or that break the store's invariants, are ErrCorrupt.
func TestDamagedRecords(t *testing.T) {
	tests := []struct {
		name     string
		key, val []byte
	}{
		{"queue entry value", queueKey("bob", 9), []byte{0x01}},
		{"queue entry naming a missing message", queueKey("bob", 9), appendQueueEntry(nil, storetest.Entry("bob", 9, 99))},
		{"message value", messageKey(10), []byte{1, 2, 3}},
		{"session value", sessionKey("carol"), []byte{5}},
		{"unknown record kind", []byte("zzz"), nil},
		{"short queue key", []byte{kindQueue, 3, 'b', 'o', 'b', 1}, appendQueueEntry(nil, storetest.Entry("bob", 9, 10))},
		{"retained under another topic", retainedKey("x"), mustRetained(t, storetest.Msg(1, "y", ""))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir(), store.SyncAlways)
			defer closeStore(t, s)
			fill(t, s)
			if err := s.db.Set(tc.key, tc.val, nil); err != nil {
				t.Fatal(err)
			}
			_, err := s.Load(storetest.Base)
			if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), s.Dir()) {
				t.Fatalf("Load = %v, want an error wrapping ErrCorrupt naming the directory", err)
			}
		})
	}
}

func mustRetained(t *testing.T, m *store.Message) []byte {
	t.Helper()
	b, err := appendRetained(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// template builds, once per test, a closed store with sstables, a
// MANIFEST and a WAL with records past the last flush.
func template(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s := open(t, dir, store.SyncNever)
	for i := range 100 {
		storetest.Apply(t, s, func(b *store.Batch) {
			c := fmt.Sprint("c", i)
			b.PutSession(storetest.Sess(c))
			b.PutMessage(storetest.Msg(uint64(i+1), "t", "x"))
			b.PutQueueEntry(storetest.Entry(c, 1, uint64(i+1)))
		})
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		storetest.Apply(t, s, func(b *store.Batch) { b.PutSession(storetest.Sess(fmt.Sprint("wal", i))) })
	}
	closeStore(t, s)
	return dir
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// largest returns the largest file in dir matching pattern.
func largest(t *testing.T, dir, pattern string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(files) == 0 {
		t.Fatalf("no file %s in %s (%v)", pattern, dir, err)
	}
	best, size := "", int64(-1)
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > size {
			best, size = f, fi.Size()
		}
	}
	return best
}

func TestCorruptFiles(t *testing.T) {
	garbage := func(pattern string, at float64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			f := largest(t, dir, pattern)
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			off := int(float64(len(b)) * at)
			for i := off; i < off+16 && i < len(b); i++ {
				b[i] ^= 0x5a
			}
			if err := os.WriteFile(f, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	truncate := func(pattern string, frac float64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			f := largest(t, dir, pattern)
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(f, int64(float64(fi.Size())*frac)); err != nil {
				t.Fatal(err)
			}
		}
	}
	remove := func(pattern string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.Remove(largest(t, dir, pattern)); err != nil {
				t.Fatal(err)
			}
		}
	}
	const (
		corrupt = iota // Open fails with ErrCorrupt
		intact         // Open and Load succeed with every flushed record
	)
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   int
	}{
		{"MANIFEST empty", truncate("MANIFEST-*", 0), corrupt},
		{"MANIFEST garbage", garbage("MANIFEST-*", 0.3), corrupt},
		{"MANIFEST removed", remove("MANIFEST-*"), corrupt},
		{"sstable garbage in a data block", garbage("*.sst", 0.3), corrupt},
		{"sstable garbage in the footer", garbage("*.sst", 0.95), corrupt},
		{"sstable truncated", truncate("*.sst", 0.5), corrupt},
		{"sstable removed", remove("*.sst"), corrupt},
		// Pebble reads a damaged WAL or MANIFEST tail as the end of a torn
		// write: what came before it is there, what came after is lost.
		{"WAL truncated", truncate("*.log", 0.5), intact},
		{"WAL garbage", garbage("*.log", 0.3), intact},
		{"WAL removed", remove("*.log"), intact},
		{"MANIFEST truncated", truncate("MANIFEST-*", 0.5), intact},
		{"OPTIONS garbage", garbage("OPTIONS-*", 0.1), intact},
	}
	tmpl := template(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, tmpl)
			tc.damage(t, dir)
			s, err := Open(dir, Options{Logger: quiet})
			switch tc.want {
			case corrupt:
				if err == nil {
					closeStore(t, s)
					t.Fatalf("Open of a damaged store succeeded")
				}
				if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), dir) ||
					!strings.Contains(err.Error(), "move the directory aside") {
					t.Fatalf("Open = %v; want ErrCorrupt naming the directory and what to do", err)
				}
			case intact:
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer closeStore(t, s)
				st := storetest.Load(t, s, storetest.Base)
				if len(st.Messages) != 100 || len(st.Sessions) < 100 {
					t.Fatalf("loaded %d sessions, %d messages; want >= 100 and 100", len(st.Sessions), len(st.Messages))
				}
			}
		})
	}
}

func TestMoveAside(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	if err := os.CopyFS(dir, os.DirFS(template(t))); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(largest(t, dir, "MANIFEST-*"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{Logger: quiet}); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
	moved, err := MoveAside(dir)
	if err != nil {
		t.Fatalf("MoveAside: %v", err)
	}
	if filepath.Dir(moved) != parent || !strings.HasPrefix(filepath.Base(moved), "store.damaged-") {
		t.Errorf("moved to %s, want %s/store.damaged-<time>", moved, parent)
	}
	if _, err := os.Stat(filepath.Join(moved, filepath.Base(largest(t, moved, "MANIFEST-*")))); err != nil {
		t.Errorf("damaged files not kept: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after MoveAside: %v", dir, err)
	}
	s := open(t, dir, store.SyncAlways)
	st := storetest.Load(t, s, storetest.Base)
	if len(st.Sessions) != 0 {
		t.Errorf("store after move-aside not empty: %d sessions", len(st.Sessions))
	}
	closeStore(t, s)
	// A second move within the same second gets another name.
	moved2, err := MoveAside(dir)
	if err != nil {
		t.Fatalf("second MoveAside: %v", err)
	}
	if moved2 == moved {
		t.Errorf("second MoveAside reused %s", moved)
	}
	if _, err := MoveAside(filepath.Join(parent, "missing")); err == nil {
		t.Errorf("MoveAside of a missing directory succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("not a directory", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(f, Options{})
		if err == nil || errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), f) {
			t.Fatalf("Open = %v, want an error naming %s that is not ErrCorrupt", err, f)
		}
	})
	t.Run("in use", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir, store.SyncAlways)
		defer closeStore(t, s)
		_, err := Open(dir, Options{})
		if err == nil || errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), dir) ||
			!strings.Contains(err.Error(), "no other process") {
			t.Fatalf("Open = %v, want an error naming %s and the lock", err, dir)
		}
	})
	t.Run("other format version", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir, store.SyncAlways)
		if err := s.db.Set(formatKey, []byte{formatVersion + 1}, nil); err != nil {
			t.Fatal(err)
		}
		closeStore(t, s)
		_, err := Open(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "format version") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Open = %v, want a format version error naming %s", err, dir)
		}
	})
	t.Run("parent missing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "file", "corrupt")
		if err := os.WriteFile(filepath.Dir(dir), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Options{})
		if err == nil || errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Open = %v, want an error naming %s that is not ErrCorrupt", err, dir)
		}
	})
	t.Run("unknown sync policy", func(t *testing.T) {
		if _, err := Open(t.TempDir(), Options{Sync: 7}); !errors.Is(err, store.ErrSyncPolicy) {
			t.Fatalf("Open = %v, want ErrSyncPolicy", err)
		}
	})
}

// TestApplyInvalidPublish: a message the codec cannot encode fails the
// whole batch.
func TestApplyInvalidPublish(t *testing.T) {
	s := open(t, t.TempDir(), store.SyncAlways)
	defer closeStore(t, s)
	var b store.Batch
	b.PutSession(storetest.Sess("c"))
	b.PutMessage(&store.Message{ID: 1, Publish: &packet.Publish{QoS: 3, Topic: "t"}})
	b.PutQueueEntry(storetest.Entry("c", 1, 1))
	if err := s.Apply(&b); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Apply = %v, want ErrInvalid", err)
	}
	for _, p := range []*packet.Publish{{Topic: ""}, {Topic: "t", Dup: true}} {
		b.Reset()
		b.PutSession(storetest.Sess("c"))
		b.PutRetained(&store.Message{ID: 2, Publish: p})
		if err := s.Apply(&b); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("Apply(%+v) = %v, want ErrInvalid", p, err)
		}
	}
	if st := storetest.Load(t, s, storetest.Base); len(st.Sessions) != 0 {
		t.Fatalf("failed batch left a session")
	}
	if len(s.refs) != 0 {
		t.Fatalf("failed batch left reference counts: %v", s.refs)
	}
}

// quiet drops the log lines of stores that the tests damage on purpose.
var quiet = slog.New(slog.DiscardHandler)

// TestApplyAfterCorruption: once Pebble reports damage, Apply refuses.
func TestApplyAfterCorruption(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	storetest.Apply(t, s, func(b *store.Batch) { b.PutSession(storetest.Sess("c")) })
	s.onCorruption(pebbledb.DataCorruptionInfo{Path: "000005.sst", Details: errors.New("checksum mismatch")})
	var b store.Batch
	b.PutSession(storetest.Sess("d"))
	if err := s.Apply(&b); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), s.Dir()) {
		t.Fatalf("Apply after damage = %v, want ErrCorrupt naming the directory", err)
	}
}

// TestApplyOrdered: ordered runs once per batch, under each sync policy,
// with the batch already counted: a batch applied from ordered may delete
// the queue entry and the message the first one put (as a subscriber's
// acknowledgement of a delivery sent before the sync does), and after a
// restart neither is left.
func TestApplyOrdered(t *testing.T) {
	for _, policy := range []store.SyncPolicy{store.SyncAlways, store.SyncBatch, store.SyncNever} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, policy)
			var b store.Batch
			b.PutSession(storetest.Sess("alice"))
			b.PutMessage(storetest.Msg(10, "a/b", "hello"))
			b.PutQueueEntry(storetest.Entry("alice", 1, 10))
			calls := 0
			var inner error
			err := s.ApplyOrdered(&b, func() {
				calls++
				var ack store.Batch
				ack.DeleteQueueEntryOf("alice", 1, 10)
				inner = s.ApplyNoSync(&ack)
			})
			if err != nil || calls != 1 || inner != nil {
				t.Fatalf("ApplyOrdered: %v, ordered called %d times, its write: %v", err, calls, inner)
			}
			closeStore(t, s)
			s = open(t, dir, policy)
			defer closeStore(t, s)
			st, err := s.Load(storetest.Base)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Sessions) != 1 || len(st.Sessions[0].Queue) != 0 || len(st.Messages) != 0 {
				t.Fatalf("after restart: %d sessions, %d messages; want alice's alone with an empty queue",
					len(st.Sessions), len(st.Messages))
			}
		})
	}
}

// TestApplyAsync: under SyncAlways done comes after the log's sync, in the
// order of the calls, a barrier (an empty batch) after the batches before
// it; a write from done's predecessor's ordered is accepted; Close waits
// for every done; what was acknowledged by done is there after a restart.
// Under the other policies done comes before ApplyAsync returns. A refused
// batch gets no done.
func TestApplyAsync(t *testing.T) {
	for _, policy := range []store.SyncPolicy{store.SyncAlways, store.SyncNever} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			fs := newCountingFS()
			dir := t.TempDir()
			s, err := Open(dir, Options{Sync: policy, fs: fs})
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var order []int
			var syncsAtDone []int64
			done := func(i int) func(error) {
				return func(err error) {
					if err != nil {
						t.Errorf("done %d: %v", i, err)
					}
					mu.Lock()
					order = append(order, i)
					syncsAtDone = append(syncsAtDone, fs.walSyncs.Load())
					mu.Unlock()
				}
			}
			before := fs.walSyncs.Load()
			for i := 1; i <= 20; i++ {
				var b store.Batch
				if i%5 != 0 { // every fifth is a barrier
					b.PutSession(storetest.Sess(fmt.Sprintf("c%d", i)))
				}
				if err := s.ApplyAsync(&b, nil, done(i)); err != nil {
					t.Fatal(err)
				}
			}
			var bad store.Batch
			bad.PutQueueEntry(storetest.Entry("c1", 1, 999)) // names no message: refused
			if err := s.ApplyAsync(&bad, nil, func(error) { t.Error("done called for a refused batch") }); err == nil {
				t.Error("a batch naming an unknown message was accepted")
			}
			closeStore(t, s)
			mu.Lock()
			if len(order) != 20 {
				t.Fatalf("%d done calls after Close, want 20", len(order))
			}
			for i, got := range order {
				if got != i+1 {
					t.Fatalf("done order %v", order)
				}
			}
			if policy == store.SyncAlways && syncsAtDone[0] == before {
				t.Errorf("the first done came before any sync of the log")
			}
			mu.Unlock()
			s = open(t, dir, policy)
			defer closeStore(t, s)
			st, err := s.Load(storetest.Base)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Sessions) != 16 {
				t.Fatalf("after restart: %d sessions, want 16", len(st.Sessions))
			}
		})
	}
}

// TestSyncAlwaysGroupsConcurrentWriters: under SyncAlways, batches that
// wait on the log together share syncs: after a sync that took
// groupedSync batches or more, the next one waits syncGap (syncPause), so
// a stream of batches applied without waiting for their syncs (as
// ApplyAsync is used by connections reading on) is synced in groups of
// many, and every batch's done still comes after its sync.
func TestSyncAlwaysGroupsConcurrentWriters(t *testing.T) {
	fs := newCountingFS()
	s, err := Open(t.TempDir(), Options{Sync: store.SyncAlways, fs: fs})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer closeStore(t, s)
	const batches = 4000
	base := fs.walSyncs.Load()
	start := time.Now()
	var done sync.WaitGroup
	var failed atomic.Int64
	for i := range batches {
		var b store.Batch
		b.PutSession(storetest.Sess(fmt.Sprintf("c%d", i)))
		done.Add(1)
		if err := s.ApplyAsync(&b, nil, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			done.Done()
		}); err != nil {
			t.Fatalf("ApplyAsync: %v", err)
		}
	}
	done.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d batches failed", n)
	}
	syncs, took := fs.walSyncs.Load()-base, time.Since(start)
	t.Logf("%d batches in %d WAL syncs in %v", batches, syncs, took)
	// Every sync but the first few of a stream took groupedSync batches or
	// more, so each is syncGap after the one before.
	if most := int64(took/syncGap) + 10; syncs > most {
		t.Errorf("%d WAL syncs in %v for %d batches applied back to back: want at most %d (one per %v, and 10)",
			syncs, took, batches, most, syncGap)
	}
}

// TestSyncedWrites: SyncedWrites counts the batches that waited for a sync:
// Apply and ApplyAsync under SyncAlways, not ApplyNoSync, nor anything under
// the other policies.
func TestSyncedWrites(t *testing.T) {
	put := func(s *Store, apply func(*store.Batch) error, id uint64) {
		t.Helper()
		var b store.Batch
		b.PutRetained(&store.Message{ID: id, Publish: &packet.Publish{Retain: true, Topic: fmt.Sprintf("r/%d", id), Payload: []byte("x")}})
		if err := apply(&b); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, t.TempDir(), store.SyncAlways)
	defer closeStore(t, s)
	put(s, s.Apply, 1)
	put(s, s.ApplyNoSync, 2)
	done := make(chan error, 1)
	put(s, func(b *store.Batch) error { return s.ApplyAsync(b, nil, func(err error) { done <- err }) }, 3)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.SyncedWrites(); n != 2 {
		t.Errorf("SyncAlways: %d synced writes, want 2 (Apply, ApplyAsync)", n)
	}
	lazy := open(t, t.TempDir(), store.SyncBatch)
	defer closeStore(t, lazy)
	put(lazy, lazy.Apply, 1)
	if n := lazy.SyncedWrites(); n != 0 {
		t.Errorf("SyncBatch: %d synced writes, want 0", n)
	}
}

// TestSyncPause: the gap follows a sync that took groupedSync batches or
// more, and only that sync; a lone writer's batches are synced at once.
// A gap is no longer than the batches kept coming in the one before (twice
// that, and syncGapSlack): writers that wait for each sync come all at
// once after it, a stream keeps coming and keeps syncGap.
func TestSyncPause(t *testing.T) {
	var s Store
	ms := int64(time.Millisecond)
	pause := func(at int64, batches int64, lastCame int64, want time.Duration, what string) {
		t.Helper()
		s.syncs.Add(uint64(batches)) // batches since the last syncPause
		s.arrived.Store(lastCame)
		if d := s.syncPauseAt(at); d != want {
			t.Errorf("%s: pause %v, want %v", what, d, want)
		}
	}
	pause(10*ms, groupedSync-1, 9*ms, 0, "a sync of fewer than groupedSync batches")
	pause(20*ms, groupedSync, 19*ms, syncGap, "the first grouped sync")
	// The gap ran from 20 ms; the last batch came 0.3 ms into it.
	pause(23*ms, groupedSync, 20*ms+3*ms/10, 2*300*time.Microsecond+syncGapSlack, "batches came for 0.3 ms")
	// That gap ran from 23 ms; batches kept coming through it and the sync.
	pause(25*ms, 40, 25*ms-ms/10, syncGap, "a stream")
	pause(28*ms, 0, 25*ms, 0, "a sync of no batch")
	pause(30*ms, groupedSync, 29*ms+9*ms/10, syncGap, "grouped again: the first gap is whole")
}
