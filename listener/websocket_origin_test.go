package listener

import (
	"errors"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"
)

// dialOrigin dials a WebSocket listener as a browser on a page of origin
// would ("" sends no Origin header) and returns the HTTP status.
func dialOrigin(t *testing.T, url, origin string) (int, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: testTimeout}
	var h http.Header
	if origin != "" {
		h = http.Header{"Origin": {origin}}
	}
	ws, resp, err := d.Dial(url, h)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		if resp.Body != nil {
			_ = resp.Body.Close()
		}
	}
	if err == nil {
		_ = ws.Close()
	}
	return status, err
}

// TestWebSocketOrigin checks AllowedOrigins: listed origins (in any case)
// and requests without Origin upgrade, other origins get 403; with no list
// every origin upgrades, as in mosquitto.
func TestWebSocketOrigin(t *testing.T) {
	cfg, hs := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets",
		AllowedOrigins: []string{"https://app.example.com", "http://localhost:8080"}})
	l := listen(t, cfg)
	serveEcho(t, l)
	url := "ws://" + l.Addr().String() + "/mqtt"
	for _, origin := range []string{"https://app.example.com", "HTTPS://App.Example.COM", "http://localhost:8080", ""} {
		if status, err := dialOrigin(t, url, origin); err != nil {
			t.Errorf("Origin %q refused: HTTP %d: %v", origin, status, err)
		}
	}
	for _, origin := range []string{"https://evil.example", "http://app.example.com", "https://app.example.com.evil.example", "null"} {
		status, err := dialOrigin(t, url, origin)
		if !errors.Is(err, websocket.ErrBadHandshake) || status != http.StatusForbidden {
			t.Errorf("Origin %q: HTTP %d, %v; want 403", origin, status, err)
		}
		if err := hs.last(); !errors.Is(err, ErrOrigin) {
			t.Errorf("Origin %q: reported %v, want ErrOrigin", origin, err)
		}
	}

	open, _ := quietConfig(Config{Address: "127.0.0.1:0", Protocol: "websockets"})
	lo := listen(t, open)
	serveEcho(t, lo)
	if status, err := dialOrigin(t, "ws://"+lo.Addr().String()+"/mqtt", "https://evil.example"); err != nil {
		t.Errorf("no allow-list: Origin refused: HTTP %d: %v", status, err)
	}

	if _, err := Listen(Config{Address: "127.0.0.1:0", AllowedOrigins: []string{"https://a.example"}}); !errors.Is(err, ErrConfig) {
		t.Errorf("allowed origins on an mqtt listener: %v, want ErrConfig", err)
	}
}
