package client

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Client is a connection to an MQTT server. Create one with Dial; all its
// methods are safe for concurrent use.
type Client struct {
	opts    Options
	targets []target // the URL given to Dial, then Options.Servers
	next    int      // manager only: the target to try first
	version packet.Version
	log     *slog.Logger
	maxIn   int // largest inbound packet we read

	out      chan outItem  // to the writer of the current connection
	done     chan struct{} // closed when the client stops for good
	closeReq chan struct{} // closed when the user asks to stop
	stopOnce sync.Once
	reqOnce  sync.Once
	err      error // why it stopped; set before done is closed

	mu          sync.Mutex
	cur         *connState    // nil between connections
	connected   chan struct{} // closed while cur != nil
	connack     *packet.Connack
	clientID    string
	gen         uint64
	subs        []subEntry // for resubscribing, in subscription order
	stopErrHint error      // error to stop with once the connection ends (Close, Disconnect)

	fmu      sync.Mutex
	flights  map[uint16]*flight
	nextID   uint16
	inflight int  // QoS 1/2 publishes counted against window
	window   int  // min(MaxInflight, server Receive Maximum)
	stopped  bool // no new flights
	seq      uint64
	slot     chan struct{} // a window slot may have become free
	pubQ     []*flight     // PUBLISHes waiting for the writer, in order
	relQ     []*flight     // PUBRELs waiting for the writer
	sendWake chan struct{} // a flight may have become sendable
	drainCh  chan struct{} // closed when inflight drops to 0; nil if nobody waits

	limits     atomic.Pointer[serverLimits]
	routeMu    sync.Mutex // serializes copy-on-write updates of routes
	routes     atomic.Pointer[[]route]
	defHandler atomic.Pointer[Handler]
	inbox      inbox

	// q2 holds inbound QoS 2 packet ids between PUBLISH and PUBREL. Only
	// the reader goroutine of the current connection (and applyConnack
	// before it starts) touches it.
	// The value is the generation of the connection it arrived on.
	q2 map[uint16]uint64

	recvMax int           // our Receive Maximum (v5)
	dropped atomic.Uint64 // QoS 0 messages dropped by a full inbox
	ackMu   sync.Mutex
	ackQ    []*Message // ManualAck: QoS 1/2 messages in arrival order, not yet acknowledged

	tracing    bool // the logger takes debug records: trace packets
	reauth     reauth
	authMu     sync.Mutex     // one Authenticator call at a time
	wg         sync.WaitGroup // manager and delivery goroutines
	inCallback atomic.Bool    // the manager is running OnConnect or OnConnectionLost
}

// Dial connects to the server at url and returns once it has accepted the
// connection (CONNACK). url schemes: mqtt:// tcp:// (default port 1883),
// mqtts:// ssl:// tls:// (8883), ws:// (80, path default "/mqtt"), wss://
// (443), unix:///path. A user[:password]@ in the URL is used when
// Options.Username is empty. A refused CONNACK returns a *ConnectError that
// wraps the packet.ReasonCode and says it, e.g. "client: connection
// refused: not authorized".
//
// With Options.Servers the client tries url and then each of them in turn,
// on the first connection and on every reconnection. Dial makes one round
// of attempts unless Options.ConnectRetry is set: then it keeps trying with
// the reconnect backoff (MinBackoff to MaxBackoff) until it is connected or
// ctx ends, so a client may be started before its server.
//
// Messages left in opts.Store by an earlier client are sent right after the
// connection is established, within the server's Receive Maximum.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var targets []target
	for _, u := range append([]string{url}, o.Servers...) {
		t, err := parseURL(u)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	c := &Client{
		opts:      o,
		targets:   targets,
		version:   o.Version,
		log:       o.Logger,
		maxIn:     packet.MaxRemainingLength + 5,
		out:       make(chan outItem, 128),
		done:      make(chan struct{}),
		closeReq:  make(chan struct{}),
		connected: make(chan struct{}),
		clientID:  o.ClientID,
		flights:   make(map[uint16]*flight),
		window:    o.MaxInflight,
		slot:      make(chan struct{}, 1),
		sendWake:  make(chan struct{}, 1),
		q2:        make(map[uint16]uint64),
		recvMax:   65535,
	}
	if o.MaxPacketSize != 0 && int(o.MaxPacketSize) < c.maxIn {
		c.maxIn = int(o.MaxPacketSize)
	}
	if c.clientID == "" && c.version != packet.V5 {
		// 3.1 requires an identifier of 1 to 23 characters; 3.1.1 allows an
		// empty one only with a clean session. Generate one for both.
		c.clientID = generateID()
	}
	if rm := o.connectProps().ReceiveMaximum; rm != nil && *rm > 0 {
		c.recvMax = int(*rm)
	}
	c.tracing = c.log.Enabled(context.Background(), slog.LevelDebug)
	c.inbox.wake = make(chan struct{}, 1)
	c.inbox.max0, c.inbox.maxBytes = int64(o.MaxQueuedQoS0), o.MaxQueuedBytes
	c.SetDefaultHandler(o.DefaultHandler)
	if err := c.loadStore(); err != nil {
		return nil, err
	}
	var cn *connState
	if o.ConnectRetry {
		cn, err = c.retryConnect(ctx, ctx.Done(), false)
	} else {
		cn, err = c.connectAny(ctx)
	}
	if err != nil {
		return nil, err
	}
	c.setConnected(cn)
	c.wg.Add(2)
	go c.deliverLoop()
	go c.manage(cn)
	return c, nil
}

func generateID() string {
	var b [8]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails
	return "mqttd-" + hex.EncodeToString(b[:])
}

// Connack returns the CONNACK of the current (or last) connection.
func (c *Client) Connack() *packet.Connack {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connack
}

// ClientID returns the client identifier in use: the one given in Options,
// the one generated for 3.x, or the one the server assigned (v5).
func (c *Client) ClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// IsConnected reports whether the client has a network connection now.
func (c *Client) IsConnected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// Pending returns the number of outgoing QoS 1 and 2 messages not yet
// acknowledged by the server.
func (c *Client) Pending() int {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return c.inflight
}

// Done returns a channel that is closed when the client stops for good:
// after Close or Disconnect, or when the connection is lost and
// AutoReconnect is off.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client stopped, or nil while it runs. It is ErrClosed
// after Close and Disconnect.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Disconnect sends a DISCONNECT (v5 reason Success, so the server discards
// the will) and closes the connection. Unacknowledged messages stay in the
// Store.
func (c *Client) Disconnect(ctx context.Context) error {
	return c.DisconnectWith(ctx, &packet.Disconnect{ReasonCode: packet.Success})
}

// DisconnectWith sends d (for v5 e.g. reason 0x04 to have the will
// published, or a Session Expiry Interval property) and closes the
// connection. Before v5 only the packet type goes on the wire.
func (c *Client) DisconnectWith(ctx context.Context, d *packet.Disconnect) error {
	c.requestStop()
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	var err error
	if cn != nil {
		written := make(chan error, 1)
		it := outItem{p: d, gen: cn.gen, done: func(e error) { written <- e }}
		select {
		case c.out <- it:
			select {
			case err = <-written:
			case <-ctx.Done():
				err = ctx.Err()
			case <-cn.dead:
				// The server may close as soon as it reads DISCONNECT, before
				// the writer reports the flush: ask the writer, once it is gone.
				<-cn.writerDone
				select {
				case err = <-written:
				default:
					err = cn.cause()
				}
			}
		case <-ctx.Done():
			err = ctx.Err()
		case <-cn.dead:
			err = cn.cause()
		}
		if errors.Is(err, ErrClosed) {
			err = nil // Close raced with us: the client is closed either way
		}
		// [MQTT-3.14.4-1] After sending DISCONNECT the client closes the
		// network connection.
		cn.fail(ErrClosed)
	}
	c.waitStopped()
	if err != nil {
		return fmt.Errorf("client: disconnect: %w", err)
	}
	return nil
}

// Close drops the network connection without DISCONNECT, so the server
// publishes the will, and stops the client. Unacknowledged messages stay
// in the Store. Close and Disconnect wait until the client has stopped,
// except when called from OnConnect or OnConnectionLost.
func (c *Client) Close() error {
	c.requestStop()
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn != nil {
		cn.fail(ErrClosed)
	}
	c.waitStopped()
	return nil
}

// waitStopped waits until the client has stopped, unless called from
// OnConnect or OnConnectionLost, whose goroutine is the one that stops it.
func (c *Client) waitStopped() {
	if !c.inCallback.Load() {
		<-c.done
	}
}

func (c *Client) requestStop() {
	c.reqOnce.Do(func() { close(c.closeReq) })
}

func (c *Client) stopRequested() bool {
	select {
	case <-c.closeReq:
		return true
	default:
		return false
	}
}

// stop ends the client for good: waiters fail with err, messages stay in
// the store.
func (c *Client) stop(err error) {
	c.stopOnce.Do(func() {
		c.err = err
		c.fmu.Lock()
		c.stopped = true
		fl := make([]*flight, 0, len(c.flights))
		for _, f := range c.flights {
			if !f.finished {
				f.finished = true
				fl = append(fl, f)
			}
		}
		c.fmu.Unlock()
		for _, f := range fl {
			f.finish(nil, err)
		}
		close(c.done)
	})
}

// manage runs the connection cn and its successors until the client stops.
func (c *Client) manage(cn *connState) {
	defer c.wg.Done()
	for {
		c.serve(cn)
		err := cn.cause()
		if c.stopRequested() {
			c.stop(ErrClosed)
			return
		}
		c.log.Info("mqtt connection lost", "err", err)
		if f := c.opts.OnConnectionLost; f != nil {
			c.inCallback.Store(true)
			f(c, err)
			c.inCallback.Store(false)
		}
		if !c.opts.AutoReconnect {
			c.stop(fmt.Errorf("%w: %w", ErrConnectionLost, err))
			return
		}
		cn = c.reconnect()
		if cn == nil {
			c.stop(ErrClosed)
			return
		}
		c.setConnected(cn)
	}
}

// setConnected makes cn the current connection. Operations may queue
// packets for it before serve starts its writer. The subscriptions to
// restore on cn are those granted before it: one a Subscribe makes on cn
// itself, before serve runs, is not sent twice (its retained messages
// would come twice).
func (c *Client) setConnected(cn *connState) {
	c.mu.Lock()
	cn.resubs = append([]subEntry(nil), c.subs...)
	c.cur = cn
	close(c.connected)
	c.mu.Unlock()
	if c.stopRequested() {
		cn.fail(ErrClosed) // Close or Disconnect raced with connecting
	}
}

// serving runs in serve once a connection's reader and writer run, before
// it restores subscriptions; a test holds it to order an application's
// operation first.
var serving = func() {}

// jitter returns a random duration between d/2 and d (a variable for tests).
var jitter = func(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// reconnect dials with exponential backoff and jitter until it succeeds
// (returning the new connection) or the user stops the client (nil).
func (c *Client) reconnect() *connState {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.closeReq:
			cancel()
		case <-ctx.Done():
		}
	}()
	cn, err := c.retryConnect(ctx, c.closeReq, true)
	if err != nil {
		return nil
	}
	return cn
}

// retryConnect tries the servers in turn, waiting with exponential backoff
// and jitter between rounds, until one accepts (the new connection) or
// stop is closed (the last error). The first round starts after a random
// wait of up to MinBackoff when this is a reconnection, at once otherwise.
func (c *Client) retryConnect(ctx context.Context, stop <-chan struct{}, re bool) (*connState, error) {
	what := "mqtt connect failed"
	delay := c.opts.MinBackoff
	var wait time.Duration
	if re {
		what = "mqtt reconnect failed"
		wait = jitter(delay)
	}
	var last error
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-stop:
				t.Stop()
				if last == nil {
					last = ErrClosed
					if ctx.Err() != nil {
						last = ctx.Err()
					}
				}
				return nil, last
			}
		}
		cn, err := c.connectAny(ctx)
		if err == nil {
			return cn, nil
		}
		last = err
		select {
		case <-stop:
			return nil, err
		default:
		}
		if c.stopRequested() {
			return nil, err
		}
		// The log says how long the next wait really is.
		wait = jitter(delay)
		c.log.Info(what, "err", err, "retry_in", wait)
		delay = min(2*delay, c.opts.MaxBackoff)
	}
}

// connectAny tries each server once, starting with the one that worked
// last, and returns the first connection established.
func (c *Client) connectAny(ctx context.Context) (*connState, error) {
	var errs []error
	for i := range c.targets {
		k := (c.next + i) % len(c.targets)
		cn, err := c.connect(ctx, c.targets[k])
		if err == nil {
			c.next = k
			return cn, nil
		}
		if len(c.targets) > 1 {
			c.log.Debug("mqtt server unavailable", "url", c.targets[k].url, "err", err)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// serve runs the reader, writer and pinger of cn, resubscribes and calls
// OnConnect, and returns once the connection has ended and all three
// goroutines have exited.
func (c *Client) serve(cn *connState) {
	if n := c.requeue(cn); n > 0 {
		c.log.Info("mqtt re-sending unacknowledged messages", "count", n)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.readLoop(cn) }()
	go func() { defer wg.Done(); c.writeLoop(cn) }()
	if cn.keepAlive > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); c.pingLoop(cn) }()
	}

	serving()
	// Of those, the ones not unsubscribed since.
	c.mu.Lock()
	still := make(map[string]bool, len(c.subs))
	for _, e := range c.subs {
		still[e.sub.Filter] = true
	}
	subs := slices.DeleteFunc(cn.resubs, func(e subEntry) bool { return !still[e.sub.Filter] })
	cn.resubs = nil
	c.mu.Unlock()
	if !cn.connack.SessionPresent && len(subs) > 0 {
		c.resubscribe(cn, subs)
	}
	if f := c.opts.OnConnect; f != nil {
		c.inCallback.Store(true)
		f(c, cn.connack)
		c.inCallback.Store(false)
	}

	<-cn.dead
	_ = cn.conn.Close()
	wg.Wait()
	c.mu.Lock()
	c.cur = nil
	c.connected = make(chan struct{})
	c.mu.Unlock()
}

// waitConnected returns the current connection, waiting for one if the
// client is between connections.
func (c *Client) waitConnected(ctx context.Context) (*connState, error) {
	for {
		c.mu.Lock()
		cn, ch := c.cur, c.connected
		c.mu.Unlock()
		if cn != nil {
			return cn, nil
		}
		select {
		case <-ch:
		case <-c.done:
			return nil, c.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
		}
	}
}

// connect dials, sends CONNECT and reads CONNACK. On success the returned
// connection is ready for serve.
func (c *Client) connect(ctx context.Context, t target) (*connState, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	cred := credentials{user: c.opts.Username, pass: c.opts.Password}
	if cred.user == "" && cred.pass == nil && t.hasUser {
		cred = credentials{user: t.user, pass: t.pass}
	}
	if f := c.opts.Credentials; f != nil {
		u, p, err := f(ctx)
		if err != nil {
			return nil, fmt.Errorf("client: credentials: %w", err)
		}
		cred = credentials{user: u, pass: p}
	}
	conn, err := t.dial(ctx, &c.opts)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", t.addr, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	cn, err := c.handshake(conn, cred)
	if !stop() && err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("client: %w", err)
	}
	return cn, nil
}

// credentials are the user name and password of one CONNECT.
type credentials struct {
	user string
	pass []byte
}

func (c *Client) handshake(conn net.Conn, cred credentials) (*connState, error) {
	o := &c.opts
	c.mu.Lock()
	id := c.clientID
	c.mu.Unlock()
	pk := &packet.Connect{
		ProtocolName: "MQTT",
		Version:      c.version,
		CleanStart:   !o.PersistentSession,
		KeepAlive:    uint16(o.KeepAlive / time.Second),
		ClientID:     id,
		Will:         o.Will,
		Username:     cred.user,
		HasUsername:  cred.user != "",
		Password:     cred.pass,
		HasPassword:  cred.pass != nil,
	}
	if c.version == packet.V31 {
		pk.ProtocolName = "MQIsdp"
	}
	auth := c.version == packet.V5 && o.Auth != nil
	if c.version == packet.V5 {
		pk.Props = o.connectProps()
		if auth {
			if err := c.startAuth(pk.Props); err != nil {
				return nil, err
			}
		}
	}
	cn := newConnState(conn)
	if err := c.writePacket(cn, pk); err != nil {
		return nil, fmt.Errorf("client: send CONNECT: %w", err)
	}
	var ack *packet.Connack
	for ack == nil {
		p, err := packet.Read(cn.br, c.version, c.maxIn)
		if err != nil {
			return nil, fmt.Errorf("client: read CONNACK: %w", err)
		}
		c.trace("recv", cn, p)
		switch p := p.(type) {
		case *packet.Connack:
			ack = p
		case *packet.Auth:
			if !auth {
				return nil, fmt.Errorf("%w: AUTH without an authentication method", ErrProtocol)
			}
			// MQTT 5.0 section 4.12: AUTH 0x18 steps until CONNACK.
			next, err := c.continueAuth(p)
			if err != nil {
				return nil, err
			}
			if err := c.writePacket(cn, next); err != nil {
				return nil, fmt.Errorf("client: send AUTH: %w", err)
			}
		default:
			// [MQTT-3.2.0-1] The first packet from the server is CONNACK.
			return nil, fmt.Errorf("%w: %s instead of CONNACK", ErrProtocol, p.Type())
		}
	}
	if ack.ReasonCode != packet.Success {
		return nil, &ConnectError{Connack: ack}
	}
	if auth {
		var data []byte
		if ack.Props != nil {
			data = ack.Props.AuthData
		}
		if _, err := c.authCall(func() ([]byte, error) { return nil, o.Auth.Finish(data) }); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAuth, err)
		}
	}
	c.applyConnack(cn, ack)
	return cn, nil
}

// writePacket writes p to cn directly (before the writer runs).
func (c *Client) writePacket(cn *connState, p packet.Packet) error {
	c.trace("send", cn, p)
	buf, err := p.Encode(nil, c.version)
	if err != nil {
		return err
	}
	_, err = cn.conn.Write(buf)
	return err
}

// applyConnack records what the server granted in CONNACK.
func (c *Client) applyConnack(cn *connState, ack *packet.Connack) {
	o := &c.opts
	cn.connack = ack
	cn.keepAlive = o.KeepAlive
	cn.maxOut = packet.MaxRemainingLength + 5
	window := o.MaxInflight
	cn.maxQoS = 2
	cn.retainOK = true
	if pr := ack.Props; pr != nil && c.version == packet.V5 {
		if pr.ServerKeepAlive != nil {
			// [MQTT-3.2.2-21] The server's keep alive replaces ours.
			cn.keepAlive = time.Duration(*pr.ServerKeepAlive) * time.Second
		}
		if pr.ReceiveMaximum != nil && int(*pr.ReceiveMaximum) < window && *pr.ReceiveMaximum > 0 {
			// [MQTT-3.3.4-7] No more unacknowledged QoS 1/2 PUBLISHes than
			// the server's Receive Maximum.
			window = int(*pr.ReceiveMaximum)
		}
		if pr.MaximumPacketSize != nil && *pr.MaximumPacketSize > 0 {
			cn.maxOut = int(*pr.MaximumPacketSize)
		}
		if pr.MaximumQoS != nil {
			cn.maxQoS = *pr.MaximumQoS
		}
		if pr.RetainAvailable != nil {
			cn.retainOK = *pr.RetainAvailable != 0
		}
	}
	if c.version == packet.V5 {
		cn.aliasMax = 0
		if p := o.connectProps(); p.TopicAliasMaximum != nil {
			cn.aliasMax = *p.TopicAliasMaximum
		}
	}

	c.limits.Store(&serverLimits{maxQoS: cn.maxQoS, retainOK: cn.retainOK})
	c.mu.Lock()
	c.gen++
	cn.gen = c.gen
	c.connack = ack
	if ack.Props != nil && ack.Props.AssignedClientID != "" {
		// Resume the session under the identifier the server assigned.
		c.clientID = ack.Props.AssignedClientID
	}
	c.mu.Unlock()

	if !ack.SessionPresent {
		// A new session: the server remembers no inbound QoS 2 message.
		clear(c.q2)
	}
	c.fmu.Lock()
	grew := window > c.window
	c.window = window
	c.fmu.Unlock()
	if grew {
		c.signalSlot()
	}
}

// connState is one network connection.
type connState struct {
	conn    net.Conn
	resubs  []subEntry // the subscriptions to restore on it (setConnected)
	br      *bufio.Reader
	gen     uint64
	connack *packet.Connack

	keepAlive time.Duration
	maxOut    int  // server's Maximum Packet Size
	maxQoS    byte // server's Maximum QoS
	retainOK  bool // server's Retain Available
	aliasMax  uint16

	lastWrite atomic.Int64  // unix nanoseconds of the last flush
	lastRead  atomic.Int64  // unix nanoseconds of the last packet received
	pingSent  atomic.Int64  // unix nanoseconds of the outstanding PINGREQ, 0 if none
	pingCh    chan struct{} // a PINGREQ is due; the writer sends it first

	// outstanding is how many PUBLISHes written on this connection are not
	// yet acknowledged, against the server's Receive Maximum. Guarded by
	// Client.fmu.
	outstanding int

	inUnacked atomic.Int32 // inbound QoS 1/2 PUBLISHes not yet acknowledged (v5)
	dropping  bool         // the reader is dropping QoS 0 messages (reader only)

	dead       chan struct{}
	writerDone chan struct{} // closed when writeLoop returns
	deadOnce   sync.Once
	err        error // set before dead is closed
}

func newConnState(conn net.Conn) *connState {
	cn := &connState{conn: conn, br: bufio.NewReaderSize(conn, 8192), dead: make(chan struct{}),
		writerDone: make(chan struct{}), pingCh: make(chan struct{}, 1)}
	cn.lastRead.Store(time.Now().UnixNano())
	return cn
}

// fail ends the connection with err (the first cause wins).
func (cn *connState) fail(err error) {
	cn.deadOnce.Do(func() {
		cn.err = err
		close(cn.dead)
		_ = cn.conn.Close()
	})
}

func (cn *connState) isDead() bool {
	select {
	case <-cn.dead:
		return true
	default:
		return false
	}
}

// cause returns why the connection ended (after dead is closed).
func (cn *connState) cause() error {
	<-cn.dead
	return cn.err
}

// errLost wraps a connection's cause for operations that waited on it.
func errLost(cn *connState) error {
	err := cn.cause()
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, err)
}
