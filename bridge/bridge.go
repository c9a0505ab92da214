package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
)

// LocalDialer opens an in-process connection to the local broker
// (broker.Server.DialLocal).
type LocalDialer func() (net.Conn, error)

// Stats are a bridge's counters.
type Stats struct {
	Name       string
	Connected  bool
	Address    string // the remote address in use ("" when down)
	MsgsOut    uint64 // messages sent to the remote and acknowledged (QoS 0: written)
	BytesOut   uint64 // their payload bytes
	MsgsIn     uint64 // messages received from the remote and published locally
	BytesIn    uint64
	Queued     int    // outbound messages taken from the local session, not yet acknowledged by the remote
	Refused    uint64 // outbound messages the remote refused (negative acknowledgement); dropped
	Reconnects uint64 // remote connections established after the first
	Dropped    uint64 // QoS 0 messages from the local session dropped because the bridge's queue was full
	// Private: the 3.x remote accepted the bridge bit (try_private), so it
	// does not send our own messages back; false also when not tried.
	Private bool
}

// Bridge is one running `connection`.
type Bridge struct {
	cfg   *Config
	local LocalDialer
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	lc *client.Client // the local connection

	mu       sync.Mutex
	rc       *client.Client // the remote connection, nil when down
	rcWake   chan struct{}  // closed when rc changes
	pending  []*outMsg      // taken from the local session, to send (in order)
	inflight map[uint64]*outMsg
	seq      uint64
	addr     int  // index of the address to try next
	cur      int  // index of the address in use
	private  bool // try_private still believed accepted
	lastMsg  time.Time
	kick     chan struct{} // lazy start: a message arrived
	started  bool          // a remote connection was made at least once

	msgsOut, bytesOut, msgsIn, bytesIn, refused, reconnects atomic.Uint64
}

type outMsg struct {
	seq uint64
	m   *client.Message
}

// Start runs the bridge c; local dials the local broker. It returns once the
// local connection is up; the remote side connects in the background.
func Start(c *Config, local LocalDialer, log *slog.Logger) (*Bridge, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{cfg: c, local: local, log: log.With("bridge", c.Name), done: make(chan struct{}),
		rcWake: make(chan struct{}), inflight: map[uint64]*outMsg{}, private: c.TryPrivate,
		kick: make(chan struct{}, 1)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	var subs []packet.Subscription
	for _, t := range c.Topics {
		if t.Direction.out() {
			// No Local: what this bridge publishes locally (from the remote)
			// never goes back out [MQTT-3.8.3-3]; Retain As Published keeps
			// the retain flag for the remote [MQTT-3.3.1-12].
			subs = append(subs, packet.Subscription{Filter: t.LocalTopic, QoS: t.QoS, NoLocal: true, RetainAsPublished: true})
		}
	}
	opts := client.Options{
		ClientID: c.LocalID, Version: packet.V5, PersistentSession: c.LocalCleanSession != 1,
		ManualAck: true, AutoReconnect: true, ConnectRetry: true, MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second, KeepAlive: -1, MaxQueuedQoS0: 10000,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) { return local() },
		Logger: b.log.With("side", "local"),
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	lc, err := client.Dial(ctx, "mqtt://local", opts)
	if err != nil {
		b.cancel()
		return nil, fmt.Errorf("bridge %s: local connection: %w", c.Name, err)
	}
	b.lc = lc
	if len(subs) > 0 {
		// Subscribed on every local connection: the retained messages of
		// the out topics go to the remote each time, as in Mosquitto.
		if _, err := lc.Subscribe(ctx, subs, b.fromLocal); err != nil {
			lc.Close()
			b.cancel()
			return nil, fmt.Errorf("bridge %s: local subscribe: %w", c.Name, err)
		}
	}
	b.notifyLocal(false)
	go b.run()
	go b.forward()
	return b, nil
}

// Name returns the bridge's name.
func (b *Bridge) Name() string { return b.cfg.Name }

// Config returns the bridge's configuration.
func (b *Bridge) Config() *Config { return b.cfg }

// Stop ends the bridge: the remote connection is closed (its will says 0),
// the local session stays with what was not yet acknowledged.
func (b *Bridge) Stop() {
	b.cancel()
	<-b.done
	b.mu.Lock()
	rc := b.rc
	b.mu.Unlock()
	if rc != nil {
		rc.Close()
	}
	b.notifyLocal(false)
	b.lc.Close()
}

// Stats returns the bridge's counters.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	s := Stats{Name: b.cfg.Name, Connected: b.rc != nil, Queued: len(b.pending) + len(b.inflight),
		Private: b.private && b.started && b.cfg.Version != packet.V5 && b.cfg.Addresses[b.cur].URL == ""}
	if b.rc != nil {
		s.Address = b.cfg.Addresses[b.cur].String()
	}
	b.mu.Unlock()
	s.MsgsOut, s.BytesOut = b.msgsOut.Load(), b.bytesOut.Load()
	s.MsgsIn, s.BytesIn = b.msgsIn.Load(), b.bytesIn.Load()
	s.Refused, s.Reconnects = b.refused.Load(), b.reconnects.Load()
	s.Dropped = b.lc.Dropped()
	return s
}

// fromLocal takes a message of the local session for the remote.
func (b *Bridge) fromLocal(m *client.Message) {
	b.mu.Lock()
	b.seq++
	b.pending = append(b.pending, &outMsg{seq: b.seq, m: m})
	b.lastMsg = time.Now()
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// forward sends pending messages over the current remote connection.
func (b *Bridge) forward() {
	for {
		b.mu.Lock()
		rc, wake := b.rc, b.rcWake
		var next *outMsg
		if rc != nil && len(b.pending) > 0 {
			next = b.pending[0]
			b.pending = b.pending[1:]
			b.inflight[next.seq] = next
		}
		b.mu.Unlock()
		if next == nil {
			select {
			case <-b.ctx.Done():
				return
			case <-wake:
			case <-b.kick:
			}
			continue
		}
		b.send(rc, next)
	}
}

// send publishes o on rc; once the remote has acknowledged it, o is
// acknowledged to the local broker. A lost connection puts it back.
func (b *Bridge) send(rc *client.Client, o *outMsg) {
	m := o.m
	name, qos, ok := b.cfg.RemoteTopic(m.Topic)
	if !ok { // a subscription's message always maps; keep the broker consistent anyway
		b.finish(o, nil)
		return
	}
	qos = min(qos, m.QoS)
	po := client.PublishOptions{QoS: qos, Retain: m.Retain && b.cfg.OutgoingRetain}
	if b.cfg.Version == packet.V5 && m.Props != nil {
		po.Props = forwardProps(m.Props)
	}
	err := rc.PublishAsync(b.ctx, name, m.Payload, po, func(err error) { b.finish(o, err) })
	if err != nil {
		b.finish(o, err)
	}
}

// forwardProps keeps the properties that travel with a message.
func forwardProps(p *packet.Properties) *packet.Properties {
	return &packet.Properties{PayloadFormat: p.PayloadFormat, MessageExpiry: p.MessageExpiry,
		ContentType: p.ContentType, ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData,
		User: p.User}
}

// finish records the remote's answer for o.
func (b *Bridge) finish(o *outMsg, err error) {
	var ack *client.AckError
	switch {
	case err == nil:
		b.msgsOut.Add(1)
		b.bytesOut.Add(uint64(len(o.m.Payload)))
	case errors.As(err, &ack):
		// The remote refused it (e.g. not authorized): it will not be
		// accepted later either, so it is dropped, counted and logged.
		b.refused.Add(1)
		b.log.Warn("remote broker refused a bridged message; dropped", "topic", o.m.Topic, "err", err)
	default:
		// Not delivered: send it again on the next remote connection.
		b.mu.Lock()
		if _, ok := b.inflight[o.seq]; ok {
			delete(b.inflight, o.seq)
			b.pending = append(b.pending, o)
			sort.Slice(b.pending, func(i, j int) bool { return b.pending[i].seq < b.pending[j].seq })
		}
		b.mu.Unlock()
		return
	}
	b.mu.Lock()
	delete(b.inflight, o.seq)
	b.mu.Unlock()
	// Only now is the local broker told: until here its store keeps it.
	if err := b.lc.Ack(o.m); err != nil {
		b.log.Debug("local acknowledgement", "err", err)
	}
}

// fromRemote publishes an inbound message locally and acknowledges it to
// the remote once the local broker has.
func (b *Bridge) fromRemote(rc *client.Client, m *client.Message) {
	name, ok := b.cfg.LocalTopic(m.Topic)
	if !ok {
		name = m.Topic // a remote subscription overlapping ours: as Mosquitto, unmapped
	}
	po := client.PublishOptions{QoS: m.QoS, Retain: m.Retain}
	if m.Props != nil {
		po.Props = forwardProps(m.Props)
	}
	b.mu.Lock()
	b.lastMsg = time.Now()
	b.mu.Unlock()
	err := b.lc.PublishAsync(b.ctx, name, m.Payload, po, func(err error) {
		if err != nil {
			var ack *client.AckError
			if !errors.As(err, &ack) {
				return // not published: the remote sends it again
			}
			b.log.Warn("local broker refused a bridged message; dropped", "topic", name, "err", err)
		} else {
			b.msgsIn.Add(1)
			b.bytesIn.Add(uint64(len(m.Payload)))
		}
		_ = rc.Ack(m)
	})
	if err != nil {
		b.log.Warn("local publish", "topic", name, "err", err)
	}
}

// run connects the remote side and keeps it connected.
func (b *Bridge) run() {
	defer close(b.done)
	sleep := b.cfg.BackoffBase
	for b.ctx.Err() == nil {
		if b.cfg.Start == StartLazy && !b.waitThreshold() {
			return
		}
		rc, err := b.connect()
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			b.log.Warn("bridge connection failed", "remote", b.cfg.Addresses[b.addr].String(), "err", err)
			b.mu.Lock()
			b.addr = (b.addr + 1) % len(b.cfg.Addresses)
			b.mu.Unlock()
			if b.cfg.Start == StartOnce && b.started {
				return
			}
			if !b.wait(b.restartDelay(&sleep)) {
				return
			}
			continue
		}
		sleep = b.cfg.BackoffBase
		b.up(rc)
		lost := b.serve(rc)
		b.down(rc)
		if b.ctx.Err() != nil {
			return
		}
		if b.cfg.Start == StartOnce {
			b.log.Info("bridge stopped (start_type once)")
			return
		}
		if lost {
			b.mu.Lock()
			b.addr = (b.addr + 1) % len(b.cfg.Addresses)
			b.mu.Unlock()
			if !b.wait(b.restartDelay(&sleep)) {
				return
			}
		}
	}
}

// restartDelay is restart_timeout, or Mosquitto's backoff with
// decorrelated jitter between base and cap.
func (b *Bridge) restartDelay(sleep *time.Duration) time.Duration {
	if b.cfg.RestartTimeout > 0 {
		return b.cfg.RestartTimeout
	}
	lo, hi := b.cfg.BackoffBase, max(3**sleep, b.cfg.BackoffBase+1)
	*sleep = min(b.cfg.BackoffCap, lo+rand.N(hi-lo))
	return *sleep
}

func (b *Bridge) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// waitThreshold waits until threshold messages wait for a lazy bridge.
func (b *Bridge) waitThreshold() bool {
	for {
		b.mu.Lock()
		n := len(b.pending)
		b.mu.Unlock()
		if n >= b.cfg.Threshold {
			return true
		}
		select {
		case <-b.ctx.Done():
			return false
		case <-b.kick:
		case <-time.After(time.Second):
		}
	}
}

// serve waits until rc is lost (true), or a lazy bridge has been idle, or
// a secondary address should give way to the primary (false).
func (b *Bridge) serve(rc *client.Client) bool {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastProbe := time.Now()
	for {
		select {
		case <-rc.Done():
			return true
		case <-b.ctx.Done():
			return false
		case <-tick.C:
		}
		b.mu.Lock()
		idle := time.Since(b.lastMsg)
		cur := b.cur
		empty := len(b.pending) == 0 && len(b.inflight) == 0
		b.mu.Unlock()
		if b.cfg.Start == StartLazy && empty && idle > b.cfg.IdleTimeout {
			b.log.Info("bridge idle; disconnecting", "idle_timeout", b.cfg.IdleTimeout)
			b.disconnect(rc)
			return false
		}
		if !b.cfg.RoundRobin && cur != 0 && time.Since(lastProbe) >= 5*time.Second {
			// Mosquitto returns to the primary address once it answers.
			lastProbe = time.Now()
			a := b.cfg.Addresses[0]
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(a.Host, fmt.Sprint(a.Port)), 2*time.Second)
			if err == nil {
				conn.Close()
				b.log.Info("primary bridge address is back; reconnecting to it", "remote", a.String())
				b.mu.Lock()
				b.addr = 0
				b.mu.Unlock()
				b.disconnect(rc)
				return false
			}
		}
	}
}

func (b *Bridge) disconnect(rc *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if b.cfg.Notifications && !b.cfg.NotificationsLocalOnly {
		_ = rc.Publish(ctx, b.cfg.NotificationTopic, []byte("0"), client.PublishOptions{QoS: 1, Retain: true})
	}
	_ = rc.Disconnect(ctx)
}

// up makes rc the current remote connection.
func (b *Bridge) up(rc *client.Client) {
	b.mu.Lock()
	b.rc = rc
	close(b.rcWake)
	b.rcWake = make(chan struct{})
	if b.started {
		b.reconnects.Add(1)
	}
	b.started = true
	b.lastMsg = time.Now()
	b.mu.Unlock()
	b.log.Info("bridge connected", "remote", b.cfg.Addresses[b.cur].String())
	b.notifyLocal(true)
}

// down forgets rc; what was in flight on it goes back to pending.
func (b *Bridge) down(rc *client.Client) {
	rc.Close()
	b.mu.Lock()
	if b.rc == rc {
		b.rc = nil
		close(b.rcWake)
		b.rcWake = make(chan struct{})
	}
	for seq, o := range b.inflight {
		delete(b.inflight, seq)
		b.pending = append(b.pending, o)
	}
	sort.Slice(b.pending, func(i, j int) bool { return b.pending[i].seq < b.pending[j].seq })
	b.mu.Unlock()
	b.log.Info("bridge disconnected", "err", rc.Err())
	b.notifyLocal(false)
}

// notifyLocal publishes the state notification on the local broker.
func (b *Bridge) notifyLocal(up bool) {
	if !b.cfg.Notifications {
		return
	}
	p := []byte("0")
	if up {
		p = []byte("1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.lc.Publish(ctx, b.cfg.NotificationTopic, p, client.PublishOptions{QoS: 1, Retain: true}); err != nil {
		b.log.Debug("local bridge notification", "topic", b.cfg.NotificationTopic, "err", err)
	}
}

// connect makes one remote connection, starting with the address in turn.
func (b *Bridge) connect() (*client.Client, error) {
	c := b.cfg
	b.mu.Lock()
	idx := b.addr
	b.mu.Unlock()
	a := c.Addresses[idx]
	tlsConf, err := b.tlsConfig(a.Host)
	if err != nil {
		return nil, err
	}
	url := "tcp://" + a.String()
	if a.URL != "" {
		url = a.URL
	}
	var rc *client.Client
	ready := make(chan struct{}) // closed once rc is set
	opts := client.Options{
		ClientID: c.RemoteID, Version: c.Version, PersistentSession: !c.CleanSession,
		KeepAlive: c.KeepAlive, ManualAck: true, MaxPacketSize: c.MaxPacketSize, MaxQueuedQoS0: 10000,
		Logger: b.log.With("side", "remote"), ConnectTimeout: 10 * time.Second,
	}
	if c.HasRemoteUser {
		opts.Username = c.RemoteUser
	}
	if c.HasRemotePass {
		opts.Password = []byte(c.RemotePass)
	}
	if c.Notifications && !c.NotificationsLocalOnly {
		// The remote publishes 0 when the link dies, as Mosquitto sets it.
		opts.Will = &packet.Will{Topic: c.NotificationTopic, Payload: []byte("0"), QoS: 1, Retain: true}
	}
	if a.URL != "" && tlsConf != nil {
		opts.TLSConfig = tlsConf
	}
	b.mu.Lock()
	private := b.private && c.Version != packet.V5 && a.URL == ""
	b.mu.Unlock()
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{}
		if c.BindAddress != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.BindAddress)}
		}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil || a.URL != "" {
			return conn, err
		}
		if tlsConf != nil {
			tc := tls.Client(conn, tlsConf)
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, err
			}
			conn = tc
		}
		if private {
			conn = &privateConn{Conn: conn}
		}
		return conn, nil
	}
	opts.DefaultHandler = func(m *client.Message) {
		// A resumed session's messages may arrive before Dial returns.
		select {
		case <-ready:
			b.fromRemote(rc, m)
		case <-b.ctx.Done():
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	rcNew, err := client.Dial(ctx, url, opts)
	var ce *client.ConnectError
	if err != nil && private && errors.As(err, &ce) && ce.Connack.ReasonCode == packet.UnsupportedProtocolVersion {
		// The remote does not know the bridge bit: as Mosquitto, try
		// again without it.
		b.log.Info("remote broker refused try_private; connecting without it", "remote", a.String())
		b.mu.Lock()
		b.private = false
		b.mu.Unlock()
		return b.connect()
	}
	if err != nil {
		return nil, err
	}
	rc = rcNew
	close(ready)
	b.mu.Lock()
	b.cur = idx
	b.mu.Unlock()
	var subs []packet.Subscription
	for _, t := range c.Topics {
		if t.Direction.in() {
			s := packet.Subscription{Filter: t.RemoteTopic, QoS: t.QoS}
			if c.Version == packet.V5 {
				// [MQTT-3.8.3-3] No Local: what we publish there never comes back.
				s.NoLocal, s.RetainAsPublished = true, true
			}
			subs = append(subs, s)
		}
	}
	if len(subs) > 0 {
		if _, err := rc.Subscribe(ctx, subs, func(m *client.Message) { b.fromRemote(rc, m) }); err != nil {
			rc.Close()
			return nil, fmt.Errorf("remote subscribe: %w", err)
		}
	}
	if c.AttemptUnsubscribe && !c.CleanSession {
		// bridge_attempt_unsubscribe: an out-only topic may have been an
		// in topic of an earlier configuration, whose subscription the
		// remote's persistent session still holds.
		var stale []string
		for _, t := range c.Topics {
			if !t.Direction.in() && !slices.Contains(stale, t.RemoteTopic) && !subscribed(subs, t.RemoteTopic) {
				stale = append(stale, t.RemoteTopic)
			}
		}
		if len(stale) > 0 {
			if _, err := rc.Unsubscribe(ctx, stale...); err != nil {
				b.log.Debug("remote unsubscribe", "err", err)
			}
		}
	}
	if c.Notifications && !c.NotificationsLocalOnly {
		if err := rc.PublishAsync(ctx, c.NotificationTopic, []byte("1"), client.PublishOptions{QoS: 1, Retain: true}, nil); err != nil {
			b.log.Debug("remote bridge notification", "err", err)
		}
	}
	return rc, nil
}

func subscribed(subs []packet.Subscription, filter string) bool {
	for _, s := range subs {
		if s.Filter == filter {
			return true
		}
	}
	return false
}

// tlsConfig builds the remote's TLS configuration, nil without TLS.
func (b *Bridge) tlsConfig(host string) (*tls.Config, error) {
	c := b.cfg
	if !c.TLS() {
		return nil, nil
	}
	conf := &tls.Config{ServerName: host, InsecureSkipVerify: c.Insecure, MinVersion: tls.VersionTLS12}
	if c.TLSVersion == "tlsv1.3" {
		conf.MinVersion = tls.VersionTLS13
	}
	if c.ALPN != "" {
		conf.NextProtos = []string{c.ALPN}
	}
	pool := x509.NewCertPool()
	var files []string
	if c.CAFile != "" {
		files = append(files, c.CAFile)
	}
	if c.CAPath != "" {
		ents, err := os.ReadDir(c.CAPath)
		if err != nil {
			return nil, fmt.Errorf("bridge_capath: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				files = append(files, filepath.Join(c.CAPath, e.Name()))
			}
		}
	}
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("bridge CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) && f == c.CAFile {
			return nil, fmt.Errorf("bridge_cafile %s: no PEM certificate", f)
		}
	}
	conf.RootCAs = pool
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bridge certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// privateConn sets the bridge bit (0x80) in the protocol level of the
// CONNECT, the first packet written: try_private for 3.1 and 3.1.1.
type privateConn struct {
	net.Conn
	done bool
}

func (p *privateConn) Write(b []byte) (int, error) {
	if !p.done {
		p.done = true
		if i := levelOffset(b); i > 0 {
			c := append([]byte(nil), b...)
			c[i] |= 0x80
			return p.Conn.Write(c)
		}
	}
	return p.Conn.Write(b)
}

// levelOffset finds the protocol level byte of an encoded CONNECT: after
// the fixed header and the protocol name; 0 if b is not one.
func levelOffset(b []byte) int {
	if len(b) < 2 || b[0] != 0x10 {
		return 0
	}
	i := 1
	for i < len(b) && i < 5 && b[i]&0x80 != 0 {
		i++
	}
	i++ // last remaining-length byte
	if i+2 > len(b) {
		return 0
	}
	n := int(b[i])<<8 | int(b[i+1])
	i += 2 + n
	if i >= len(b) {
		return 0
	}
	return i
}
