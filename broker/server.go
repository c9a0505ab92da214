// Package broker is the MQTT server: connections, sessions, routing,
// retained messages, wills, keep-alive and $SYS statistics.
//
// Lock order (see docs/locking.md): Server.sessMu -> session.mu -> conn.outMu.
// No lock is held across a hook, a store call or a network write.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/topic"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("broker: server closed")

// Server is an MQTT broker. Create one with New, feed it listeners with Serve
// and stop it with Shutdown.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex // guards listeners, conns, closing, quiescing
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	quiescing bool           // Quiesce began: no more connections
	wg        sync.WaitGroup // every goroutine the server starts

	detachWaiters sync.Map      // *session → chan struct{}: TakeOver waits for its connection's detach (replica.go)
	replicas      replicaTrack  // the ReplicaHooks' calls under way (replica.go)
	done          chan struct{} // closed when Shutdown begins

	sessMu   sync.Mutex // guards sessions
	sessions map[string]*session

	subs     *topic.Index[*session, subOptions]
	shared   sync.Map // group+"\x00"+filter -> *shareGroup (router.go): members and round-robin cursor
	retained retainedStore

	stats   stats
	closes  closeCounters // connection ends by reason (closereason.go)
	started time.Time
	poller  *poller    // idle TCP connections; nil: a goroutine per connection
	workers workerPool // runs the connections' short tasks (workers.go)
	lstates sync.Map   // listener name -> *listenerState (listener_opts.go)

	msgSeq      atomic.Uint64 // last store message id
	entrySeq    atomic.Uint64 // last store queue entry sequence number, of any session (persist.go)
	queuedBytes atomic.Int64  // bytes queued in all sessions (Options.MaxQueuedBytesTotal)

	pubRateWaits atomic.Int64 // readers paused by MaxPublishRate (ratelimit.go)

	hooks hooks // hooks.go

	sysMu      sync.Mutex                            // guards sysSources
	sysSources []func(put func(topic, value string)) // AddSysSource (sys.go)

	inline  atomic.Pointer[topic.Index[*inlineSub, byte]] // Server.Subscribe (embed.go); made on first use
	inlineN atomic.Int32                                  // inline subscriptions; 0: publish skips them
	hookErr error                                         // a hook of Options.Hooks refused: Serve returns it
	// inlineAll are the subscriptions of Server.SubscribeAll; replaced
	// (copy on write) under inlineMu.
	inlineAll atomic.Pointer[[]*inlineSub]
	inlineMu  sync.Mutex

	mem  *memGauge  // memory_limit (memlimit.go); nil without one
	disk *diskGuard // the store's disk (diskfull.go); nil without a store
}

// New returns a Server with the given options.
func New(opts Options) *Server {
	o := opts.withDefaults()
	s := &Server{
		opts:      o,
		log:       o.Logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		done:      make(chan struct{}),
		sessions:  make(map[string]*session),
		subs:      topic.NewIndex[*session, subOptions](4096),
		started:   time.Now(),
	}
	s.retained.init()
	for _, h := range o.Hooks {
		if err := s.AddHook(h); err != nil && s.hookErr == nil {
			s.hookErr = fmt.Errorf("broker: Options.Hooks: %w", err)
		}
	}
	var syncs func() uint64
	if sc, ok := o.Store.(store.SyncCounter); ok {
		syncs = sc.SyncedWrites
	}
	s.poller = newPoller(o.PollSpin, o.pollSpinLoad, syncs)
	s.startMemLimit()
	s.startDiskGuard()
	if o.SysInterval > 0 {
		s.wg.Add(1)
		go s.sysLoop()
	}
	return s
}

// Serve accepts connections on l until Shutdown; it always returns a non-nil
// error, ErrServerClosed after Shutdown. name labels the listener in logs.
func (s *Server) Serve(l net.Listener) error {
	if s.hookErr != nil {
		if l != nil {
			l.Close()
		}
		return s.hookErr
	}
	l = s.wrapListener(l)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	name := l.Addr().String()
	s.log.Info("listener started", "listener", name)

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() || s.isQuiescing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || !errors.Is(err, net.ErrClosed) {
				// Temporary failure (e.g. EMFILE): back off and retry.
				if backoff == 0 {
					backoff = 5 * time.Millisecond
				} else if backoff *= 2; backoff > time.Second {
					backoff = time.Second
				}
				s.log.Warn("accept failed", "listener", name, "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-s.done:
					return ErrServerClosed
				}
				continue
			}
			s.mu.Lock()
			delete(s.listeners, l)
			s.mu.Unlock()
			return err
		}
		backoff = 0
		s.startConn(nc, name)
	}
}

func (s *Server) isQuiescing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quiescing
}

func (s *Server) isClosing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// trackConn registers a new connection, or closes nc and returns nil once
// Shutdown or Quiesce has begun (no goroutine starts after that).
func (s *Server) trackConn(nc net.Conn, listener string) *conn {
	c := newConn(s, nc, listener)
	s.mu.Lock()
	if s.closing || s.quiescing {
		s.mu.Unlock()
		nc.Close() // no lock across a close: a TLS close writes
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1) // done in conn.finish
	s.stats.connsTotal.Add(1)
	s.mu.Unlock()
	return c
}

// startConn tracks nc and hands it to the poller, or to a read goroutine of
// its own when it cannot be polled.
func (s *Server) startConn(nc net.Conn, listener string) {
	c := s.trackConn(nc, listener)
	if c == nil || c.startPolled() {
		return
	}
	go func() {
		c.serve()
		c.finish()
	}()
}

// ServeConn serves one already-accepted connection (for custom transports and
// tests) on the calling goroutine; it returns when the connection ends.
func (s *Server) ServeConn(nc net.Conn, listener string) {
	if c := s.trackConn(nc, listener); c != nil {
		c.serve()
		c.finish()
	}
}

// Shutdown stops the listeners, disconnects every client (v5 clients are told
// 0x8B server shutting down), publishes nothing further and waits for the
// server's goroutines until ctx ends. Past that, the connections still open
// are closed at once, whatever they had left to write, and are given
// forceCloseWait to end. Either way the session-expiry and will-delay timers
// stop (a will still delayed stays in the store, for the next start) and a
// timer that fires after Shutdown began does nothing.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	ls, cs := s.listenersLocked(), s.connsLocked()
	s.mu.Unlock()
	endAll(ls, cs)
	wait := make(chan struct{})
	go func() { s.wg.Wait(); close(wait) }()
	var err error
	waitFor := wait
	if ctx.Err() != nil {
		// A context that had already ended takes the past-deadline path,
		// whatever ended meanwhile: a select with both ready would pick
		// at random.
		waitFor = nil
	}
	select {
	case <-waitFor:
	case <-ctx.Done():
		err = ctx.Err()
		// Writers stuck on clients that do not read hold their connections
		// open: close every socket now (a polled one leaves the epoll set
		// first); the reads and writes fail at once and the connections end.
		s.mu.Lock()
		cs = s.connsLocked()
		s.mu.Unlock()
		for _, c := range cs {
			c.forceClose()
		}
		t := time.NewTimer(forceCloseWait)
		select {
		case <-wait:
		case <-t.C:
			s.log.Warn("shutdown: connections still ending", "deadline", err.Error())
		}
		t.Stop()
	}
	if s.poller != nil {
		s.poller.stop()
	}
	s.workers.stop()
	s.sessMu.Lock()
	for _, ss := range s.sessions {
		ss.stopExpiry()
	}
	s.sessMu.Unlock()
	if err != nil {
		return err
	}
	s.log.Info("server stopped")
	return nil
}

// Quiesce prepares a Shutdown that hands the sessions to other servers (a
// cluster node leaving): it stops the listeners, refuses new connections,
// and ends every client's connection as Shutdown does (5.0: DISCONNECT
// 0x8B; wills as on any close by the server), but the server goes on: the
// messages published through the embedding API (a cluster's link) are
// routed and queued for the sessions, now offline, and HandOver lets them
// go. It returns once the connections are done, or with ctx's error when
// ctx ends first; Shutdown follows either way.
func (s *Server) Quiesce(ctx context.Context) error {
	s.mu.Lock()
	if s.closing || s.quiescing {
		s.mu.Unlock()
		return nil
	}
	s.quiescing = true
	ls, cs := s.listenersLocked(), s.connsLocked()
	s.mu.Unlock()
	endAll(ls, cs)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		left := len(s.conns)
		s.mu.Unlock()
		if left == 0 {
			s.log.Info("server quiesced: no connections; sessions kept")
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker: quiesce: %d connections still open: %w", left, ctx.Err())
		case <-tick.C:
		}
	}
}

// forceCloseWait is how long a Shutdown past its deadline waits for the
// connections it closed to end (their reads and writes fail at once; only
// a hook or a store call can hold them).
const forceCloseWait = time.Second

// listenersLocked lists the listeners being served. s.mu is held.
func (s *Server) listenersLocked() []net.Listener {
	ls := make([]net.Listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	return ls
}

// endAll closes ls and ends cs as a shutdown does (5.0: DISCONNECT 0x8B).
// No lock is held.
func endAll(ls []net.Listener, cs []*conn) {
	for _, l := range ls {
		l.Close()
	}
	for _, c := range cs {
		c.disconnect(errShuttingDown)
	}
}

// connsLocked lists the live connections. s.mu is held.
func (s *Server) connsLocked() []*conn {
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// Addrs returns the addresses of the listeners being served.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, 0, len(s.listeners))
	for l := range s.listeners {
		out = append(out, l.Addr())
	}
	return out
}
