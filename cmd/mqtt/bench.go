package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
)

// benchResult is the report of mqtt bench; with --json it is printed as one
// JSON object on the last line of stdout.
type benchResult struct {
	Scenario    string  `json:"scenario"`
	Broker      string  `json:"broker"`
	SubBroker   string  `json:"sub_broker,omitempty"` // --sub-url: where the subscribers are
	Protocol    string  `json:"protocol"`
	QoS         int     `json:"qos"`
	Size        int     `json:"size"`
	Publishers  int     `json:"publishers"`
	Subscribers int     `json:"subscribers"`
	Window      int     `json:"window"`
	Rate        float64 `json:"offered_rate,omitempty"`
	OpenLoop    bool    `json:"open_loop"`
	Outstanding int     `json:"max_outstanding,omitempty"`
	Duration    float64 `json:"duration_s"`

	Sent          uint64  `json:"sent"`
	PublishErrors uint64  `json:"publish_errors"`
	Expected      uint64  `json:"expected"`
	Received      uint64  `json:"received"`
	Unique        uint64  `json:"unique"`
	Lost          int64   `json:"lost"`
	Duplicates    uint64  `json:"duplicates"`
	Foreign       uint64  `json:"foreign"`
	SendRate      float64 `json:"send_msgs_per_s"`
	RecvRate      float64 `json:"recv_msgs_per_s"`
	RecvMBps      float64 `json:"recv_mb_per_s"`

	Latency *latencyReport `json:"latency_us,omitempty"`

	Connections   int     `json:"connections,omitempty"`
	ConnectErrors int     `json:"connect_errors,omitempty"`
	ConnectRate   float64 `json:"connects_per_s,omitempty"`
	RSSBeforeKB   int64   `json:"rss_before_kb,omitempty"`
	RSSAfterKB    int64   `json:"rss_after_kb,omitempty"`
	BytesPerConn  float64 `json:"bytes_per_conn,omitempty"`
}

type latencyReport struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// bench holds one run.
type bench struct {
	c      *config
	run    string // random run id: topics and client ids are unique per run
	stderr io.Writer
	tty    bool
	opts   client.Options
}

// runBench is mqtt bench.
func runBench(ctx context.Context, c *config, stdout, stderr io.Writer) error {
	if c.subURL != "" && c.scenario == "conns" {
		return usagef("Error: --sub-url is for the fanin, fanout, pairs, shared and latency scenarios.")
	}
	raiseFileLimit()
	o, err := c.clientOptions()
	if err != nil {
		return err
	}
	o.KeepAlive = 60 * time.Second
	// The receivers count every message: a loss must be the broker's, not
	// the client's bounded QoS 0 queue.
	o.MaxQueuedQoS0, o.MaxQueuedBytes = -1, -1
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return fmt.Errorf("bench: run id: %w", err)
	}
	b := &bench{c: c, run: hex.EncodeToString(id[:]), stderr: stderr, opts: o}
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			b.tty = true
		}
	}
	var res *benchResult
	if c.scenario == "conns" {
		res, err = b.conns(ctx)
	} else {
		res, err = b.messages(ctx)
	}
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	printSummary(w, res)
	if c.jsonOut {
		j, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		w.Write(j)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("bench: writing the report: %w", err)
	}
	if c.scenario != "conns" && c.qos > 0 && (res.Lost > 0 || res.PublishErrors > 0) {
		return &exitError{code: 3, msg: fmt.Sprintf("Error: %d of %d QoS %d messages lost (%d publish errors)",
			max(res.Lost, 0), res.Expected, c.qos, res.PublishErrors)}
	}
	return nil
}

func (b *bench) dial(ctx context.Context, role string, i int) (*client.Client, error) {
	o := b.opts
	o.ClientID = fmt.Sprintf("bench-%s-%s%d", b.run, role, i)
	if b.c.clientID != "" {
		o.ClientID = fmt.Sprintf("%s-%s%d", b.c.clientID, role, i)
	}
	if b.c.window > 0 {
		o.MaxInflight = b.c.window
	}
	if role == "conn" && o.Dialer == nil {
		o.Dialer = spreadDialer(i)
	}
	url := b.c.serverURL()
	if role == "sub" && b.c.subURL != "" {
		url = b.c.subURL
	}
	cl, err := client.Dial(ctx, url, o)
	if err != nil {
		var ce *client.ConnectError
		if errors.As(err, &ce) {
			code := int(ce.Connack.ReasonCode)
			if b.c.version != packet.V5 {
				code = int(ce.Connack.ReasonCode.V3Connack())
			}
			return nil, &exitError{code: code, msg: "Connection error: " + strings.TrimPrefix(err.Error(), "client: ")}
		}
		return nil, &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	return cl, nil
}

// layout is who publishes where and who subscribes to what in a scenario.
type layout struct {
	pubTopics []string // by publisher
	subs      []subSpec
	groups    []group
}

type subSpec struct {
	filter string
	stats  *subStats
}

func (b *bench) layout() layout {
	c := b.c
	base := "bench/" + b.run + "/" + c.scenario
	var l layout
	clients := c.clients
	switch c.scenario {
	case "fanin":
		// P publishers on distinct topics, one wildcard subscriber.
		p := max(clients, 1)
		if clients == 0 {
			p = 10
		}
		for i := range p {
			l.pubTopics = append(l.pubTopics, fmt.Sprintf("%s/%d", base, i))
		}
		s := newSubStats(p)
		l.subs = []subSpec{{filter: base + "/+", stats: s}}
		l.groups = []group{{subs: []*subStats{s}, pubs: seq(p)}}
	case "fanout":
		// One publisher, S subscribers of its topic.
		n := clients
		if n == 0 {
			n = 10
		}
		l.pubTopics = []string{base}
		for range n {
			s := newSubStats(1)
			l.subs = append(l.subs, subSpec{filter: base, stats: s})
			l.groups = append(l.groups, group{subs: []*subStats{s}, pubs: []int{0}})
		}
	case "pairs", "latency":
		// N publisher/subscriber pairs, each on its own topic.
		n := clients
		if n == 0 {
			n = 10
			if c.scenario == "latency" {
				n = 1
			}
		}
		for i := range n {
			t := fmt.Sprintf("%s/%d", base, i)
			l.pubTopics = append(l.pubTopics, t)
			s := newSubStats(n)
			l.subs = append(l.subs, subSpec{filter: t, stats: s})
			l.groups = append(l.groups, group{subs: []*subStats{s}, pubs: []int{i}})
		}
	case "shared":
		// P publishers, S members of one shared subscription to all topics.
		p := c.publishers
		if p == 0 {
			p = 4
		}
		n := clients
		if n == 0 {
			n = 4
		}
		for i := range p {
			l.pubTopics = append(l.pubTopics, fmt.Sprintf("%s/%d", base, i))
		}
		g := group{pubs: seq(p)}
		for range n {
			s := newSubStats(p)
			l.subs = append(l.subs, subSpec{filter: "$share/bench" + b.run + "/" + base + "/+", stats: s})
			g.subs = append(g.subs, s)
		}
		l.groups = []group{g}
	}
	return l
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// messages runs the publish/subscribe scenarios.
func (b *bench) messages(ctx context.Context) (*benchResult, error) {
	c := b.c
	l := b.layout()
	rate := c.rate
	if c.scenario == "latency" && rate == 0 {
		rate = 1000
	}

	var all []*client.Client
	defer func() {
		for _, cl := range all {
			cl.Close()
		}
	}()
	// Each group's flow (stats.go): publishers pause on it unless
	// --open-loop.
	flowOf := make(map[*subStats]*flow)
	pubFlows := make([][]*flow, len(l.pubTopics))
	for i := range l.groups {
		g := &l.groups[i]
		g.flow = new(flow)
		for _, s := range g.subs {
			flowOf[s] = g.flow
		}
		for _, p := range g.pubs {
			pubFlows[p] = append(pubFlows[p], g.flow)
		}
	}
	var warm *warmup
	if c.subURL != "" {
		warm = newWarmup(b.run, l, len(l.pubTopics))
	}
	// Subscribers first, so that nothing published is missed.
	for i, s := range l.subs {
		st := s.stats
		fl := flowOf[st]
		cl, err := b.dial(ctx, "sub", i)
		if err != nil {
			return nil, err
		}
		all = append(all, cl)
		h := func(m *client.Message) {
			if warm != nil && warm.received(st, m.Payload) {
				return
			}
			st.add(m.Payload, time.Now().UnixNano())
			fl.recv.Add(1)
		}
		if _, err := cl.Subscribe(ctx, []packet.Subscription{{Filter: s.filter, QoS: c.qos}}, h); err != nil {
			return nil, &exitError{code: 1, msg: "Error: subscribe: " + strings.TrimPrefix(err.Error(), "client: ")}
		}
	}
	pubs := make([]*client.Client, len(l.pubTopics))
	for i := range pubs {
		cl, err := b.dial(ctx, "pub", i)
		if err != nil {
			return nil, err
		}
		all = append(all, cl)
		pubs[i] = cl
	}
	if warm != nil {
		if err := b.warmUp(ctx, pubs, l, warm); err != nil {
			return nil, err
		}
	}

	sent := make([]atomic.Uint64, len(pubs))
	var pubErrs atomic.Uint64
	var pending sync.WaitGroup // unacknowledged publishes
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	perPub := rate / float64(len(pubs))
	for i, cl := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.publishLoop(ctx, cl, uint32(i), l.pubTopics[i], perPub, start, &stop, &sent[i], &pubErrs, &pending, pubFlows[i])
		}()
	}

	totalSent := func() uint64 {
		var n uint64
		for i := range sent {
			n += sent[i].Load()
		}
		return n
	}
	totalRecv := func() uint64 {
		var n uint64
		for _, s := range l.subs {
			n += s.stats.count()
		}
		return n
	}
	expectedNow := func() uint64 {
		var n uint64
		for _, g := range l.groups {
			for _, p := range g.pubs {
				n += sent[p].Load()
			}
		}
		return n
	}

	// Publish for the duration, with a progress line every second.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(c.duration)
	defer end.Stop()
	var lastSent, lastRecv uint64
	lastT := start
	progress := func(phase string) {
		now := time.Now()
		s, r := totalSent(), totalRecv()
		dt := now.Sub(lastT).Seconds()
		b.progress("%s %s %5.1fs  sent %d (%.0f/s)  received %d (%.0f/s)", c.scenario, phase, now.Sub(start).Seconds(),
			s, float64(s-lastSent)/dt, r, float64(r-lastRecv)/dt)
		lastSent, lastRecv, lastT = s, r, now
	}
loop:
	for {
		select {
		case <-end.C:
			break loop
		case <-ctx.Done():
			break loop
		case <-tick.C:
			progress("publishing")
		}
	}
	stop.Store(true)
	wg.Wait()
	pubDur := time.Since(start)

	// Drain: wait for the acknowledgements and for the subscribers to
	// receive what was sent, until nothing more arrives.
	ackDone := make(chan struct{})
	go func() { pending.Wait(); close(ackDone) }()
	deadline := time.NewTimer(c.drain)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	lastProgress := time.Now()
	lastCount := totalRecv()
	acked := false
drain:
	for {
		select {
		case <-ackDone:
			acked = true
			ackDone = nil
		case <-deadline.C:
			break drain
		case <-ctx.Done():
			break drain
		case <-tick.C:
			progress("draining")
		case <-poll.C:
			r := totalRecv()
			if acked && r >= expectedNow() {
				break drain
			}
			if r != lastCount {
				lastCount, lastProgress = r, time.Now()
			} else if acked && time.Since(lastProgress) > time.Second {
				break drain // nothing more is coming
			}
		}
	}
	recvDur := time.Since(start)
	if b.tty {
		fmt.Fprint(b.stderr, "\r\033[K")
	}
	for _, cl := range all {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = cl.Disconnect(dctx) // the counts are final; a failed DISCONNECT changes nothing
		cancel()
	}

	sentBy := make([]uint64, len(sent))
	for i := range sent {
		sentBy[i] = sent[i].Load()
	}
	t := account(l.groups, sentBy)
	res := &benchResult{
		Scenario: c.scenario, Broker: c.serverURL(), SubBroker: c.subURL, Protocol: c.version.String(), QoS: int(c.qos),
		Size: c.size, Publishers: len(pubs), Subscribers: len(l.subs), Window: c.window, Rate: rate, OpenLoop: c.openLoop,
		Duration: pubDur.Seconds(), Sent: totalSent(), PublishErrors: pubErrs.Load(),
		Expected: t.expected, Received: t.received, Unique: t.unique, Lost: t.lost, Duplicates: t.dups, Foreign: t.foreign,
	}
	if !c.openLoop {
		res.Outstanding = c.maxOutstanding
	}
	res.SendRate = float64(res.Sent) / pubDur.Seconds()
	res.RecvRate = float64(res.Received) / recvDur.Seconds()
	res.RecvMBps = res.RecvRate * float64(c.size) / 1e6
	if t.hist.n > 0 {
		us := func(ns int64) float64 { return float64(ns) / 1e3 }
		res.Latency = &latencyReport{
			P50: us(t.hist.quantile(0.50)), P90: us(t.hist.quantile(0.90)), P99: us(t.hist.quantile(0.99)),
			Max: us(t.hist.max), Mean: t.hist.sum / float64(t.hist.n) / 1e3,
		}
	}
	return res, nil
}

// payloadPool recycles message buffers once the client is done with them.
type payloadPool struct {
	size int
	pool sync.Pool
}

func (p *payloadPool) get() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, p.size)
}

func (p *payloadPool) put(b []byte) { p.pool.Put(&b) }

// publishLoop publishes numbered messages until stop, at rate messages per
// second (0 = as fast as the window allows). Unless --open-loop, it pauses
// while one of its groups has --max-outstanding messages published but not
// received: the rate measured is the one the broker sustains.
func (b *bench) publishLoop(ctx context.Context, cl *client.Client, idx uint32, topic string, rate float64, start time.Time,
	stop *atomic.Bool, sent, errs *atomic.Uint64, pending *sync.WaitGroup, flows []*flow) {
	limit := int64(b.c.maxOutstanding)
	if b.c.openLoop {
		flows = nil
	}
	po := client.PublishOptions{QoS: b.c.qos}
	pool := &payloadPool{size: b.c.size}
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	for n := uint32(0); !stop.Load(); n++ {
		if interval > 0 {
			due := start.Add(time.Duration(n) * interval)
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
		}
		for _, f := range flows {
			f.wait(limit, stop)
		}
		if stop.Load() {
			break
		}
		buf := pool.get()
		putHeader(buf, idx, n, time.Now().UnixNano())
		pending.Add(1)
		err := cl.PublishAsync(ctx, topic, buf, po, func(err error) {
			if err != nil {
				errs.Add(1)
			}
			pool.put(buf)
			pending.Done()
		})
		if err != nil {
			pending.Done()
			errs.Add(1)
			if ctx.Err() != nil || errors.Is(err, client.ErrClosed) {
				return
			}
			select {
			case <-cl.Done():
				return
			default:
			}
			continue
		}
		sent.Add(1)
		for _, f := range flows {
			f.sent.Add(1)
		}
	}
}

// progress prints the progress line on stderr: rewritten in place on a
// terminal, one line per second otherwise.
func (b *bench) progress(format string, args ...any) {
	if b.tty {
		fmt.Fprintf(b.stderr, "\r\033[K"+format, args...)
		return
	}
	fmt.Fprintf(b.stderr, format+"\n", args...)
}

// conns opens C idle connections and measures the connect rate and, with
// --pid, the broker's resident memory per connection.
func (b *bench) conns(ctx context.Context) (*benchResult, error) {
	c := b.c
	n := c.clients
	if n == 0 {
		n = 1000
	}
	var before int64
	if c.pid > 0 {
		var err error
		if before, err = readRSS(c.pid); err != nil {
			return nil, err
		}
	}
	conns := make([]*client.Client, n)
	defer func() {
		for _, cl := range conns {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	var next, done, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	workers := min(n, max(c.concurrency, 1)) // CONNECTs in progress at once
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				b.progress("conns connecting %5.1fs  %d connected, %d failed", time.Since(start).Seconds(), done.Load(), failed.Load())
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				cl, err := b.dial(ctx, "conn", i)
				if err == nil && c.connSubscribe {
					err = b.subscribeIdle(ctx, cl, i)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				conns[i] = cl
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	connectDur := time.Since(start)
	close(stopProgress)
	if done.Load() == 0 {
		if err, ok := firstErr.Load().(error); ok {
			return nil, err
		}
		return nil, errors.New("bench: no connection succeeded")
	}
	b.progress("conns %d connected in %.2fs; holding them idle for %v", done.Load(), connectDur.Seconds(), c.duration)
	select {
	case <-time.After(c.duration):
	case <-ctx.Done():
	}
	lost := 0
	for _, cl := range conns {
		if cl == nil {
			continue
		}
		select {
		case <-cl.Done():
			lost++
		default:
		}
	}
	res := &benchResult{
		Scenario: "conns", Broker: c.serverURL(), Protocol: c.version.String(), Duration: c.duration.Seconds(),
		Connections: int(done.Load()) - lost, ConnectErrors: int(failed.Load()) + lost,
		ConnectRate: float64(done.Load()) / connectDur.Seconds(),
	}
	if c.pid > 0 {
		after, err := readRSS(c.pid)
		if err != nil {
			return nil, err
		}
		res.RSSBeforeKB, res.RSSAfterKB = before, after
		if res.Connections > 0 {
			res.BytesPerConn = float64(after-before) * 1024 / float64(res.Connections)
		}
	}
	return res, nil
}

// subscribeIdle subscribes connection i of conns (--subscribe) to a topic
// of its own, bench/RUN/conns/I, at --qos; on a failure or a refusal (the
// client's error) it closes cl.
func (b *bench) subscribeIdle(ctx context.Context, cl *client.Client, i int) error {
	f := fmt.Sprintf("bench/%s/conns/%d", b.run, i)
	if _, err := cl.Subscribe(ctx, []packet.Subscription{{Filter: f, QoS: b.c.qos}}, func(*client.Message) {}); err != nil {
		cl.Close()
		return &exitError{code: 1, msg: "Error: subscribe: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	return nil
}

// readRSS returns VmRSS of process pid in kB, from /proc/PID/status.
func readRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("bench: --pid: %w", err)
	}
	defer f.Close()
	return parseRSS(f)
}

func parseRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("bench: reading VmRSS: %w", err)
	}
	return 0, errors.New("bench: no VmRSS line in the process status")
}

// printSummary writes the human-readable report.
func printSummary(w io.Writer, r *benchResult) {
	if r.SubBroker != "" {
		fmt.Fprintf(w, "scenario %s: publishers on %s, subscribers on %s (MQTT %s)\n", r.Scenario, r.Broker, r.SubBroker, r.Protocol)
	} else {
		fmt.Fprintf(w, "scenario %s against %s (MQTT %s)\n", r.Scenario, r.Broker, r.Protocol)
	}
	if r.Scenario == "conns" {
		fmt.Fprintf(w, "connections %d open, %d failed, %.0f connects/s\n", r.Connections, r.ConnectErrors, r.ConnectRate)
		if r.RSSAfterKB > 0 {
			fmt.Fprintf(w, "broker RSS %d kB -> %d kB: %.0f bytes per connection\n", r.RSSBeforeKB, r.RSSAfterKB, r.BytesPerConn)
		}
		return
	}
	loop := "open loop"
	if !r.OpenLoop {
		loop = fmt.Sprintf("at most %d outstanding per subscriber", r.Outstanding)
	}
	fmt.Fprintf(w, "qos %d, %d-byte payloads, %d publishers, %d subscribers, window %d, %s, %.2fs\n",
		r.QoS, r.Size, r.Publishers, r.Subscribers, r.Window, loop, r.Duration)
	fmt.Fprintf(w, "sent %d (%d publish errors), expected %d, received %d: lost %d, duplicates %d\n",
		r.Sent, r.PublishErrors, r.Expected, r.Received, r.Lost, r.Duplicates)
	fmt.Fprintf(w, "throughput: sent %.0f msg/s, received %.0f msg/s, %.2f MB/s\n", r.SendRate, r.RecvRate, r.RecvMBps)
	if l := r.Latency; l != nil {
		fmt.Fprintf(w, "latency us: p50 %.0f  p90 %.0f  p99 %.0f  max %.0f  mean %.0f\n", l.P50, l.P90, l.P99, l.Max, l.Mean)
	}
}

// setSubURL parses --sub-url scheme://host[:port][/path]: mqtt (port 1883),
// mqtts (8883), ws (80) or wss (443); ws and wss may give the WebSocket
// path (default /mqtt). The subscribers use the publishers' credentials
// and TLS flags, so a user name in the URL is refused.
func setSubURL(c *config, v string) error {
	scheme, rest, ok := strings.Cut(v, "://")
	scheme = strings.ToLower(scheme)
	if !ok {
		return usagef("Error: Invalid --sub-url %q (mqtt://host:port, mqtts://, ws:// or wss://).", v)
	}
	defaultPort := map[string]int{"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}[scheme]
	if defaultPort == 0 {
		return usagef("Error: Unsupported URL scheme in --sub-url: %q (mqtt, mqtts, ws or wss).", scheme)
	}
	authority, path, hasPath := strings.Cut(rest, "/")
	if strings.Contains(authority, "@") {
		return usagef("Error: --sub-url takes no user name or password: the subscribers use -u and -P, as the publishers.")
	}
	ws := scheme == "ws" || scheme == "wss"
	if hasPath && path != "" && !ws {
		return usagef("Error: Invalid --sub-url %q: only ws:// and wss:// take a path.", v)
	}
	host, port := authority, ""
	if h, p, err := net.SplitHostPort(authority); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(authority, "[") && strings.HasSuffix(authority, "]") {
		host = authority[1 : len(authority)-1]
	}
	if host == "" {
		return usagef("Error: Invalid --sub-url %q: no host given.", v)
	}
	n := defaultPort
	if port != "" {
		var err error
		if n, err = strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return usagef("Error: Invalid port in --sub-url: %s", port)
		}
	}
	c.subURL = scheme + "://" + net.JoinHostPort(host, strconv.Itoa(n))
	if ws && hasPath {
		c.subURL += "/" + path
	}
	return nil
}

// warmupPrefix starts the messages that check, before a run with
// --sub-url, that the subscribers' broker receives what is published on
// the publishers' broker. A bench message starts with its publisher index
// (big-endian, stats.go), never with these bytes.
const warmupPrefix = "mqtt-bench-warmup "

// warmupTimeout bounds the wait for the subscribers' broker to receive
// what is published on the publishers' broker (a variable for the tests).
var warmupTimeout = 30 * time.Second

// warmup is used when the subscribers are on another broker (--sub-url):
// a cluster learns of a subscription made on another node some time after
// the SUBACK, so before the measured run each publisher sends marked
// messages until every group it publishes to has received one of them.
type warmup struct {
	prefix    []byte // warmupPrefix, the run id, a space; then the publisher index
	groupOf   map[*subStats]int
	seen      [][]atomic.Bool // by group, by publisher
	pubGroups [][]int         // by publisher: the groups it publishes to
}

func newWarmup(run string, l layout, pubs int) *warmup {
	w := &warmup{
		prefix:    []byte(warmupPrefix + run + " "),
		groupOf:   make(map[*subStats]int),
		seen:      make([][]atomic.Bool, len(l.groups)),
		pubGroups: make([][]int, pubs),
	}
	for gi, g := range l.groups {
		w.seen[gi] = make([]atomic.Bool, pubs)
		for _, s := range g.subs {
			w.groupOf[s] = gi
		}
		for _, p := range g.pubs {
			w.pubGroups[p] = append(w.pubGroups[p], gi)
		}
	}
	return w
}

// payload is the warm-up message of publisher p.
func (w *warmup) payload(p int) []byte {
	return strconv.AppendInt(append([]byte(nil), w.prefix...), int64(p), 10)
}

// received reports whether a payload subscriber s received is a warm-up
// message (not counted in the run), and records it.
func (w *warmup) received(s *subStats, payload []byte) bool {
	rest, ok := bytes.CutPrefix(payload, w.prefix)
	if !ok {
		return false
	}
	if p, err := strconv.Atoi(string(rest)); err == nil && p >= 0 && p < len(w.pubGroups) {
		w.seen[w.groupOf[s]][p].Store(true)
	}
	return true
}

// done reports whether every group of publisher p has its warm-up message.
func (w *warmup) done(p int) bool {
	for _, g := range w.pubGroups[p] {
		if !w.seen[g][p].Load() {
			return false
		}
	}
	return true
}

// warmUp publishes warm-up messages at QoS 0 every 50 ms from the
// publishers whose groups have not all received one, for warmupTimeout at
// most.
func (b *bench) warmUp(ctx context.Context, pubs []*client.Client, l layout, w *warmup) error {
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		waiting := 0
		for i, cl := range pubs {
			if w.done(i) {
				continue
			}
			waiting++
			if err := cl.Publish(ctx, l.pubTopics[i], w.payload(i), client.PublishOptions{}); err != nil {
				return &exitError{code: 1, msg: "Error: warm-up publish: " + strings.TrimPrefix(err.Error(), "client: ")}
			}
		}
		if waiting == 0 {
			b.progress("%s warm-up: the subscribers on %s receive from %s after %.2fs", b.c.scenario, b.c.subURL,
				b.c.serverURL(), time.Since(start).Seconds())
			if b.tty {
				fmt.Fprintln(b.stderr)
			}
			return nil
		}
		if time.Since(start) > warmupTimeout {
			return &exitError{code: 1, msg: fmt.Sprintf("Error: after %s, %d of %d publishers on %s still reach no subscriber on %s: are the two brokers one cluster?",
				warmupTimeout, waiting, len(pubs), b.c.serverURL(), b.c.subURL)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
