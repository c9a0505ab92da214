package client

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// dialFake dials fs with o, accepts the connection and answers CONNECT with
// ack (a plain success when nil).
func dialFake(t *testing.T, fs *fakeServer, o Options, ack *packet.Connack) (*Client, *rawConn, *packet.Connect) {
	t.Helper()
	type res struct {
		c   *Client
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Dial(testCtx(t), fs.url(), o)
		ch <- res{c, err}
	}()
	v := o.Version
	if v == 0 {
		v = packet.V311
	}
	rc, cp := fs.accept(v)
	if ack == nil {
		ack = &packet.Connack{}
	}
	rc.send(ack)
	r := <-ch
	if r.err != nil {
		t.Fatalf("Dial: %v", r.err)
	}
	t.Cleanup(func() { _ = r.c.Close() })
	return r.c, rc, cp
}

// errCh returns a done callback and the channel it reports to.
func errCh() (func(error), chan error) {
	ch := make(chan error, 1)
	return func(err error) { ch <- err }, ch
}

func waitErr(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome within 5s")
		return nil
	}
}

// [MQTT-4.4.0-1] unacknowledged PUBLISH and PUBREL are re-sent on reconnect
// with their original packet ids, in order; [MQTT-3.3.1-1] a re-sent
// PUBLISH has DUP set.
func TestResendInflightWithDup(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			fs := startFake(t)
			var lost, connects atomic.Int32
			c, rc, cp := dialFake(t, fs, Options{
				Version: v, ClientID: "resend", PersistentSession: true,
				AutoReconnect: true, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
				OnConnectionLost: func(*Client, error) { lost.Add(1) },
				OnConnect:        func(*Client, *packet.Connack) { connects.Add(1) },
			}, nil)
			if cp.CleanStart || cp.ClientID != "resend" {
				t.Fatalf("CONNECT clean=%v id=%q", cp.CleanStart, cp.ClientID)
			}
			d1, ch1 := errCh()
			d2, ch2 := errCh()
			d3, ch3 := errCh()
			for i, d := range []func(error){d1, d2, d3} {
				qos := byte(1 + min(i, 1))
				if err := c.PublishAsync(testCtx(t), "t", []byte(fmt.Sprint(i)), PublishOptions{QoS: qos}, d); err != nil {
					t.Fatal(err)
				}
			}
			var first [3]*packet.Publish
			for i := range first {
				first[i] = recvAs[*packet.Publish](rc)
				if first[i].Dup || first[i].PacketID == 0 || string(first[i].Payload) != fmt.Sprint(i) {
					t.Fatalf("first send %d: %+v", i, first[i])
				}
			}
			rc.send(&packet.Pubrec{PacketID: first[2].PacketID})
			if rel := recvAs[*packet.Pubrel](rc); rel.PacketID != first[2].PacketID {
				t.Fatalf("PUBREL %d, want %d [MQTT-4.3.3-3]", rel.PacketID, first[2].PacketID)
			}
			rc.nc.Close()

			rc2, cp2 := fs.accept(v)
			if cp2.CleanStart {
				t.Fatal("reconnect with clean start: the session would be lost")
			}
			rc2.send(&packet.Connack{SessionPresent: true})
			// PUBRELs take no send quota and go first; the PUBLISHes follow
			// in their original order [MQTT-4.6.0-1].
			if rel := recvAs[*packet.Pubrel](rc2); rel.PacketID != first[2].PacketID {
				t.Fatalf("re-sent PUBREL %d, want %d", rel.PacketID, first[2].PacketID)
			}
			for i := range 2 {
				p := recvAs[*packet.Publish](rc2)
				if !p.Dup || p.PacketID != first[i].PacketID || string(p.Payload) != fmt.Sprint(i) {
					t.Fatalf("re-sent %d: dup=%v id=%d payload=%q, want dup id %d [MQTT-3.3.1-1]", i, p.Dup, p.PacketID, p.Payload, first[i].PacketID)
				}
			}
			rc2.send(&packet.Puback{PacketID: first[0].PacketID})
			if err := waitErr(t, ch1); err != nil {
				t.Fatal(err)
			}
			rc2.send(&packet.Pubrec{PacketID: first[1].PacketID})
			if rel := recvAs[*packet.Pubrel](rc2); rel.PacketID != first[1].PacketID {
				t.Fatalf("PUBREL %d", rel.PacketID)
			}
			rc2.send(&packet.Pubcomp{PacketID: first[1].PacketID})
			rc2.send(&packet.Pubcomp{PacketID: first[2].PacketID})
			for _, ch := range []chan error{ch2, ch3} {
				if err := waitErr(t, ch); err != nil {
					t.Fatal(err)
				}
			}
			// OnConnect runs after the writer has started: it may come last.
			brokertest.Eventually(t, 5*time.Second, func() bool { return connects.Load() == 2 })
			if c.Pending() != 0 || lost.Load() != 1 || connects.Load() != 2 {
				t.Fatalf("pending=%d lost=%d connects=%d", c.Pending(), lost.Load(), connects.Load())
			}
		})
	}
}

// [MQTT-4.3.3-10] (5.0) / [MQTT-4.3.3-2] (3.1.1): a QoS 2 PUBLISH received
// again before PUBREL is acknowledged again but not delivered again;
// [MQTT-4.3.3-11] PUBREL is answered with PUBCOMP; after it the id is new.
func TestInboundQoS2NoDuplicate(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			var col collector
			fs := startFake(t)
			_, rc, _ := dialFake(t, fs, Options{Version: v, DefaultHandler: col.handle}, nil)
			pub := &packet.Publish{QoS: 2, PacketID: 7, Topic: "q2", Payload: []byte("x")}
			rc.send(pub)
			if p := recvAs[*packet.Pubrec](rc); p.PacketID != 7 {
				t.Fatalf("PUBREC %d", p.PacketID)
			}
			dup := *pub
			dup.Dup = true
			rc.send(&dup)
			if p := recvAs[*packet.Pubrec](rc); p.PacketID != 7 {
				t.Fatalf("second PUBREC %d", p.PacketID)
			}
			rc.send(&packet.Pubrel{PacketID: 7})
			if p := recvAs[*packet.Pubcomp](rc); p.PacketID != 7 || p.ReasonCode != packet.Success {
				t.Fatalf("PUBCOMP %d %v", p.PacketID, p.ReasonCode)
			}
			rc.send(&packet.Publish{QoS: 2, PacketID: 7, Topic: "q2", Payload: []byte("y")})
			recvAs[*packet.Pubrec](rc)
			msgs := col.wait(t, 2)
			if len(msgs) != 2 || string(msgs[0].Payload) != "x" || string(msgs[1].Payload) != "y" {
				t.Fatalf("delivered %d messages", len(msgs))
			}
		})
	}
}

// Acknowledgements go after the handler returns.
func TestAckAfterHandler(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	fs := startFake(t)
	_, rc, _ := dialFake(t, fs, Options{DefaultHandler: func(*Message) { calls.Add(1); <-release }}, nil)
	rc.send(&packet.Publish{QoS: 1, PacketID: 3, Topic: "a", Payload: []byte("x")})
	brokertest.Eventually(t, 5*time.Second, func() bool { return calls.Load() == 1 })
	rc.expectNothing(100 * time.Millisecond)
	close(release)
	// [MQTT-4.3.2-4] PUBACK with the PUBLISH's packet id.
	if p := recvAs[*packet.Puback](rc); p.PacketID != 3 {
		t.Fatalf("PUBACK %d", p.PacketID)
	}
}

func TestTopicAliasInbound(t *testing.T) {
	var col collector
	fs := startFake(t)
	c, rc, cp := dialFake(t, fs, Options{Version: packet.V5, TopicAliasMaximum: 4, DefaultHandler: col.handle}, nil)
	if cp.Props == nil || cp.Props.TopicAliasMaximum == nil || *cp.Props.TopicAliasMaximum != 4 {
		t.Fatalf("CONNECT Topic Alias Maximum: %+v", cp.Props)
	}
	alias := func(a uint16) *packet.Properties { return &packet.Properties{TopicAlias: packet.Ptr(a)} }
	rc.send(&packet.Publish{Topic: "al/1", Props: alias(1), Payload: []byte("a")})
	rc.send(&packet.Publish{Topic: "", Props: alias(1), Payload: []byte("b")})
	msgs := col.wait(t, 2)
	if msgs[0].Topic != "al/1" || msgs[1].Topic != "al/1" {
		t.Fatalf("topics %q %q, want the alias resolved", msgs[0].Topic, msgs[1].Topic)
	}
	// [MQTT-3.3.2-9] An alias above our maximum is a protocol error:
	// DISCONNECT with Topic Alias invalid, then close.
	rc.send(&packet.Publish{Topic: "x", Props: alias(5)})
	d := recvAs[*packet.Disconnect](rc)
	if d.ReasonCode != packet.TopicAliasInvalid {
		t.Fatalf("DISCONNECT %v, want topic alias invalid", d.ReasonCode)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client still running")
	}
	if !errors.Is(c.Err(), packet.TopicAliasInvalid) || !errors.Is(c.Err(), ErrProtocol) {
		t.Fatalf("Err() = %v", c.Err())
	}
}

// [MQTT-3.3.4-7] No more unacknowledged QoS 1/2 PUBLISHes than the server's
// Receive Maximum.
func TestReceiveMaximumHonoured(t *testing.T) {
	fs := startFake(t)
	c, rc, _ := dialFake(t, fs, Options{Version: packet.V5}, &packet.Connack{Props: &packet.Properties{ReceiveMaximum: packet.Ptr(uint16(2))}})
	errs := make(chan error, 8)
	go func() {
		for i := range 8 {
			done := func(err error) { errs <- err }
			if err := c.PublishAsync(testCtx(t), "rm", []byte(fmt.Sprint(i)), PublishOptions{QoS: byte(1 + i%2)}, done); err != nil {
				errs <- err
			}
		}
	}()
	var outstanding []*packet.Publish
	for received, acked := 0, 0; acked < 8; acked++ {
		for len(outstanding) < 2 && received < 8 {
			outstanding = append(outstanding, recvAs[*packet.Publish](rc))
			received++
		}
		if len(outstanding) == 2 && received < 8 {
			rc.expectNothing(50 * time.Millisecond) // the window is full
		}
		p := outstanding[0]
		outstanding = outstanding[1:]
		if p.QoS == 1 {
			rc.send(&packet.Puback{PacketID: p.PacketID})
		} else {
			rc.send(&packet.Pubrec{PacketID: p.PacketID})
			// The PUBREL may follow a PUBLISH that the freed slot let out.
			for {
				q := rc.recv()
				if rel, ok := q.(*packet.Pubrel); ok && rel.PacketID == p.PacketID {
					break
				}
				pub, ok := q.(*packet.Publish)
				if !ok {
					t.Fatalf("got %v", q.Type())
				}
				outstanding = append(outstanding, pub)
				received++
			}
			rc.send(&packet.Pubcomp{PacketID: p.PacketID})
		}
	}
	for range 8 {
		if err := waitErr(t, errs); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.Eventually(t, 5*time.Second, func() bool { return c.Pending() == 0 })
}

func TestServerLimits(t *testing.T) {
	fs := startFake(t)
	c, rc, _ := dialFake(t, fs, Options{Version: packet.V5}, &packet.Connack{Props: &packet.Properties{
		MaximumQoS: packet.Ptr(byte(1)), RetainAvailable: packet.Ptr(byte(0)), MaximumPacketSize: packet.Ptr(uint32(100)),
	}})
	cases := []struct {
		name string
		o    PublishOptions
		size int
		want error
	}{
		{"QoS above Maximum QoS [MQTT-3.2.2-11]", PublishOptions{QoS: 2}, 1, packet.QoSNotSupported},
		{"retain not available [MQTT-3.2.2-14]", PublishOptions{Retain: true}, 1, packet.RetainNotSupported},
		{"QoS 0 above Maximum Packet Size [MQTT-3.2.2-15]", PublishOptions{}, 200, packet.PacketTooLarge},
		{"QoS 1 above Maximum Packet Size [MQTT-3.2.2-15]", PublishOptions{QoS: 1}, 200, packet.PacketTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			done, ch := errCh()
			err := c.PublishAsync(testCtx(t), "lim", make([]byte, tc.size), tc.o, done)
			if err == nil {
				err = waitErr(t, ch)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// None of them reached the server: the next packet is this one.
	if err := c.Publish(testCtx(t), "ok", []byte("small"), PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := recvAs[*packet.Publish](rc); p.Topic != "ok" {
		t.Fatalf("server got %q first", p.Topic)
	}
	if c.Pending() != 0 {
		t.Fatalf("Pending() = %d", c.Pending())
	}
}

// [MQTT-3.1.2-23] (3.1.1) / [MQTT-3.1.2-20] (5.0): PINGREQ when idle;
// [MQTT-3.2.2-21] the Server Keep Alive replaces ours. A PINGREQ left
// unanswered ends the connection.
func TestKeepAlive(t *testing.T) {
	cases := []struct {
		name string
		v    packet.Version
		ka   time.Duration
		ack  *packet.Connack
	}{
		{"3.1.1", packet.V311, time.Second, nil},
		{"5.0 server keep alive", packet.V5, time.Minute, &packet.Connack{Props: &packet.Properties{ServerKeepAlive: packet.Ptr(uint16(1))}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := startFake(t)
			c, rc, cp := dialFake(t, fs, Options{Version: tc.v, KeepAlive: tc.ka}, tc.ack)
			if want := uint16(tc.ka / time.Second); cp.KeepAlive != want {
				t.Fatalf("CONNECT keep alive %d, want %d", cp.KeepAlive, want)
			}
			start := time.Now()
			p, err := rc.recvTimeout(2 * time.Second)
			if err != nil {
				t.Fatalf("no PINGREQ within 2s: %v", err)
			}
			if _, ok := p.(*packet.Pingreq); !ok {
				t.Fatalf("got %v, want PINGREQ", p.Type())
			}
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Fatalf("PINGREQ after %v, later than the keep alive", d)
			}
			rc.send(&packet.Pingresp{})
			recvAs[*packet.Pingreq](rc) // not answered
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("client kept an unresponsive connection")
			}
			if !errors.Is(c.Err(), ErrPingTimeout) || !errors.Is(c.Err(), ErrConnectionLost) {
				t.Fatalf("Err() = %v", c.Err())
			}
		})
	}
}

// [MQTT-3.3.1-4] A PUBLISH with QoS 3 is malformed: a v5 client says so in
// a DISCONNECT and closes the connection.
func TestMalformedFromServer(t *testing.T) {
	fs := startFake(t)
	c, rc, _ := dialFake(t, fs, Options{Version: packet.V5}, nil)
	if _, err := rc.nc.Write([]byte{0x36, 0x06, 0x00, 0x01, 'a', 0x00, 0x01, 0x00}); err != nil {
		t.Fatal(err)
	}
	if d := recvAs[*packet.Disconnect](rc); d.ReasonCode != packet.MalformedPacket {
		t.Fatalf("DISCONNECT %v, want malformed packet", d.ReasonCode)
	}
	<-c.Done()
	if !errors.Is(c.Err(), packet.MalformedPacket) {
		t.Fatalf("Err() = %v", c.Err())
	}
}

// Close and Disconnect stop every goroutine the client started.
func TestNoGoroutineLeft(t *testing.T) {
	for _, end := range []string{"Close", "Disconnect", "server closes"} {
		t.Run(end, func(t *testing.T) {
			fs := startFake(t)
			before := runtime.NumGoroutine()
			c, rc, _ := dialFake(t, fs, Options{Version: packet.V5, KeepAlive: time.Second}, nil)
			switch end {
			case "Close":
				_ = c.Close()
			case "Disconnect":
				if err := c.Disconnect(testCtx(t)); err != nil {
					t.Fatal(err)
				}
				recvAs[*packet.Disconnect](rc)
			default:
				rc.nc.Close()
				<-c.Done()
			}
			brokertest.Eventually(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= before },
				"%d goroutines, %d before", runtime.NumGoroutine(), before)
		})
	}
}

// A Subscribe made on a new connection while its serve goroutine is
// starting is sent once: serve restores only the subscriptions granted
// before the connection was made current (a second SUBSCRIBE would bring
// the filter's retained messages again). serve is held, with its writer
// running, until the Subscribe was answered: the order in which the
// duplicate used to happen, on the first connection and on a reconnection.
func TestSubscribeWhileServeStartsSentOnce(t *testing.T) {
	held := make(chan struct{})
	release := make(chan struct{})
	serving = func() {
		held <- struct{}{}
		<-release
	}
	t.Cleanup(func() { serving = func() {} })
	fs := startFake(t)
	type res struct {
		c   *Client
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Dial(testCtx(t), fs.url(), Options{Version: packet.V5, AutoReconnect: true,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		ch <- res{c, err}
	}()
	rc, _ := fs.accept(packet.V5)
	rc.send(&packet.Connack{})
	r := <-ch
	if r.err != nil {
		t.Fatalf("Dial: %v", r.err)
	}
	c := r.c
	t.Cleanup(func() { _ = c.Close() })

	// subscribe subscribes to filter while serve of rc's connection is
	// held, then lets serve go on.
	subscribe := func(rc *rawConn, filter string) {
		t.Helper()
		<-held
		done := make(chan error, 1)
		go func() {
			_, err := c.Subscribe(testCtx(t), []packet.Subscription{{Filter: filter, QoS: 1}}, nil)
			done <- err
		}()
		sp := recvAs[*packet.Subscribe](rc)
		if len(sp.Subscriptions) != 1 || sp.Subscriptions[0].Filter != filter {
			t.Fatalf("SUBSCRIBE %+v, want %s", sp.Subscriptions, filter)
		}
		rc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
		if err := waitErr(t, done); err != nil {
			t.Fatal(err)
		}
		release <- struct{}{}
	}
	subscribe(rc, "a")
	rc.expectNothing(200 * time.Millisecond)

	// A reconnection without a session: "a" is restored, once; "b", made
	// on the new connection while serve started, is not sent again.
	rc.nc.Close()
	rc2, _ := fs.accept(packet.V5)
	rc2.send(&packet.Connack{})
	subscribe(rc2, "b")
	sp := recvAs[*packet.Subscribe](rc2)
	if len(sp.Subscriptions) != 1 || sp.Subscriptions[0].Filter != "a" {
		t.Fatalf("restored %+v, want a alone", sp.Subscriptions)
	}
	rc2.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	rc2.expectNothing(200 * time.Millisecond)
}
