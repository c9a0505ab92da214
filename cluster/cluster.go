// Package cluster joins mqttd nodes into one cluster over an embedded
// nats-server (routes between nodes, JetStream for what must outlive a
// node). It attaches to a broker only through the broker's hooks and its
// embedding API (Server.Publish, Server.Subscribe, Server.Disconnect):
//
//   - Messages cross by interest: each node holds one NATS subscription per
//     distinct MQTT filter its clients hold (in one queue group per node, so
//     a message matching several of them reaches the node once), and
//     forwards what its own clients publish. The receiving broker routes the
//     message again with its own topic index.
//   - Retained messages go to every node and into a JetStream key-value
//     bucket, read when a node starts.
//   - A client id is owned by one node (a key-value entry per id, changed
//     by compare-and-set); a node taking a client over asks the owner to
//     disconnect its client with reason 0x8E.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// Config describes one node.
type Config struct {
	Name   string   // cluster name: nodes with the same name form one cluster
	Node   string   // this node's name, unique and stable (default: the host name)
	Listen string   // host:port of this node's link to the others
	Peers  []string // host:port of the other nodes' links (this node's own address may be listed)
	Dir    string   // where JetStream keeps its files (required)
	Logger *slog.Logger

	// TLS for the links between nodes: both sides present a certificate
	// signed by the CA of CAFile. Either TLS or the three files, or neither.
	TLS                       *tls.Config
	CAFile, CertFile, KeyFile string

	// StartTimeout bounds Start's wait for the links and JetStream
	// (default 60 s).
	StartTimeout time.Duration
}

// Key-value buckets.
const (
	bucketRetained = "mqttd_retained"
	bucketOwners   = "mqttd_owners"
)

// Node is one member of the cluster. Add it to a broker as a hook
// (Server.AddHook) and call Start before the broker serves.
type Node struct {
	cfg  Config
	log  *slog.Logger
	boot string // distinguishes this run of the node

	srv *broker.Server
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream

	retained jetstream.KeyValue
	owners   jetstream.KeyValue

	mu      sync.Mutex
	clients map[string]map[string]struct{} // client id → filters (without $share/group/)
	refs    map[string]*interest           // filter → holders
	started bool
	ready   bool // started: forwarding and subscribing
	closed  bool

	pubMu     sync.Mutex     // one forward at a time: keeps each publisher's order on the link
	inbound   chan *nats.Msg // every subscription of the node, in arrival order
	republish sync.Map       // *broker.Message being published from the cluster → struct{}
	cancels   []func()
	ctl       *nats.Subscription
	rsub      *nats.Subscription
	kvq       chan kvOp
	ownq      [ownerWorkers]chan ownOp
	wg        sync.WaitGroup
	done      chan struct{}

	forwardedOut atomic.Int64
	forwardedIn  atomic.Int64
	takeoversOut atomic.Int64 // clients this node asked another node to disconnect
	takeoversIn  atomic.Int64 // clients this node disconnected for another
	dropped      atomic.Int64 // inbound messages that could not be decoded or published
}

type interest struct {
	n    int
	subs []*nats.Subscription
}

type kvOp struct {
	key  string
	body []byte // nil: delete
}

type ownOp struct {
	id    string
	claim bool // false: release
}

const ownerWorkers = 4

// inboundBuffer is how many messages from the cluster may wait for the
// broker. Past it NATS drops messages for this node (a slow consumer).
const inboundBuffer = 1 << 16

// New checks cfg and returns a node that is not started.
func New(cfg Config) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: cluster_name is empty")
	}
	if cfg.Node == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("cluster: cluster_node is not set and the host name is unknown: %v", err)
		}
		cfg.Node = h
	}
	if err := checkName(cfg.Name); err != nil {
		return nil, fmt.Errorf("cluster: cluster_name: %w", err)
	}
	if err := checkName(cfg.Node); err != nil {
		return nil, fmt.Errorf("cluster: cluster_node: %w", err)
	}
	if _, _, err := splitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("cluster: cluster_listen: %w", err)
	}
	for _, p := range cfg.Peers {
		if _, _, err := splitHostPort(p); err != nil {
			return nil, fmt.Errorf("cluster: cluster_peer: %w", err)
		}
	}
	if cfg.Dir == "" {
		return nil, errors.New("cluster: no directory for the cluster's state")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS == nil && (cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "") {
		t, err := linkTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.TLS = t
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("cluster", cfg.Name, "node", cfg.Node),
		boot:    strconv.FormatInt(time.Now().UnixNano(), 36),
		clients: make(map[string]map[string]struct{}), refs: make(map[string]*interest),
		done: make(chan struct{})}
	return n, nil
}

// linkTLS is mutual TLS for the links: each node verifies the other's
// certificate against the CA, as server and as client.
func linkTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("cluster: TLS needs cluster_cafile, cluster_certfile and cluster_keyfile")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: cluster_cafile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster: cluster_cafile %s: no certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: cluster_certfile/cluster_keyfile: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}, nil
}

// checkName accepts names made of letters, digits, '-', '_' and '.'.
func checkName(s string) error {
	if s == "" || len(s) > 128 {
		return fmt.Errorf("%q: 1 to 128 characters", s)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q: only letters, digits, '-', '_' and '.'", s)
		}
	}
	return nil
}

func splitHostPort(a string) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", a)
	}
	return h, port, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Node }

// Attach records the broker (broker.AttachHook).
func (n *Node) Attach(s *broker.Server) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return errors.New("cluster: node already attached to a server")
	}
	n.srv = s
	return nil
}

// Start runs the embedded NATS server, waits for JetStream, loads the
// cluster's retained messages into the broker and begins forwarding. Call
// it after the broker restored its store and before it serves clients.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	if n.srv == nil {
		n.mu.Unlock()
		return errors.New("cluster: Start before the node was added to a server")
	}
	if n.started {
		n.mu.Unlock()
		return errors.New("cluster: already started")
	}
	n.started = true
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.StartTimeout)
	defer cancel()
	if err := n.start(ctx); err != nil {
		n.Close()
		return err
	}
	return nil
}

func (n *Node) start(ctx context.Context) error {
	host, port, _ := splitHostPort(n.cfg.Listen)
	var routes []*url.URL
	for _, p := range n.cfg.Peers {
		scheme := "nats"
		if n.cfg.TLS != nil {
			scheme = "tls"
		}
		routes = append(routes, &url.URL{Scheme: scheme, Host: p})
	}
	opts := &server.Options{
		ServerName: n.cfg.Node,
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT, // unused: this process connects in process
		NoSigs:     true,
		NoLog:      true,
		JetStream:  true,
		StoreDir:   filepath.Join(n.cfg.Dir, "jetstream"),
		Cluster: server.ClusterOpts{Name: n.cfg.Name, Host: host, Port: port, TLSConfig: n.cfg.TLS,
			ConnectRetries: -1},
		Routes:         routes,
		MaxControlLine: 1 << 20,                        // subjects carry whole (encoded) MQTT topics
		MaxPayload:     packet.MaxRemainingLength + 16, // any MQTT message
		MaxPending:     1 << 30,
	}
	if n.cfg.TLS != nil {
		opts.Cluster.TLSTimeout = 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("cluster: nats server: %w", err)
	}
	ns.SetLoggerV2(&natsLogger{log: n.log}, false, false, false)
	n.ns = ns
	ns.Start()
	if !ns.ReadyForConnections(time.Until(deadline(ctx))) {
		return fmt.Errorf("cluster: nats server not ready (cluster_listen %s)", n.cfg.Listen)
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoEcho(), nats.Name("mqttd-"+n.cfg.Node),
		nats.MaxReconnects(-1), nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			n.log.Warn("cluster: nats error", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("cluster: connect to the embedded nats server: %w", err)
	}
	n.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	n.js = js
	replicas := min(3, 1+len(n.peersNotSelf()))
	n.retained, err = n.bucket(ctx, jetstream.KeyValueConfig{Bucket: bucketRetained, Replicas: replicas,
		Storage: jetstream.FileStorage, Description: "mqttd retained messages by topic"})
	if err != nil {
		return err
	}
	n.owners, err = n.bucket(ctx, jetstream.KeyValueConfig{Bucket: bucketOwners, Replicas: replicas,
		Storage: jetstream.FileStorage, Description: "mqttd client id → node"})
	if err != nil {
		return err
	}

	n.inbound = make(chan *nats.Msg, inboundBuffer)
	// Live retained messages first, then the bucket: a retained message set
	// while the bucket is read is applied after it.
	if n.rsub, err = nc.ChanSubscribe(subjRetained, n.inbound); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	if err := n.loadRetained(ctx); err != nil {
		return err
	}
	n.ctl, err = nc.Subscribe(subjControl+"."+encodeLevel(n.cfg.Node)+".takeover", n.onTakeoverRequest)
	if err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	n.kvq = make(chan kvOp, 4096)
	n.wg.Add(2)
	go n.receive()
	go n.writeRetained()
	for i := range n.ownq {
		n.ownq[i] = make(chan ownOp, 1024)
		n.wg.Add(1)
		go n.ownerWorker(n.ownq[i])
	}
	// Interest recorded before Start (sessions restored from the store
	// report nothing: see the package's limits).
	n.mu.Lock()
	for f, in := range n.refs {
		if err := n.subscribeLocked(f, in); err != nil {
			n.log.Warn("cluster: subscribe", "topic", f, "err", err)
		}
	}
	n.ready = true
	n.mu.Unlock()

	cancelAll, err := n.srv.Subscribe("#", 2, n.forward)
	if err != nil {
		return fmt.Errorf("cluster: inline subscription: %w", err)
	}
	n.mu.Lock()
	n.cancels = append(n.cancels, cancelAll)
	n.mu.Unlock()
	n.log.Info("cluster: node started", "listen", n.cfg.Listen, "peers", strings.Join(n.cfg.Peers, ","),
		"replicas", replicas)
	return nil
}

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Minute)
}

// peersNotSelf returns the peers other than this node's own address.
func (n *Node) peersNotSelf() []string {
	var out []string
	for _, p := range n.cfg.Peers {
		if p != n.cfg.Listen {
			out = append(out, p)
		}
	}
	return out
}

// bucket creates or opens a key-value bucket, retrying while JetStream
// elects its leaders.
func (n *Node) bucket(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := n.js.CreateOrUpdateKeyValue(cctx, c)
		cancel()
		if err == nil {
			return kv, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: jetstream bucket %s: %w (is a majority of the nodes up?)", c.Bucket, err)
		case <-time.After(200 * time.Millisecond):
		}
		n.log.Debug("cluster: waiting for jetstream", "bucket", c.Bucket, "err", err)
	}
}

// Close stops forwarding and the embedded NATS server. The broker keeps
// serving its own clients.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	cancels := n.cancels
	n.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	if n.nc != nil {
		n.nc.Close() // no more deliveries to n.inbound
	}
	close(n.done)
	n.wg.Wait()
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	return nil
}

// running reports whether the node forwards (started and not closed).
func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready && !n.closed
}

// ---- messages ----

// forward sends a message routed by the local broker to the nodes that
// want it: the inline subscription "#" (Start) sees every message but those
// on $-topics, which OnPublish forwards.
func (n *Node) forward(m *broker.Message) {
	if _, ok := n.republish.Load(m); ok {
		return // it came from the cluster: never forwarded again
	}
	if isSys(m.Topic) {
		return
	}
	body, err := encodeMessage(m, time.Now())
	if err != nil {
		if !errors.Is(err, errExpired) {
			n.log.Warn("cluster: cannot forward", "topic", m.Topic, "err", err)
		}
		return
	}
	subj := subjRetained
	if !m.Retain {
		subj = topicSubject(m.Topic)
	}
	n.pubMu.Lock()
	err = n.nc.Publish(subj, body)
	n.pubMu.Unlock()
	if err != nil {
		n.log.Warn("cluster: forward", "topic", m.Topic, "err", err)
		return
	}
	n.forwardedOut.Add(1)
	if m.Retain {
		op := kvOp{key: retainedKey(m.Topic)}
		if len(m.Payload) > 0 {
			op.body = body
		}
		select {
		case n.kvq <- op:
		case <-n.done:
		}
	}
}

// OnPublish forwards client messages on $-topics (not $SYS), which the
// inline "#" subscription does not see (broker.PublishHook).
func (n *Node) OnPublish(c *broker.ClientInfo, p *packet.Publish) error {
	if !strings.HasPrefix(p.Topic, "$") || isSys(p.Topic) || !n.running() {
		return nil
	}
	n.forward(&broker.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Props: p.Props,
		Created: time.Now()})
	return nil
}

// receive publishes what other nodes forward, in arrival order.
func (n *Node) receive() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case msg := <-n.inbound:
			n.publishFromCluster(msg.Data)
		}
	}
}

func (n *Node) publishFromCluster(body []byte) {
	m, err := decodeMessage(body)
	if err != nil {
		n.dropped.Add(1)
		n.log.Warn("cluster: bad message from the cluster", "err", err)
		return
	}
	n.forwardedIn.Add(1)
	n.republish.Store(m, struct{}{})
	err = n.srv.Publish(m)
	n.republish.Delete(m)
	if err != nil && !errors.Is(err, broker.ErrServerClosed) {
		n.dropped.Add(1)
		n.log.Warn("cluster: cannot publish a message from the cluster", "topic", m.Topic, "err", err)
	}
}

// ---- retained messages ----

func retainedKey(t string) string { return "t." + base64.RawURLEncoding.EncodeToString([]byte(t)) }

// loadRetained publishes every retained message of the bucket to the local
// broker (which has no client yet).
func (n *Node) loadRetained(ctx context.Context) error {
	w, err := n.retained.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("cluster: read retained messages: %w", err)
	}
	defer w.Stop()
	count := 0
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: read retained messages: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("cluster: read retained messages: watcher stopped")
			}
			if e == nil { // the initial values are all read
				n.log.Info("cluster: retained messages loaded", "count", count)
				return nil
			}
			count++
			n.publishFromCluster(e.Value())
		}
	}
}

// writeRetained keeps the bucket up to date with the retained messages set
// and cleared on this node, in order.
func (n *Node) writeRetained() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case op := <-n.kvq:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var err error
			if op.body == nil {
				err = n.retained.Delete(ctx, op.key)
			} else {
				_, err = n.retained.Put(ctx, op.key, op.body)
			}
			cancel()
			if err != nil {
				n.log.Warn("cluster: retained message not stored in the cluster", "err", err)
			}
		}
	}
}

// ---- interest ----

// OnSubscription keeps one NATS subscription per distinct filter held by
// the node's clients (broker.SubscriptionHook).
func (n *Node) OnSubscription(c *broker.ClientInfo, e broker.SubscriptionEvent) {
	f := e.Filter
	if _, real, shared, err := topic.ParseShare(f); err == nil && shared {
		f = real
	}
	if isSys(f) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if e.Removed {
		n.dropLocked(c.ClientID, f)
		return
	}
	fs := n.clients[c.ClientID]
	if fs == nil {
		fs = make(map[string]struct{})
		n.clients[c.ClientID] = fs
	}
	if _, ok := fs[f]; ok {
		return
	}
	fs[f] = struct{}{}
	in := n.refs[f]
	if in == nil {
		in = &interest{}
		n.refs[f] = in
	}
	in.n++
	if in.n == 1 && n.ready && !n.closed {
		if err := n.subscribeLocked(f, in); err != nil {
			n.log.Warn("cluster: subscribe", "client", c.ClientID, "topic", f, "err", err)
		}
	}
}

// subscribeLocked makes the NATS subscriptions of filter f. All of a
// node's subscriptions are in one queue group named after the node, so a
// message matching several of them is delivered to the node once.
func (n *Node) subscribeLocked(f string, in *interest) error {
	subjects, err := filterSubjects(f)
	if err != nil {
		return err
	}
	for _, s := range subjects {
		sub, err := n.nc.ChanQueueSubscribe(s, "node."+n.cfg.Node, n.inbound)
		if err != nil {
			return err
		}
		in.subs = append(in.subs, sub)
	}
	return nil
}

func (n *Node) dropLocked(client, f string) {
	fs := n.clients[client]
	if _, ok := fs[f]; !ok {
		return
	}
	delete(fs, f)
	if len(fs) == 0 {
		delete(n.clients, client)
	}
	in := n.refs[f]
	if in == nil {
		return
	}
	in.n--
	if in.n > 0 {
		return
	}
	for _, s := range in.subs {
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			n.log.Warn("cluster: unsubscribe", "topic", f, "err", err)
		}
	}
	delete(n.refs, f)
}

// Interest returns the filters this node holds NATS subscriptions for,
// with how many local clients hold each.
func (n *Node) Interest() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.refs))
	for f, in := range n.refs {
		out[f] = in.n
	}
	return out
}

// ---- sessions and client id ownership ----

// OnSession claims a client id for this node when a session is created or
// resumed here, and drops a client's interest and ownership when its
// session ends (broker.SessionHook).
func (n *Node) OnSession(c *broker.ClientInfo, e broker.SessionEvent) {
	id := c.ClientID
	if e == broker.SessionEnded {
		n.mu.Lock()
		for f := range n.clients[id] {
			n.dropLocked(id, f)
		}
		n.mu.Unlock()
	}
	if id == "" || !n.running() {
		return
	}
	op := ownOp{id: id, claim: e != broker.SessionEnded}
	h := fnv.New32a()
	h.Write([]byte(id))
	select {
	case n.ownq[h.Sum32()%ownerWorkers] <- op:
	case <-n.done:
	}
}

func ownerKey(id string) string { return "c." + base64.RawURLEncoding.EncodeToString([]byte(id)) }

func (n *Node) ownerWorker(q chan ownOp) {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case op := <-q:
			if op.claim {
				n.claim(op.id)
			} else {
				n.release(op.id)
			}
		}
	}
}

// claim makes this node the owner of client id id. When another node owns
// it, that node is asked to disconnect its client first [MQTT-3.1.4-3].
// Compare-and-set on the entry's revision: of nodes racing for one id, the
// last to write has asked the others to let go.
func (n *Node) claim(id string) {
	key := ownerKey(id)
	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e, err := n.owners.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = n.owners.Create(ctx, key, []byte(n.cfg.Node))
		case err == nil:
			owner := string(e.Value())
			if owner == n.cfg.Node {
				cancel()
				return
			}
			n.askDisconnect(owner, id)
			_, err = n.owners.Update(ctx, key, []byte(n.cfg.Node), e.Revision())
		}
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence") {
			continue // another node wrote first: read again
		}
		n.log.Warn("cluster: client id ownership not recorded", "client", id, "err", err)
		return
	}
	n.log.Warn("cluster: client id ownership: too many concurrent claims", "client", id)
}

// release deletes the ownership entry of id if this node holds it.
func (n *Node) release(id string) {
	key := ownerKey(id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := n.owners.Get(ctx, key)
	if err != nil || string(e.Value()) != n.cfg.Node {
		return
	}
	if err := n.owners.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil &&
		!strings.Contains(err.Error(), "wrong last sequence") {
		n.log.Debug("cluster: release client id", "client", id, "err", err)
	}
}

// askDisconnect asks node owner to disconnect its client id.
func (n *Node) askDisconnect(owner, id string) {
	n.takeoversOut.Add(1)
	_, err := n.nc.Request(subjControl+"."+encodeLevel(owner)+".takeover", []byte(id), 2*time.Second)
	if err != nil {
		n.log.Warn("cluster: owner did not answer a takeover", "client", id, "owner", owner, "err", err)
	}
}

// onTakeoverRequest disconnects a local client another node took over:
// v5 clients are sent DISCONNECT 0x8E [MQTT-3.1.4-3].
func (n *Node) onTakeoverRequest(msg *nats.Msg) {
	id := string(msg.Data)
	if n.srv.Disconnect(id, packet.SessionTakenOver) {
		n.takeoversIn.Add(1)
		n.log.Info("cluster: client taken over by another node", "client", id)
	}
	if err := msg.Respond([]byte("ok")); err != nil {
		n.log.Debug("cluster: takeover answer", "client", id, "err", err)
	}
}

// ---- state ----

// Stats are the node's cluster counters.
type Stats struct {
	Nodes        int   // nodes this node has a route to, plus itself
	LinksUp      int   // routes up
	ForwardedOut int64 // messages sent to the cluster
	ForwardedIn  int64 // messages received from the cluster
	TakeoversOut int64 // takeovers this node asked of another
	TakeoversIn  int64 // clients this node disconnected for another
	Dropped      int64 // messages from the cluster not published
	Filters      int   // distinct filters with a NATS subscription
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	s := Stats{ForwardedOut: n.forwardedOut.Load(), ForwardedIn: n.forwardedIn.Load(),
		TakeoversOut: n.takeoversOut.Load(), TakeoversIn: n.takeoversIn.Load(), Dropped: n.dropped.Load()}
	n.mu.Lock()
	s.Filters = len(n.refs)
	ns := n.ns
	n.mu.Unlock()
	if ns != nil {
		s.LinksUp = linksUp(ns)
		s.Nodes = 1 + s.LinksUp
	}
	return s
}

// linksUp counts the distinct remote servers this node has routes to.
func linksUp(ns *server.Server) int {
	rz, err := ns.Routez(nil)
	if err != nil {
		return 0
	}
	seen := map[string]bool{}
	for _, r := range rz.Routes {
		seen[r.RemoteID] = true
	}
	return len(seen)
}

// natsLogger passes the embedded server's notices and errors to slog.
type natsLogger struct{ log *slog.Logger }

func (l *natsLogger) Noticef(format string, v ...any) {
	l.log.Debug("nats: " + fmt.Sprintf(format, v...))
}
func (l *natsLogger) Warnf(format string, v ...any) { l.log.Warn("nats: " + fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any) {
	l.log.Error("nats: " + fmt.Sprintf(format, v...))
}
func (l *natsLogger) Errorf(format string, v ...any) {
	l.log.Warn("nats: " + fmt.Sprintf(format, v...))
}
func (l *natsLogger) Debugf(format string, v ...any) {}
func (l *natsLogger) Tracef(format string, v ...any) {}
