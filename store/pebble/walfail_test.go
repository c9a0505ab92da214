package pebble

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// TestWALWriteFailureStopsStore: when Pebble cannot write its log it
// panics (its commit pipeline is then unusable); the store recovers the
// panic on the writer's goroutine instead of ending the process, refuses
// that write and every later one with store.ErrFailed, closes without
// hanging, and the data written before the failure is there after a
// reopen. Each sync policy reaches the log differently (a synced commit,
// an unsynced one, the background sync loop).
func TestWALWriteFailureStopsStore(t *testing.T) {
	for _, pol := range []store.SyncPolicy{store.SyncAlways, store.SyncBatch, store.SyncNever} {
		t.Run(fmt.Sprint(pol), func(t *testing.T) {
			dir := t.TempDir()
			fs := newCountingFS()
			s, err := Open(dir, Options{Sync: pol, SyncInterval: time.Millisecond, fs: fs})
			if err != nil {
				t.Fatal(err)
			}
			put := func(id uint64) error {
				var b store.Batch
				b.PutRetained(&store.Message{ID: id, Received: time.Now(),
					Publish: &packet.Publish{Topic: fmt.Sprintf("t/%d", id), Payload: []byte("x"), Retain: true}})
				return s.Apply(&b)
			}
			if err := put(1); err != nil {
				t.Fatal(err)
			}
			fs.failWAL.Store(true)
			var failed error
			for i := uint64(2); i < 2000 && failed == nil; i++ {
				failed = put(i) // a write that only fills the log buffer may succeed
			}
			if !errors.Is(failed, store.ErrFailed) {
				t.Fatalf("writes with a failing log: %v, want store.ErrFailed", failed)
			}
			if err := put(5000); !errors.Is(err, store.ErrFailed) {
				t.Fatalf("a write after the failure: %v, want store.ErrFailed", err)
			}
			done := make(chan error, 1)
			go func() { done <- s.Close() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs after the failure")
			}
		})
	}
}
