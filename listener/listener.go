// Package listener opens the transports an MQTT broker listens on: TCP, TLS,
// WebSocket, WebSocket over TLS and unix sockets. Each transport yields a
// net.Listener and nothing more; the broker calls Accept and treats every
// connection as a byte stream.
//
// TLS and WebSocket handshakes run in their own goroutines with a timeout,
// and one source address may have only a few in progress at once, so a slow,
// broken or idle client never holds up Accept for others, and a failed
// handshake never reaches Accept's caller: it is logged, reported to
// Config.OnHandshakeError and, for WebSocket, answered with an HTTP error.
// Connections returned by Accept have completed their handshakes, so
// PeerIdentity can be called on them at once.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sentinel errors.
var (
	// ErrConfig reports an invalid listener configuration.
	ErrConfig = errors.New("listener: invalid configuration")
	// ErrAddressInUse reports a unix socket path that another process is serving.
	ErrAddressInUse = errors.New("listener: address in use")
)

// Protocols a listener can speak (mosquitto's "protocol" option).
const (
	ProtocolMQTT       = "mqtt"
	ProtocolWebSockets = "websockets"
)

// DefaultHandshakeTimeout bounds a TLS or WebSocket handshake when
// Config.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 5 * time.Second

// DefaultMaxPendingPerAddress bounds the handshakes one source address may
// have in progress on a listener when Config.MaxPendingPerAddress is zero.
// Devices behind one NAT address (a cellular carrier's, say) that reconnect
// at once share it, so it is generous: an idle socket costs a goroutine and
// a few KB until the handshake timeout.
const DefaultMaxPendingPerAddress = 64

// DefaultMaxMessageSize is the largest WebSocket message accepted when
// Config.MaxMessageSize is zero: the largest MQTT packet there can be (a
// 268,435,455-byte remaining length, its four length bytes and the type).
const DefaultMaxMessageSize = 268435455 + 5

// wsReadSlack is what a WebSocket message may hold beyond MaxMessageSize: a
// client may pack a few small packets into the message with a largest one.
const wsReadSlack = 64 << 10

// ErrTooManyPending is reported to Config.OnHandshakeError for a connection
// closed at once because its source address already has
// Config.MaxPendingPerAddress handshakes in progress.
var ErrTooManyPending = errors.New("listener: too many handshakes in progress from this address")

// Config describes one listener. Many listeners, each with its own Config,
// may run at once.
type Config struct {
	// Network is "tcp" (the default) or "unix".
	Network string
	// Address is "host:port" for tcp (":1883", "127.0.0.1:8883") or a
	// filesystem path for unix.
	Address string
	// Protocol is "mqtt" (the default) or "websockets".
	Protocol string
	// TLS, when not nil, wraps the transport in TLS (websockets over TLS when
	// Protocol is "websockets"). The same *TLSConfig may be shared by
	// several listeners; TLS.Reload re-reads its files for all of them.
	TLS *TLSConfig
	// Path restricts WebSocket upgrades to one URL path; "" accepts any path,
	// as mosquitto does.
	Path string
	// SocketDomain is "" (both), "ipv4" or "ipv6" (mosquitto's socket_domain).
	SocketDomain string
	// BindInterface binds the socket to one network interface with
	// SO_BINDTODEVICE (mosquitto's bind_interface; Linux only).
	BindInterface string
	// Nagle keeps Nagle's algorithm enabled on accepted TCP connections. Go
	// disables it (sets TCP_NODELAY) by default, which suits a broker that
	// coalesces its own writes, so mosquitto's set_tcp_nodelay true is the
	// default here and Nagle is the opt-in.
	Nagle bool
	// HandshakeTimeout bounds each TLS handshake and each WebSocket upgrade
	// (the HTTP request up to the upgrade); zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxPendingPerAddress bounds the TLS handshakes, and separately the
	// WebSocket upgrades, that one source address (an IPv4 address or an
	// IPv6 /64) may have in progress at once. A connection past it is closed
	// at once, so sockets that never speak cannot hold the listener for
	// others. Zero means DefaultMaxPendingPerAddress, negative no limit.
	MaxPendingPerAddress int
	// AllowedOrigins, when not empty, lists the Origin header values
	// ("https://example.com") a WebSocket upgrade may carry; a request with
	// another Origin is answered 403. Requests without Origin (clients that
	// are not browsers) are always allowed. Empty allows every origin, as
	// mosquitto does. Compared without regard to case.
	AllowedOrigins []string
	// MaxMessageSize is the largest MQTT packet the broker accepts; a
	// WebSocket message longer than it (plus a little slack for packets
	// sharing a message) closes the connection with code 1009 before any of
	// it is read. Zero means DefaultMaxMessageSize.
	MaxMessageSize int64
	// Logger receives handshake failures at Info level and accept errors at
	// Warn level; nil means slog.Default().
	Logger *slog.Logger
	// OnHandshakeError, when set, is called (from a handshake goroutine) for
	// every failed TLS or WebSocket handshake, e.g. to count it.
	OnHandshakeError func(remote net.Addr, err error)
}

func (cfg *Config) handshakeTimeout() time.Duration {
	if cfg.HandshakeTimeout > 0 {
		return cfg.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

func (cfg *Config) maxPendingPerAddress() int {
	switch {
	case cfg.MaxPendingPerAddress > 0:
		return cfg.MaxPendingPerAddress
	case cfg.MaxPendingPerAddress < 0:
		return 0 // no limit
	}
	return DefaultMaxPendingPerAddress
}

// wsReadLimit is the largest WebSocket message a connection may receive.
func (cfg *Config) wsReadLimit() int64 {
	n := cfg.MaxMessageSize
	if n <= 0 {
		n = DefaultMaxMessageSize
	}
	return n + wsReadSlack
}

func (cfg *Config) logger() *slog.Logger {
	if cfg.Logger != nil {
		return cfg.Logger
	}
	return slog.Default()
}

// handshakeFailed logs and reports one failed handshake.
func (cfg *Config) handshakeFailed(kind string, remote net.Addr, err error) {
	cfg.logger().Info("listener: handshake failed", "kind", kind, "listener", cfg.Address,
		"remote", addrString(remote), "err", err)
	if cfg.OnHandshakeError != nil {
		cfg.OnHandshakeError(remote, err)
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// addrLimiter counts the handshakes in progress per source address.
type addrLimiter struct {
	max int // 0: no limit

	mu sync.Mutex
	n  map[string]int // handshakes in progress by addrKey, guarded by mu
}

func newAddrLimiter(max int) *addrLimiter {
	return &addrLimiter{max: max, n: make(map[string]int)}
}

// acquire counts one more handshake from remote and returns the key to
// release it with; false, counting nothing, if remote is at its limit.
func (a *addrLimiter) acquire(remote net.Addr) (string, bool) {
	key := addrKey(remote)
	if a.max <= 0 || key == "" {
		return "", true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[key] >= a.max {
		return "", false
	}
	a.n[key]++
	return key, true
}

// release ends a handshake acquire counted.
func (a *addrLimiter) release(key string) {
	if key == "" {
		return
	}
	a.mu.Lock()
	if a.n[key] <= 1 {
		delete(a.n, key)
	} else {
		a.n[key]--
	}
	a.mu.Unlock()
}

// addrKey is the source a connection is counted against: its IPv4 address,
// or the /64 of its IPv6 address (one host commonly owns a whole /64). ""
// (not counted) for addresses without an IP, such as unix sockets.
func addrKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.IP == nil {
		return ""
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Listen opens the listener cfg describes. The returned listener's Accept
// yields connections whose TLS and WebSocket handshakes are complete; after
// Close, Accept returns an error matching net.ErrClosed.
func Listen(cfg Config) (net.Listener, error) {
	protocol := strings.ToLower(cfg.Protocol)
	switch protocol {
	case "", ProtocolMQTT, ProtocolWebSockets:
	default:
		return nil, fmt.Errorf("%w: unknown protocol %q", ErrConfig, cfg.Protocol)
	}
	if cfg.Path != "" && protocol != ProtocolWebSockets {
		return nil, fmt.Errorf("%w: path is only meaningful for websockets", ErrConfig)
	}
	if len(cfg.AllowedOrigins) > 0 && protocol != ProtocolWebSockets {
		return nil, fmt.Errorf("%w: allowed origins are only meaningful for websockets", ErrConfig)
	}
	if cfg.Path != "" && !strings.HasPrefix(cfg.Path, "/") {
		return nil, fmt.Errorf("%w: websocket path %q must start with /", ErrConfig, cfg.Path)
	}
	var front *tls.Config
	if cfg.TLS != nil {
		var err error
		if front, err = cfg.TLS.Build(); err != nil {
			return nil, err
		}
	}
	base, err := listenSocket(&cfg)
	if err != nil {
		return nil, err
	}
	if front != nil {
		base = newTLSListener(base, front, &cfg)
	}
	if protocol == ProtocolWebSockets {
		return newWSListener(base, &cfg), nil
	}
	return base, nil
}

// listenSocket opens the plain tcp or unix socket.
func listenSocket(cfg *Config) (net.Listener, error) {
	if cfg.Address == "" {
		return nil, fmt.Errorf("%w: address required", ErrConfig)
	}
	network := strings.ToLower(cfg.Network)
	switch network {
	case "", "tcp":
		switch strings.ToLower(cfg.SocketDomain) {
		case "":
			network = "tcp"
		case "ipv4":
			network = "tcp4"
		case "ipv6":
			network = "tcp6"
		default:
			return nil, fmt.Errorf("%w: socket_domain %q (want ipv4 or ipv6)", ErrConfig, cfg.SocketDomain)
		}
	case "unix":
		if cfg.SocketDomain != "" || cfg.Nagle {
			return nil, fmt.Errorf("%w: socket_domain and nagle do not apply to unix sockets", ErrConfig)
		}
		if err := removeStaleSocket(cfg.Address); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: unknown network %q", ErrConfig, cfg.Network)
	}

	var lc net.ListenConfig
	// TCP keep-alive as Go sets it on each accepted connection, but set
	// once on the listening socket where accepted connections inherit it
	// (keepalive_linux.go).
	inheritKA := keepAliveInherited && network != "unix"
	if inheritKA {
		lc.KeepAlive = -1 // nothing to set per connection
	}
	if cfg.BindInterface != "" || inheritKA {
		iface := cfg.BindInterface
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				if iface != "" {
					if serr = bindToDevice(fd, iface); serr != nil {
						serr = fmt.Errorf("listener: bind_interface %s: %w", iface, serr)
						return
					}
				}
				if inheritKA {
					if serr = setListenKeepAlive(fd); serr != nil {
						serr = fmt.Errorf("listener: TCP keep-alive: %w", serr)
					}
				}
			}); err != nil {
				return err
			}
			return serr
		}
	}
	l, err := lc.Listen(context.Background(), network, cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	if cfg.Nagle {
		return nagleListener{l}, nil
	}
	return l, nil
}

// removeStaleSocket removes a unix socket file left behind by a process that
// is gone. A socket somebody still serves, or a path that is not a socket, is
// left alone and reported.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listener: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%w: %s exists and is not a socket", ErrConfig, path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("%w: %s is served by another process", ErrAddressInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("listener: probing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("listener: removing stale socket: %w", err)
	}
	return nil
}

// nagleListener re-enables Nagle's algorithm on each accepted TCP connection.
type nagleListener struct{ net.Listener }

func (l nagleListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil
		}
		// SetNoDelay fails only on a connection that is already dead: drop it
		// and serve the next one rather than fail Accept.
		if err := tc.SetNoDelay(false); err != nil {
			_ = c.Close()
			continue
		}
		return c, nil
	}
}

// acceptBackoff returns the pause after the n-th consecutive failed Accept
// (5 ms doubling up to 1 s, as net/http does).
func acceptBackoff(n int) time.Duration {
	d := 5 * time.Millisecond << min(n, 8)
	return min(d, time.Second)
}
