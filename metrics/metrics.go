// Package metrics exposes a broker's counters to Prometheus.
//
// It depends on no other mqttd package: the caller hands it a function that
// returns a Snapshot (cmd/mqttd fills one from broker.Server.Stats), and
// Handler serves the Prometheus text exposition of the latest snapshot on
// every scrape, with Go runtime and process metrics beside it.
package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is one reading of a broker's counters. Counters only grow;
// gauges go up and down.
type Snapshot struct {
	ClientsConnected    int64    // gauge
	ClientsDisconnected int64    // gauge: persistent sessions without a connection
	ClientsMaximum      int64    // gauge: most clients connected at once
	ClientsExpired      int64    // counter: sessions removed for expiry
	SocketsAccepted     int64    // counter
	Subscriptions       int64    // gauge
	Retained            int64    // gauge
	PacketsReceived     int64    // counter: control packets of every type
	PacketsSent         int64    // counter
	BytesReceived       int64    // counter
	BytesSent           int64    // counter
	PublishReceived     [3]int64 // counter: PUBLISH packets by QoS
	PublishSent         [3]int64 // counter: PUBLISH packets by QoS
	PublishBytesRecv    int64    // counter: PUBLISH payload bytes
	PublishBytesSent    int64    // counter
	DroppedQueueFull    int64    // counter: messages dropped for a full session queue
	DroppedBacklog      int64    // counter: QoS 0 messages dropped over a connection's write backlog
	DroppedTooLarge     int64    // counter: messages above the client's Maximum Packet Size
	DroppedMemory       int64    // counter: QoS 0 messages dropped past memory_limit
	StoreWrites         int64    // counter: store batches applied
	StoreWriteSeconds   float64  // counter: time spent applying them
	RefusedMaxConns     int64    // counter: sockets closed by max_connections
	RefusedConnRate     int64    // counter: sockets closed by max_connection_rate
	PublishRateWaits    int64    // counter: times a publisher was paused by max_publish_rate
	Inflight            int64    // gauge: outbound QoS 1/2 messages awaiting acknowledgement
	Queued              int64    // gauge: messages waiting in session queues
	AuthFailures        int64    // counter: refused CONNECTs (authentication)
	PollSpins           int64    // counter: times the busy broker polled for packets instead of sleeping (poll_spin)
	PollSpinHits        int64    // counter: of those, the ones that found a packet
	Uptime              time.Duration

	// DisconnectsByReason counts the connections that ended, by reason
	// (broker.Server.DisconnectsByReason: client_disconnect, shutdown,
	// taken_over, ...); a counter per reason.
	DisconnectsByReason map[string]int64

	// Bridges are the running bridges (`connection` sections).
	Bridges []BridgeSnapshot

	// Cluster is the cluster node's reading; nil for a single broker.
	Cluster *ClusterSnapshot
}

// ClusterSnapshot is a cluster node's reading (cluster_* options).
type ClusterSnapshot struct {
	Nodes, LinksUp            int              // gauges: nodes known (this one included), routes up
	ForwardedOut, ForwardedIn int64            // counters: messages sent to and received from the cluster
	TakeoversOut, TakeoversIn int64            // counters: client takeovers asked of another node, done for one
	Dropped                   map[string]int64 // counters: messages from the cluster dropped, by reason
	InboundQueued             int              // gauge: messages from the cluster waiting for the broker
	Filters                   int              // gauge: distinct filters this node routes by
	Links                     []LinkSnapshot   // one per remote node
	KV                        []LatencySnapshot
}

// LinkSnapshot is one link to a remote node.
type LinkSnapshot struct {
	Node string
	RTT  time.Duration // last measured round trip; 0 unknown
}

// LatencySnapshot is a latency histogram of one kind of call.
type LatencySnapshot struct {
	Op      string
	Count   uint64
	Sum     float64            // seconds
	Buckets map[float64]uint64 // upper bound in seconds → calls that took at most that long (cumulative)
}

// BridgeSnapshot is one bridge's reading.
type BridgeSnapshot struct {
	Name                           string
	Connected                      bool
	MessagesSent, MessagesReceived uint64 // to and from the remote broker
	BytesSent, BytesReceived       uint64 // their payload bytes
	Queued                         int    // outbound messages not yet acknowledged by the remote
	Reconnects                     uint64
	Dropped                        uint64 // outbound messages dropped (queue full, refused by the remote)
}

// Namespace prefixes every metric name.
const Namespace = "mqttd"

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*Snapshot) float64
}

// collector turns snapshots into Prometheus metrics.
type collector struct {
	read        func() Snapshot
	metrics     []metric
	disconnects *prometheus.Desc // reason label: Snapshot.DisconnectsByReason
	bridge      []bridgeMetric   // bridge label: Snapshot.Bridges
	cluster     clusterDescs     // Snapshot.Cluster
}

type clusterDescs struct {
	nodes, linksUp, forwarded, takeovers, dropped, queued, filters, rtt, kv *prometheus.Desc
}

func newClusterDescs() clusterDescs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "cluster", name), help, labels, nil)
	}
	return clusterDescs{
		nodes:     d("nodes", "Cluster nodes this node knows: itself and those it has a link to."),
		linksUp:   d("links_up", "Links (routes) to other cluster nodes that are up."),
		forwarded: d("messages_forwarded_total", "Messages sent to (out) and received from (in) the cluster.", "direction"),
		takeovers: d("takeovers_total", "Client takeovers this node asked of another node (out) or did for one (in).", "direction"),
		dropped: d("messages_dropped_total", "Messages from the cluster this node dropped, by reason "+
			"(overload_qos0, overload_qos12: past the inbound bound; slow_consumer: the NATS buffer was full; "+
			"undeliverable: undecodable or refused by the broker).", "reason"),
		queued:  d("inbound_queued_messages", "Messages from the cluster waiting for the broker."),
		filters: d("filters", "Distinct subscription filters this node holds interest for."),
		rtt:     d("link_rtt_seconds", "Round-trip time of the link to a remote node, as last measured.", "node"),
		kv:      d("kv_seconds", "Latency of the JetStream key-value calls (client id ownership, retained messages).", "op"),
	}
}

func (d *clusterDescs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{d.nodes, d.linksUp, d.forwarded, d.takeovers, d.dropped, d.queued, d.filters, d.rtt, d.kv} {
		ch <- x
	}
}

func (d *clusterDescs) collect(ch chan<- prometheus.Metric, c *ClusterSnapshot) {
	g, k := prometheus.GaugeValue, prometheus.CounterValue
	ch <- prometheus.MustNewConstMetric(d.nodes, g, float64(c.Nodes))
	ch <- prometheus.MustNewConstMetric(d.linksUp, g, float64(c.LinksUp))
	ch <- prometheus.MustNewConstMetric(d.forwarded, k, float64(c.ForwardedOut), "out")
	ch <- prometheus.MustNewConstMetric(d.forwarded, k, float64(c.ForwardedIn), "in")
	ch <- prometheus.MustNewConstMetric(d.takeovers, k, float64(c.TakeoversOut), "out")
	ch <- prometheus.MustNewConstMetric(d.takeovers, k, float64(c.TakeoversIn), "in")
	for reason, n := range c.Dropped {
		ch <- prometheus.MustNewConstMetric(d.dropped, k, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(d.queued, g, float64(c.InboundQueued))
	ch <- prometheus.MustNewConstMetric(d.filters, g, float64(c.Filters))
	for _, l := range c.Links {
		ch <- prometheus.MustNewConstMetric(d.rtt, g, l.RTT.Seconds(), l.Node)
	}
	for _, h := range c.KV {
		ch <- prometheus.MustNewConstHistogram(d.kv, h.Count, h.Sum, h.Buckets, h.Op)
	}
}

type bridgeMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*BridgeSnapshot) float64
}

func newCollector(read func() Snapshot) *collector {
	c := &collector{read: read, cluster: newClusterDescs()}
	c.disconnects = prometheus.NewDesc(Namespace+"_disconnects_total",
		"Connections ended, by reason (client_disconnect, client_closed, keepalive_timeout, taken_over, shutdown, "+
			"protocol_error, slow_consumer, ...).", []string{"reason"}, nil)
	add := func(name, help string, kind prometheus.ValueType, labels prometheus.Labels, v func(*Snapshot) int64) {
		c.metrics = append(c.metrics, metric{
			desc:  prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, nil, labels),
			kind:  kind,
			value: func(s *Snapshot) float64 { return float64(v(s)) },
		})
	}
	g, k := prometheus.GaugeValue, prometheus.CounterValue
	addB := func(name, help string, kind prometheus.ValueType, v func(*BridgeSnapshot) float64) {
		c.bridge = append(c.bridge, bridgeMetric{prometheus.NewDesc(prometheus.BuildFQName(Namespace, "bridge", name), help,
			[]string{"bridge"}, nil), kind, v})
	}
	addB("up", "1 while the bridge is connected to its remote broker.", g, func(b *BridgeSnapshot) float64 {
		if b.Connected {
			return 1
		}
		return 0
	})
	addB("messages_sent_total", "Messages the bridge sent to its remote broker.", k, func(b *BridgeSnapshot) float64 { return float64(b.MessagesSent) })
	addB("messages_received_total", "Messages the bridge received from its remote broker.", k,
		func(b *BridgeSnapshot) float64 { return float64(b.MessagesReceived) })
	addB("bytes_sent_total", "Payload bytes sent to the remote broker.", k, func(b *BridgeSnapshot) float64 { return float64(b.BytesSent) })
	addB("bytes_received_total", "Payload bytes received from the remote broker.", k,
		func(b *BridgeSnapshot) float64 { return float64(b.BytesReceived) })
	addB("queued_messages", "Outbound messages not yet acknowledged by the remote broker.", g,
		func(b *BridgeSnapshot) float64 { return float64(b.Queued) })
	addB("reconnects_total", "Connections to the remote broker after the first.", k, func(b *BridgeSnapshot) float64 { return float64(b.Reconnects) })
	addB("dropped_total", "Outbound messages dropped (queue full, refused by the remote).", k,
		func(b *BridgeSnapshot) float64 { return float64(b.Dropped) })
	add("clients_connected", "Clients connected now.", g, nil, func(s *Snapshot) int64 { return s.ClientsConnected })
	add("clients_disconnected", "Persistent sessions whose client is not connected.", g, nil,
		func(s *Snapshot) int64 { return s.ClientsDisconnected })
	add("sessions", "Sessions held: connected clients plus disconnected persistent sessions.", g, nil,
		func(s *Snapshot) int64 { return s.ClientsConnected + s.ClientsDisconnected })
	add("clients_maximum", "Most clients connected at once since start.", g, nil, func(s *Snapshot) int64 { return s.ClientsMaximum })
	add("clients_expired_total", "Persistent sessions removed because they expired.", k, nil,
		func(s *Snapshot) int64 { return s.ClientsExpired })
	add("connections_accepted_total", "Network connections accepted.", k, nil, func(s *Snapshot) int64 { return s.SocketsAccepted })
	add("connections_refused_total", "Network connections closed at once because the listener was full.", k,
		prometheus.Labels{"reason": "max_connections"}, func(s *Snapshot) int64 { return s.RefusedMaxConns })
	add("connections_refused_total", "Network connections closed at once because the listener was full.", k,
		prometheus.Labels{"reason": "max_connection_rate"}, func(s *Snapshot) int64 { return s.RefusedConnRate })
	add("publish_rate_waits_total", "Times a client's reading was paused because it published faster than max_publish_rate.", k, nil,
		func(s *Snapshot) int64 { return s.PublishRateWaits })
	add("subscriptions", "Subscriptions held.", g, nil, func(s *Snapshot) int64 { return s.Subscriptions })
	add("retained_messages", "Retained messages held.", g, nil, func(s *Snapshot) int64 { return s.Retained })
	add("packets_received_total", "MQTT control packets received.", k, nil, func(s *Snapshot) int64 { return s.PacketsReceived })
	add("packets_sent_total", "MQTT control packets sent.", k, nil, func(s *Snapshot) int64 { return s.PacketsSent })
	add("bytes_received_total", "Bytes of MQTT packets received.", k, nil, func(s *Snapshot) int64 { return s.BytesReceived })
	add("bytes_sent_total", "Bytes of MQTT packets sent.", k, nil, func(s *Snapshot) int64 { return s.BytesSent })
	for q := range 3 {
		qos := prometheus.Labels{"qos": string(rune('0' + q))}
		add("messages_received_total", "PUBLISH packets received, by QoS.", k, qos,
			func(s *Snapshot) int64 { return s.PublishReceived[q] })
		add("messages_sent_total", "PUBLISH packets sent, by QoS.", k, qos,
			func(s *Snapshot) int64 { return s.PublishSent[q] })
	}
	add("message_bytes_received_total", "Payload bytes of PUBLISH packets received.", k, nil,
		func(s *Snapshot) int64 { return s.PublishBytesRecv })
	add("message_bytes_sent_total", "Payload bytes of PUBLISH packets sent.", k, nil,
		func(s *Snapshot) int64 { return s.PublishBytesSent })
	add("messages_dropped_total", "Messages dropped instead of delivered, by reason.", k,
		prometheus.Labels{"reason": "queue_full"}, func(s *Snapshot) int64 { return s.DroppedQueueFull })
	add("messages_dropped_total", "Messages dropped instead of delivered, by reason.", k,
		prometheus.Labels{"reason": "backlog"}, func(s *Snapshot) int64 { return s.DroppedBacklog })
	add("messages_dropped_total", "Messages dropped instead of delivered, by reason.", k,
		prometheus.Labels{"reason": "too_large"}, func(s *Snapshot) int64 { return s.DroppedTooLarge })
	add("messages_dropped_total", "Messages dropped instead of delivered, by reason.", k,
		prometheus.Labels{"reason": "memory"}, func(s *Snapshot) int64 { return s.DroppedMemory })
	add("store_writes_total", "Batches written to the persistent store.", k, nil, func(s *Snapshot) int64 { return s.StoreWrites })
	c.metrics = append(c.metrics, metric{
		desc: prometheus.NewDesc(Namespace+"_store_write_seconds_total",
			"Time spent writing batches to the persistent store (with store_writes_total: mean latency).", nil, nil),
		kind:  k,
		value: func(s *Snapshot) float64 { return s.StoreWriteSeconds },
	})
	add("messages_inflight", "Outbound QoS 1 and 2 messages awaiting acknowledgement.", g, nil,
		func(s *Snapshot) int64 { return s.Inflight })
	add("messages_queued", "Messages waiting in session queues.", g, nil, func(s *Snapshot) int64 { return s.Queued })
	add("auth_failures_total", "CONNECTs refused by authentication.", k, nil, func(s *Snapshot) int64 { return s.AuthFailures })
	add("poll_spins_total", "Times the busy broker polled for packets instead of sleeping (poll_spin).", k, nil,
		func(s *Snapshot) int64 { return s.PollSpins })
	add("poll_spin_hits_total", "Polls (poll_spins_total) that found a packet before giving up.", k, nil,
		func(s *Snapshot) int64 { return s.PollSpinHits })
	c.metrics = append(c.metrics, metric{
		desc:  prometheus.NewDesc(Namespace+"_uptime_seconds", "Seconds since the broker started.", nil, nil),
		kind:  g,
		value: func(s *Snapshot) float64 { return s.Uptime.Seconds() },
	})
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	ch <- c.disconnects
	for _, m := range c.bridge {
		ch <- m.desc
	}
	c.cluster.describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s))
	}
	for reason, n := range s.DisconnectsByReason {
		ch <- prometheus.MustNewConstMetric(c.disconnects, prometheus.CounterValue, float64(n), reason)
	}
	for i := range s.Bridges {
		b := &s.Bridges[i]
		for _, m := range c.bridge {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(b), b.Name)
		}
	}
	if s.Cluster != nil {
		c.cluster.collect(ch, s.Cluster)
	}
}

// NewRegistry returns a registry holding the broker's metrics, read from
// read at every scrape, and the Go runtime and process collectors.
func NewRegistry(read func() Snapshot) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(read),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves the metrics of read in the Prometheus exposition format.
func Handler(read func() Snapshot) http.Handler {
	reg := NewRegistry(read)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Access says who may scrape the endpoint. With neither field set it is
// open to anyone who can reach it.
type Access struct {
	// Token, if not empty, is accepted as "Authorization: Bearer TOKEN".
	// It is compared in constant time.
	Token string
	// CheckPassword, if not nil, verifies HTTP basic credentials (a
	// mosquitto_passwd-format file's users).
	CheckPassword func(user, password string) bool
}

// Open reports whether a lets every request through.
func (a Access) Open() bool { return a.Token == "" && a.CheckPassword == nil }

// allows reports whether r carries credentials a accepts.
func (a Access) allows(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case a.Token != "" && strings.EqualFold(scheme, "Bearer"):
		return tokenEqual(strings.TrimSpace(cred), a.Token)
	case a.CheckPassword != nil && strings.EqualFold(scheme, "Basic"):
		user, password, ok := r.BasicAuth()
		return ok && a.CheckPassword(user, password)
	}
	return false
}

// tokenEqual compares the SHA-256 digests of got and want in constant time,
// so that neither the contents nor the length of the token leak through
// timing.
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// Protect serves h to requests a accepts and answers the others 401 with
// the schemes a takes. An open Access returns h itself.
func Protect(h http.Handler, a Access) http.Handler {
	if a.Open() {
		return h
	}
	var challenges []string
	if a.CheckPassword != nil {
		challenges = append(challenges, `Basic realm="mqttd metrics", charset="UTF-8"`)
	}
	if a.Token != "" {
		challenges = append(challenges, `Bearer realm="mqttd metrics"`)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.allows(r) {
			for _, c := range challenges {
				w.Header().Add("WWW-Authenticate", c)
			}
			http.Error(w, "401 unauthorized: credentials needed (see metrics_password_file, metrics_token_file)",
				http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
