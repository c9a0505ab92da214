package listener

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/gorilla/websocket"
)

// WebSocket subprotocols a client may offer, preferred first. MQTT 3.1.1 and
// 5.0 use "mqtt"; MQTT 3.1 clients offer "mqttv3.1", which mosquitto accepts.
var wsSubprotocols = []string{"mqtt", "mqttv3.1"}

// Errors a failed WebSocket handshake reports to Config.OnHandshakeError.
var (
	ErrNotWebSocket   = errors.New("listener: not a websocket upgrade request")
	ErrSubprotocol    = errors.New("listener: client did not offer websocket subprotocol mqtt")
	ErrWebSocketPath  = errors.New("listener: websocket path not served")
	ErrOrigin         = errors.New("listener: websocket origin not allowed")
	errUpgradeRefused = errors.New("listener: websocket upgrade failed")
)

// wsListener serves HTTP on a base listener (plain or TLS) and turns each
// successful WebSocket upgrade into a net.Conn for Accept. net/http runs every
// handshake in its own goroutine under the handshake timeout; a connection
// from an address that already has Config.MaxPendingPerAddress connections
// in the HTTP phase is closed at once.
type wsListener struct {
	base    net.Listener
	cfg     *Config
	srv     *http.Server
	up      websocket.Upgrader
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	perAddr *addrLimiter

	mu      sync.Mutex
	pending map[net.Conn]string // connections in the HTTP phase and their addrKey, guarded by mu

	serveDone chan struct{}
	serveErr  error // why Serve stopped, if not because of Close; set before serveDone closes
}

func newWSListener(base net.Listener, cfg *Config) *wsListener {
	l := &wsListener{
		base:      base,
		cfg:       cfg,
		conns:     make(chan net.Conn),
		done:      make(chan struct{}),
		serveDone: make(chan struct{}),
		perAddr:   newAddrLimiter(cfg.maxPendingPerAddress()),
		pending:   make(map[net.Conn]string),
	}
	timeout := cfg.handshakeTimeout()
	l.up = websocket.Upgrader{
		HandshakeTimeout: timeout,
		// ServeHTTP has checked Origin against Config.AllowedOrigins.
		CheckOrigin:     func(*http.Request) bool { return true },
		WriteBufferPool: &sync.Pool{},
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			http.Error(w, reason.Error(), status)
		},
	}
	// Each request, headers and body, and its answer must be done within
	// timeout; Hijack clears the deadlines of an upgraded connection.
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		WriteTimeout:      timeout,
		IdleTimeout:       timeout,
		MaxHeaderBytes:    64 << 10,
		ConnState:         l.connState,
		ErrorLog:          slog.NewLogLogger(cfg.logger().Handler(), slog.LevelInfo),
	}
	go func() {
		err := l.srv.Serve(wsLimitListener{l})
		if !errors.Is(err, http.ErrServerClosed) {
			l.serveErr = err
		}
		close(l.serveDone)
	}()
	return l
}

// wsLimitListener is the base listener as http.Server sees it: it closes at
// once a connection whose address has too many in the HTTP phase.
type wsLimitListener struct{ l *wsListener }

func (w wsLimitListener) Accept() (net.Conn, error) {
	l := w.l
	for {
		c, err := l.base.Accept()
		if err != nil {
			return nil, err
		}
		key, ok := l.perAddr.acquire(c.RemoteAddr())
		if !ok {
			_ = c.Close()
			l.cfg.handshakeFailed("websocket", c.RemoteAddr(), ErrTooManyPending)
			continue
		}
		if key != "" {
			l.mu.Lock()
			l.pending[c] = key
			l.mu.Unlock()
		}
		return c, nil
	}
}

func (w wsLimitListener) Close() error   { return w.l.base.Close() }
func (w wsLimitListener) Addr() net.Addr { return w.l.base.Addr() }

// connState ends the count of a connection once it leaves the HTTP phase:
// upgraded (hijacked) or closed. Every connection http.Server takes reaches
// one of the two.
func (l *wsListener) connState(c net.Conn, state http.ConnState) {
	if state != http.StateHijacked && state != http.StateClosed {
		return
	}
	l.mu.Lock()
	key, ok := l.pending[c]
	delete(l.pending, c)
	l.mu.Unlock()
	if ok {
		l.perAddr.release(key)
	}
}

// originAllowed reports whether r may upgrade under Config.AllowedOrigins.
func (l *wsListener) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if len(l.cfg.AllowedOrigins) == 0 || origin == "" {
		return true
	}
	return slices.ContainsFunc(l.cfg.AllowedOrigins, func(o string) bool { return strings.EqualFold(o, origin) })
}

// ServeHTTP upgrades one request to a WebSocket connection for Accept, or
// answers it with an HTTP error.
func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if l.cfg.Path != "" && r.URL.Path != l.cfg.Path {
		l.refuse(w, r, http.StatusNotFound, fmt.Errorf("%w: %q", ErrWebSocketPath, r.URL.Path))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		l.refuse(w, r, http.StatusUpgradeRequired, ErrNotWebSocket)
		return
	}
	if !l.originAllowed(r) {
		// A page of another site must not reach the broker through the
		// browser of somebody inside the network.
		l.refuse(w, r, http.StatusForbidden, fmt.Errorf("%w: %q", ErrOrigin, r.Header.Get("Origin")))
		return
	}
	// [MQTT-6.0.0-3] the client offers "mqtt"; [MQTT-6.0.0-4] the server
	// selects and returns "mqtt" (or "mqttv3.1" for MQTT 3.1 clients).
	offered := websocket.Subprotocols(r)
	proto := ""
	for _, p := range wsSubprotocols {
		if slices.Contains(offered, p) {
			proto = p
			break
		}
	}
	if proto == "" {
		l.refuse(w, r, http.StatusBadRequest, fmt.Errorf("%w (offered %q)", ErrSubprotocol, offered))
		return
	}
	ws, err := l.up.Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {proto}})
	if err != nil {
		// Upgrade has answered with an HTTP error, or the connection is gone.
		l.cfg.handshakeFailed("websocket", remoteAddr(r), fmt.Errorf("%w: %w", errUpgradeRefused, err))
		return
	}
	// gorilla reads frames as a stream, but a frame or message declaring
	// more than any packet can be is refused (close 1009) as soon as its
	// header arrives.
	ws.SetReadLimit(l.cfg.wsReadLimit())
	c := newWSConn(ws, r.TLS)
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *wsListener) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	http.Error(w, err.Error(), status)
	l.cfg.handshakeFailed("websocket", remoteAddr(r), err)
}

// remoteAddr parses the client address net/http recorded.
func remoteAddr(r *http.Request) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		return a
	}
	return &net.UnixAddr{Name: r.RemoteAddr, Net: "unix"}
}

// Accept returns the next upgraded WebSocket connection.
func (l *wsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, closedError(l.base.Addr())
	case <-l.serveDone:
		if l.serveErr != nil {
			return nil, fmt.Errorf("listener: websocket server stopped: %w", l.serveErr)
		}
		return nil, closedError(l.base.Addr())
	}
}

// Close stops serving HTTP and closes the socket; connections already
// returned by Accept stay open.
func (l *wsListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		// Close closes the listener and every connection still in the HTTP
		// phase; hijacked (upgraded) connections are not its to close.
		err = l.srv.Close()
		<-l.serveDone
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (l *wsListener) Addr() net.Addr { return l.base.Addr() }
