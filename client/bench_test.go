package client

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
)

// BenchmarkPublish measures pipelined publishing to a broker (no
// subscriber): QoS 0 until written, QoS 1/2 until acknowledged.
func BenchmarkPublish(b *testing.B) {
	for _, qos := range []byte{0, 1, 2} {
		b.Run("QoS"+string('0'+qos), func(b *testing.B) {
			srv := startBroker(b).URL()
			c, err := Dial(context.Background(), srv, Options{Version: packet.V5, MaxInflight: 1000})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			payload := make([]byte, 64)
			var wg sync.WaitGroup
			var failed atomic.Int64
			done := func(err error) {
				if err != nil {
					failed.Add(1)
				}
				wg.Done()
			}
			ctx := context.Background()
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				wg.Add(1)
				if err := c.PublishAsync(ctx, "bench/t", payload, PublishOptions{QoS: qos}, done); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			if qos == 0 {
				// Everything before it is on the wire once this is acknowledged.
				ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if err := c.Publish(ctx, "bench/t", nil, PublishOptions{QoS: 1}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if failed.Load() > 0 {
				b.Fatalf("%d publishes failed", failed.Load())
			}
		})
	}
}

// BenchmarkRoundTrip measures publisher -> broker -> subscriber at QoS 1
// (the broker's queue is unbounded, so that it drops nothing).
func BenchmarkRoundTrip(b *testing.B) {
	srv := startBroker(b, func(o *broker.Options) { o.MaxQueuedMessages = -1 }).URL()
	var got atomic.Int64
	all := make(chan struct{})
	var n int64
	sub, err := Dial(context.Background(), srv, Options{Version: packet.V5})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	_, err = sub.Subscribe(context.Background(), []packet.Subscription{{Filter: "rt", QoS: 1}}, func(*Message) {
		if got.Add(1) == atomic.LoadInt64(&n) {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	pub, err := Dial(context.Background(), srv, Options{Version: packet.V5, MaxInflight: 1000})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	atomic.StoreInt64(&n, int64(b.N))
	payload := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := pub.PublishAsync(context.Background(), "rt", payload, PublishOptions{QoS: 1}, nil); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
}
