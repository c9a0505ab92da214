package listener

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsServerRead reads from the server side of a WebSocket connection until it
// has want bytes or fails, and sends the result.
func wsServerRead(c net.Conn, want int) <-chan error {
	done := make(chan error, 1)
	go func() {
		if err := c.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
			done <- err
			return
		}
		_, err := io.ReadFull(c, make([]byte, want))
		done <- err
	}()
	return done
}

// expectClose waits for the close frame the server sends ws and checks its
// code.
func expectClose(t *testing.T, ws *websocket.Conn, code int) {
	t.Helper()
	if err := ws.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	_, _, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("client read: %v, want close %d", err, code)
	}
}

// hugeFrameHeader is the header of a masked binary frame declaring n bytes.
func hugeFrameHeader(n uint64) []byte {
	h := []byte{0x82, 0x80 | 127}
	h = binary.BigEndian.AppendUint64(h, n)
	return append(h, 1, 2, 3, 4) // masking key
}

// TestWebSocketReadLimit checks that a frame declaring 2^40 bytes closes the
// connection with 1009 as soon as its header arrives, without the broker
// allocating for it.
func TestWebSocketReadLimit(t *testing.T) {
	cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets"})
	l := listen(t, cfg)
	ws, _, err := dialWSRaw(t, "ws://"+l.Addr().String()+"/mqtt", nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	srv := acceptOne(t, l)
	read := wsServerRead(srv, 1)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := ws.NetConn().Write(hugeFrameHeader(1 << 40)); err != nil {
		t.Fatal(err)
	}
	expectClose(t, ws, websocket.CloseMessageTooBig)
	if err := <-read; !errors.Is(err, websocket.ErrReadLimit) {
		t.Errorf("server read: %v, want ErrReadLimit", err)
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Errorf("refusing the frame allocated %d bytes", d)
	}
}

// TestWebSocketMaxMessageSize checks that MaxMessageSize (plus slack) bounds
// a message: one of MaxMessageSize bytes is read, a longer one than the
// slack allows closes the connection with 1009.
func TestWebSocketMaxMessageSize(t *testing.T) {
	const limit = 1000
	cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets", MaxMessageSize: limit})
	l := listen(t, cfg)
	ws, _, err := dialWSRaw(t, "ws://"+l.Addr().String()+"/mqtt", nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	srv := acceptOne(t, l)

	if err := ws.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{1}, limit)); err != nil {
		t.Fatal(err)
	}
	if err := <-wsServerRead(srv, limit); err != nil {
		t.Fatalf("message of MaxMessageSize bytes: %v", err)
	}

	read := wsServerRead(srv, 1)
	if _, err := ws.NetConn().Write(hugeFrameHeader(limit + wsReadSlack + 1)); err != nil {
		t.Fatal(err)
	}
	expectClose(t, ws, websocket.CloseMessageTooBig)
	if err := <-read; !errors.Is(err, websocket.ErrReadLimit) {
		t.Errorf("server read: %v, want ErrReadLimit", err)
	}
}
