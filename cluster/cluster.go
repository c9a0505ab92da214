// Package cluster joins mqttd nodes into one cluster over an embedded
// nats-server (routes between nodes, JetStream for what must outlive a
// node). It attaches to a broker only through the broker's hooks and its
// embedding API (Server.Publish, Server.Subscribe, Server.Disconnect):
//
//   - Messages cross by interest: each node holds one NATS subscription per
//     distinct MQTT filter its clients hold (in one queue group per node, so
//     a message matching several of them reaches the node once), and
//     forwards what its own clients publish. The receiving broker routes the
//     message again with its own topic index. Filters are taken as the
//     broker routes them (after a listener's mount point), from the
//     subscription events and, at Start, from the sessions the broker
//     already holds (restored from its store).
//   - A shared subscription group gets each message once in the cluster,
//     wherever its members are (shared.go): the nodes with members hold
//     NATS queue subscriptions in one queue group per group and filter.
//   - Messages from the cluster wait in a queue bounded by bytes; a node
//     that falls behind asks the others to hold their QoS 1 and 2 messages
//     (back-pressure on the publishers, bounded in time), and counts and
//     logs what it drops.
//   - Retained messages go to every node and into a JetStream key-value
//     bucket, read when a node starts and then watched: every node applies
//     the bucket's updates in its order, so all converge on its value per
//     topic (retained.go).
//   - A client id is owned by one node (a key-value entry per id, changed
//     by compare-and-set), claimed before CONNACK; a node taking a client
//     over asks the owner to disconnect its client with reason 0x8E.
//   - Persistent sessions are copied into a replicated bucket as the broker
//     stores them, and move with their client to the node it connects to
//     (sessions.go).
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/metrics"
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

	// InboundBytes bounds the messages from the cluster waiting for the
	// broker (default 128 MiB): past it a QoS 0 message is dropped, and a
	// QoS 1 or 2 message past twice it (they have the second half to
	// themselves). Each drop is counted (Stats) and logged.
	InboundBytes int
	// DropLogInterval is the window of the drop warnings: at most one line
	// per window, with the counts of the window (default 10 s).
	DropLogInterval time.Duration
	// BackPressureWait bounds how long the forwarding of one QoS 1 or 2
	// message waits while another node says it is congested (default 5 s);
	// see congestion.
	BackPressureWait time.Duration
	// AdoptAfter is how long the link to a node must stay lost before the
	// nodes of the majority adopt its persistent sessions (default 15 s):
	// they queue its clients' messages again, and publish the wills it
	// owed (sessions.go).
	AdoptAfter time.Duration
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

	retained   jetstream.KeyValue
	owners     jetstream.KeyValue
	sessions   jetstream.KeyValue // persistent sessions (sessions.go)
	sessStream jetstream.Stream   // the stream behind sessions
	sessPrefix string             // subject prefix of the keys of sessions
	entries    entryStates        // which queue entries need more than one deletion (sessions.go)

	mu      sync.Mutex
	clients map[string]map[string]struct{} // client id → filters (without $share/group/)
	refs    map[string]*interest           // filter → holders
	walk    *walkMarks                     // while Start walks the broker's subscriptions
	started bool
	ready   bool // started: forwarding and subscribing
	closed  bool

	pubMu     sync.Mutex     // one forward at a time: keeps each publisher's order on the link
	inbound   chan *nats.Msg // every subscription of the node, in arrival order
	inq       inQueue        // what receive took from inbound, for publishLoop
	cong      congestion     // other nodes that asked for back-pressure
	csub      *nats.Subscription
	republish sync.Map // *broker.Message being published from the cluster → struct{}
	cancels   []func()
	ctl       *nats.Subscription
	rsub      *nats.Subscription
	kvq       chan kvOp
	ownq      [ownerWorkers]chan ownOp
	wg        sync.WaitGroup
	done      chan struct{}

	forwardedOut atomic.Int64
	forwardedIn  atomic.Int64
	takeoversOut atomic.Int64       // clients this node asked another node to disconnect
	takeoversIn  atomic.Int64       // clients this node disconnected for another
	sessionsIn   atomic.Int64       // sessions this node imported from another (sessions.go)
	adoptedIn    atomic.Int64       // of those, sessions of a node that went away, adopted without a CONNECT
	adopting     sync.Map           // client id → *adoption under way (sessions.go)
	conns        inflight           // CONNECTs between their claim and their end (connecting.go)
	moving       sync.Map           // client id → former owner, while a move of its session here is unfinished (sessions.go)
	adoptRetry   sync.Map           // lost node → when its adoption failed in part: watchLinks tries again (sessions.go)
	linkWake     chan struct{}      // a route came or went: watchLinks looks at once (acks.go)
	gate         holdGate           // refuses acknowledgements until a lost node's sessions are held (holdgate.go)
	linkLostAt   atomic.Int64       // when watchRoutes last saw a node's links go (Unix ns), for readFirstWait
	held         sync.Map           // client id → node it is held for ("": being taken here), sessions held for a lost node (standby.go)
	linksUp      atomic.Int32       // links to other nodes, as watchLinks last saw them
	linksChecked atomic.Int64       // when haveMajority last counted them itself (unix ns)
	size         int                // nodes in the cluster: this one and its peers (haveMajority)
	arrived      atomic.Int64       // messages receive took from inbound
	settled      atomic.Int64       // of those, published to the broker or dropped (drainInbound)
	dropped      atomic.Int64       // inbound messages that could not be decoded or published
	overload     [2]atomic.Int64    // inbound messages dropped past InboundBytes: QoS 0, QoS 1 and 2
	ncDropped    int64              // NATS drops counted by subscriptions since unsubscribed (under mu)
	share        shareState         // shared subscriptions across the cluster (shared.go)
	offers       offerState         // offers to shared groups elsewhere awaiting their answers (offers.go)
	wills        willState          // clean sessions' wills (wills.go)
	acks         ackState           // forwarded messages confirmed before their PUBACK (acks.go)
	markSub      *nats.Subscription // marks on the first connection
	shareMarkSub *nats.Subscription // its marks to itself, on the second (acks.go)
	marking      markingState       // the echo of marks (acks.go)
	leave        leaveState         // a graceful leave (leave.go)

	kvLatency kvLatency     // JetStream key-value calls
	ret       retainedState // retained messages beyond the broker's (retained.go)
}

// inQueue is the node's queue of messages from the cluster: receive takes
// them off the NATS channel as they come (so that NATS never finds it full)
// and publishLoop gives them to the broker.
type inQueue struct {
	mu    sync.Mutex
	msgs  []*nats.Msg
	head  int
	bytes int           // of the messages (marks not counted)
	marks int           // marks of other nodes among msgs (acks.go)
	wake  chan struct{} // one token: msgs is not empty

	congested bool   // this node asked the others to hold QoS 1 and 2 messages
	signals   uint64 // congestion signals decided: their order, which the others keep
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
	claim bool // claim the id (again, after a failure); with neither claim nor owned: release it

	// owned: BeforeSession claimed the id at revision rev; unanswered
	// names the former owner if it did not answer.
	owned      bool
	rev        uint64
	unanswered string
}

const ownerWorkers = 4

// inboundBuffer is how many messages the NATS client may hold for the node
// before receive takes them (past it NATS drops messages for this node: a
// slow consumer, counted from the subscriptions). receive only moves them
// to inQueue, bounded by Config.InboundBytes.
const inboundBuffer = 1 << 16

// Defaults of Config.
const (
	defaultInboundBytes     = 128 << 20
	defaultDropLogInterval  = 10 * time.Second
	defaultBackPressureWait = 5 * time.Second
	defaultAdoptAfter       = 15 * time.Second
)

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
	if cfg.InboundBytes <= 0 {
		cfg.InboundBytes = defaultInboundBytes
	}
	if cfg.DropLogInterval <= 0 {
		cfg.DropLogInterval = defaultDropLogInterval
	}
	if cfg.AdoptAfter <= 0 {
		cfg.AdoptAfter = defaultAdoptAfter
	}
	if cfg.BackPressureWait <= 0 {
		cfg.BackPressureWait = defaultBackPressureWait
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("cluster", cfg.Name, "node", cfg.Node),
		boot:    strconv.FormatInt(time.Now().UnixNano(), 36),
		clients: make(map[string]map[string]struct{}), refs: make(map[string]*interest),
		done: make(chan struct{})}
	n.size = len(n.peersNotSelf()) + 1
	n.inq.wake = make(chan struct{}, 1)
	n.linkWake = make(chan struct{}, 1)
	n.gate.pending = map[string]map[string]bool{}
	n.gate.since = map[string]time.Time{}
	n.gate.early = map[string]map[string]time.Time{}
	n.cong.nodes = map[string]*congState{}
	n.cong.last = map[string]signalNum{}
	n.cong.changed = make(chan struct{})
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
	s.AddSysSource(n.putSys)
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
		Port:       server.RANDOM_PORT, // unused: this process connects in process (DontListen would stop routing too)
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
		// A peer that is down is dialled again every second: the first
		// failure is logged, then one in an hour's (watchLinks logs the
		// link's loss and return), not every one.
		ConnectErrorReports:   3600,
		ReconnectErrorReports: 3600,
	}
	if n.cfg.TLS != nil {
		opts.Cluster.TLSTimeout = 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("cluster: nats server: %w", err)
	}
	nl := &natsLogger{log: n.log, fatal: make(chan string, 1)}
	ns.SetLoggerV2(nl, false, false, false)
	n.mu.Lock()
	n.ns = ns
	n.mu.Unlock()
	ns.Start()
	// A fatal error (cluster_listen's port taken, say) ends the wait at
	// once with its own words, instead of a timeout that names no cause.
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-nl.fatal:
			return fmt.Errorf("cluster: cluster_listen %s: %s", n.cfg.Listen, msg)
		case <-ctx.Done():
			return fmt.Errorf("cluster: nats server not ready (cluster_listen %s)", n.cfg.Listen)
		default:
		}
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoEcho(), nats.Name("mqttd-"+n.cfg.Node),
		nats.MaxReconnects(-1), nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.acks.slowConsumers.Add(1) // fails the next mark answered (acks.go)
				return                      // counted by the subscription, reported by watchDrops
			}
			n.log.Warn("cluster: nats error", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("cluster: connect to the embedded nats server: %w", err)
	}
	n.nc = nc
	if err := n.connectShared(); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	n.js = js
	replicas := min(3, 1+len(n.peersNotSelf()))
	// A JetStream request made before the nodes elected their metadata
	// leader goes unanswered: wait for one first (seconds after the
	// routes form).
	for !ns.JetStreamIsCurrent() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: jetstream: no metadata leader elected (is a majority of the nodes up?)")
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The buckets are made side by side: each waits for the election of
	// its own stream's leaders, seconds on a loaded machine.
	cfgs := []jetstream.KeyValueConfig{
		{Bucket: bucketRetained, Replicas: replicas, Storage: jetstream.FileStorage,
			Description: "mqttd retained messages by topic"},
		{Bucket: bucketOwners, Replicas: replicas, Storage: jetstream.FileStorage,
			Description: "mqttd client id → node"},
		{Bucket: bucketSessions, Replicas: replicas, Storage: jetstream.FileStorage,
			LimitMarkerTTL: sessionMarkerTTL, Description: "mqttd persistent sessions: records by client id"},
	}
	kvs := make([]jetstream.KeyValue, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, c := range cfgs {
		wg.Go(func() { kvs[i], errs[i] = n.bucket(ctx, c) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	n.retained = &timedKV{KeyValue: kvs[0], lat: &n.kvLatency, prefix: kvRetainedGet}
	n.owners = &timedKV{KeyValue: kvs[1], lat: &n.kvLatency, prefix: kvOwnerGet}
	n.sessions = kvs[2]
	err = retryJS(ctx, n.log, "stream KV_"+bucketSessions, func(ctx context.Context) (err error) {
		n.sessStream, err = js.Stream(ctx, "KV_"+bucketSessions)
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: jetstream stream of %s: %w", bucketSessions, err)
	}
	n.sessPrefix = "$KV." + bucketSessions + "."

	n.inbound = make(chan *nats.Msg, inboundBuffer)
	// Live retained messages first, then the bucket: a retained message set
	// while the bucket is read is applied after it.
	rsub, err := nc.ChanSubscribe(subjRetained, n.inbound)
	if err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	n.mu.Lock()
	n.rsub = rsub
	n.mu.Unlock()
	// Marks of the other nodes come in the stream of their messages; the
	// answers to this node's marks come aside (acks.go).
	if n.markSub, err = nc.ChanSubscribe(subjMark+"."+encodeLevel(n.cfg.Node), n.inbound); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	// Its marks to itself follow the messages for its own shared
	// subscriptions, on the second connection (acks.go).
	if n.shareMarkSub, err = n.share.nc.ChanSubscribe(subjMark+"."+encodeLevel(n.cfg.Node)+ownMark, n.inbound); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	n.marking = markingState{echo: make(chan *nats.Msg, 1024), sub: new(nats.Subscription)}
	if _, err = nc.Subscribe(subjControl+"."+encodeLevel(n.cfg.Node)+".marked", n.onMarked); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	n.offers.prefix = subjControl + "." + encodeLevel(n.cfg.Node) + subjOffered
	if _, err = nc.Subscribe(n.offers.prefix+"*", n.onOffered); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	if err := n.loadRetained(ctx); err != nil {
		return err
	}
	n.ctl, err = nc.Subscribe(subjControl+"."+encodeLevel(n.cfg.Node)+".takeover", n.onTakeoverRequest)
	if err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	if _, err = nc.Subscribe(subjHeld, n.onHeld); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	if n.csub, err = nc.Subscribe(subjCongestion, n.onCongestion); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	n.kvq = make(chan kvOp, 4096)
	n.initAcks()
	n.wg.Add(8)
	go n.echoMarks()
	go n.markLoop()
	go n.watchRoutes()
	go n.receive()
	go n.publishLoop()
	go n.writeRetained()
	go n.watchDrops()
	go n.refreshCongestion()
	for i := range n.ownq {
		n.ownq[i] = make(chan ownOp, 1024)
		n.wg.Add(1)
		go n.ownerWorker(n.ownq[i])
	}
	n.wg.Add(1)
	go n.watchLinks()
	n.startWills()
	// Sessions restored from the broker's store that another node took
	// over meanwhile go; then the interest of the subscriptions the broker
	// still holds: those of the sessions it restored were reported by no
	// event.
	n.reconcileSessions(ctx)
	n.walkSubscriptions()
	n.mu.Lock()
	for f, in := range n.refs {
		if err := n.subscribeLocked(f, in); err != nil {
			n.log.Warn("cluster: subscribe", "topic", f, "err", err)
		}
	}
	n.ready = true
	n.mu.Unlock()

	cancelAll, err := n.srv.SubscribeAll(2, n.forward)
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
func (n *Node) bucket(ctx context.Context, c jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	err = retryJS(ctx, n.log, "bucket "+c.Bucket, func(ctx context.Context) (err error) {
		kv, err = n.js.CreateOrUpdateKeyValue(ctx, c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: jetstream bucket %s: %w (is a majority of the nodes up?)", c.Bucket, err)
	}
	return kv, nil
}

// retryJS runs a JetStream request until it succeeds or ctx ends. A
// request may get no answer at all: one made while JetStream elects its
// leaders, or the creation of a stream that another node's creation of
// the same stream overtook (the nodes start together). So the first tries
// are short, and each one after is longer (1, 2, 4, then 8 s): a loaded
// machine answers late.
func retryJS(ctx context.Context, log *slog.Logger, what string, req func(context.Context) error) error {
	wait := time.Second
	for {
		cctx, cancel := context.WithTimeout(ctx, wait)
		err := req(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
		log.Debug("cluster: waiting for jetstream", "request", what, "err", err)
		wait = min(2*wait, 8*time.Second)
	}
}

// Reads of a bucket (a watch: JetStream creates a consumer for it) that
// make no progress are given up and sent again: right after a node's loss
// the request may wait on a leader that is gone (the meta group's, which
// creates consumers, or the stream's), and only a new request reaches the
// one elected meanwhile, which takes NATS 4 to 9 s after the last word of
// the old one. A try's first record must come within readFirstWait(try);
// each next record within readIdle of the one before, so a long read that
// makes progress is not cut short. Tries are readRetry apart.
const (
	readIdle  = 5 * time.Second
	readRetry = 100 * time.Millisecond
)

// readFirstWait is how long try (from 1) of a read waits for its first
// record. Within readShortFor of a node's loss: 250 ms, 500 ms, then 1 s
// until an election is surely over (a read sent again within a second of
// it), then 2 s and 4 s. Otherwise a stall is JetStream slow to answer,
// not a leader gone, and a read sent again would only add to its load: 2 s,
// then 4 s.
func (n *Node) readFirstWait(try int) time.Duration {
	if lost := n.linkLostAt.Load(); lost == 0 || time.Since(time.Unix(0, lost)) > readShortFor {
		try += 12
	}
	switch {
	case try <= 1:
		return 250 * time.Millisecond
	case try == 2:
		return 500 * time.Millisecond
	case try <= 12:
		return time.Second
	case try == 13:
		return 2 * time.Second
	}
	return 4 * time.Second
}

// readShortFor is how long after a node's loss reads of a bucket are sent
// again soon when they stall (readFirstWait): longer than NATS's longest
// election timeout (9 s), with the time to see the loss.
const readShortFor = 20 * time.Second

// errReadStalled ends a read of a bucket that made no progress (guardRead).
var errReadStalled = errors.New("cluster: no progress reading a bucket (JetStream may be electing a leader)")

// guardRead derives from ctx a context that ends when the read it bounds
// makes no progress: no record within first, or none within readIdle of
// the last; progress says a record came. stop releases it.
func guardRead(ctx context.Context, first time.Duration) (rctx context.Context, progress, stop func()) {
	rctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(first, func() { cancel(errReadStalled) })
	return rctx, func() { t.Reset(readIdle) }, func() { t.Stop(); cancel(nil) }
}

// readErr is why a read under a guardRead context failed: errReadStalled
// when the guard ended it, else err, or the context's error when err is nil.
func readErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errReadStalled) {
		return cause
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
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
	ns := n.ns
	n.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	if n.nc != nil {
		var seq uint64 // a node that goes away while congested lets the others go at once
		n.inq.mu.Lock()
		if n.inq.congested {
			n.inq.congested = false
			n.inq.signals++
			seq = n.inq.signals
		}
		n.inq.mu.Unlock()
		if seq != 0 {
			n.sendCongestion(false, seq)
			n.nc.FlushTimeout(time.Second)
		}
		n.nc.Close() // no more deliveries to n.inbound
	}
	if n.share.nc != nil {
		n.share.nc.Close() // nor from the shared subscriptions (shared.go)
	}
	close(n.done)
	n.wg.Wait()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	return nil
}

// untilClosed returns a context that ends when the node closes (or cancel
// is called), for work that runs as long as the node does.
func (n *Node) untilClosed() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// running reports whether the node forwards (started and not closed).
func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready && !n.closed
}

// ---- messages ----

// forward sends a message routed by the local broker to the nodes that
// want it: the inline subscription to every topic (Start), $-topics
// included, sees it, so the acknowledgement of any QoS 1 or 2 message can
// wait for the nodes it went to.
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
	if m.QoS > 0 {
		n.holdWhileCongested()
	}
	n.pubMu.Lock()
	err = n.nc.Publish(subj, body)
	if err == nil && m.QoS > 0 {
		n.holdForward(m) // its PUBACK or PUBREC waits for the other nodes (acks.go)
	}
	if err == nil && m.Retain {
		n.forwardRetainedShared(m.Topic, body)
	}
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
		n.ret.unwritten.Add(1) // retained.go
		select {
		case n.kvq <- op:
		case <-n.done:
		}
	}
}

// receive moves what other nodes forward from the NATS channel to the
// node's queue, in arrival order, dropping what is past its bound.
func (n *Node) receive() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case msg := <-n.inbound:
			n.arrived.Add(1)
			n.enqueue(msg)
		}
	}
}

// enqueue adds msg to the node's queue unless the queue holds
// Config.InboundBytes already (twice that for QoS 1 and 2: a burst of QoS 0
// messages does not crowd them out). An empty queue takes any message.
func (n *Node) enqueue(msg *nats.Msg) {
	size := len(msg.Data)
	qos := 0
	if size > 0 {
		qos = int(msg.Data[0]>>1) & 3 // the PUBLISH fixed header's QoS bits
	}
	limit := n.cfg.InboundBytes
	if qos > 0 {
		limit *= 2
	}
	q := &n.inq
	mark := n.isMark(msg)
	if mark {
		n.stampMark(msg)
	}
	q.mu.Lock()
	if !mark && q.bytes+size > limit && len(q.msgs) > q.head {
		q.mu.Unlock()
		n.overload[min(qos, 1)].Add(1)
		n.settled.Add(1)
		return
	}
	q.msgs = append(q.msgs, msg)
	if mark {
		q.marks++
	} else {
		q.bytes += size
	}
	var signal uint64
	if !q.congested && (q.bytes >= n.cfg.InboundBytes/2 || len(q.msgs)-q.head >= congestMessages) {
		q.congested = true
		q.signals++
		signal = q.signals
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	if signal != 0 {
		n.cong.episodes.Add(1)
		n.sendCongestion(true, signal)
	}
}

// dequeue takes the oldest message of the node's queue; nil when empty.
func (n *Node) dequeue() *nats.Msg {
	q := &n.inq
	q.mu.Lock()
	if q.head == len(q.msgs) {
		q.mu.Unlock()
		return nil
	}
	m := q.msgs[q.head]
	q.msgs[q.head] = nil
	q.head++
	if n.isMark(m) {
		q.marks--
	} else {
		q.bytes -= len(m.Data)
	}
	if q.head == len(q.msgs) {
		q.msgs, q.head = q.msgs[:0], 0
	} else if q.head >= 1024 && q.head*2 >= len(q.msgs) {
		q.msgs = append(q.msgs[:0], q.msgs[q.head:]...)
		q.head = 0
	}
	var clear uint64
	if q.congested && q.bytes <= n.cfg.InboundBytes/8 && len(q.msgs)-q.head <= congestMessages/8 {
		q.congested = false
		q.signals++
		clear = q.signals
	}
	q.mu.Unlock()
	if clear != 0 {
		n.sendCongestion(false, clear)
	}
	return m
}

// ---- back-pressure ----

// Back-pressure for QoS 1 and 2 messages. NATS core has no flow control
// between nodes, and the NATS client must never be blocked (its buffer
// overflowing drops messages, the server's closes the connection), so a
// node that falls behind says so instead: when its queue (inQueue) holds
// half of Config.InboundBytes it publishes "congested" on subjCongestion,
// again every congestionRefresh while it is, and "clear" once the queue is
// down to an eighth. While any other node is congested, forward holds each
// QoS 1 and 2 message, on the goroutine of the client that published it,
// until the node clears, its signal expires (congestionTTL: a node that
// died) or Config.BackPressureWait has passed since the node said it was
// congested: a node that stays behind longer is stuck rather than busy,
// and holding for it any longer would stall every publisher of the cluster
// for one node (NATS does not tell which node wants which message, so a
// hold is for any congested node). The publisher's PUBACK or PUBREC
// waits with it, and its connection is not read meanwhile, so the client
// is slowed down; QoS 0 messages are never held. What crosses during the
// signal's propagation has the room between InboundBytes and twice it,
// which only QoS 1 and 2 messages may use (enqueue).
const (
	subjCongestion    = subjControl + ".congestion" // body: "1|0 SEQ BOOT NODE": congested or clear
	congestionRefresh = 250 * time.Millisecond
	congestionTTL     = 1500 * time.Millisecond
)

// congestion is what this node knows of the others' congestion.
type congestion struct {
	mu       sync.Mutex
	nodes    map[string]*congState // congested node
	n        atomic.Int32          // len(nodes), read without mu on the PUBLISH path
	last     map[string]signalNum  // the last signal applied, by node
	changed  chan struct{}         // closed when a node clears
	waits    atomic.Int64          // forwards that waited
	timeout  atomic.Int64          // ... and went on after BackPressureWait
	episodes atomic.Int64          // times this node said it was congested
}

// sendCongestion tells the other nodes whether this node is congested,
// with the signal's number: signals decided in one order may be published
// in another (by receive, publishLoop and refreshCongestion), and the
// others ignore one older than the last they had.
func (n *Node) sendCongestion(on bool, seq uint64) {
	flag := "0 "
	if on {
		flag = "1 "
	}
	body := flag + strconv.FormatUint(seq, 10) + " " + n.boot + " " + n.cfg.Node
	if err := n.nc.Publish(subjCongestion, []byte(body)); err != nil {
		n.log.Debug("cluster: congestion signal", "err", err)
	}
}

// refreshCongestion repeats this node's congestion signal while it lasts,
// so that the others' view of it expires only if the node goes away.
func (n *Node) refreshCongestion() {
	defer n.wg.Done()
	t := time.NewTicker(congestionRefresh)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		var seq uint64
		n.inq.mu.Lock()
		if n.inq.congested {
			n.inq.signals++
			seq = n.inq.signals
		}
		n.inq.mu.Unlock()
		if seq != 0 {
			n.sendCongestion(true, seq)
		}
	}
}

// signalNum orders one node's congestion signals: its run (Node.boot) and
// the signal's number in that run.
type signalNum struct {
	boot string
	seq  uint64
}

type congState struct {
	since   time.Time // when it said it was congested
	expires time.Time // when its last signal runs out
}

// onCongestion records another node's congestion signal.
func (n *Node) onCongestion(msg *nats.Msg) {
	f := strings.SplitN(string(msg.Data), " ", 4)
	if len(f) != 4 || f[3] == n.cfg.Node {
		return
	}
	flag, boot, node := f[0], f[2], f[3]
	seq, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return
	}
	c := &n.cong
	c.mu.Lock()
	defer c.mu.Unlock()
	if last, ok := c.last[node]; ok && last.boot == boot && seq <= last.seq {
		return // older than one already applied
	}
	c.last[node] = signalNum{boot, seq}
	if flag == "1" {
		now := time.Now()
		st := c.nodes[node]
		if st == nil {
			st = &congState{since: now}
			c.nodes[node] = st
			c.n.Store(int32(len(c.nodes)))
		}
		st.expires = now.Add(congestionTTL)
		return
	}
	if _, was := c.nodes[node]; was {
		delete(c.nodes, node)
		c.n.Store(int32(len(c.nodes)))
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// holdUntil returns until when a message must be held for the congested
// nodes (zero: not at all), whether a node is congested past maxWait, and
// the channel closed at the next "clear".
func (c *congestion) holdUntil(now time.Time, maxWait time.Duration) (until time.Time, stuck bool, changed chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for node, st := range c.nodes {
		if !st.expires.After(now) {
			delete(c.nodes, node) // its node stopped saying so: gone or cleared
			c.n.Store(int32(len(c.nodes)))
			continue
		}
		end := st.since.Add(maxWait)
		if !end.After(now) {
			stuck = true
			continue
		}
		if st.expires.Before(end) {
			end = st.expires
		}
		if end.After(until) {
			until = end
		}
	}
	return until, stuck, c.changed
}

// holdWhileCongested waits while another node is congested, for at most
// Config.BackPressureWait from the start of its congestion.
func (n *Node) holdWhileCongested() {
	if n.cong.n.Load() == 0 {
		return // no node congested: no lock, no clock read per message
	}
	until, _, changed := n.cong.holdUntil(time.Now(), n.cfg.BackPressureWait)
	if until.IsZero() {
		return
	}
	n.cong.waits.Add(1)
	for !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		select {
		case <-n.done:
			t.Stop()
			return
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		var stuck bool
		until, stuck, changed = n.cong.holdUntil(time.Now(), n.cfg.BackPressureWait)
		if until.IsZero() && stuck {
			n.cong.timeout.Add(1)
		}
	}
}

// queued returns how many messages, and bytes, wait in the node's queue.
func (n *Node) queued() (msgs, bytes int) {
	q := &n.inq
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs) - q.head - q.marks, q.bytes
}

// publishLoop publishes the messages of the node's queue, in order.
func (n *Node) publishLoop() {
	defer n.wg.Done()
	var burst []*broker.Message // for the router, in arrival order
	flush := func() {
		if len(burst) == 0 {
			return
		}
		n.publishAllFromCluster(burst)
		n.settled.Add(int64(len(burst)))
		clear(burst)
		burst = burst[:0]
	}
	for {
		m := n.dequeue()
		if m == nil {
			flush()
			select {
			case <-n.done:
				return
			case <-n.inq.wake:
			}
			continue
		}
		if n.isMark(m) {
			flush() // what came before it is published, with its store writes
			n.reachMark(m)
			n.settled.Add(1)
			continue
		}
		if m.Sub != nil {
			if group, filter, ok := parseShareQueue(m.Sub.Queue); ok {
				flush() // what came before goes first
				n.deliverShared(m, group, filter)
				n.settled.Add(1)
				continue
			}
		}
		// The messages waiting go to the router together: one store write
		// (and one wait for the copies of persistent sessions) for all of
		// them, as for a client's burst (broker.Server.PublishAll).
		msg, err := decodeMessage(m.Data)
		if err != nil {
			n.dropped.Add(1)
			n.acks.publishLost.Add(1) // its QoS unknown: the next mark answered says lost
			n.settled.Add(1)
			n.log.Warn("cluster: bad message from the cluster", "err", err)
			continue
		}
		n.forwardedIn.Add(1)
		burst = append(burst, msg)
		if len(burst) == inboundBurst {
			flush()
		}
	}
}

// congestMessages is the count of messages waiting in the queue from the
// cluster past which the node asks the others to hold their QoS 1 and 2
// messages (as past half of Config.InboundBytes): what another node has
// acknowledged to its publisher and this node has not published yet is
// lost if this node dies, so the queue is kept short in messages, not only
// in bytes. It clears at an eighth.
const congestMessages = 2048

// inboundBurst bounds the messages from the cluster published to the
// broker together.
const inboundBurst = 256

// publishAllFromCluster publishes ms (decoded from the cluster) to the
// broker in order, with one store write.
func (n *Node) publishAllFromCluster(ms []*broker.Message) {
	for _, m := range ms {
		n.republish.Store(m, struct{}{})
	}
	errs := n.srv.PublishAll(ms)
	for i, m := range ms {
		n.republish.Delete(m)
		err := errs[i]
		if err == nil && m.Retain {
			n.noteLiveRetained(m) // confirmed by the bucket's watch, or checked (retained.go)
		}
		if err != nil && m.QoS > 0 {
			n.acks.publishLost.Add(1) // the next mark answered says lost (acks.go)
		}
		if err != nil && !errors.Is(err, broker.ErrServerClosed) {
			n.dropped.Add(1)
			n.log.Warn("cluster: cannot publish a message from the cluster", "topic", m.Topic, "err", err)
		}
	}
}

// watchDrops logs the messages from the cluster this node dropped, at most
// once per Config.DropLogInterval, with the counts of the window: loud
// enough to be seen, never a line per message.
func (n *Node) watchDrops() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.DropLogInterval)
	defer t.Stop()
	var last Stats
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		s := n.Stats()
		d0, d12 := s.DroppedOverloadQoS0-last.DroppedOverloadQoS0, s.DroppedOverloadQoS12-last.DroppedOverloadQoS12
		dsc, dbad := s.DroppedSlowConsumer-last.DroppedSlowConsumer, s.Dropped-last.Dropped
		if d0+d12+dsc+dbad > 0 {
			n.log.Warn("cluster: messages from the cluster dropped (this node cannot keep up)",
				"dropped", d0+d12+dsc+dbad, "qos0_over_limit", d0, "qos12_over_limit", d12,
				"slow_consumer", dsc, "undeliverable", dbad, "window", n.cfg.DropLogInterval.String(),
				"queued", s.InboundQueued, "queued_bytes", s.InboundQueuedBytes)
		}
		if ep, w, to := s.CongestedEpisodes-last.CongestedEpisodes, s.BackPressureWaits-last.BackPressureWaits,
			s.BackPressureTimeouts-last.BackPressureTimeouts; ep+w+to > 0 {
			n.log.Warn("cluster: back-pressure: QoS 1 and 2 messages held for nodes that are behind",
				"this_node_congested", ep, "forwards_held", w, "held_past_limit", to,
				"window", n.cfg.DropLogInterval.String())
		}
		last = s
	}
}

// ---- retained messages: retained.go ----

// ---- interest ----

// OnSubscription keeps one NATS subscription per distinct filter held by
// the node's clients (broker.SubscriptionHook).
func (n *Node) OnSubscription(c *broker.ClientInfo, e broker.SubscriptionEvent) {
	// The routed filter carries the listener's mount point: it is what
	// the inline subscription of the other nodes (SubscribeAll) sees and forwards.
	f := e.Routed
	if f == "" {
		f = routedFilter(e.Filter)
	}
	if isSys(f) {
		return
	}
	f = interestKey(e.Filter, f) // a shared subscription has its own (shared.go)
	n.mu.Lock()
	defer n.mu.Unlock()
	key := [2]string{c.ClientID, f}
	if e.Removed {
		if n.walk != nil {
			n.walk.removed[key] = struct{}{}
		}
		n.dropLocked(c.ClientID, f)
		return
	}
	if n.walk != nil {
		delete(n.walk.removed, key)
	}
	n.addLocked(c.ClientID, f)
}

// addLocked records that client holds filter f, and subscribes to f on
// NATS when it is the first holder and the node forwards. n.mu is held.
func (n *Node) addLocked(client, f string) {
	fs := n.clients[client]
	if fs == nil {
		fs = make(map[string]struct{})
		n.clients[client] = fs
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
			n.log.Warn("cluster: subscribe", "client", client, "topic", f, "err", err)
		}
	}
}

// walkPage is how many subscriptions Start reads from the broker at once.
const walkPage = 512

// walkMarks records, while Start walks the broker's subscriptions, what
// events removed meanwhile: a subscription the walk read before its
// UNSUBSCRIBE or its session's end must not be added back by the walk.
type walkMarks struct {
	removed map[[2]string]struct{} // client id, filter
	ended   map[string]struct{}    // client id
}

func newWalkMarks() *walkMarks {
	return &walkMarks{removed: map[[2]string]struct{}{}, ended: map[string]struct{}{}}
}

// walkSubscriptions adds the interest of every subscription the broker
// holds, a page at a time (no broker lock is held across pages). Events
// that arrive meanwhile are applied as usual; a subscription both walked
// and reported is counted once (clients records each filter of a client
// once), and one removed meanwhile stays removed (walkMarks).
func (n *Node) walkSubscriptions() {
	n.mu.Lock()
	n.walk = newWalkMarks()
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.walk = nil
		n.mu.Unlock()
	}()
	var client, filter string
	total := 0
	for {
		page, more := n.srv.SubscriptionsPage(client, filter, walkPage)
		n.mu.Lock()
		for _, si := range page {
			n.addWalkedLocked(si)
		}
		n.mu.Unlock()
		total += len(page)
		if !more || len(page) == 0 {
			break
		}
		last := page[len(page)-1]
		client, filter = last.ClientID, last.Filter
	}
	if total > 0 {
		n.log.Info("cluster: interest of the broker's existing subscriptions", "subscriptions", total)
	}
}

// addWalkedLocked adds the interest of one subscription the walk read,
// unless an event removed it since. n.mu is held.
func (n *Node) addWalkedLocked(si broker.SubscriptionInfo) {
	f := routedFilter(si.Filter)
	if isSys(f) || si.ClientID == "" {
		return
	}
	f = interestKey(si.Filter, f)
	if w := n.walk; w != nil {
		if _, ok := w.ended[si.ClientID]; ok {
			return
		}
		if _, ok := w.removed[[2]string{si.ClientID, f}]; ok {
			return
		}
	}
	n.addLocked(si.ClientID, f)
}

// routedFilter is the filter a subscription is routed with: without
// $share/group/.
func routedFilter(f string) string {
	if _, real, shared, err := topic.ParseShare(f); err == nil && shared {
		return real
	}
	return f
}

// subscribeLocked makes the NATS subscriptions of filter f. All of a
// node's subscriptions are in one queue group named after the node, so a
// message matching several of them is delivered to the node once.
func (n *Node) subscribeLocked(f string, in *interest) error {
	if group, real, ok := shareKey(f); ok {
		return n.subscribeSharedLocked(group, real, in) // shared.go
	}
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
	if n.lingerSharedLocked(f, in) { // shared.go: the other nodes may still send it some
		delete(n.refs, f)
		return
	}
	for _, s := range in.subs {
		n.unsubscribeLocked(f, s)
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
		out[routedFilter(f)] += in.n // a shared subscription's key names its group
	}
	return out
}

// ---- sessions and client id ownership ----

// OnSession claims a client id for this node when a session is created or
// resumed here, and drops a client's interest and ownership when its
// session ends (broker.SessionHook).
func (n *Node) OnSession(c *broker.ClientInfo, e broker.SessionEvent) {
	n.noteWill(c, e)
	id := c.ClientID
	if e == broker.SessionEnded {
		n.mu.Lock()
		if n.walk != nil {
			n.walk.ended[id] = struct{}{}
		}
		for f := range n.clients[id] {
			n.dropLocked(id, f)
		}
		n.mu.Unlock()
	}
	if id == "" || !n.running() || e != broker.SessionEnded {
		return // claims are made by BeforeSession, before CONNACK
	}
	n.queueOwn(ownOp{id: id})
}

// queueOwn hands op to the owner worker of its client id (one worker per
// id keeps each id's operations in order).
func (n *Node) queueOwn(op ownOp) {
	h := fnv.New32a()
	h.Write([]byte(op.id))
	select {
	case n.ownq[h.Sum32()%ownerWorkers] <- op:
	case <-n.done:
	}
}

func ownerKey(id string) string { return "c." + base64.RawURLEncoding.EncodeToString([]byte(id)) }

func (n *Node) ownerWorker(q chan ownOp) {
	defer n.wg.Done()
	// The revision of the ownership entry this node wrote, by client id (an
	// id always goes to the same worker).
	owned := make(map[string]uint64)
	// Claims that failed (JetStream had no quorum: the node is cut off) for
	// clients still here; tried again once the link is back.
	pending := make(map[string]bool)
	// Claims written while the former owner did not answer (cut off, or
	// gone), by client id: that node is asked again until it answers, so a
	// client it kept through a cut is disconnected when the link is back.
	unasked := make(map[string]string)
	retry := time.NewTicker(claimRetry)
	defer retry.Stop()
	claim := func(id string) {
		if d, ok := n.srv.ClientDetail(id); !ok || !d.Connected {
			// The client left, or another node took it over, before its
			// claim: claiming now would take the id from its new owner.
			delete(pending, id)
			return
		}
		rev, _, former, err := n.claim(id)
		select {
		case <-n.done:
			return // closing: the failure says nothing
		default:
		}
		switch {
		case err == nil:
			if pending[id] {
				n.log.Info("cluster: client id ownership recorded after the link came back", "client", id)
			}
			owned[id] = rev
			delete(pending, id)
			delete(unasked, id)
			if former != "" {
				n.log.Warn("cluster: client id taken over from a node that did not answer: it is asked again "+
					"until it does", "client", id, "owner", former)
				unasked[id] = former
			}
		case !pending[id]:
			n.log.Warn("cluster: client id ownership not recorded: another node may hold the same client "+
				"until the link comes back", "client", id, "err", err)
			pending[id] = true
		}
	}
	for {
		select {
		case <-n.done:
			return
		case <-retry.C:
			// One id probes (a claim while cut off waits for timeouts);
			// when it succeeds the others follow.
			for id := range pending {
				claim(id)
				if pending[id] {
					break
				}
			}
			for id, former := range unasked {
				if !n.stillOwned(id, owned[id]) {
					delete(unasked, id) // another node took it over since
					continue
				}
				if !n.ask(former, id, reqRelease, owned[id]) {
					break
				}
				n.log.Info("cluster: former owner answered the takeover", "client", id, "owner", former)
				delete(unasked, id)
			}
		case op := <-q:
			if op.owned {
				owned[op.id] = op.rev
				delete(pending, op.id)
				delete(unasked, op.id)
				if op.unanswered != "" {
					n.log.Warn("cluster: client id taken over from a node that did not answer: it is asked "+
						"again until it does", "client", op.id, "owner", op.unanswered)
					unasked[op.id] = op.unanswered
				}
				continue
			}
			if op.claim {
				if !pending[op.id] {
					pending[op.id] = true
				}
				continue
			}
			delete(pending, op.id)
			delete(unasked, op.id)
			if rev, ok := owned[op.id]; ok {
				delete(owned, op.id)
				n.release(op.id, rev)
			}
		}
	}
}

// stillOwned reports whether the ownership entry of id may still be the
// one this node wrote at revision rev: false only when a read shows a later
// write (a read may lag, so one showing an earlier state proves nothing).
func (n *Node) stillOwned(id string, rev uint64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e, err := n.owners.Get(ctx, ownerKey(id))
	return err != nil || e.Revision() <= rev
}

// watchLinks logs each link to another node that goes down (a warning:
// while it is down nothing crosses to that node, and JetStream may have no
// quorum) and each that comes up.
func (n *Node) watchLinks() {
	defer n.wg.Done()
	tick := time.NewTicker(linkWatchInterval)
	defer tick.Stop()
	up := linkNames(n.ns)
	n.linksUp.Store(int32(len(up)))
	lost := make(map[string]time.Time) // nodes whose link is down, since
	adopted := make(map[string]bool)   // ... whose sessions were adopted during this loss
	held := make(map[string]bool)      // ... whose sessions are held here (standby.go)
	for name := range up {
		n.wg.Add(1)
		go n.collectHeld(name)
	}
	for {
		select {
		case <-n.done:
			return
		case <-tick.C:
		case <-n.linkWake:
		}
		n.gateExpire()
		now := linkNames(n.ns)
		for name := range up {
			if _, ok := now[name]; !ok {
				n.log.Warn("cluster: link to a node lost: messages to it are dropped, and retained messages and "+
					"takeovers may not reach the cluster until it is back", "peer", name, "links", len(now))
			}
		}
		for name := range now {
			if _, ok := up[name]; !ok {
				n.log.Info("cluster: link to a node up", "peer", name, "links", len(now))
			}
		}
		for name := range up {
			if !now[name] {
				lost[name] = time.Now()
			}
		}
		for name := range now {
			if _, ok := up[name]; !ok {
				// It may hold sessions of this node, held while this
				// node was out of its reach.
				n.wg.Add(1)
				go n.collectHeld(name)
			}
			delete(lost, name)
			delete(adopted, name)
			delete(held, name)
			n.adoptRetry.Delete(name)
		}
		up = now
		n.linksUp.Store(int32(len(up)))
		for name := range lost {
			if !held[name] {
				held[name] = true
				var others []string // lost before: what name held for them is held again
				for o := range lost {
					if o != name {
						others = append(others, o)
					}
				}
				n.wg.Add(1)
				go n.holdSessions(name, others)
			}
		}
		for name, since := range lost {
			if at, ok := n.adoptRetry.Load(name); ok && time.Since(at.(time.Time)) >= adoptRetryAfter {
				n.adoptRetry.Delete(name)
				adopted[name] = false // what failed is tried again; what was adopted is skipped
			}
			if !adopted[name] && time.Since(since) >= n.cfg.AdoptAfter && n.haveMajority() {
				adopted[name] = true
				n.wg.Add(1)
				go n.adoptSessions(name)
			}
		}
	}
}

// linkNames returns the names of the nodes this node has a route to (a
// route still in its handshake has no name yet and is not counted).
func linkNames(ns *server.Server) map[string]bool {
	out := map[string]bool{}
	rz, err := ns.Routez(nil)
	if err != nil {
		return out
	}
	for _, r := range rz.Routes {
		if r.RemoteName != "" {
			out[r.RemoteName] = true
		}
	}
	return out
}

// linkWatchInterval is how often watchLinks looks at the links.
const linkWatchInterval = time.Second

// claimRetry is how often a node cut off tries again the claims that failed.
const claimRetry = time.Second

// claim makes this node the owner of client id id and returns the
// revision it wrote. When another node owns it, that node is asked to
// disconnect its client first [MQTT-3.1.4-3]. Compare-and-set on the
// entry's revision: of nodes racing for one id, the last to write has asked
// the others to let go.
//
// A read may be served by any replica of the bucket (a direct get) and lag
// behind the last write, so no reading is trusted alone: each ends in a
// compare-and-set write, even one naming this node (which may be an old
// entry of this node, since taken over), and a failed write reads again
// after a short pause until claimTimeout.
func (n *Node) claim(id string) (rev uint64, former, unanswered string, err error) {
	return n.claimCtx(context.Background(), id, nil)
}

// claimCtx is claim bounded by parent too, for the CONNECT k (nil for
// none): k records the write in flight and the revision it wrote
// (connecting.go).
func (n *Node) claimCtx(parent context.Context, id string, k *connecting) (rev uint64, former, unanswered string, err error) {
	key := ownerKey(id)
	deadline := time.Now().Add(claimTimeout)
	var asked uint64 // revision of the entry whose owner was last asked to let go
	for attempt := 0; ; attempt++ {
		if perr := parent.Err(); perr != nil {
			return 0, "", "", perr
		}
		ctx, cancel := context.WithTimeout(parent, 5*time.Second)
		var e jetstream.KeyValueEntry
		e, err = n.owners.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			unanswered, former = "", "" // the former owner released it
			rev, err = n.writeClaim(k, func() (uint64, error) { return n.owners.Create(ctx, key, []byte(n.cfg.Node)) })
		case err == nil:
			former = string(e.Value())
			if owner := former; owner != n.cfg.Node && e.Revision() != asked {
				unanswered = ""
				if !n.ask(owner, id, reqTakeover, e.Revision()) {
					unanswered = owner
				}
				asked = e.Revision()
			} else if owner == n.cfg.Node {
				unanswered = ""
			}
			rev, err = n.writeClaim(k, func() (uint64, error) {
				return n.owners.Update(ctx, key, []byte(n.cfg.Node), e.Revision())
			})
		}
		cancel()
		if err == nil || !casConflict(err) {
			return rev, former, unanswered, err
		}
		if time.Now().After(deadline) {
			return 0, "", "", errors.New("too many concurrent claims")
		}
		// Another node wrote first, or the read was behind: read again.
		select {
		case <-n.done:
			return 0, "", "", broker.ErrServerClosed
		case <-time.After(time.Duration(min(attempt+1, 25)) * 2 * time.Millisecond):
		}
	}
}

// writeClaim runs write, the compare-and-set of a claim, with the CONNECT
// k (if any) marked as writing, and records the revision it wrote.
func (n *Node) writeClaim(k *connecting, write func() (uint64, error)) (uint64, error) {
	n.conns.set(k, func(k *connecting) { k.writing = true })
	rev, err := write()
	n.conns.set(k, func(k *connecting) {
		k.writing = false
		if err == nil {
			k.rev = rev
		}
	})
	return rev, err
}

// claimTimeout bounds the retries of one claim.
const claimTimeout = 10 * time.Second

// casConflict reports whether err is a compare-and-set write that lost.
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		strings.Contains(err.Error(), "wrong last sequence")
}

// release deletes the ownership entry of id if it is still the one this
// node wrote (revision rev): compare-and-set, with no read, so an entry
// another node wrote since is left alone.
func (n *Node) release(id string, rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.owners.Delete(ctx, ownerKey(id), jetstream.LastRevision(rev)); err != nil && !casConflict(err) {
		n.log.Debug("cluster: release client id", "client", id, "err", err)
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
	Dropped      int64 // messages from the cluster not published (undecodable, refused by the broker)
	Filters      int   // distinct filters with a NATS subscription

	// Messages from the cluster dropped because this node did not keep
	// up: past Config.InboundBytes (by QoS), and by the NATS client when
	// its buffer was full (slow consumer).
	DroppedOverloadQoS0, DroppedOverloadQoS12 int64
	DroppedSlowConsumer                       int64
	InboundQueued, InboundQueuedBytes         int // waiting for the broker now

	// Back-pressure: times this node said it was congested; forwards of
	// QoS 1 and 2 messages held for a congested node, and those that went
	// on after Config.BackPressureWait.
	CongestedEpisodes, BackPressureWaits, BackPressureTimeouts int64
}

// DroppedTotal is every message from the cluster this node dropped.
func (s *Stats) DroppedTotal() int64 {
	return s.Dropped + s.DroppedOverloadQoS0 + s.DroppedOverloadQoS12 + s.DroppedSlowConsumer
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	s := Stats{ForwardedOut: n.forwardedOut.Load(), ForwardedIn: n.forwardedIn.Load(),
		TakeoversOut: n.takeoversOut.Load(), TakeoversIn: n.takeoversIn.Load(), Dropped: n.dropped.Load(),
		DroppedOverloadQoS0: n.overload[0].Load(), DroppedOverloadQoS12: n.overload[1].Load(),
		CongestedEpisodes: n.cong.episodes.Load(), BackPressureWaits: n.cong.waits.Load(),
		BackPressureTimeouts: n.cong.timeout.Load()}
	s.InboundQueued, s.InboundQueuedBytes = n.queued()
	n.mu.Lock()
	s.Filters = len(n.refs)
	s.DroppedSlowConsumer = n.ncDropped
	for _, in := range n.refs {
		for _, sub := range in.subs {
			if d, err := sub.Dropped(); err == nil {
				s.DroppedSlowConsumer += int64(d)
			}
		}
	}
	if n.rsub != nil {
		if d, err := n.rsub.Dropped(); err == nil {
			s.DroppedSlowConsumer += int64(d)
		}
	}
	ns := n.ns
	n.mu.Unlock()
	if ns != nil {
		s.LinksUp = len(links(ns))
		s.Nodes = 1 + s.LinksUp
	}
	return s
}

// links returns the remote servers this node has routes to, by name, with
// the least round-trip time measured on their routes (0 when none was).
func links(ns *server.Server) map[string]time.Duration {
	rz, err := ns.Routez(nil)
	if err != nil {
		return nil
	}
	out := map[string]time.Duration{}
	for _, r := range rz.Routes {
		name := r.RemoteName
		if name == "" {
			name = r.RemoteID
		}
		rtt, err := time.ParseDuration(r.RTT)
		if err != nil {
			rtt = 0
		}
		if old, ok := out[name]; !ok || rtt > 0 && (old == 0 || rtt < old) {
			out[name] = rtt
		}
	}
	return out
}

// putSys publishes the node's counters under $SYS/broker/cluster/ (a
// broker.Server.AddSysSource function; nothing before Start).
func (n *Node) putSys(put func(topic, value string)) {
	if !n.running() {
		return
	}
	st := n.Stats()
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	put("$SYS/broker/cluster/nodes", strconv.Itoa(st.Nodes))
	put("$SYS/broker/cluster/links/up", strconv.Itoa(st.LinksUp))
	put("$SYS/broker/cluster/messages/forwarded/out", i(st.ForwardedOut))
	put("$SYS/broker/cluster/messages/forwarded/in", i(st.ForwardedIn))
	put("$SYS/broker/cluster/messages/dropped", i(st.DroppedTotal()))
	put("$SYS/broker/cluster/messages/dropped/overload/qos0", i(st.DroppedOverloadQoS0))
	put("$SYS/broker/cluster/messages/dropped/overload/qos12", i(st.DroppedOverloadQoS12))
	put("$SYS/broker/cluster/messages/dropped/slow_consumer", i(st.DroppedSlowConsumer))
	put("$SYS/broker/cluster/messages/dropped/undeliverable", i(st.Dropped))
	put("$SYS/broker/cluster/messages/queued", strconv.Itoa(st.InboundQueued))
	put("$SYS/broker/cluster/backpressure/congested", i(st.CongestedEpisodes))
	put("$SYS/broker/cluster/backpressure/held", i(st.BackPressureWaits))
	put("$SYS/broker/cluster/backpressure/held_past_limit", i(st.BackPressureTimeouts))
	put("$SYS/broker/cluster/takeovers/out", i(st.TakeoversOut))
	put("$SYS/broker/cluster/takeovers/in", i(st.TakeoversIn))
}

// Metrics returns the node's reading for the Prometheus endpoint; nil for
// a nil node (a single broker) or one not started.
func (n *Node) Metrics() *metrics.ClusterSnapshot {
	if n == nil || !n.running() {
		return nil
	}
	st := n.Stats()
	m := &metrics.ClusterSnapshot{Nodes: st.Nodes, LinksUp: st.LinksUp, ForwardedOut: st.ForwardedOut,
		ForwardedIn: st.ForwardedIn, TakeoversOut: st.TakeoversOut, TakeoversIn: st.TakeoversIn,
		Dropped: map[string]int64{"overload_qos0": st.DroppedOverloadQoS0, "overload_qos12": st.DroppedOverloadQoS12,
			"slow_consumer": st.DroppedSlowConsumer, "undeliverable": st.Dropped},
		InboundQueued: st.InboundQueued, Filters: st.Filters}
	n.mu.Lock()
	ns := n.ns
	n.mu.Unlock()
	if ns != nil {
		for name, rtt := range links(ns) {
			m.Links = append(m.Links, metrics.LinkSnapshot{Node: name, RTT: rtt})
		}
		slices.SortFunc(m.Links, func(a, b metrics.LinkSnapshot) int { return strings.Compare(a.Node, b.Node) })
	}
	for op := range kvOps {
		m.KV = append(m.KV, n.kvLatency[op].snapshot(kvOpNames[op]))
	}
	return m
}

// JetStream key-value calls whose latency is measured: Get, Put, Create,
// Update and Delete of each bucket, in that order.
const (
	kvOwnerGet = iota
	kvOwnerPut
	kvOwnerCreate
	kvOwnerUpdate
	kvOwnerDelete
	kvRetainedGet
	kvRetainedPut
	kvRetainedCreate
	kvRetainedUpdate
	kvRetainedDelete
	kvOps
)

var kvOpNames = [kvOps]string{"owner_get", "owner_put", "owner_create", "owner_update", "owner_delete",
	"retained_get", "retained_put", "retained_create", "retained_update", "retained_delete"}

// timedKV records the latency of a bucket's single-key calls.
type timedKV struct {
	jetstream.KeyValue
	lat    *kvLatency
	prefix int // kvOwnerGet or kvRetainedGet
}

func (t *timedKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	defer t.lat.since(t.prefix, time.Now())
	return t.KeyValue.Get(ctx, key)
}

func (t *timedKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	defer t.lat.since(t.prefix+1, time.Now())
	return t.KeyValue.Put(ctx, key, value)
}

func (t *timedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	defer t.lat.since(t.prefix+2, time.Now())
	return t.KeyValue.Create(ctx, key, value, opts...)
}

func (t *timedKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	defer t.lat.since(t.prefix+3, time.Now())
	return t.KeyValue.Update(ctx, key, value, revision)
}

func (t *timedKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	defer t.lat.since(t.prefix+4, time.Now())
	return t.KeyValue.Delete(ctx, key, opts...)
}

// kvBounds are the upper bounds, in seconds, of the latency histograms.
var kvBounds = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// kvLatency holds one histogram per kind of call.
type kvLatency [kvOps]latencyHist

type latencyHist struct {
	count   atomic.Uint64
	sumNano atomic.Int64
	buckets [len(kvBounds)]atomic.Uint64 // calls in (bound[i-1], bound[i]]; the slower ones only in count
}

// since records a call of kind op that began at start.
func (l *kvLatency) since(op int, start time.Time) {
	d := time.Since(start)
	h := &l[op]
	sec := d.Seconds()
	for i, b := range kvBounds {
		if sec <= b {
			h.buckets[i].Add(1)
			break
		}
	}
	h.sumNano.Add(int64(d))
	h.count.Add(1)
}

// snapshot reads h with cumulative buckets. Read while calls are recorded,
// the count is never behind the buckets.
func (h *latencyHist) snapshot(op string) metrics.LatencySnapshot {
	s := metrics.LatencySnapshot{Op: op, Buckets: make(map[float64]uint64, len(kvBounds))}
	var cum uint64
	for i, b := range kvBounds {
		cum += h.buckets[i].Load()
		s.Buckets[b] = cum
	}
	s.Sum = time.Duration(h.sumNano.Load()).Seconds()
	s.Count = max(h.count.Load(), cum)
	return s
}

// natsLogger passes the embedded server's notices and errors to slog.
// The first fatal error also goes to fatal, for Start. (The server's own
// logger would exit the process; an embedded one reports and goes on.)
type natsLogger struct {
	log   *slog.Logger
	fatal chan string
}

func (l *natsLogger) Noticef(format string, v ...any) {
	l.log.Debug("nats: " + fmt.Sprintf(format, v...))
}
func (l *natsLogger) Warnf(format string, v ...any) { l.log.Warn("nats: " + fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error("nats: " + msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l *natsLogger) Errorf(format string, v ...any) {
	l.log.Warn("nats: " + fmt.Sprintf(format, v...))
}
func (l *natsLogger) Debugf(format string, v ...any) {}
func (l *natsLogger) Tracef(format string, v ...any) {}
