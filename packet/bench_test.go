package packet_test

import (
	"bytes"
	"testing"

	"github.com/mqttd/mqttd/internal/packettest"
	"github.com/mqttd/mqttd/packet"
)

var (
	benchPublish = &packet.Publish{QoS: 1, PacketID: 42, Topic: "sensors/house/kitchen/temp", Payload: bytes.Repeat([]byte{'p'}, 64)}

	benchPublishV5 = &packet.Publish{QoS: 1, PacketID: 42, Topic: "sensors/house/kitchen/temp", Payload: bytes.Repeat([]byte{'p'}, 64),
		Props: &packet.Properties{PayloadFormat: packet.Ptr[byte](1), MessageExpiry: packet.Ptr[uint32](60),
			ContentType: "application/json", ResponseTopic: "reply/to", CorrelationData: []byte("corr-1"),
			TopicAlias: packet.Ptr[uint16](7), User: []packet.UserProperty{{Key: "trace", Value: "abc"}}}}
)

// benchDecode decodes the encoded packet p repeatedly. A fresh copy of the
// body per iteration would measure the copy; decoding the same body again is
// what a zero-copy decoder allows, as nothing writes to it.
func benchDecode(b *testing.B, p packet.Packet, v packet.Version) {
	b.Helper()
	enc, err := p.Encode(nil, v)
	if err != nil {
		b.Fatal(err)
	}
	fh, err := packet.ReadFixedHeader(bytes.NewReader(enc))
	if err != nil {
		b.Fatal(err)
	}
	body := enc[len(enc)-fh.Remaining:]
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := packet.Decode(fh, body, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePublishV311(b *testing.B) { benchDecode(b, benchPublish, packet.V311) }

func BenchmarkDecodePublishV5(b *testing.B) { benchDecode(b, benchPublish, packet.V5) }

func BenchmarkDecodePublishV5Props(b *testing.B) { benchDecode(b, benchPublishV5, packet.V5) }

func BenchmarkDecodeConnectV311(b *testing.B) {
	benchDecode(b, packettest.ConnectV311Full.Packet, packet.V311)
}

func BenchmarkDecodeConnectV5(b *testing.B) {
	benchDecode(b, packettest.ConnectV5.Packet, packet.V5)
}

func benchEncode(b *testing.B, enc func([]byte) ([]byte, error)) {
	b.Helper()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = enc(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendHeaderPublishV311(b *testing.B) {
	benchEncode(b, func(dst []byte) ([]byte, error) { return benchPublish.AppendHeader(dst, packet.V311) })
}

func BenchmarkAppendHeaderPublishV5Props(b *testing.B) {
	benchEncode(b, func(dst []byte) ([]byte, error) { return benchPublishV5.AppendHeader(dst, packet.V5) })
}

func BenchmarkEncodePublishV311(b *testing.B) {
	benchEncode(b, func(dst []byte) ([]byte, error) { return benchPublish.Encode(dst, packet.V311) })
}

func BenchmarkEncodePublishV5Props(b *testing.B) {
	benchEncode(b, func(dst []byte) ([]byte, error) { return benchPublishV5.Encode(dst, packet.V5) })
}

func BenchmarkEncodeConnectV5(b *testing.B) {
	p := packettest.ConnectV5Will.Packet
	benchEncode(b, func(dst []byte) ([]byte, error) { return p.Encode(dst, packet.V5) })
}

func BenchmarkEncodePuback(b *testing.B) {
	p := &packet.Puback{PacketID: 9}
	benchEncode(b, func(dst []byte) ([]byte, error) { return p.Encode(dst, packet.V5) })
}

// TestAllocs pins the allocation budget: a PUBLISH decodes into the *Publish
// alone, and encoding into a reused buffer allocates nothing.
func TestAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	decode := func(p packet.Packet, v packet.Version) func() {
		enc, err := p.Encode(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		fh, _ := packet.ReadFixedHeader(bytes.NewReader(enc))
		body := enc[len(enc)-fh.Remaining:]
		return func() {
			if _, err := packet.Decode(fh, body, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	buf := make([]byte, 0, 512)
	for _, tc := range []struct {
		name string
		f    func()
		max  float64
	}{
		{"decode PUBLISH 3.1.1", decode(benchPublish, packet.V311), 1},
		{"decode PUBLISH 5.0 no properties", decode(benchPublish, packet.V5), 1},
		{"decode PUBLISH 5.0 properties", decode(benchPublishV5, packet.V5), 2}, // block + user property slice
		{"decode PUBACK 5.0", decode(&packet.Puback{PacketID: 1}, packet.V5), 1},
		{"AppendHeader PUBLISH 5.0", func() { buf, _ = benchPublishV5.AppendHeader(buf[:0], packet.V5) }, 0},
		{"Encode PUBLISH 3.1.1", func() { buf, _ = benchPublish.Encode(buf[:0], packet.V311) }, 0},
		{"Encode PUBLISH 5.0", func() { buf, _ = benchPublishV5.Encode(buf[:0], packet.V5) }, 0},
		{"Encode CONNECT 5.0", func() { buf, _ = packettest.ConnectV5Will.Packet.Encode(buf[:0], packet.V5) }, 0},
		{"Encode SUBSCRIBE 5.0", func() { buf, _ = packettest.SubscribeV5.Packet.Encode(buf[:0], packet.V5) }, 0},
	} {
		if got := testing.AllocsPerRun(100, tc.f); got > tc.max {
			t.Errorf("%s: %v allocations, want at most %v", tc.name, got, tc.max)
		}
	}
}
