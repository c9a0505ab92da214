package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// idleFlood is a set of connections from 127.0.0.1 that send at most a
// prefix and then nothing, as an attacker holding handshake slots would.
type idleFlood struct {
	mu     sync.Mutex
	closed []time.Duration // for each connection the server closed: how long after its dial
}

// startIdleFlood opens n connections with dial, writes prefix on each, and
// records when the server closes them. They are closed when the test ends.
func startIdleFlood(t *testing.T, n int, dial func() (net.Conn, error), prefix []byte) *idleFlood {
	t.Helper()
	f := &idleFlood{}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // runs after the Close cleanups below
	for range n {
		start := time.Now()
		c, err := dial()
		if err != nil {
			t.Fatalf("flood dial: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if len(prefix) > 0 {
			// The server may already have closed it: a failed write is a
			// close the reader below will see.
			_, _ = c.Write(prefix)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.Discard, c)
			f.mu.Lock()
			f.closed = append(f.closed, time.Since(start))
			f.mu.Unlock()
		}()
	}
	return f
}

// closedCount returns how many connections have been closed, and how many
// of them within d of their dial.
func (f *idleFlood) closedCount(d time.Duration) (all, within int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.closed {
		if c < d {
			within++
		}
	}
	return len(f.closed), within
}

// fromAddr is a dialer whose connections come from the loopback address ip.
func fromAddr(ip string) *net.Dialer {
	return &net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// TestIdleSocketsDoNotLockOut opens 300 connections from 127.0.0.1 that never
// finish their handshake (TLS, or the HTTP upgrade of ws and wss), and checks that all but MaxPendingPerAddress of
// them are closed at once, that a client from another address completes its
// handshake well within the handshake timeout meanwhile, that the rest are
// cut at the timeout, and that 127.0.0.1 is served again afterwards.
func TestIdleSocketsDoNotLockOut(t *testing.T) {
	const (
		flood    = 300
		perAddr  = 8
		timeout  = 3 * time.Second
		promptly = time.Second // a legitimate handshake must take less
	)
	p := newPKI(t, "flood")
	tlsDial := func(addr string) func() (net.Conn, error) {
		return func() (net.Conn, error) {
			return tls.DialWithDialer(fromAddr("127.0.0.1"), "tcp", addr, p.clientTLS())
		}
	}
	for _, tc := range []struct {
		name     string
		protocol string
		tls      bool
		// flood dials the listener at addr (nil: plain TCP) and sends prefix.
		flood  func(addr string) func() (net.Conn, error)
		floodN int // connections flood opens, fewer than 300 (TLS dials are slow under -race)
		prefix string
	}{
		{name: "tls", tls: true},
		{name: "ws slowloris", protocol: "websockets", prefix: "GET /mqtt HTTP/1.1\r\nHost: x\r\n"},
		{name: "wss", protocol: "websockets", tls: true},
		{name: "wss slowloris", protocol: "websockets", tls: true, flood: tlsDial, floodN: 40,
			prefix: "GET /mqtt HTTP/1.1\r\nHost: x\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, hs := quietConfig(Config{Address: "127.0.0.1:0", Protocol: tc.protocol,
				HandshakeTimeout: timeout, MaxPendingPerAddress: perAddr})
			var clientTLS *tls.Config
			if tc.tls {
				cfg.TLS = p.serverTLS(t)
				clientTLS = p.clientTLS()
			}
			l := listen(t, cfg)
			serveEcho(t, l)
			addr := l.Addr().String()

			// legit completes a handshake from ip and echoes a message.
			legit := func(ip string) (time.Duration, error) {
				start := time.Now()
				var c net.Conn
				var err error
				switch {
				case tc.protocol == ProtocolWebSockets:
					scheme := "ws://"
					if tc.tls {
						scheme = "wss://"
					}
					d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: clientTLS,
						HandshakeTimeout: testTimeout, NetDialContext: fromAddr(ip).DialContext}
					var ws *websocket.Conn
					var resp *http.Response
					ws, resp, err = d.DialContext(context.Background(), scheme+addr+"/mqtt", nil)
					if resp != nil && resp.Body != nil {
						_ = resp.Body.Close()
					}
					if err == nil {
						c = newWSConn(ws, nil)
					}
				default:
					c, err = tls.DialWithDialer(fromAddr(ip), "tcp", addr, clientTLS)
				}
				if err != nil {
					return time.Since(start), err
				}
				defer c.Close()
				err = roundTrip(c, []byte("hello"))
				return time.Since(start), err
			}

			dial := func() (net.Conn, error) { return fromAddr("127.0.0.1").Dial("tcp", addr) }
			if tc.flood != nil {
				dial = tc.flood(addr)
			}
			flood := flood
			if tc.flood != nil {
				flood = tc.floodN
			}
			f := startIdleFlood(t, flood, dial, []byte(tc.prefix))

			// All but perAddr are closed at once, long before the timeout.
			eventually(t, "connections over the per-address limit closed", func() bool {
				_, within := f.closedCount(timeout / 2)
				return within >= flood-perAddr
			})
			if all, _ := f.closedCount(timeout); all != flood-perAddr {
				t.Fatalf("%d of %d idle connections closed before the timeout, want %d", all, flood, flood-perAddr)
			}

			el, err := legit("127.0.0.2")
			if err != nil {
				t.Fatalf("client from 127.0.0.2 during the flood: %v (after %v)", err, el)
			}
			if el > promptly {
				t.Fatalf("client from 127.0.0.2 served after %v during the flood, want under %v", el, promptly)
			}
			t.Logf("client from 127.0.0.2 served in %v with %d idle connections from 127.0.0.1", el, perAddr)

			// The rest are cut at the handshake timeout, not before.
			deadline := time.Now().Add(timeout + testTimeout)
			for {
				if all, early := f.closedCount(timeout * 9 / 10); all == flood {
					if early != flood-perAddr {
						t.Fatalf("%d connections closed before the handshake timeout, want %d", early, flood-perAddr)
					}
					break
				}
				if time.Now().After(deadline) {
					all, _ := f.closedCount(0)
					t.Fatalf("%d of %d idle connections still open %v after the handshake timeout",
						flood-all, flood, testTimeout)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := countErrs(hs, ErrTooManyPending); n < flood-perAddr {
				t.Errorf("%d refusals reported, want at least %d", n, flood-perAddr)
			}

			// Their slots are free again: 127.0.0.1 itself is served.
			if el, err := legit("127.0.0.1"); err != nil {
				t.Fatalf("client from 127.0.0.1 after the flood: %v (after %v)", err, el)
			}
		})
	}
}

// TestAddrLimiter checks the per-address counting: IPv4 addresses each on
// their own, IPv6 addresses by /64, unix peers not counted.
func TestAddrLimiter(t *testing.T) {
	tcp := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1234} }
	a := newAddrLimiter(2)
	var keys []string
	for _, s := range []string{"192.0.2.1", "192.0.2.1", "2001:db8::1", "2001:db8::ffff:2"} {
		k, ok := a.acquire(tcp(s))
		if !ok {
			t.Fatalf("acquire %s refused under the limit", s)
		}
		keys = append(keys, k)
	}
	for _, s := range []string{"192.0.2.1", "::ffff:192.0.2.1", "2001:db8::3"} {
		if _, ok := a.acquire(tcp(s)); ok {
			t.Errorf("acquire %s allowed past the limit", s)
		}
	}
	for _, s := range []string{"192.0.2.2", "2001:db8:0:1::1"} {
		if _, ok := a.acquire(tcp(s)); !ok {
			t.Errorf("acquire %s refused: another address", s)
		}
	}
	for range 5 {
		if _, ok := a.acquire(&net.UnixAddr{Name: "@", Net: "unix"}); !ok {
			t.Fatal("unix peer refused")
		}
	}
	a.release(keys[0])
	if _, ok := a.acquire(tcp("192.0.2.1")); !ok {
		t.Error("acquire refused after a release")
	}
	if _, ok := newAddrLimiter(0).acquire(tcp("192.0.2.1")); !ok {
		t.Error("no limit refused")
	}
	if got := (&Config{}).maxPendingPerAddress(); got != DefaultMaxPendingPerAddress {
		t.Errorf("default per-address limit %d", got)
	}
	if got := (&Config{MaxPendingPerAddress: -1}).maxPendingPerAddress(); got != 0 {
		t.Errorf("negative per-address limit gives %d, want 0 (none)", got)
	}
}

func countErrs(h *handshakeLog, target error) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, err := range h.errs {
		if errors.Is(err, target) {
			n++
		}
	}
	return n
}
