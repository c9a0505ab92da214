package broker_test

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// BenchmarkRestore measures startup recovery: a store holding one persistent
// session with N queued QoS 1 messages (MQTTD_BENCH_RESTORE_N, default
// 100,000) is opened and restored into a new server.
//
//	MQTTD_BENCH_RESTORE_N=1000000 go test -run '^$' -bench Restore -benchtime 1x ./broker
func BenchmarkRestore(b *testing.B) {
	n := 100000
	if s := os.Getenv("MQTTD_BENCH_RESTORE_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	dir := b.TempDir()
	st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	var batch store.Batch
	batch.PutSession(&store.Session{ClientID: "offline", Version: packet.V311, ExpiryInterval: store.NeverExpire,
		DisconnectedAt: time.Now()})
	batch.PutSubscription(&store.Subscription{ClientID: "offline", Sub: packet.Subscription{Filter: "load/#", QoS: 1}})
	payload := make([]byte, 64)
	for i := 1; i <= n; i++ {
		batch.PutMessage(&store.Message{ID: uint64(i), Received: time.Now(),
			Publish: &packet.Publish{Topic: fmt.Sprintf("load/%d", i%100), QoS: 1, PacketID: 1, Payload: payload}})
		batch.PutQueueEntry(&store.QueueEntry{ClientID: "offline", Seq: uint64(i), MessageID: uint64(i), QoS: 1})
		if batch.Len() >= 20000 || i == n {
			if err := st.Apply(&batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncNever})
		if err != nil {
			b.Fatal(err)
		}
		srv := broker.New(broker.Options{Store: st, SysInterval: -1, MaxQueuedMessages: -1, Logger: slog.New(slog.DiscardHandler)})
		if err := srv.Restore(); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if q := srv.Stats().Queued; q != int64(n) {
			b.Fatalf("restored %d queued messages, want %d", q, n)
		}
		b.ReportMetric(took.Seconds(), "s/restore")
		b.ReportMetric(float64(n)/took.Seconds(), "msgs/s")
		b.StopTimer()
		st.Close()
		b.StartTimer()
	}
}
