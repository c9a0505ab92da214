package packet_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"reflect"
	"testing"
	"testing/iotest"

	"github.com/mqttd/mqttd/internal/packettest"
	"github.com/mqttd/mqttd/packet"
)

func equalPacket(a, b packet.Packet) bool { return reflect.DeepEqual(a, b) }

// seedCorpus adds the fixtures, the malformed cases and the round-trip
// encodings (when small) as seeds.
func seedCorpus(f *testing.F) {
	f.Helper()
	for _, fx := range packettest.Fixtures {
		f.Add(fx.Bytes, byte(fx.Version))
	}
	for _, tc := range malformedCases() {
		f.Add(tc.raw, byte(tc.v))
	}
	for _, tc := range roundTripCases() {
		for _, v := range allVersions {
			if b, err := normalize(tc.p, v).Encode(nil, v); err == nil && len(b) < 4096 {
				f.Add(b, byte(v))
			}
		}
	}
}

// FuzzDecode checks that decoding never panics and that whatever decodes
// re-encodes to bytes that decode to an equal packet, and that encoding is
// then stable.
func FuzzDecode(f *testing.F) {
	seedCorpus(f)
	f.Fuzz(func(t *testing.T, data []byte, vb byte) {
		v := packet.Version(vb%3 + 3)
		// Decode directly, with the fixed header byte taken from the input.
		if len(data) > 0 {
			fh := packet.FixedHeader{Type: packet.Type(data[0] >> 4), Flags: data[0] & 0x0F, Remaining: len(data) - 1}
			_, _ = packet.Decode(fh, bytes.Clone(data[1:]), v)
		}
		p, err := packet.Read(bufio.NewReader(bytes.NewReader(data)), v, len(data))
		if err != nil {
			return
		}
		ev := v
		if c, ok := p.(*packet.Connect); ok {
			ev = c.Version
		}
		enc, err := p.Encode(nil, ev)
		if err != nil {
			t.Fatalf("decoded %#v from % X, but Encode: %v", p, data, err)
		}
		p2, err := packet.Read(bufio.NewReader(bytes.NewReader(enc)), ev, 0)
		if err != nil {
			t.Fatalf("re-encoded % X (from % X) does not decode: %v", enc, data, err)
		}
		if !equalPacket(p, p2) {
			t.Fatalf("round trip differs:\n first %#v\nsecond %#v", p, p2)
		}
		enc2, err := p2.Encode(nil, ev)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: % X vs % X (%v)", enc, enc2, err)
		}
		_ = fmt.Sprint(p) // String never panics
	})
}

type readResult struct {
	p   packet.Packet
	err string
}

// readAllPackets reads packets until the first error.
func readAllPackets(r io.Reader, v packet.Version, maxSize int) []readResult {
	br := bufio.NewReaderSize(r, 16)
	var out []readResult
	for {
		p, err := packet.Read(br, v, maxSize)
		if err != nil {
			return append(out, readResult{p, err.Error()})
		}
		out = append(out, readResult{p: p})
	}
}

// FuzzReadPartial checks that Read gives the same packets and the same final
// error whether the stream arrives whole, one byte at a time or in halves.
func FuzzReadPartial(f *testing.F) {
	seedCorpus(f)
	var all []byte
	for _, fx := range packettest.Fixtures {
		if fx.Version == packet.V5 {
			all = append(all, fx.Bytes...)
		}
	}
	f.Add(all, byte(packet.V5))
	f.Fuzz(func(t *testing.T, data []byte, vb byte) {
		v := packet.Version(vb%3 + 3)
		maxSize := 1 << 16
		whole := readAllPackets(bytes.NewReader(data), v, maxSize)
		one := readAllPackets(iotest.OneByteReader(bytes.NewReader(data)), v, maxSize)
		half := readAllPackets(iotest.HalfReader(bytes.NewReader(data)), v, maxSize)
		if !reflect.DeepEqual(whole, one) || !reflect.DeepEqual(whole, half) {
			t.Fatalf("results differ:\nwhole %+v\n  one %+v\n half %+v", whole, one, half)
		}
	})
}
