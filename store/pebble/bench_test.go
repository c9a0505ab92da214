package pebble

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/storetest"
)

// benchMessage is a typical small message: a 3-level topic and a 64-byte
// random (incompressible) payload, QoS 1.
func benchMessage(id uint64) *store.Message {
	rng := rand.New(rand.NewPCG(id, 0))
	payload := make([]byte, 0, 64)
	for range 8 {
		payload = binary.LittleEndian.AppendUint64(payload, rng.Uint64())
	}
	return &store.Message{ID: id, Received: storetest.Base,
		Publish: &packet.Publish{QoS: 1, PacketID: uint16(id%65535 + 1),
			Topic: "sensors/" + strconv.FormatUint(id%1000, 10) + "/temp", Payload: payload}}
}

// BenchmarkApply: one message and one queue entry per Apply. syncs/op is
// the number of WAL syncs per Apply: below 1 under SyncAlways with parallel
// callers means they shared syncs (group commit).
func BenchmarkApply(b *testing.B) {
	cases := []struct {
		name     string
		policy   store.SyncPolicy
		parallel bool
	}{
		{"always", store.SyncAlways, false},
		{"always-parallel", store.SyncAlways, true},
		{"batch", store.SyncBatch, false},
		{"batch-parallel", store.SyncBatch, true},
		{"never", store.SyncNever, false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			fs := newCountingFS()
			s, err := Open(b.TempDir(), Options{Sync: c.policy, fs: fs})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const clients = 64
			for i := range clients {
				storetest.Apply(b, s, func(bt *store.Batch) { bt.PutSession(storetest.Sess(fmt.Sprint("c", i))) })
			}
			var ids atomic.Uint64
			apply := func(bt *store.Batch) error {
				id := ids.Add(1)
				bt.Reset()
				bt.PutMessage(benchMessage(id))
				bt.PutQueueEntry(storetest.Entry(fmt.Sprint("c", id%clients), id, id))
				return s.Apply(bt)
			}
			b.ReportAllocs()
			syncs0 := fs.walSyncs.Load()
			start := time.Now()
			if c.parallel {
				b.SetParallelism(16) // many publishers per core, as a broker has
				b.RunParallel(func(pb *testing.PB) {
					var bt store.Batch
					for pb.Next() {
						if err := apply(&bt); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				var bt store.Batch
				for b.Loop() {
					if err := apply(&bt); err != nil {
						b.Fatal(err)
					}
				}
			}
			n := float64(ids.Load())
			b.ReportMetric(float64(fs.walSyncs.Load()-syncs0)/n, "syncs/op")
			b.ReportMetric(n/time.Since(start).Seconds(), "applies/s")
		})
	}
}

// fillQueue writes n messages, each queued for subs sessions, in batches
// of 1000 without syncing, and closes the store.
func fillQueue(b *testing.B, dir string, n, subs int) {
	b.Helper()
	s, err := Open(dir, Options{Sync: store.SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	var bt store.Batch
	for i := range 100 {
		bt.PutSession(storetest.Sess(fmt.Sprint("client-", i)))
	}
	seq := uint64(0)
	for id := uint64(1); id <= uint64(n); id++ {
		bt.PutMessage(benchMessage(id))
		for j := range subs {
			seq++
			c := (int(id) + j*7) % 100
			bt.PutQueueEntry(&store.QueueEntry{ClientID: fmt.Sprint("client-", c), Seq: seq, MessageID: id, QoS: 1})
		}
		if bt.Len() >= 1000 || id == uint64(n) {
			if err := s.Apply(&bt); err != nil {
				b.Fatal(err)
			}
			bt.Reset()
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoad opens and loads a store of MQTTD_STORE_BENCH_LOAD_N (default
// 1,000,000) queued messages, each named by one queue entry.
func BenchmarkLoad(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("MQTTD_STORE_BENCH_LOAD_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	fillQueue(b, dir, n, 1)
	b.ReportAllocs()
	for b.Loop() {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		st, err := s.Load(storetest.Base)
		if err != nil {
			b.Fatal(err)
		}
		if len(st.Messages) != n {
			b.Fatalf("loaded %d messages, want %d", len(st.Messages), n)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n), "messages")
}

// BenchmarkDiskBytes measures the bytes on disk per queued message (a
// 64-byte payload, see benchMessage) once flushed and compacted into
// sstables, and the WAL bytes written for it: with one subscriber, and per
// message with ten.
func BenchmarkDiskBytes(b *testing.B) {
	const n = 100_000
	for _, subs := range []int{1, 10} {
		b.Run(fmt.Sprint("subscribers=", subs), func(b *testing.B) {
			var sst, wal float64
			for b.Loop() {
				dir := b.TempDir()
				fillQueue(b, dir, n, subs)
				s, err := Open(dir, Options{})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
					b.Fatal(err)
				}
				files, err := filepath.Glob(filepath.Join(dir, "*.sst"))
				if err != nil {
					b.Fatal(err)
				}
				var size int64
				for _, f := range files {
					fi, err := os.Stat(f)
					if err != nil {
						b.Fatal(err)
					}
					size += fi.Size()
				}
				sst = float64(size) / n
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				// The WAL holds the same records uncompressed: one more
				// store written and measured as it is before any flush.
				wal = walBytesPerMessage(b, n, subs)
			}
			b.ReportMetric(sst, "sst-B/msg")
			b.ReportMetric(wal, "wal-B/msg")
		})
	}
}

func walBytesPerMessage(b *testing.B, n, subs int) float64 {
	b.Helper()
	dir := b.TempDir()
	s, err := Open(dir, Options{Sync: store.SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	before := s.db.Metrics().WAL.BytesIn
	var bt store.Batch
	bt.PutSession(storetest.Sess("c"))
	seq := uint64(0)
	for id := uint64(1); id <= uint64(n)/10; id++ {
		bt.PutMessage(benchMessage(id))
		for range subs {
			seq++
			bt.PutQueueEntry(&store.QueueEntry{ClientID: fmt.Sprint("client-", seq%100), Seq: seq, MessageID: id, QoS: 1})
		}
		if err := s.Apply(&bt); err != nil {
			b.Fatal(err)
		}
		bt.Reset()
	}
	return float64(s.db.Metrics().WAL.BytesIn-before) / float64(n/10)
}
