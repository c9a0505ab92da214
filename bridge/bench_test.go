package bridge_test

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
)

// BenchmarkBridge measures a bridge's throughput: 64-byte messages
// published on an edge broker reach a subscriber on the remote (an
// in-process mqttd) over `topic bench/# out QOS`. The edge is mqttd with
// its bridge, then Debian's mosquitto with its own bridge (skipped when
// missing), in the same run:
//
//	go test -run '^$' -bench BenchmarkBridge -benchtime 20000x ./bridge/
//
// msg/s is what the remote subscriber received per second; lost counts
// QoS 0 messages dropped on the way (queues full), which QoS 1 never has.
func BenchmarkBridge(b *testing.B) {
	for _, edge := range []string{"mqttd", "mosquitto"} {
		for _, qos := range []byte{0, 1} {
			b.Run(edge+"/qos"+string('0'+qos), func(b *testing.B) {
				remote := startNode(b, "", nil)
				var got, probes atomic.Int64
				done := make(chan struct{}, 1)
				want := int64(b.N)
				sub := dialB(b, remote.addr, func(m *client.Message) {
					if m.Topic != "r/bench/x" {
						probes.Add(1)
						return
					}
					if got.Add(1) == want {
						done <- struct{}{}
					}
				})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := sub.Subscribe(ctx, []packet.Subscription{{Filter: "r/bench/#", QoS: qos}}, nil); err != nil {
					b.Fatal(err)
				}
				lines := []string{"address " + remote.addr, "topic bench/# out " + string('0'+qos) + " \"\" r/",
					"notifications false", "restart_timeout 1", "cleansession true"}
				var edgeAddr string
				if edge == "mqttd" {
					local := startNode(b, "", nil)
					br := startBridge(b, local.srv, lines...)
					waitB(b, func() bool { return br.Stats().Connected })
					edgeAddr = local.addr
				} else {
					if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil && os.Getenv("MOSQUITTO") == "" {
						b.Skip("no mosquitto")
					}
					edgeAddr = mosquitto(b, append([]string{"connection b1"}, lines...)...)
				}
				pub := dialB(b, edgeAddr, nil)
				// The bridge is up once a probe arrives.
				waitB(b, func() bool {
					_ = pub.Publish(ctx, "bench/probe", []byte("p"), client.PublishOptions{QoS: qos})
					return probes.Load() > 0
				})
				payload := make([]byte, 64)
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					if err := pub.PublishAsync(context.Background(), "bench/x", payload, client.PublishOptions{QoS: qos}, nil); err != nil {
						b.Fatal(err)
					}
				}
				// Wait for all, or (QoS 0) until nothing more arrives.
				last, lastAt := int64(-1), time.Now()
			wait:
				for {
					select {
					case <-done:
						break wait
					case <-time.After(50 * time.Millisecond):
						n := got.Load()
						if n != last {
							last, lastAt = n, time.Now()
						} else if time.Since(lastAt) > time.Second {
							break wait
						}
					}
				}
				el := time.Since(start)
				b.StopTimer()
				n := got.Load()
				b.ReportMetric(float64(n)/el.Seconds(), "msg/s")
				b.ReportMetric(float64(want-n), "lost")
				if qos == 1 && n < want {
					b.Errorf("QoS 1: %d of %d arrived", n, want)
				}
			})
		}
	}
}

func dialB(b *testing.B, addr string, h client.Handler) *client.Client {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "mqtt://"+addr, client.Options{Version: packet.V5, DefaultHandler: h,
		MaxQueuedQoS0: -1, MaxQueuedBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func waitB(b *testing.B, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("condition not met")
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}
