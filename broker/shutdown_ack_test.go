package broker_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// gateHook holds a PUBLISH to topic in its PublishHook until released, so a
// test can start a shutdown while the broker handles it.
type gateHook struct {
	topic   string
	entered chan struct{}
	release chan struct{}
}

func (h *gateHook) OnPublish(c *broker.ClientInfo, p *packet.Publish) error {
	if p.Topic == h.topic {
		close(h.entered)
		<-h.release
	}
	return nil
}

// slowCloseListener's Close waits for release: Shutdown is then held between
// the moment the server is closing and the moment it disconnects clients.
type slowCloseListener struct {
	net.Listener
	once    sync.Once
	closing chan struct{}
	release chan struct{}
}

func (l *slowCloseListener) Close() error {
	l.once.Do(func() {
		close(l.closing)
		<-l.release
	})
	return l.Listener.Close()
}

// TestShutdownDoesNotAcknowledgeUnrouted: a QoS 1 or 2 PUBLISH that the
// broker handles once it is shutting down, and that therefore reaches no
// subscriber, gets no PUBACK or PUBREC: the publisher keeps it and sends it
// again to the next server [MQTT-4.3.2-2] [MQTT-4.3.3-2]. (A bridge lost the
// messages in flight across a remote broker's restart this way.)
func TestShutdownDoesNotAcknowledgeUnrouted(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(map[byte]string{1: "qos1", 2: "qos2"}[qos], func(t *testing.T) {
			gate := &gateHook{topic: "gate/x", entered: make(chan struct{}), release: make(chan struct{})}
			srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1, Hooks: []any{gate}})
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := &slowCloseListener{Listener: inner, closing: make(chan struct{}), release: make(chan struct{})}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(l) }()
			stopped := make(chan error, 1)
			var releaseOnce, gateOnce sync.Once
			releaseListener := func() { releaseOnce.Do(func() { close(l.release) }) }
			releaseGate := func() { gateOnce.Do(func() { close(gate.release) }) }
			t.Cleanup(func() { // after a failure too: nothing stays blocked
				releaseListener()
				releaseGate()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = srv.Shutdown(ctx)
				<-served
			})
			addr := inner.Addr().String()
			sub := brokertest.Dial(t, addr, packet.V311)
			sub.Connect(&packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "sub", CleanStart: true})
			sub.Subscribe(1, 2, "gate/#")
			pub := brokertest.Dial(t, addr, packet.V311)
			pub.Connect(&packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "pub", CleanStart: true})
			pub.Send(&packet.Publish{Topic: "gate/x", QoS: qos, PacketID: 7, Payload: []byte("m")})
			select {
			case <-gate.entered:
			case <-time.After(5 * time.Second):
				t.Fatal("the PUBLISH never reached the hook")
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				stopped <- srv.Shutdown(ctx)
			}()
			select {
			case <-l.closing: // closing, clients not yet disconnected
			case <-time.After(5 * time.Second):
				t.Fatal("Shutdown never closed the listener")
			}
			releaseGate()
			p, err := pub.RecvTimeout(5 * time.Second)
			if err == nil {
				t.Fatalf("acknowledged a message routed to no one during shutdown: %s", brokertest.Describe(p))
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the publisher's connection neither closed nor answered")
			}
			releaseListener()
			if err := <-stopped; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			for _, p := range sub.ExpectClosed() {
				if _, ok := p.(*packet.Publish); ok {
					t.Fatalf("the subscriber received %s, yet the publisher was told nothing", brokertest.Describe(p))
				}
			}
		})
	}
}
