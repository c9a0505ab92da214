package broker_test

// The connection reader against hostile input before and after CONNACK: the
// broker allocates for bytes that arrived, never for a declared length, and
// refuses a first packet that is not CONNECT at its first byte.

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// A first packet that is not CONNECT is refused at its first byte: the
// broker closes the connection without waiting for a remaining length
// [MQTT-3.1.0-1]. Before the fix it waited for the length and allocated the
// declared body.
func TestSecurity_FirstByteNotConnect_MQTT_3_1_0_1(t *testing.T) {
	srv := brokertest.Start(t)
	for _, first := range []byte{0x30, 0x32, 0x82, 0xA2, 0xC0, 0xE0, 0xF0, 0x00, 0xFF} {
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		c.SendRaw([]byte{first})
		if got := c.ExpectClosed(); len(got) != 0 {
			t.Fatalf("first byte %#x: got %v before the close", first, got)
		}
	}
}

// A CONNECT declared larger than MaxConnectPacketSize is refused as soon as
// its fixed header is read, before its body arrives [MQTT-3.2.2-15]; one
// under the bound, carrying a will of 60 KiB, is accepted.
func TestSecurity_ConnectCappedBeforeConnack(t *testing.T) {
	srv := brokertest.Start(t)
	// 10 FF FF 0F: remaining length 262143, above the default 128 KiB.
	c := brokertest.Dial(t, srv.Addr, packet.V311)
	c.SendRaw([]byte{0x10, 0xFF, 0xFF, 0x0F})
	c.ExpectClosed()
	// The 5 bytes of the review: 268,435,455 declared, nothing sent.
	c = brokertest.Dial(t, srv.Addr, packet.V311)
	c.SendRaw([]byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F})
	c.ExpectClosed()

	for _, v := range bothVersions {
		w := &packet.Will{Topic: "w", Payload: bytes.Repeat([]byte("x"), 60<<10)}
		c := brokertest.Dial(t, srv.Addr, v)
		c.Connect(&packet.Connect{ClientID: "bigwill-" + v.String(), CleanStart: true, Will: w})
		c.Ping()
	}

	// A CONNECT of about 185 KiB (a will of 64 KiB with a 60 KB topic and a
	// 60 KB user name) is refused by default and taken by a broker
	// configured for it.
	huge := &packet.Connect{ClientID: "huge", CleanStart: true, Username: strings.Repeat("u", 60000),
		Will: &packet.Will{Topic: strings.Repeat("w", 60000), Payload: make([]byte, 65535)}}
	c = brokertest.Dial(t, srv.Addr, packet.V311)
	c.Send(huge)
	c.ExpectClosed()
	big := brokertest.Start(t, func(o *broker.Options) { o.MaxConnectPacketSize = 1 << 20 })
	c = brokertest.Dial(t, big.Addr, packet.V311)
	c.Connect(huge)
	c.Ping()
}

// After CONNACK, a PUBLISH that declares 256 MiB and sends a few bytes costs
// the broker about what arrived, not what was declared. Before the fix the
// broker allocated the whole declared body at once (TotalAlloc grew by 256
// MiB per such packet).
func TestSecurity_BodyAllocatedAsBytesArrive(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxPacketSize = 268435460 })
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const conns = 4
	for i := range conns {
		nc, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c := brokertest.NewConn(t, nc, packet.V311)
		c.Connect(&packet.Connect{ClientID: "big" + string(rune('a'+i)), CleanStart: true})
		// PUBLISH QoS 0, remaining length 268,435,455, then the topic and 64 bytes.
		c.SendRaw(append([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 't'}, make([]byte, 64)...))
		nc.(*net.TCPConn).CloseWrite() // the broker sees EOF mid-packet and closes
		c.ExpectClosed()
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 32<<20 {
		t.Fatalf("%d partial 256 MiB PUBLISHes allocated %d MiB", conns, grown>>20)
	}
}

// Large packets still arrive whole: bodies that grow as they are read keep
// every byte and the payload the subscriber gets is the one sent.
func TestSecurity_LargeBodiesIntact(t *testing.T) {
	srv := brokertest.Start(t)
	sub := brokertest.Dial(t, srv.Addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe(1, 1, "big/#")
	pub := brokertest.Dial(t, srv.Addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	for _, n := range []int{4095, 4096, 4097, 70000, 1 << 20, 3<<20 + 17} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		pub.Send(&packet.Publish{Topic: "big/x", QoS: 1, PacketID: 1, Payload: payload})
		pub.ExpectPacket(&packet.Puback{PacketID: 1})
		got := sub.ExpectPublish()
		if !bytes.Equal(got.Payload, payload) {
			t.Fatalf("%d-byte payload altered", n)
		}
		sub.Ack(got)
	}
	// Past max_packet_size (16 MiB by default) a client is cut off before
	// its body is read [MQTT-3.2.2-15].
	pub.SendRaw([]byte{0x30, 0x81, 0x80, 0x80, 0x08}) // 16 MiB + 1
	pub.ExpectClosed()
}

// pipeConn is a net.Conn that reads from a byte stream and swallows writes:
// the connection reader driven without a socket.
type pipeConn struct {
	r io.Reader
}

func (p *pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) { return len(b), nil }
func (p *pipeConn) Close() error                { return nil }
func (p *pipeConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883} }
func (p *pipeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (p *pipeConn) SetDeadline(t time.Time) error      { return nil }
func (p *pipeConn) SetReadDeadline(t time.Time) error  { return nil }
func (p *pipeConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzConnReader drives a whole connection (CONNECT handling, the packet
// dispatch, the reader's buffers) with an arbitrary byte stream. It must not
// panic, and what it allocates is bounded by what was sent, not by the
// lengths the stream declares.
func FuzzConnReader(f *testing.F) {
	connect := func(v packet.Version) []byte {
		var b bytes.Buffer
		packet.Write(&b, &packet.Connect{Version: v, ProtocolName: "MQTT", ClientID: "f", CleanStart: true}, v)
		return b.Bytes()
	}
	f.Add([]byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Add(append(connect(packet.V311), 0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 't'))
	f.Add(append(connect(packet.V5), 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00))
	f.Add(append(connect(packet.V311), 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, '#', 0x01, 0x30, 0x03, 0x00, 0x01, 'a'))
	f.Add([]byte(strings.Repeat("\x30", 10)))
	srv := broker.New(broker.Options{MaxPacketSize: 268435460, SysInterval: -1, ConnectTimeout: time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		srv.ServeConn(&pipeConn{r: bytes.NewReader(data)}, "fuzz")
		runtime.ReadMemStats(&after)
		if grown := after.TotalAlloc - before.TotalAlloc; grown > 8<<20+64*uint64(len(data)) {
			t.Fatalf("%d bytes in, %d bytes allocated", len(data), grown)
		}
	})
}
