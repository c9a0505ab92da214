package broker_test

import (
	"bufio"
	"io"
	"sync/atomic"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// allowAll is an Authorizer and a PublishHook that lets everything through:
// what the hook seam costs per message when hooks are installed.
type allowAll struct{}

func (allowAll) Authorize(*broker.ClientInfo, broker.Access, string) error { return nil }
func (allowAll) OnPublish(*broker.ClientInfo, *packet.Publish) error       { return nil }

// BenchmarkHooksPublish sends QoS 0 messages from one TCP client to one
// subscriber through a real server: with no hook (the seam's cost is a
// length check per kind), with an allow-all Authorizer and PublishHook,
// and with an observer (DeliveryHook) installed.
//
//	go test -run '^$' -bench HooksPublish -benchtime 200000x ./broker/
func BenchmarkHooksPublish(b *testing.B) {
	for _, bc := range []struct {
		name  string
		hooks []any
	}{
		{"none", nil},
		{"authorizer+publish", []any{allowAll{}}},
		{"delivery-observer", []any{&recorderCount{}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := brokertest.Start(b, func(o *broker.Options) { o.Hooks = bc.hooks })
			sub, _ := brokertest.DialConnect(b, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "s", CleanStart: true})
			sub.Subscribe(1, 0, "bench/t")
			pub, _ := brokertest.DialConnect(b, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "p", CleanStart: true})
			frame, err := (&packet.Publish{Topic: "bench/t", Payload: make([]byte, 64)}).Encode(nil, packet.V311)
			if err != nil {
				b.Fatal(err)
			}
			var got atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				r := bufio.NewReaderSize(sub.NC, 64<<10)
				buf := make([]byte, len(frame))
				for got.Load() < int64(b.N) {
					if _, err := io.ReadFull(r, buf); err != nil {
						return
					}
					got.Add(1)
				}
			}()
			w := bufio.NewWriterSize(pub.NC, 64<<10)
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			b.ResetTimer()
			for range b.N {
				w.Write(frame)
			}
			w.Flush()
			<-done
			b.StopTimer()
			if got.Load() != int64(b.N) {
				b.Fatalf("delivered %d of %d", got.Load(), b.N)
			}
		})
	}
}

// recorderCount is a DeliveryHook that counts.
type recorderCount struct{ n atomic.Int64 }

func (r *recorderCount) OnDelivery(string, *broker.Message, broker.DropReason) { r.n.Add(1) }
