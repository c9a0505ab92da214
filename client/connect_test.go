package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// Issue 15 bug 6: Dial takes user:password@ from the URL (Options win).
func TestURLCredentials(t *testing.T) {
	fs := startFake(t)
	url := strings.Replace(fs.url(), "mqtt://", "mqtt://al%40ice:s%3Acret@", 1)
	go func() {
		if c, err := Dial(testCtx(t), url, Options{}); err == nil {
			_ = c.Close()
		}
	}()
	rc, cp := fs.accept(packet.V311)
	rc.send(&packet.Connack{})
	if !cp.HasUsername || cp.Username != "al@ice" || !cp.HasPassword || string(cp.Password) != "s:cret" {
		t.Fatalf("CONNECT user %q (%v) password %q (%v)", cp.Username, cp.HasUsername, cp.Password, cp.HasPassword)
	}
	go func() {
		if c, err := Dial(testCtx(t), url, Options{Username: "bob"}); err == nil {
			_ = c.Close()
		}
	}()
	rc, cp = fs.accept(packet.V311)
	rc.send(&packet.Connack{})
	if cp.Username != "bob" || cp.HasPassword {
		t.Fatalf("Options.Username did not replace the URL's: user %q password %q", cp.Username, cp.Password)
	}
}

// logRecords is a slog handler that keeps the records.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
	at   []time.Time
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.at = append(h.at, time.Now())
	h.mu.Unlock()
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// find returns the records with message msg and when they were logged.
func (h *logRecords) find(msg string) ([]slog.Record, []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var rs []slog.Record
	var at []time.Time
	for i, r := range h.recs {
		if r.Message == msg {
			rs = append(rs, r)
			at = append(at, h.at[i])
		}
	}
	return rs, at
}

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// refusingListener accepts connections, records when, and closes them.
func refusingListener(t *testing.T) (string, func() []time.Time) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return refuseOn(l)
}

// refuseOn makes l accept connections, record when, and close them.
func refuseOn(l net.Listener) (string, func() []time.Time) {
	var mu sync.Mutex
	var at []time.Time
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			c.Close()
		}
	}()
	return "mqtt://" + l.Addr().String(), func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), at...)
	}
}

// Issue 15 bug 6: the retry_in of "mqtt reconnect failed" is the wait
// before the next attempt (it was the previous one: half of it).
func TestReconnectLogRetryIn(t *testing.T) {
	old := jitter
	jitter = func(d time.Duration) time.Duration { return d } // no randomness
	t.Cleanup(func() { jitter = old })
	fs := startFake(t)
	logs := &logRecords{}
	c, rc, _ := dialFake(t, fs, Options{AutoReconnect: true, MinBackoff: 200 * time.Millisecond, MaxBackoff: 800 * time.Millisecond,
		Logger: slog.New(logs)}, nil)
	_, attempts := refuseOn(fs.l) // the server now refuses every connection
	rc.nc.Close()
	brokertest.Eventually(t, 10*time.Second, func() bool { return len(attempts()) >= 4 })
	recs, _ := logs.find("mqtt reconnect failed")
	at := attempts()
	if len(recs) < 3 {
		t.Fatalf("%d log records", len(recs))
	}
	for i := range 3 {
		logged := attr(recs[i], "retry_in").Duration()
		gap := at[i+1].Sub(at[i])
		// The gap also holds the failed attempt and scheduling: allow a
		// margin, well below the doubling that the old log missed.
		if gap < logged || gap > logged+logged/2 {
			t.Fatalf("attempt %d: logged retry_in %v, next attempt %v later", i+1, logged, gap)
		}
	}
	_ = c.Close()
}

// Issue 15 bug 6: two FileStores cannot share a directory.
func TestFileStoreLocked(t *testing.T) {
	dir := t.TempDir()
	a, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewFileStore(dir); !errors.Is(err, ErrStoreLocked) {
		t.Fatalf("second NewFileStore = %v, want ErrStoreLocked", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := NewFileStore(dir)
	if err != nil {
		t.Fatalf("NewFileStore after Close: %v", err)
	}
	_ = b.Close()
}

// Several servers are tried in turn, and Dial with ConnectRetry waits for
// a server that is not up yet, with the reconnect backoff.
func TestServersAndConnectRetry(t *testing.T) {
	t.Run("second server", func(t *testing.T) {
		down, _ := refusingListener(t)
		srv := startBroker(t)
		c := dial(t, down, Options{Servers: []string{srv.URL()}})
		if !c.IsConnected() {
			t.Fatal("not connected")
		}
	})
	t.Run("one round without ConnectRetry", func(t *testing.T) {
		down, attempts := refusingListener(t)
		if _, err := Dial(testCtx(t), down, Options{}); err == nil {
			t.Fatal("Dial to a refusing server succeeded")
		}
		if n := len(attempts()); n != 1 {
			t.Fatalf("%d attempts, want 1", n)
		}
	})
	t.Run("ConnectRetry", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens yet
		var connects atomic.Int32
		done := make(chan error, 1)
		var c *Client
		go func() {
			var err error
			c, err = Dial(testCtx(t), "mqtt://"+addr, Options{ConnectRetry: true, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
				OnConnect: func(*Client, *packet.Connack) { connects.Add(1) }})
			done <- err
		}()
		l2, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("port %s taken meanwhile: %v", addr, err)
		}
		fs := &fakeServer{t: t, l: l2}
		t.Cleanup(func() { l2.Close() })
		rc, _ := fs.accept(packet.V311)
		rc.send(&packet.Connack{})
		if err := waitErr(t, done); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		brokertest.Eventually(t, 5*time.Second, func() bool { return connects.Load() == 1 })
	})
	t.Run("ConnectRetry gives up with ctx", func(t *testing.T) {
		down, attempts := refusingListener(t)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := Dial(ctx, down, Options{ConnectRetry: true, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		if err == nil {
			t.Fatal("Dial succeeded")
		}
		if n := len(attempts()); n < 3 {
			t.Fatalf("%d attempts in 300 ms, want several", n)
		}
	})
}

// Credentials is asked before every connection; Dialer and WebSocket
// headers are used.
func TestCredentialsDialerHeaders(t *testing.T) {
	fs := startFake(t)
	var calls, dials atomic.Int32
	o := Options{
		AutoReconnect: true, MinBackoff: 10 * time.Millisecond,
		Credentials: func(context.Context) (string, []byte, error) {
			n := calls.Add(1)
			return "user", []byte("token-" + string(rune('0'+n))), nil
		},
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	_, rc, cp := dialFake(t, fs, o, nil)
	if cp.Username != "user" || string(cp.Password) != "token-1" {
		t.Fatalf("first CONNECT %q %q", cp.Username, cp.Password)
	}
	rc.nc.Close()
	rc2, cp2 := fs.accept(packet.V311)
	rc2.send(&packet.Connack{})
	if string(cp2.Password) != "token-2" {
		t.Fatalf("reconnect password %q, want a fresh token", cp2.Password)
	}
	if dials.Load() != 2 {
		t.Fatalf("Dialer used %d times, want 2", dials.Load())
	}

	srv := startBroker(t)
	var gotHeader atomic.Value
	var sub atomic.Bool
	bridge := wsBridge(t, srv.Addr, &sub)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader.Store(r.Header.Get("Authorization"))
		bridge.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	ws := strings.Replace(hs.URL, "http://", "ws://", 1)
	dial(t, ws, Options{WebSocketHeader: http.Header{"Authorization": {"Bearer xyz"}}, Dialer: o.Dialer})
	if h, _ := gotHeader.Load().(string); h != "Bearer xyz" {
		t.Fatalf("Authorization header %q", h)
	}
	if dials.Load() != 3 {
		t.Fatalf("Dialer not used for the WebSocket")
	}
}

// At debug level the logger gets every packet, in mosquitto's -d words.
func TestPacketTrace(t *testing.T) {
	logs := &logRecords{}
	fs := startFake(t)
	c, rc, _ := dialFake(t, fs, Options{ClientID: "tr", Version: packet.V5, Logger: slog.New(logs)}, nil)
	if err := c.PublishAsync(testCtx(t), "a/b", []byte("hello"), PublishOptions{QoS: 1}, nil); err != nil {
		t.Fatal(err)
	}
	p := recvAs[*packet.Publish](rc)
	rc.send(&packet.Puback{PacketID: p.PacketID})
	brokertest.Eventually(t, 5*time.Second, func() bool { return c.Pending() == 0 })
	for _, msg := range []string{"sending CONNECT", "received CONNACK (0)",
		"sending PUBLISH (d0, q1, r0, m1, 'a/b', ... (5 bytes))", "received PUBACK (Mid: 1, RC:0)"} {
		recs, _ := logs.find(msg)
		if len(recs) != 1 {
			t.Fatalf("%d records %q", len(recs), msg)
		}
		if attr(recs[0], "client_id").String() != "tr" || attr(recs[0], "dir").String() == "" || recs[0].Level != slog.LevelDebug {
			t.Fatalf("record %q: %v", msg, recs[0])
		}
	}
}

// connectProxy is an HTTP proxy that only tunnels (CONNECT), as a
// WebSocket client behind a corporate proxy uses.
func connectProxy(t *testing.T, used *atomic.Int32) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		used.Add(1)
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			return
		}
		w.WriteHeader(http.StatusOK)
		down, buf, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() {
			defer up.Close()
			defer down.Close()
			if n := buf.Reader.Buffered(); n > 0 {
				b, _ := buf.Reader.Peek(n)
				_, _ = up.Write(b)
			}
			go func() { _, _ = io.Copy(down, up); down.Close() }()
			_, _ = io.Copy(up, down)
		}()
	}))
	t.Cleanup(s.Close)
	return s
}

// Options.WebSocketProxy sends the WebSocket through an HTTP proxy.
func TestWebSocketProxy(t *testing.T) {
	srv := startBroker(t)
	var sub atomic.Bool
	hs := httptest.NewServer(wsBridge(t, srv.Addr, &sub))
	t.Cleanup(hs.Close)
	var used atomic.Int32
	px := connectProxy(t, &used)
	pu, err := url.Parse(px.URL)
	if err != nil {
		t.Fatal(err)
	}
	ws := strings.Replace(hs.URL, "http://", "ws://", 1)
	roundTripVia(t, ws, Options{WebSocketProxy: http.ProxyURL(pu)}, srv.URL())
	if used.Load() == 0 {
		t.Fatal("the proxy was not used")
	}
}

// Documented: a v5 PersistentSession without SessionExpiry never expires
// (0xFFFFFFFF); SessionExpiry makes it finite.
func TestPersistentSessionExpiry(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want uint32
	}{
		{Options{Version: packet.V5, ClientID: "p", PersistentSession: true}, 0xFFFFFFFF},
		{Options{Version: packet.V5, ClientID: "p", PersistentSession: true, SessionExpiry: 3600}, 3600},
	} {
		fs := startFake(t)
		_, _, cp := dialFake(t, fs, tc.o, nil)
		if cp.CleanStart || cp.Props == nil || cp.Props.SessionExpiry == nil || *cp.Props.SessionExpiry != tc.want {
			t.Fatalf("CONNECT clean=%v props %+v, want expiry %d", cp.CleanStart, cp.Props, tc.want)
		}
	}
}
