package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ErrTextFrame is returned by Read on a WebSocket connection whose peer sent
// a text (or other non-binary) data frame.
var ErrTextFrame = errors.New("listener: websocket text frame; mqtt needs binary frames")

// closeFrameTimeout bounds the best-effort close frame Close sends.
const closeFrameTimeout = 100 * time.Millisecond

// wsConn presents a WebSocket connection as a byte stream.
//
// Read returns the payloads of consecutive binary messages back to back, so
// a packet split across frames and a frame holding several packets both read
// as the stream they encode [MQTT-6.0.0-2]. Write sends one binary message
// per call. As with gorilla/websocket underneath, a read or write that times
// out leaves that direction failed for good: the broker's keep-alive or
// slow-consumer timeout ends the connection anyway.
type wsConn struct {
	ws  *websocket.Conn
	tls *tls.ConnectionState // nil on plain ws

	rmu  sync.Mutex // serialises Read
	cur  io.Reader  // current message, guarded by rmu
	rerr error      // sticky read error, guarded by rmu

	wmu sync.Mutex // serialises Write; gorilla allows one writer at a time

	closeOnce sync.Once
	closeErr  error
}

func newWSConn(ws *websocket.Conn, state *tls.ConnectionState) *wsConn {
	return &wsConn{ws: ws, tls: state}
}

func (c *wsConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		// gorilla panics after many reads of a failed connection, so a
		// failure is remembered here and never goes back to it.
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.cur == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				c.rerr = c.mapErr("read", err)
				return 0, c.rerr
			}
			if typ != websocket.BinaryMessage {
				// [MQTT-6.0.0-1] MQTT Control Packets are sent in binary
				// data frames; on any other data frame the recipient closes
				// the Network Connection.
				c.rerr = ErrTextFrame
				c.closeOnce.Do(func() {
					c.closeErr = c.closeWith(websocket.CloseUnsupportedData, "mqtt needs binary frames")
				})
				return 0, c.rerr
			}
			c.cur = r
		}
		n, err := c.cur.Read(p)
		if errors.Is(err, io.EOF) {
			c.cur = nil // end of this message; the stream goes on in the next
			err = nil
		}
		if err != nil {
			c.rerr = c.mapErr("read", err)
			return n, c.rerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Write sends p as one binary message.
func (c *wsConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, c.mapErr("write", err)
	}
	return len(p), nil
}

// Close sends a close frame (best effort: skipped if a Write is in progress,
// bounded by closeFrameTimeout) and closes the connection.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.closeWith(websocket.CloseNormalClosure, "")
	})
	return c.closeErr
}

func (c *wsConn) closeWith(code int, text string) error {
	if c.wmu.TryLock() {
		// The peer may be gone or have closed first (gorilla then reports
		// ErrCloseSent); the close frame is a courtesy, so its error is not
		// the caller's concern.
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
			time.Now().Add(closeFrameTimeout))
		c.wmu.Unlock()
	}
	if err := c.ws.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("listener: websocket close: %w", err)
	}
	return nil
}

// mapErr turns gorilla's errors into what a net.Conn user expects: io.EOF
// when the peer closed, an error matching os.ErrDeadlineExceeded (and a
// net.Error whose Timeout is true) on a deadline.
func (c *wsConn) mapErr(op string, err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case websocket.CloseNormalClosure, websocket.CloseGoingAway,
			websocket.CloseNoStatusReceived, websocket.CloseAbnormalClosure:
			return io.EOF
		}
		return fmt.Errorf("listener: websocket closed by peer: %w", err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = os.ErrDeadlineExceeded
	}
	return &net.OpError{Op: op, Net: "websocket", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func (c *wsConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// ConnectionState returns the TLS state of a wss connection (used by
// PeerIdentity); the zero value on plain ws.
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if c.tls == nil {
		return tls.ConnectionState{}
	}
	return *c.tls
}
