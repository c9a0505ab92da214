//go:build !mosquitto

package client

// Side by side with Eclipse Paho: the same operations through this client,
// paho.golang (MQTT 5) and paho.mqtt.golang (MQTT 3.1.1) against the same
// mqttd broker. Compare ns/op (one message) and allocs/op across the
// implementations of one sub-benchmark, e.g.
//
//	go test -run '^$' -bench 'BenchmarkVsPaho' -benchmem -count 5 ./client
//
// Publish: one publisher, 64 goroutines each publishing and waiting (QoS 1:
// until PUBACK; QoS 0: until written), no subscriber. Receive: the client
// under test is subscribed; a raw TCP connection (QoS 0) or this package's
// client (QoS 1, the same for all three) publishes b.N messages, timed until
// the last one has reached the handler.
//
// The broker runs in the test process unless MQTT_BENCH_BROKER (host:port)
// names an external one; only then are allocs/op the client's alone (the
// publishers of the Receive benchmarks are raw connections, so they add
// next to nothing). For mqttd, e.g.:
//
//	printf 'listener 18830 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n' > /tmp/b.conf
//	mqttd -c /tmp/b.conf &
//	MQTT_BENCH_BROKER=127.0.0.1:18830 go test -run '^$' -bench BenchmarkVsPaho -benchmem ./client

import (
	"bufio"
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
)

// benchClient is the part of an MQTT client the comparison drives.
type benchClient interface {
	publish(ctx context.Context, topic string, qos byte, payload []byte) error
	subscribe(ctx context.Context, filter string, qos byte, h func()) error
	close()
}

type mqttdBench struct{ c *Client }

func (m mqttdBench) publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	return m.c.Publish(ctx, topic, payload, PublishOptions{QoS: qos})
}

func (m mqttdBench) subscribe(ctx context.Context, filter string, qos byte, h func()) error {
	_, err := m.c.Subscribe(ctx, []packet.Subscription{{Filter: filter, QoS: qos}}, func(*Message) { h() })
	return err
}

func (m mqttdBench) close() { _ = m.c.Close() }

type pahoBench struct {
	c *paho.Client
	h atomic.Pointer[func()]
}

func (p *pahoBench) publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	_, err := p.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	return err
}

func (p *pahoBench) subscribe(ctx context.Context, filter string, qos byte, h func()) error {
	p.h.Store(&h)
	_, err := p.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	return err
}

func (p *pahoBench) close() { _ = p.c.Disconnect(&paho.Disconnect{}) }

type pahoV3Bench struct{ c pahov3.Client }

func (p pahoV3Bench) publish(_ context.Context, topic string, qos byte, payload []byte) error {
	t := p.c.Publish(topic, qos, false, payload)
	t.Wait()
	return t.Error()
}

func (p pahoV3Bench) subscribe(_ context.Context, filter string, qos byte, h func()) error {
	t := p.c.Subscribe(filter, qos, func(pahov3.Client, pahov3.Message) { h() })
	t.Wait()
	return t.Error()
}

func (p pahoV3Bench) close() { p.c.Disconnect(0) }

var benchImpls = []struct {
	name string
	dial func(b *testing.B, addr, id string) benchClient
}{
	{"mqttd", func(b *testing.B, addr, id string) benchClient {
		c, err := Dial(context.Background(), "mqtt://"+addr, Options{ClientID: id, Version: packet.V5, MaxQueuedQoS0: -1, MaxQueuedBytes: -1})
		if err != nil {
			b.Fatal(err)
		}
		return mqttdBench{c}
	}},
	{"paho.golang", func(b *testing.B, addr, id string) benchClient {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		pb := &pahoBench{}
		pb.c = paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(paho.PublishReceived) (bool, error) {
				if h := pb.h.Load(); h != nil {
					(*h)()
				}
				return true, nil
			}}})
		if _, err := pb.c.Connect(context.Background(), &paho.Connect{ClientID: id, KeepAlive: 60, CleanStart: true}); err != nil {
			b.Fatal(err)
		}
		return pb
	}},
	{"paho.mqtt.golang", func(b *testing.B, addr, id string) benchClient {
		o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(false).SetOrderMatters(false)
		c := pahov3.NewClient(o)
		if t := c.Connect(); t.Wait() && t.Error() != nil {
			b.Fatal(t.Error())
		}
		return pahoV3Bench{c}
	}},
}

func BenchmarkVsPaho(b *testing.B) {
	addr := os.Getenv("MQTT_BENCH_BROKER")
	if addr == "" {
		addr = startBroker(b, func(o *broker.Options) { o.MaxQueuedMessages = -1 }).Addr
	}
	payload := make([]byte, 64)
	for _, qos := range []byte{0, 1} {
		for _, impl := range benchImpls {
			b.Run("Publish/QoS"+string('0'+qos)+"/"+impl.name, func(b *testing.B) {
				c := impl.dial(b, addr, "bench-pub")
				defer c.close()
				ctx := context.Background()
				const workers = 64
				var next atomic.Int64
				var failed atomic.Int64
				var wg sync.WaitGroup
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				b.ResetTimer()
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if err := c.publish(ctx, "bench/pub", qos, payload); err != nil {
								failed.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				if failed.Load() > 0 {
					b.Fatalf("%d publishes failed", failed.Load())
				}
			})
		}
	}
	for _, qos := range []byte{0, 1} {
		for _, impl := range benchImpls {
			b.Run("Receive/QoS"+string('0'+qos)+"/"+impl.name, func(b *testing.B) {
				topic := "bench/recv/" + impl.name
				c := impl.dial(b, addr, "bench-sub")
				defer c.close()
				var got atomic.Int64
				all := make(chan struct{})
				n := int64(b.N)
				if err := c.subscribe(context.Background(), topic, qos, func() {
					if got.Add(1) == n {
						close(all)
					}
				}); err != nil {
					b.Fatal(err)
				}
				send := benchPublisher(b, addr, topic, qos, payload)
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				b.ResetTimer()
				send(b.N)
				select {
				case <-all:
				case <-time.After(60 * time.Second):
					b.Fatalf("received %d of %d", got.Load(), b.N)
				}
			})
		}
	}
}

// benchPublisher returns a function that publishes n messages to topic
// from a raw connection of pre-encoded packets (no client cost): QoS 0, or
// QoS 1 with at most 100 unacknowledged.
func benchPublisher(b *testing.B, addr, topic string, qos byte, payload []byte) func(n int) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	if err := packet.Write(nc, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, ClientID: "bench-rawpub"}, packet.V311); err != nil {
		b.Fatal(err)
	}
	slots := make(chan struct{}, 100)
	go func() { // CONNACK, then PUBACKs free window slots
		br := bufio.NewReader(nc)
		for {
			p, err := packet.Read(br, packet.V311, 0)
			if err != nil {
				return
			}
			if _, ok := p.(*packet.Puback); ok {
				<-slots
			}
		}
	}()
	pub := &packet.Publish{Topic: topic, QoS: qos, Payload: payload}
	if qos == 0 {
		one, err := pub.Encode(nil, packet.V311)
		if err != nil {
			b.Fatal(err)
		}
		batch := make([]byte, 0, 256*len(one))
		for range 256 {
			batch = append(batch, one...)
		}
		return func(n int) {
			for n > 0 {
				k := min(n, 256)
				if _, err := nc.Write(batch[:k*len(one)]); err != nil {
					b.Error(err)
					return
				}
				n -= k
			}
		}
	}
	bw := bufio.NewWriterSize(nc, 64<<10)
	var buf []byte
	id := uint16(0)
	return func(n int) {
		for range n {
			select {
			case slots <- struct{}{}:
			default:
				if err := bw.Flush(); err != nil {
					b.Error(err)
					return
				}
				slots <- struct{}{}
			}
			id = id%65535 + 1
			pub.PacketID = id
			buf, _ = pub.Encode(buf[:0], packet.V311)
			if _, err := bw.Write(buf); err != nil {
				b.Error(err)
				return
			}
		}
		if err := bw.Flush(); err != nil {
			b.Error(err)
		}
	}
}
