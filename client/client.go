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
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Client is a connection to an MQTT server. Create one with Dial; all its
// methods are safe for concurrent use.
type Client struct {
	opts    Options
	target  target
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

	limits     atomic.Pointer[serverLimits]
	routeMu    sync.Mutex // serializes copy-on-write updates of routes
	routes     atomic.Pointer[[]route]
	defHandler atomic.Pointer[Handler]
	inbox      inbox

	// q2 holds inbound QoS 2 packet ids between PUBLISH and PUBREL. Only
	// the reader goroutine of the current connection (and applyConnack
	// before it starts) touches it.
	q2 map[uint16]struct{}

	wg         sync.WaitGroup // manager and delivery goroutines
	inCallback atomic.Bool    // the manager is running OnConnect or OnConnectionLost
}

// Dial connects to the server at url and returns once it has accepted the
// connection (CONNACK). url schemes: mqtt:// tcp:// (default port 1883),
// mqtts:// ssl:// tls:// (8883), ws:// (80, path default "/mqtt"), wss://
// (443), unix:///path. A refused CONNACK returns a *ConnectError that wraps
// the packet.ReasonCode and says it, e.g. "client: connection refused: not
// authorized".
//
// Messages left in opts.Store by an earlier client are sent right after the
// connection is established. Dial itself does not retry: AutoReconnect
// applies once a connection has been established.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts:      o,
		target:    t,
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
		q2:        make(map[uint16]struct{}),
	}
	if o.MaxPacketSize != 0 && int(o.MaxPacketSize) < c.maxIn {
		c.maxIn = int(o.MaxPacketSize)
	}
	if c.clientID == "" && c.version != packet.V5 {
		// 3.1 requires an identifier of 1 to 23 characters; 3.1.1 allows an
		// empty one only with a clean session. Generate one for both.
		c.clientID = generateID()
	}
	c.inbox.wake = make(chan struct{}, 1)
	c.SetDefaultHandler(o.DefaultHandler)
	if err := c.loadStore(); err != nil {
		return nil, err
	}
	cn, err := c.connect(ctx)
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
// packets for it before serve starts its writer.
func (c *Client) setConnected(cn *connState) {
	c.mu.Lock()
	c.cur = cn
	close(c.connected)
	c.mu.Unlock()
	if c.stopRequested() {
		cn.fail(ErrClosed) // Close or Disconnect raced with connecting
	}
}

// reconnect dials with exponential backoff and jitter until it succeeds
// (returning the new connection) or the user stops the client (nil).
func (c *Client) reconnect() *connState {
	delay := c.opts.MinBackoff
	for {
		wait := delay/2 + rand.N(delay/2+1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.closeReq:
			t.Stop()
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.closeReq:
				cancel()
			case <-ctx.Done():
			}
		}()
		cn, err := c.connect(ctx)
		cancel()
		if err == nil {
			return cn
		}
		if c.stopRequested() {
			return nil
		}
		c.log.Info("mqtt reconnect failed", "err", err, "retry_in", delay)
		delay = min(2*delay, c.opts.MaxBackoff)
	}
}

// serve runs the reader, writer and pinger of cn, resubscribes and calls
// OnConnect, and returns once the connection has ended and all three
// goroutines have exited.
func (c *Client) serve(cn *connState) {
	// Everything that was sent on an earlier connection and not yet
	// acknowledged goes again, in the order it was first published
	// [MQTT-4.4.0-1] [MQTT-4.6.0-1].
	resend := c.resendList(cn.gen)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.readLoop(cn) }()
	go func() { defer wg.Done(); c.writeLoop(cn, resend) }()
	if cn.keepAlive > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); c.pingLoop(cn) }()
	}

	c.mu.Lock()
	subs := append([]subEntry(nil), c.subs...)
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
func (c *Client) connect(ctx context.Context) (*connState, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	conn, err := c.target.dial(ctx, c.opts.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.target.addr, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	cn, err := c.handshake(conn)
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

func (c *Client) handshake(conn net.Conn) (*connState, error) {
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
		Username:     o.Username,
		HasUsername:  o.Username != "",
		Password:     o.Password,
		HasPassword:  o.Password != nil,
	}
	if c.version == packet.V31 {
		pk.ProtocolName = "MQIsdp"
	}
	if c.version == packet.V5 {
		pk.Props = o.connectProps()
	}
	buf, err := pk.Encode(nil, c.version)
	if err != nil {
		return nil, fmt.Errorf("client: encode CONNECT: %w", err)
	}
	if _, err := conn.Write(buf); err != nil {
		return nil, fmt.Errorf("client: send CONNECT: %w", err)
	}
	cn := newConnState(conn)
	p, err := packet.Read(cn.br, c.version, c.maxIn)
	if err != nil {
		return nil, fmt.Errorf("client: read CONNACK: %w", err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		// [MQTT-3.2.0-1] The first packet from the server is CONNACK.
		return nil, fmt.Errorf("%w: %s instead of CONNACK", ErrProtocol, p.Type())
	}
	if ack.ReasonCode != packet.Success {
		return nil, &ConnectError{Connack: ack}
	}
	c.applyConnack(cn, ack)
	return cn, nil
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
	br      *bufio.Reader
	gen     uint64
	connack *packet.Connack

	keepAlive time.Duration
	maxOut    int  // server's Maximum Packet Size
	maxQoS    byte // server's Maximum QoS
	retainOK  bool // server's Retain Available
	aliasMax  uint16

	lastWrite atomic.Int64 // unix nanoseconds of the last flush
	pingSent  atomic.Int64 // unix nanoseconds of the outstanding PINGREQ, 0 if none

	dead       chan struct{}
	writerDone chan struct{} // closed when writeLoop returns
	deadOnce   sync.Once
	err        error // set before dead is closed
}

func newConnState(conn net.Conn) *connState {
	return &connState{conn: conn, br: bufio.NewReaderSize(conn, 8192), dead: make(chan struct{}), writerDone: make(chan struct{})}
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
