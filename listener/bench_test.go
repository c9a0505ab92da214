package listener

import (
	"io"
	"net"
	"testing"

	"github.com/gorilla/websocket"
)

// benchmarkStream measures one-way throughput of 1 KiB writes from the
// accepted side to a client reading a byte stream.
func benchmarkStream(b *testing.B, client, server net.Conn) {
	msg := make([]byte, 1024)
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, client, int64(b.N)*int64(len(msg)))
		done <- err
	}()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := server.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkWrite1K(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		l, err := Listen(Config{Address: "127.0.0.1:0"})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchmarkStream(b, c, s)
	})
	b.Run("websocket", func(b *testing.B) {
		l, err := Listen(Config{Address: "127.0.0.1:0", Protocol: ProtocolWebSockets})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		errc := make(chan error, 1)
		var s net.Conn
		go func() {
			var err error
			s, err = l.Accept()
			errc <- err
		}()
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}}
		ws, _, err := d.Dial("ws://"+l.Addr().String()+"/mqtt", nil)
		if err != nil {
			b.Fatal(err)
		}
		c := newWSConn(ws, nil)
		defer c.Close()
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchmarkStream(b, c, s)
	})
}
