package broker_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// publishWindow publishes msgs ("pub-seq" payloads) at qos on topic over a
// fresh 3.1.1 connection with up to window messages in flight, and returns
// once every one is acknowledged (PUBACK, or PUBREC-PUBREL-PUBCOMP).
func publishWindow(addr, id, topic string, qos byte, from, to, window int) error {
	c, _, err := raceConnect(addr, &packet.Connect{Version: packet.V311, ClientID: id, CleanStart: true})
	if err != nil {
		return err
	}
	defer c.nc.Close()
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	inflight, next := 0, from
	for next <= to || inflight > 0 {
		for next <= to && inflight < window {
			pid := uint16(next%60000 + 1)
			p := &packet.Publish{Topic: topic, QoS: qos, PacketID: pid, Payload: []byte(fmt.Sprintf("%s-%d", id, next))}
			if err := packet.Write(c.nc, p, packet.V311); err != nil {
				return err
			}
			next++
			inflight++
		}
		p, err := packet.Read(c.r, packet.V311, 0)
		if err != nil {
			return err
		}
		switch p := p.(type) {
		case *packet.Puback, *packet.Pubcomp:
			inflight--
		case *packet.Pubrec:
			if err := packet.Write(c.nc, &packet.Pubrel{PacketID: p.PacketID}, packet.V311); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected %v", id, p)
		}
	}
	return packet.Write(c.nc, &packet.Disconnect{}, packet.V311)
}

// orderChecker is a subscriber application: it acknowledges what it gets,
// delivers a QoS 2 message once (a PUBLISH for a packet id it has PUBREC'd
// and not seen released is a re-send), and checks per-publisher order.
type orderChecker struct {
	pendingRec map[uint16]bool // QoS 2 PUBREC sent, PUBREL not yet seen
	last       map[string]int  // publisher -> last sequence delivered
	seen       map[string]int  // payload -> deliveries
	errs       []string
	delivered  int
	// anyDup accepts a QoS 1 duplicate without DUP: a publisher that
	// re-sends after a broker crash makes a new message of it for the
	// subscriber (DUP is set per hop [MQTT-3.3.1-3]).
	anyDup bool
}

func newOrderChecker() *orderChecker {
	return &orderChecker{pendingRec: map[uint16]bool{}, last: map[string]int{}, seen: map[string]int{}}
}

// handle processes one packet from the server, answering on c.
func (oc *orderChecker) handle(c *brokertest.Conn, p packet.Packet) {
	oc.handleWith(func(p packet.Packet) { c.Send(p) }, p)
}

// handleWith is handle answering with send.
func (oc *orderChecker) handleWith(send func(packet.Packet), p packet.Packet) {
	switch p := p.(type) {
	case *packet.Publish:
		if p.QoS == 2 {
			if oc.pendingRec[p.PacketID] {
				if !p.Dup {
					oc.errs = append(oc.errs, fmt.Sprintf("re-sent QoS 2 PUBLISH %d without DUP", p.PacketID))
				}
				send(&packet.Pubrec{PacketID: p.PacketID})
				return
			}
			oc.pendingRec[p.PacketID] = true
			send(&packet.Pubrec{PacketID: p.PacketID})
		} else if p.QoS == 1 {
			send(&packet.Puback{PacketID: p.PacketID})
		}
		oc.deliver(string(p.Payload), p.QoS, p.Dup)
	case *packet.Pubrel:
		delete(oc.pendingRec, p.PacketID)
		send(&packet.Pubcomp{PacketID: p.PacketID})
	}
}

func (oc *orderChecker) deliver(payload string, qos byte, dup bool) {
	i := strings.LastIndexByte(payload, '-')
	pub := payload[:i]
	seq, _ := strconv.Atoi(payload[i+1:])
	oc.seen[payload]++
	if oc.seen[payload] > 1 {
		// A QoS 1 message may come again after a reconnect, marked DUP
		// [MQTT-3.3.1-1]; a QoS 2 one never [MQTT-4.3.3-2].
		if qos == 2 || (!dup && !oc.anyDup) {
			oc.errs = append(oc.errs, fmt.Sprintf("%s delivered %d times (QoS %d, DUP %v)", payload, oc.seen[payload], qos, dup))
		}
		return
	}
	oc.delivered++
	if want := oc.last[pub] + 1; seq != want {
		oc.errs = append(oc.errs, fmt.Sprintf("%s: got %d after %d [MQTT-4.6.0-2..6]", pub, seq, oc.last[pub]))
	}
	oc.last[pub] = seq
}

// TestOrderingAcrossOfflineAndRestart_MQTT_4_6_0_6: four publishers (QoS 1
// and 2, ten messages in flight each) publish into a persistent subscriber's
// session; the subscriber takes a third, drops its connection with QoS 2
// exchanges and QoS 1 acknowledgements half done, stays offline while more
// arrive, and resumes after a broker restart (pebble store); more arrive
// and it drains again. Per publisher every message arrives, in order
// [MQTT-4.6.0-6]; QoS 2 exactly once [MQTT-4.3.3-2]. The subscriber is
// offline while the publishers publish; with it online during the stream
// see TestOrderingOnlineSubscriber_MQTT_4_6_0_6.
func TestOrderingAcrossOfflineAndRestart_MQTT_4_6_0_6(t *testing.T) {
	ordering(t, false)
}

// TestOrderingOnlineSubscriber_MQTT_4_6_0_6: the ordering test with the
// subscriber online while the publishers publish. Its QoS 1/2 deliveries
// wait for the publisher's store batch (session.holdsFor): its
// acknowledgements never reach the store before the message they name,
// which would refuse the batch, make the broker refuse QoS 1/2 messages
// and close the publishers.
func TestOrderingOnlineSubscriber_MQTT_4_6_0_6(t *testing.T) {
	ordering(t, true)
}

// ordering runs the test above; online keeps the subscriber reading while
// the publishers publish.
func ordering(t *testing.T, online bool) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			dir := t.TempDir()
			srv, stop := startStored(t, dir)
			connectSub := func(addr string) *brokertest.Conn {
				c := brokertest.Dial(t, addr, v)
				cp := &packet.Connect{ClientID: "ordered", CleanStart: false}
				if v == packet.V5 {
					cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}
				}
				c.Connect(cp)
				return c
			}
			sub := connectSub(srv.Addr)
			sub.Subscribe(1, 2, "ord/#")
			oc := newOrderChecker()
			const per = 60 // per publisher and phase
			pubs := []struct {
				id  string
				qos byte
			}{{"p1a", 1}, {"p2a", 2}, {"p1b", 1}, {"p2b", 2}}
			phase := func(addr string, n int) chan error {
				errc := make(chan error, len(pubs))
				var wg sync.WaitGroup
				for _, p := range pubs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errc <- publishWindow(addr, p.id, "ord/"+p.id, p.qos, n*per+1, (n+1)*per, 10)
					}()
				}
				go func() { wg.Wait(); close(errc) }()
				return errc
			}
			wait := func(errc chan error) {
				t.Helper()
				for err := range errc {
					if err != nil {
						t.Fatalf("publisher: %v", err)
					}
				}
			}
			total := len(pubs) * per * 3

			// Phase 1: online; the connection drops after a third of it,
			// with QoS 2 exchanges and QoS 1 acks half done.
			if !online {
				sub.Send(&packet.Disconnect{})
				sub.ExpectClosed()
			}
			errc := phase(srv.Addr, 0)
			if !online {
				wait(errc)
				sub = connectSub(srv.Addr)
			}
			for oc.delivered < len(pubs)*per/3 {
				oc.handle(sub, sub.Recv())
			}
			sub.NC.Close()
			wait(errc)
			// Phase 2: offline.
			wait(phase(srv.Addr, 1))
			stop()

			// Phase 3: restart, resume while the stream goes on.
			srv2, _ := startStored(t, dir)
			if online {
				sub = connectSub(srv2.Addr)
			}
			errc = phase(srv2.Addr, 2)
			if !online {
				wait(errc)
				sub = connectSub(srv2.Addr)
			}
			for oc.delivered < total {
				p, err := sub.RecvTimeout(10 * time.Second)
				if err != nil {
					t.Fatalf("after %d of %d messages: %v (last: %v)", oc.delivered, total, err, oc.last)
				}
				oc.handle(sub, p)
			}
			wait(errc)
			// Nothing more: no late duplicate of a QoS 2 message.
			for {
				p, err := sub.RecvTimeout(300 * time.Millisecond)
				if err != nil {
					break
				}
				oc.handle(sub, p)
			}
			for _, e := range oc.errs {
				t.Error(e)
			}
			for _, p := range pubs {
				if oc.last[p.id] != 3*per {
					t.Errorf("%s: last delivered %d, want %d", p.id, oc.last[p.id], 3*per)
				}
			}
		})
	}
}
