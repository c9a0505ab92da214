package listener

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// dialWSRaw dials a WebSocket listener offering protos.
func dialWSRaw(t *testing.T, url string, tlsConf *tls.Config, protos ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protos, TLSClientConfig: tlsConf, HandshakeTimeout: testTimeout}
	ws, resp, err := d.Dial(url, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err == nil {
		t.Cleanup(func() { _ = ws.Close() })
	}
	return ws, resp, err
}

// dialWS dials and returns the client side as a byte stream (the same
// adapter the listener uses, on gorilla's client connection).
func dialWS(t *testing.T, url string, tlsConf *tls.Config, protos ...string) (net.Conn, error) {
	t.Helper()
	ws, resp, err := dialWSRaw(t, url, tlsConf, protos...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, fmt.Errorf("websocket dial (HTTP %d): %w", status, err)
	}
	return newWSConn(ws, nil), nil
}

// wsPair returns a connected client (raw gorilla) and server (as accepted).
func wsPair(t *testing.T) (*websocket.Conn, net.Conn) {
	t.Helper()
	cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets"})
	l := listen(t, cfg)
	ws, _, err := dialWSRaw(t, "ws://"+l.Addr().String()+"/mqtt", nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	return ws, acceptOne(t, l)
}

func TestWebSocketSubprotocol(t *testing.T) {
	cfg, hs := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets"})
	l := listen(t, cfg)
	serveEcho(t, l)
	url := "ws://" + l.Addr().String() + "/mqtt"
	for _, tc := range []struct {
		name    string
		offered []string
		want    string // "" = refused with HTTP 400
	}{
		// [MQTT-6.0.0-3] the client offers "mqtt"; [MQTT-6.0.0-4] the
		// server selects and returns "mqtt".
		{"mqtt [MQTT-6.0.0-4]", []string{"mqtt"}, "mqtt"},
		{"mqtt among others [MQTT-6.0.0-4]", []string{"wamp", "mqtt"}, "mqtt"},
		{"mqtt preferred over mqttv3.1", []string{"mqttv3.1", "mqtt"}, "mqtt"},
		{"mqttv3.1 for MQTT 3.1 clients", []string{"mqttv3.1"}, "mqttv3.1"},
		{"none offered [MQTT-6.0.0-3]", nil, ""},
		{"wrong subprotocol [MQTT-6.0.0-3]", []string{"chat"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hs.count()
			ws, resp, err := dialWSRaw(t, url, nil, tc.offered...)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("handshake accepted with subprotocol %q", ws.Subprotocol())
				}
				if resp == nil || resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("refusal response %v, want HTTP 400", resp)
				}
				eventually(t, "handshake failure report", func() bool { return hs.count() == before+1 })
				if !errors.Is(hs.last(), ErrSubprotocol) {
					t.Fatalf("reported %v, want ErrSubprotocol", hs.last())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ws.Subprotocol() != tc.want || resp.Header.Get("Sec-WebSocket-Protocol") != tc.want {
				t.Fatalf("negotiated %q, want %q", ws.Subprotocol(), tc.want)
			}
			if err := roundTrip(newWSConn(ws, nil), []byte{0xc0, 0x00}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestWebSocketFraming checks the stream view of binary frames
// [MQTT-6.0.0-2]: a packet split across frames and a frame holding several
// packets both read correctly, and each Write is one binary frame.
func TestWebSocketFraming(t *testing.T) {
	connect := []byte("\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd")
	pingreq := []byte{0xc0, 0x00}
	publish := []byte("\x30\x07\x00\x01tpayl")

	t.Run("packet split across frames [MQTT-6.0.0-2]", func(t *testing.T) {
		ws, s := wsPair(t)
		for _, part := range [][]byte{connect[:1], connect[1:5], {}, connect[5:]} {
			if err := ws.WriteMessage(websocket.BinaryMessage, part); err != nil {
				t.Fatal(err)
			}
		}
		got := make([]byte, len(connect))
		_ = s.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, connect) {
			t.Fatalf("read %q, %v; want %q", got, err, connect)
		}
	})
	t.Run("several packets in one frame [MQTT-6.0.0-2]", func(t *testing.T) {
		ws, s := wsPair(t)
		frame := append(append(append([]byte{}, connect...), pingreq...), publish...)
		if err := ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			t.Fatal(err)
		}
		_ = s.SetReadDeadline(time.Now().Add(testTimeout))
		for _, want := range [][]byte{connect, pingreq, publish} {
			got := make([]byte, len(want))
			if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read %q, %v; want %q", got, err, want)
			}
		}
	})
	t.Run("one binary frame per Write", func(t *testing.T) {
		ws, s := wsPair(t)
		for _, p := range [][]byte{pingreq, publish} {
			if n, err := s.Write(p); err != nil || n != len(p) {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		_ = ws.SetReadDeadline(time.Now().Add(testTimeout))
		for _, want := range [][]byte{pingreq, publish} {
			typ, got, err := ws.ReadMessage()
			if err != nil || typ != websocket.BinaryMessage || !bytes.Equal(got, want) {
				t.Fatalf("frame type %d %q, %v; want binary %q", typ, got, err, want)
			}
		}
	})
}

// TestWebSocketTextFrame checks that a text frame closes the connection
// [MQTT-6.0.0-1].
func TestWebSocketTextFrame(t *testing.T) {
	ws, s := wsPair(t)
	if err := ws.WriteMessage(websocket.TextMessage, []byte("\xc0\x00")); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, ErrTextFrame) {
		t.Fatalf("Read after text frame: %v, want ErrTextFrame", err)
	}
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, ErrTextFrame) {
		t.Fatalf("second Read: %v, want the same error", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(testTimeout))
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseUnsupportedData) {
		t.Fatalf("client saw %v, want close 1003", err)
	}
}

func TestWebSocketDeadlines(t *testing.T) {
	t.Run("read deadline", func(t *testing.T) {
		_, s := wsPair(t)
		start := time.Now()
		if err := s.SetReadDeadline(start.Add(50 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err := s.Read(make([]byte, 1))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read past deadline: %v, want a timeout", err)
		}
		if el := time.Since(start); el < 40*time.Millisecond || el > testTimeout {
			t.Fatalf("Read returned after %v", el)
		}
	})
	t.Run("cleared deadline", func(t *testing.T) {
		ws, s := wsPair(t)
		if err := s.SetDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if err := s.SetDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := s.Read(make([]byte, 2))
			errc <- err
		}()
		// Well past the cleared deadline the read is still waiting.
		select {
		case err := <-errc:
			t.Fatalf("Read returned %v with no deadline set", err)
		case <-time.After(100 * time.Millisecond):
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte{0xc0, 0x00}); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		_, s := wsPair(t)
		if err := s.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err := s.Write([]byte{0xd0, 0x00})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write past deadline: %v, want os.ErrDeadlineExceeded", err)
		}
	})
}

func TestWebSocketClose(t *testing.T) {
	t.Run("server Close sends a close frame", func(t *testing.T) {
		ws, s := wsPair(t)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(testTimeout))
		if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("client saw %v, want close 1000", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
	t.Run("peer close reads as EOF", func(t *testing.T) {
		ws, s := wsPair(t)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(testTimeout)); err != nil {
			t.Fatal(err)
		}
		_ = s.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("Read after peer close: %v, want io.EOF", err)
		}
	})
	t.Run("peer drops the TCP connection", func(t *testing.T) {
		ws, s := wsPair(t)
		_ = ws.NetConn().Close()
		_ = s.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("Read after TCP close: %v, want io.EOF", err)
		}
	})
}

func TestWebSocketRemoteAddr(t *testing.T) {
	ws, s := wsPair(t)
	if got, want := s.RemoteAddr().String(), ws.LocalAddr().String(); got != want {
		t.Fatalf("RemoteAddr %s, want the client's TCP address %s", got, want)
	}
	if _, ok := s.RemoteAddr().(*net.TCPAddr); !ok {
		t.Fatalf("RemoteAddr is %T, want *net.TCPAddr", s.RemoteAddr())
	}
}

// TestWebSocketBadRequests checks that requests that are not MQTT WebSocket
// upgrades get an HTTP error and that Accept keeps serving.
func TestWebSocketBadRequests(t *testing.T) {
	cfg, hs := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets", Path: "/mqtt"})
	l := listen(t, cfg)
	base := "http://" + l.Addr().String()
	client := &http.Client{Timeout: testTimeout}
	for _, tc := range []struct {
		name    string
		method  string
		path    string
		header  http.Header
		status  int
		wantErr error
	}{
		{"plain GET", http.MethodGet, "/mqtt", nil, http.StatusUpgradeRequired, ErrNotWebSocket},
		{"POST", http.MethodPost, "/mqtt", nil, http.StatusUpgradeRequired, ErrNotWebSocket},
		{"wrong path", http.MethodGet, "/other", nil, http.StatusNotFound, ErrWebSocketPath},
		{"bad websocket version", http.MethodGet, "/mqtt", http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"8"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Protocol": {"mqtt"},
		}, http.StatusBadRequest, errUpgradeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hs.count()
			req, err := http.NewRequest(tc.method, base+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			eventually(t, "handshake failure report", func() bool { return hs.count() == before+1 })
			if !errors.Is(hs.last(), tc.wantErr) {
				t.Fatalf("reported %v, want %v", hs.last(), tc.wantErr)
			}
		})
	}
	// Accept still serves a proper client.
	c, err := dialWS(t, "ws://"+l.Addr().String()+"/mqtt", nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := acceptOne(t, l)
	if _, err := c.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
}

func TestWebSocketAnyPath(t *testing.T) {
	cfg, _ := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets"})
	l := listen(t, cfg)
	serveEcho(t, l)
	for _, path := range []string{"/", "/mqtt", "/some/other/path"} {
		c, err := dialWS(t, "ws://"+l.Addr().String()+path, nil, "mqtt")
		if err != nil {
			t.Fatalf("path %s: %v", path, err)
		}
		if err := roundTrip(c, []byte("x")); err != nil {
			t.Fatalf("path %s: %v", path, err)
		}
		_ = c.Close()
	}
}
