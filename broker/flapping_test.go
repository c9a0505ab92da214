package broker_test

// A client id that connects and disconnects in a tight loop (a device in a
// reconnect storm) must not starve the other clients: their CONNECTs,
// publishes and deliveries go on, and once it stops the session and
// connection counts are what they should be.

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// rawClient is a raw connection used from goroutines other than the test's:
// every step returns an error instead of failing the test.
type rawClient struct {
	nc net.Conn
	r  *bufio.Reader
	v  packet.Version
}

// opDeadline bounds each operation of the clients that share the broker
// with the flapping one.
const opDeadline = 2 * time.Second

// rawDialConnect dials addr and connects; the CONNACK must come within
// opDeadline.
func rawDialConnect(addr string, cp *packet.Connect) (*rawClient, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, opDeadline)
	if err != nil {
		return nil, nil, err
	}
	c := &rawClient{nc: nc, r: bufio.NewReader(nc), v: cp.Version}
	if err := c.send(cp); err != nil {
		nc.Close()
		return nil, nil, err
	}
	p, err := c.recv(opDeadline)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: CONNACK: %w", cp.ClientID, err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReasonCode != packet.Success {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: got %v, want a successful CONNACK", cp.ClientID, p)
	}
	return c, ack, nil
}

func (c *rawClient) send(p packet.Packet) error {
	c.nc.SetWriteDeadline(time.Now().Add(opDeadline))
	return packet.Write(c.nc, p, c.v)
}

func (c *rawClient) recv(d time.Duration) (packet.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return packet.Read(c.r, c.v, 0)
}

// flapConnect is the flapping client's CONNECT: a persistent session.
func flapConnect(v packet.Version, id string) *packet.Connect {
	cp := &packet.Connect{Version: v, ProtocolName: "MQTT", ClientID: id, KeepAlive: 30}
	if v == packet.V5 {
		cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](300)}
	}
	return cp
}

// One 3.1.1 and one 5.0 client id flap (persistent sessions; connect, then a
// DISCONNECT, a bare close, or a second connection taking the first over
// [MQTT-3.1.4-3]) for 3 s while four other clients keep connecting,
// publishing at QoS 1 and receiving: every CONNACK, PUBACK and delivery of
// the others comes within 2 s. Then the counts are back: the flapping
// sessions offline (2), the four subscribers connected.
func TestFlappingClientID_DoesNotStarveOthers_MQTT_3_1_4_3(t *testing.T) {
	srv := brokertest.Start(t)
	const workers = 4
	flapFor := 3 * time.Second
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2+workers)
	var flaps [2]atomic.Int64

	for fi, v := range []packet.Version{packet.V311, packet.V5} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "flap-" + v.String()
			var prev *rawClient
			for i := 0; ; i++ {
				select {
				case <-stop:
					if prev != nil {
						prev.send(&packet.Disconnect{})
						prev.nc.Close()
					}
					return
				default:
				}
				c, _, err := rawDialConnect(srv.Addr, flapConnect(v, id))
				if err != nil {
					errs <- fmt.Errorf("flapper %s, round %d: %w", id, i, err)
					return
				}
				if prev != nil { // taken over by c
					prev.nc.Close()
					prev = nil
				}
				flaps[fi].Add(1)
				switch i % 3 {
				case 0:
					c.send(&packet.Disconnect{})
					c.nc.Close()
				case 1:
					c.nc.Close() // no DISCONNECT
				case 2:
					prev = c // the next round takes it over
				}
			}
		}()
	}

	var rounds [workers]atomic.Int64
	for w := range workers {
		sub, _, err := rawDialConnect(srv.Addr, &packet.Connect{Version: packet.V311, ProtocolName: "MQTT",
			ClientID: fmt.Sprintf("sub%d", w), CleanStart: true, KeepAlive: 30})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.nc.Close()
		topic := fmt.Sprintf("f/%d", w)
		if err := sub.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: topic, QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		if p, err := sub.recv(opDeadline); err != nil {
			t.Fatal(err)
		} else if _, ok := p.(*packet.Suback); !ok {
			t.Fatalf("got %v, want SUBACK", p)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- workerLoop(srv.Addr, w, sub, topic, stop, &rounds[w])
		}()
	}

	// Run for flapFor, or until something failed.
	var failed error
	timer := time.NewTimer(flapFor)
	select {
	case <-timer.C:
	case failed = <-errs:
	}
	timer.Stop()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && failed == nil {
			failed = err
		}
	}
	t.Logf("flaps: v3.1.1 %d, v5 %d; worker rounds %d %d %d %d", flaps[0].Load(), flaps[1].Load(),
		rounds[0].Load(), rounds[1].Load(), rounds[2].Load(), rounds[3].Load())
	if failed != nil {
		t.Fatal(failed)
	}
	for w := range workers {
		if rounds[w].Load() == 0 {
			t.Fatalf("worker %d completed no round in %v", w, flapFor)
		}
	}
	for i := range flaps {
		if flaps[i].Load() < 10 {
			t.Fatalf("flapper %d connected only %d times", i, flaps[i].Load())
		}
	}
	// The flapping sessions are offline, the subscribers connected, the
	// workers' clean publishers gone.
	brokertest.Eventually(t, 5*time.Second, func() bool {
		st := srv.Stats()
		return st.ClientsConnected == workers && st.ClientsDisconnected == 2
	}, "connected %d (want %d), offline %d (want 2)", srv.Stats().ClientsConnected, workers, srv.Stats().ClientsDisconnected)
	if n := srv.Stats().Subscriptions; n != workers {
		t.Fatalf("%d subscriptions, want %d", n, workers)
	}
}

// workerLoop connects a fresh clean-session publisher, publishes one QoS 1
// message to topic and expects its PUBACK and its delivery to sub, each
// within opDeadline, until stop.
func workerLoop(addr string, w int, sub *rawClient, topic string, stop <-chan struct{}, rounds *atomic.Int64) error {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		id := fmt.Sprintf("pub%d-%d", w, i)
		t0 := time.Now()
		c, _, err := rawDialConnect(addr, &packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: id,
			CleanStart: true, KeepAlive: 30})
		if err != nil {
			return fmt.Errorf("worker %d round %d after %v: %w", w, i, time.Since(t0), err)
		}
		payload := fmt.Sprint(i)
		err = c.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte(payload)})
		if err == nil {
			var p packet.Packet
			if p, err = c.recv(opDeadline); err == nil {
				if a, ok := p.(*packet.Puback); !ok || a.PacketID != 1 {
					err = fmt.Errorf("got %v, want PUBACK 1", p)
				}
			}
		}
		if err == nil {
			err = c.send(&packet.Disconnect{})
		}
		c.nc.Close()
		if err != nil {
			return fmt.Errorf("worker %d round %d: %w", w, i, err)
		}
		p, err := sub.recv(opDeadline)
		if err != nil {
			return fmt.Errorf("worker %d round %d: delivery: %w", w, i, err)
		}
		m, ok := p.(*packet.Publish)
		if !ok || string(m.Payload) != payload {
			return fmt.Errorf("worker %d round %d: got %v, want PUBLISH %q", w, i, p, payload)
		}
		if err := sub.send(&packet.Puback{PacketID: m.PacketID}); err != nil {
			return fmt.Errorf("worker %d round %d: %w", w, i, err)
		}
		rounds.Add(1)
	}
}
