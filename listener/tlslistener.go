package listener

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// maxPendingHandshakes bounds the connections a TLS listener holds between
// the kernel's accept and the caller's Accept: handshaking, or handshaken and
// waiting to be taken. Past it the listener stops accepting, so the kernel
// backlog pushes back as it does for a plain listener. It is a safety cap on
// memory and descriptors, far above what one address may hold
// (Config.MaxPendingPerAddress), so that no single address can fill it.
const maxPendingHandshakes = 4096

// tlsListener accepts in its own goroutine and runs every TLS handshake in
// a goroutine of its own under a deadline; Accept yields only connections
// whose handshake succeeded. A connection from an address that already has
// Config.MaxPendingPerAddress handshakes in progress is closed at once.
type tlsListener struct {
	inner   net.Listener
	conf    *tls.Config
	cfg     *Config
	perAddr *addrLimiter

	ready chan *tls.Conn // handshaken connections for Accept
	done  chan struct{}  // closed by stop
	slots chan struct{}  // one token per pending connection
	wg    sync.WaitGroup // accept loop and handshake goroutines
	once  sync.Once      // guards stop
	err   error          // inner.Close's result, set by stop

	mu      sync.Mutex
	closed  bool                  // guarded by mu
	pending map[net.Conn]struct{} // handshaking raw connections, guarded by mu
}

func newTLSListener(inner net.Listener, conf *tls.Config, cfg *Config) *tlsListener {
	l := &tlsListener{
		inner:   inner,
		conf:    conf,
		cfg:     cfg,
		perAddr: newAddrLimiter(cfg.maxPendingPerAddress()),
		ready:   make(chan *tls.Conn),
		done:    make(chan struct{}),
		slots:   make(chan struct{}, maxPendingHandshakes),
		pending: make(map[net.Conn]struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *tlsListener) acceptLoop() {
	defer l.wg.Done()
	failures := 0
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.slots
			if errors.Is(err, net.ErrClosed) {
				l.stop()
				return
			}
			// Resource exhaustion (EMFILE) and the like: back off and retry,
			// as net/http does.
			d := acceptBackoff(failures)
			failures++
			l.cfg.logger().Warn("listener: accept failed", "listener", l.cfg.Address, "err", err, "retry_in", d)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
			continue
		}
		failures = 0
		key, ok := l.perAddr.acquire(c.RemoteAddr())
		if !ok {
			<-l.slots
			_ = c.Close()
			l.cfg.handshakeFailed("tls", c.RemoteAddr(), ErrTooManyPending)
			continue
		}
		l.wg.Add(1)
		go l.handshake(c, key)
	}
}

// handshake runs the TLS handshake of c, counted against its address as
// key, and hands the result to Accept.
func (l *tlsListener) handshake(c net.Conn, key string) {
	defer l.wg.Done()
	defer func() { <-l.slots }()
	if !l.track(c) {
		l.perAddr.release(key)
		_ = c.Close()
		return
	}
	tc := tls.Server(c, l.conf)
	err := c.SetDeadline(time.Now().Add(l.cfg.handshakeTimeout()))
	if err == nil {
		err = tc.Handshake()
	}
	if err == nil {
		err = c.SetDeadline(time.Time{})
	}
	l.untrack(c)
	l.perAddr.release(key)
	if err != nil {
		_ = c.Close()
		select {
		case <-l.done: // closing the listener aborted it; not the client's fault
		default:
			l.cfg.handshakeFailed("tls", c.RemoteAddr(), err)
		}
		return
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

// track records c as handshaking so stop can abort it; false once stopped.
func (l *tlsListener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *tlsListener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

// Accept returns the next connection whose TLS handshake succeeded.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, closedError(l.inner.Addr())
	}
}

// stop closes the socket and aborts pending handshakes; it does not wait.
func (l *tlsListener) stop() {
	l.once.Do(func() {
		close(l.done)
		l.err = l.inner.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
	})
}

// Close stops the listener and waits for its goroutines. Connections already
// returned by Accept stay open.
func (l *tlsListener) Close() error {
	l.stop()
	l.wg.Wait()
	if errors.Is(l.err, net.ErrClosed) {
		return nil
	}
	return l.err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

// closedError is what Accept returns after Close: it matches net.ErrClosed.
func closedError(addr net.Addr) error {
	network := ""
	if addr != nil {
		network = addr.Network()
	}
	return &net.OpError{Op: "accept", Net: network, Addr: addr, Err: net.ErrClosed}
}
