package packet_test

import (
	"bufio"
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/mqttd/mqttd/internal/packettest"
	"github.com/mqttd/mqttd/packet"
)

// readAll decodes one packet from b with Read, requiring all of b to be used.
func readAll(t *testing.T, b []byte, v packet.Version) packet.Packet {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	p, err := packet.Read(r, v, 0)
	if err != nil {
		t.Fatalf("Read(% X): %v", b, err)
	}
	if n := r.Buffered(); n != 0 {
		t.Fatalf("Read left %d bytes unread", n)
	}
	return p
}

func encode(t *testing.T, p packet.Packet, v packet.Version) []byte {
	t.Helper()
	b, err := p.Encode(nil, v)
	if err != nil {
		t.Fatalf("Encode(%v, %s): %v", p, v, err)
	}
	return b
}

func TestFixturesDecode(t *testing.T) {
	for _, f := range packettest.Fixtures {
		t.Run(f.Name, func(t *testing.T) {
			got := readAll(t, f.Bytes, f.Version)
			if !reflect.DeepEqual(got, f.Packet) {
				t.Fatalf("decoded\n%#v\nwant\n%#v", got, f.Packet)
			}
		})
	}
}

func TestFixturesEncode(t *testing.T) {
	for _, f := range packettest.Fixtures {
		t.Run(f.Name, func(t *testing.T) {
			got := encode(t, f.Packet, f.Version)
			if !bytes.Equal(got, f.Bytes) {
				t.Fatalf("encoded\n% X\nwant\n% X", got, f.Bytes)
			}
			// Write issues the same bytes in one call.
			var w countingWriter
			if err := packet.Write(&w, f.Packet, f.Version); err != nil {
				t.Fatal(err)
			}
			if w.calls != 1 || !bytes.Equal(w.buf.Bytes(), f.Bytes) {
				t.Fatalf("Write: %d calls, % X", w.calls, w.buf.Bytes())
			}
		})
	}
}

// TestFixturesCoverage checks that every packet type has a fixture in every
// version that has it.
func TestFixturesCoverage(t *testing.T) {
	have := map[string]bool{}
	for _, f := range packettest.Fixtures {
		have[fmt.Sprint(f.Packet.Type(), f.Version)] = true
	}
	for _, v := range []packet.Version{packet.V31, packet.V311, packet.V5} {
		for typ := packet.CONNECT; typ <= packet.AUTH; typ++ {
			if typ == packet.AUTH && v != packet.V5 {
				continue
			}
			if !have[fmt.Sprint(typ, v)] {
				t.Errorf("no fixture for %s in %s", typ, v)
			}
		}
	}
}

type countingWriter struct {
	buf   bytes.Buffer
	calls int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.calls++
	return w.buf.Write(p)
}
