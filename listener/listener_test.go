package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// transport is one way of reaching a listener in these tests.
type transport struct {
	name string
	cfg  func(t *testing.T, p *testPKI) Config
	dial func(t *testing.T, l net.Listener, p *testPKI) (net.Conn, error)
}

func transports() []transport {
	dialTCP := func(t *testing.T, l net.Listener, _ *testPKI) (net.Conn, error) {
		return net.DialTimeout("tcp", l.Addr().String(), testTimeout)
	}
	dialTLS := func(t *testing.T, l net.Listener, p *testPKI) (net.Conn, error) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: testTimeout}, Config: p.clientTLS()}
		return d.DialContext(context.Background(), "tcp", l.Addr().String())
	}
	dialUnix := func(t *testing.T, l net.Listener, _ *testPKI) (net.Conn, error) {
		return net.DialTimeout("unix", l.Addr().String(), testTimeout)
	}
	return []transport{
		{"tcp", func(t *testing.T, _ *testPKI) Config {
			return Config{Address: "127.0.0.1:0"}
		}, dialTCP},
		{"tls", func(t *testing.T, p *testPKI) Config {
			return Config{Address: "127.0.0.1:0", TLS: p.serverTLS(t)}
		}, dialTLS},
		{"ws", func(t *testing.T, _ *testPKI) Config {
			return Config{Address: "127.0.0.1:0", Protocol: "websockets"}
		}, func(t *testing.T, l net.Listener, _ *testPKI) (net.Conn, error) {
			return dialWS(t, "ws://"+l.Addr().String()+"/mqtt", nil, "mqtt")
		}},
		{"wss", func(t *testing.T, p *testPKI) Config {
			return Config{Address: "127.0.0.1:0", Protocol: "websockets", TLS: p.serverTLS(t)}
		}, func(t *testing.T, l net.Listener, p *testPKI) (net.Conn, error) {
			return dialWS(t, "wss://"+l.Addr().String()+"/mqtt", p.clientTLS(), "mqtt")
		}},
		{"unix", func(t *testing.T, _ *testPKI) Config {
			return Config{Network: "unix", Address: filepath.Join(t.TempDir(), "mqttd.sock")}
		}, dialUnix},
		{"unix-tls", func(t *testing.T, p *testPKI) Config {
			return Config{Network: "unix", Address: filepath.Join(t.TempDir(), "mqttd.sock"), TLS: p.serverTLS(t)}
		}, func(t *testing.T, l net.Listener, p *testPKI) (net.Conn, error) {
			c, err := net.DialTimeout("unix", l.Addr().String(), testTimeout)
			if err != nil {
				return nil, err
			}
			return tls.Client(c, p.clientTLS()), nil
		}},
	}
}

// TestListenEcho runs a listener of every kind at once, each with its own
// settings, and checks bytes flow both ways through each.
func TestListenEcho(t *testing.T) {
	p := newPKI(t, "echo")
	type running struct {
		tr transport
		l  net.Listener
	}
	var all []running
	for _, tr := range transports() {
		cfg, _ := quietConfig(tr.cfg(t, p))
		l := listen(t, cfg)
		serveEcho(t, l)
		all = append(all, running{tr, l})
	}
	for _, r := range all {
		t.Run(r.tr.name, func(t *testing.T) {
			c, err := r.tr.dial(t, r.l, p)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			for _, msg := range []string{"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c", "second write", string(make([]byte, 100_000))} {
				if err := roundTrip(c, []byte(msg)); err != nil {
					t.Fatalf("round trip of %d bytes: %v", len(msg), err)
				}
			}
		})
	}
}

// TestAcceptAfterClose checks that Close wakes a blocked Accept and that
// every later Accept reports net.ErrClosed.
func TestAcceptAfterClose(t *testing.T) {
	p := newPKI(t, "close")
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			cfg, _ := quietConfig(tr.cfg(t, p))
			l, err := Listen(cfg)
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				_, err := l.Accept()
				errc <- err
			}()
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("blocked Accept after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("Close did not wake Accept")
			}
			if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
			}
			if _, err := tr.dial(t, l, p); err == nil {
				t.Fatal("dial succeeded after Close")
			}
		})
	}
}

// TestCloseKeepsAcceptedConns checks Close stops new connections but leaves
// the ones already accepted working, as a plain TCP listener does.
func TestCloseKeepsAcceptedConns(t *testing.T) {
	p := newPKI(t, "keep")
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			cfg, _ := quietConfig(tr.cfg(t, p))
			l := listen(t, cfg)
			c, err := tr.dial(t, l, p)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Drive the client's side of the handshake while accepting.
			go func() { _ = c.SetDeadline(time.Now().Add(testTimeout)); _, _ = c.Write([]byte("x")) }()
			s := acceptOne(t, l)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 1)
			_ = s.SetDeadline(time.Now().Add(testTimeout))
			if _, err := s.Read(got); err != nil || got[0] != 'x' {
				t.Fatalf("read after listener Close: %q, %v", got, err)
			}
			if _, err := s.Write([]byte("y")); err != nil {
				t.Fatalf("write after listener Close: %v", err)
			}
			if _, err := c.Read(got); err != nil || got[0] != 'y' {
				t.Fatalf("client read: %q, %v", got, err)
			}
		})
	}
}

func TestUnixSocketFile(t *testing.T) {
	t.Run("stale socket is replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stale.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false) // as a crashed broker leaves it
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("stale socket file missing: %v", err)
		}
		l := listen(t, Config{Network: "unix", Address: path})
		serveEcho(t, l)
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTrip(c, []byte("hello")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("live socket is left alone", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "live.sock")
		first := listen(t, Config{Network: "unix", Address: path})
		serveEcho(t, first)
		if _, err := Listen(Config{Network: "unix", Address: path}); !errors.Is(err, ErrAddressInUse) {
			t.Fatalf("second Listen on a live socket: %v, want ErrAddressInUse", err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("first listener lost its socket: %v", err)
		}
		defer c.Close()
		if err := roundTrip(c, []byte("still here")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("regular file is not removed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "not-a-socket")
		if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(Config{Network: "unix", Address: path}); !errors.Is(err, ErrConfig) {
			t.Fatalf("Listen over a regular file: %v, want ErrConfig", err)
		}
		if data, err := os.ReadFile(path); err != nil || string(data) != "data" {
			t.Fatalf("regular file changed: %q, %v", data, err)
		}
	})
	t.Run("socket file removed on Close", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gone.sock")
		l, err := Listen(Config{Network: "unix", Address: path})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket file after Close: %v", err)
		}
	})
}

func TestSocketDomain(t *testing.T) {
	l := listen(t, Config{Address: ":0", SocketDomain: "ipv4"})
	if ip := l.Addr().(*net.TCPAddr).IP; ip.To4() == nil {
		t.Fatalf("ipv4 listener bound to %v", ip)
	}
	if _, err := Listen(Config{Address: "127.0.0.1:0", SocketDomain: "ipv6"}); err == nil {
		t.Fatal("ipv6 listener accepted an IPv4 address")
	}
	if l6, err := Listen(Config{Address: "[::1]:0", SocketDomain: "ipv6"}); err == nil {
		_ = l6.Close()
	} else if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Fatalf("ipv6 listener on ::1: %v", err)
	}
}

func TestBindInterface(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := Listen(Config{Address: "127.0.0.1:0", BindInterface: "lo"}); !errors.Is(err, ErrConfig) {
			t.Fatalf("bind_interface off Linux: %v, want ErrConfig", err)
		}
		return
	}
	l, err := Listen(Config{Address: "127.0.0.1:0", BindInterface: "lo"})
	if errors.Is(err, syscall.EPERM) {
		t.Skip("SO_BINDTODEVICE needs CAP_NET_RAW here")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	serveEcho(t, l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, []byte("lo")); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(Config{Address: "127.0.0.1:0", BindInterface: "nosuchif0"}); err == nil {
		t.Fatal("binding to a missing interface succeeded")
	}
}

func TestNagle(t *testing.T) {
	for _, tc := range []struct {
		name        string
		nagle       bool
		wantNoDelay bool
	}{
		{"default sets TCP_NODELAY", false, true},
		{"nagle clears TCP_NODELAY", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t, Config{Address: "127.0.0.1:0", Nagle: tc.nagle})
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := acceptOne(t, l)
			raw, err := s.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var v int
			var serr error
			if err := raw.Control(func(fd uintptr) {
				v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
			}); err != nil || serr != nil {
				t.Fatal(err, serr)
			}
			if got := v != 0; got != tc.wantNoDelay {
				t.Fatalf("TCP_NODELAY = %v, want %v", got, tc.wantNoDelay)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"empty address", Config{}},
		{"unknown protocol", Config{Address: "127.0.0.1:0", Protocol: "http"}},
		{"unknown network", Config{Address: "127.0.0.1:0", Network: "udp"}},
		{"unknown socket domain", Config{Address: "127.0.0.1:0", SocketDomain: "ipv5"}},
		{"path without websockets", Config{Address: "127.0.0.1:0", Path: "/mqtt"}},
		{"relative websocket path", Config{Address: "127.0.0.1:0", Protocol: "websockets", Path: "mqtt"}},
		{"socket domain on unix", Config{Network: "unix", Address: "/tmp/x.sock", SocketDomain: "ipv4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Listen(tc.cfg)
			if err == nil {
				_ = l.Close()
				t.Fatal("Listen succeeded")
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not match ErrConfig", err)
			}
		})
	}
}
