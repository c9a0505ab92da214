// Command mqttd is the MQTT broker.
//
//	mqttd [-c FILE] [-p PORT] [-v] [--test-config] [--version]
//	mqttd passwd [-c] [-b] [-D] [-U] FILE USER [PASSWORD]
//
// Without a configuration file it listens on 127.0.0.1:1883 and allows
// anonymous clients (Mosquitto 2.0's local-only mode). SIGHUP reloads the
// password and ACL files, the TLS certificates and the log settings without
// dropping connections; SIGINT and SIGTERM stop it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqttd/mqttd/admin"
	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/bridge"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/cluster"
	"github.com/mqttd/mqttd/config"
	"github.com/mqttd/mqttd/internal/memtrim"
	"github.com/mqttd/mqttd/listener"
	"github.com/mqttd/mqttd/metrics"
	"github.com/mqttd/mqttd/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "%s\n\n", versionLine())
	fmt.Fprintf(w, `mqttd is an MQTT 3.1, 3.1.1 and 5.0 broker.

Usage: mqttd [-c config_file] [-p port] [-v] [--test-config] [--version]
       mqttd passwd [-c | -D | -U] [-b] passwordfile username [password]

 -c, --config-file : read configuration from a file (mosquitto.conf syntax).
 -p, --port        : listen on this port (may be repeated).
 -v, --verbose     : log every event, including debug ones (log_type all).
     --test-config : check the configuration file and the files it names, and exit.
 -h, --help        : this help.
     --version     : print the version and exit.

 passwd            : manage a password file as mosquitto_passwd does (mqttd passwd -h).

Signals: SIGHUP reloads password and ACL files, TLS certificates and log
settings; SIGINT and SIGTERM stop the broker.
`)
}

// options are the command line's.
type options struct {
	file       string
	ports      []int
	verbose    bool
	testConfig bool
}

func parseArgs(args []string, stdout, stderr io.Writer) (options, int, bool) {
	var o options
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, bool) {
			if i+1 >= len(args) {
				fmt.Fprintf(stderr, "mqttd: %s needs a value\n", a)
				return "", false
			}
			i++
			return args[i], true
		}
		switch a {
		case "-c", "--config-file":
			v, ok := next()
			if !ok {
				return o, 1, false
			}
			o.file = v
		case "-p", "--port":
			v, ok := next()
			if !ok {
				return o, 1, false
			}
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				fmt.Fprintf(stderr, "mqttd: invalid port %q\n", v)
				return o, 1, false
			}
			o.ports = append(o.ports, p)
		case "-v", "--verbose":
			o.verbose = true
		case "--test-config":
			o.testConfig = true
		case "-d", "--daemon":
			fmt.Fprintln(stderr, "mqttd: -d is not supported; run mqttd under a service manager such as systemd")
			return o, 1, false
		case "-h", "--help":
			usage(stdout)
			return o, 0, false
		case "--version":
			fmt.Fprintln(stdout, versionLine())
			return o, 0, false
		default:
			fmt.Fprintf(stderr, "mqttd: unknown option %q (see mqttd --help)\n", a)
			return o, 1, false
		}
	}
	return o, 0, true
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "passwd" {
		return auth.Passwd(args[1:], stdin, stdout, stderr)
	}
	o, status, ok := parseArgs(args, stdout, stderr)
	if !ok {
		return status
	}
	cfg := config.Default()
	if o.file != "" {
		var err error
		if cfg, err = config.Load(o.file); err != nil {
			fmt.Fprintf(stderr, "mqttd: %v\n", err)
			return 3
		}
	}
	if o.testConfig {
		if o.file == "" {
			fmt.Fprintln(stderr, "mqttd: --test-config needs -c FILE")
			return 1
		}
		if err := checkFiles(cfg); err != nil {
			fmt.Fprintf(stderr, "mqttd: %v\n", err)
			return 3
		}
		fmt.Fprintf(stdout, "%s: configuration OK\n", o.file)
		return 0
	}
	for _, p := range o.ports {
		cfg.AddPort(p)
	}
	b, err := start(cfg, o)
	if err != nil {
		fmt.Fprintf(stderr, "mqttd: %v\n", err)
		return 1
	}
	return b.wait()
}

// checkFiles loads what the configuration names: password and ACL files
// and TLS certificates.
func checkFiles(cfg *config.Config) error {
	if _, err := config.NewAuth(cfg); err != nil {
		return err
	}
	if _, err := metricsAccess(cfg); err != nil {
		return err
	}
	if cfg.AdminAddr != "" {
		if _, err := admin.LoadCredentials(adminConfig(cfg)); err != nil {
			return err
		}
	}
	for _, l := range cfg.Listeners {
		if lc := cfg.ListenerConfig(l); lc.TLS != nil {
			if _, err := lc.TLS.Build(); err != nil {
				return fmt.Errorf("listener %s: %w", l.Addr(), err)
			}
		}
	}
	return cfg.Cluster.CheckFiles()
}

// running is a started broker with what it needs to reload and stop.
type running struct {
	cfg     *config.Config
	opts    options
	log     *slog.Logger
	logging *config.Logging
	auth    *config.Auth
	srv     *broker.Server
	store   store.Store // nil without persistence
	sig     chan os.Signal
	tls     []*listener.TLSConfig
	metrics *http.Server
	scrape  swapHandler               // /metrics behind its credentials, replaced on SIGHUP
	metricH http.Handler              // /metrics itself
	admin   *admin.Server             // admin_listener; nil without one
	bridges map[string]*bridge.Bridge // by connection name; main goroutine only
	// running bridges for the metrics and $SYS readers (other goroutines),
	// replaced after each change of bridges.
	bridgeList atomic.Pointer[[]*bridge.Bridge]
	cluster    *cluster.Node // nil for a single broker
	wg         sync.WaitGroup
	errs       chan error
	pidFile    string
	stopTrim   context.CancelFunc // ends the heap trimmer (internal/memtrim)
}

// start opens the logs, the listeners and the metrics endpoint and serves.
func start(cfg *config.Config, o options) (*running, error) {
	logging, err := config.NewLogging(cfg.Log, o.verbose)
	if err != nil {
		return nil, err
	}
	logger := slog.New(logging.Handler())
	r := &running{cfg: cfg, opts: o, log: logger, logging: logging}
	// Signals are caught before any listener opens: a client that can
	// connect can also see a clean shutdown.
	r.sig = make(chan os.Signal, 1)
	signal.Notify(r.sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	fail := func(err error) (*running, error) {
		signal.Stop(r.sig)
		r.closeAll()
		return nil, err
	}
	logger.Info("mqttd version " + version + " starting")
	if cfg.File != "" {
		logger.Info("Config loaded from " + cfg.File + ".")
	} else {
		logger.Info("Starting in local only mode. Connections will only be possible from clients running on this machine.")
	}
	for _, w := range cfg.Warnings {
		logger.Warn(w)
	}
	for _, n := range notApplied(cfg) {
		logger.Warn(n)
	}
	if r.auth, err = config.NewAuth(cfg); err != nil {
		return fail(err)
	}
	for _, w := range config.PermissionWarnings(cfg) {
		logger.Warn(w)
	}
	access, err := metricsAccess(cfg)
	if err != nil {
		return fail(err)
	}

	// As Mosquitto does: listeners (privileged ports, TLS keys), the
	// metrics socket, the pid file and the logs are opened as root; then
	// the process switches to the unprivileged user, and only then opens
	// the store, so that every store file belongs to that user.
	type opened struct {
		ln net.Listener
		lo broker.ListenerOptions
	}
	var lns []opened
	var ml net.Listener
	closeListeners := func() {
		for _, o := range lns {
			o.ln.Close()
		}
		if ml != nil {
			ml.Close()
		}
	}
	for i, l := range cfg.Listeners {
		lc := cfg.ListenerConfig(l)
		lc.Logger = logger
		ln, err := listener.Listen(lc)
		if err != nil {
			closeListeners()
			return fail(fmt.Errorf("listener %s: %w", l.Addr(), err))
		}
		if lc.TLS != nil {
			r.tls = append(r.tls, lc.TLS)
		}
		r.auth.Bind(ln.Addr().String(), i)
		lns = append(lns, opened{ln, cfg.ListenerOptions(l)})
		logger.Info(openingMessage(l, ln))
	}
	if cfg.MetricsAddr != "" {
		if ml, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			closeListeners()
			return fail(fmt.Errorf("metrics_listener: %w", err))
		}
		mode := "open to anyone who can reach it"
		if !access.Open() {
			mode = "authentication required"
		}
		logger.Info("Opening metrics listener on " + ml.Addr().String() + " (" + mode + ").")
	}
	if cfg.PidFile != "" {
		if err := os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			closeListeners()
			return fail(fmt.Errorf("pid_file: %w", err))
		}
		r.pidFile = cfg.PidFile
	}
	// The admin listener's files are read as root, as the listeners' keys.
	var adminCreds *admin.Credentials
	if cfg.AdminAddr != "" {
		if adminCreds, err = admin.LoadCredentials(adminConfig(cfg)); err != nil {
			closeListeners()
			return fail(err)
		}
	}
	sdir := storeDir(cfg.PersistenceLocation, cfg.File)
	if err := switchUser(cfg, sdir, logger); err != nil {
		closeListeners()
		return fail(err)
	}

	bo := cfg.Broker
	bo.Logger = logger
	bo.Version = "mqttd version " + version
	bo.OnEvent = logging.Event
	r.auth.Apply(&bo)
	if cfg.Persistence {
		p := persistence{dir: sdir, sync: cfg.PersistenceSync,
			moveAside: cfg.PersistenceOnCorruption == "move-aside", logger: logger}
		srv, st, err := p.openStore(func(st store.Store) *broker.Server {
			o := bo
			o.Store = st
			o.StoreDir = p.dir // its free space is watched (persistence_min_free_bytes)
			return broker.New(o)
		})
		if err != nil {
			closeListeners()
			return fail(err)
		}
		r.srv, r.store = srv, st
		logger.Info("Persistence: store in "+p.dir+".", "sync", cfg.PersistenceSync)
	} else {
		r.srv = broker.New(bo)
	}
	if cc := cfg.Cluster; cc.Enabled() {
		// A cluster node; without cluster_* lines no NATS code runs.
		node, err := cluster.New(cluster.Config{Name: cc.Name, Node: cc.Node, Listen: cc.Listen, Peers: cc.Peers,
			CAFile: cc.CAFile, CertFile: cc.CertFile, KeyFile: cc.KeyFile, Dir: clusterDir(sdir),
			AdoptAfter: cc.AdoptAfter, Logger: logger})
		if err == nil {
			err = r.srv.AddHook(node)
		}
		if err == nil {
			err = node.Start(context.Background())
		}
		if err != nil {
			closeListeners()
			return fail(err)
		}
		r.cluster = node // it publishes $SYS/broker/cluster/... itself
	}

	if cfg.AdminAddr != "" {
		// Before the listeners serve: it adds a broker hook.
		acfg := adminConfig(cfg)
		acfg.Credentials, acfg.Version, acfg.StoreDir, acfg.Logger = adminCreds, "mqttd version "+version,
			storeDirIf(cfg, sdir), logger
		a, err := admin.New(r.srv, acfg)
		if err == nil {
			err = a.Start()
		}
		if err != nil {
			closeListeners()
			return fail(err)
		}
		r.admin = a
	}
	if ml != nil {
		mux := http.NewServeMux()
		r.metricH = metrics.Handler(r.snapshot)
		r.scrape.set(metrics.Protect(r.metricH, access))
		mux.Handle("/metrics", &r.scrape)
		r.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.metrics.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("metrics listener failed", "err", err)
			}
		}()
	}
	r.errs = make(chan error, len(lns))
	for _, o := range lns {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.srv.ServeListener(o.ln, o.lo); err != nil && !errors.Is(err, broker.ErrServerClosed) {
				r.errs <- err
			}
		}()
	}
	logger.Info("mqttd version " + version + " running")
	// The heap's free pages go back to the system once the broker is quiet
	// (after a wave of connections, say): docs/operations.md, "Sizing".
	trimCtx, stopTrim := context.WithCancel(context.Background())
	r.stopTrim = stopTrim
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		(&memtrim.Trimmer{Logger: logger}).Run(trimCtx)
	}()
	r.bridges = map[string]*bridge.Bridge{}
	r.srv.AddSysSource(r.bridgeSys)
	r.startBridges(cfg.Bridges)
	return r, nil
}

// startBridges starts the bridges of cs that are not running.
func (r *running) startBridges(cs []*bridge.Config) {
	for _, c := range cs {
		if r.bridges[c.Name] != nil {
			continue
		}
		b, err := bridge.Start(c, r.srv.DialLocal, r.log)
		if err != nil {
			r.log.Error("bridge not started", "bridge", c.Name, "err", err)
			continue
		}
		r.bridges[c.Name] = b
	}
	r.listBridges()
}

// listBridges publishes the running bridges to bridgeStats.
func (r *running) listBridges() {
	list := make([]*bridge.Bridge, 0, len(r.bridges))
	for _, b := range r.bridges {
		list = append(list, b)
	}
	slices.SortFunc(list, func(a, b *bridge.Bridge) int { return strings.Compare(a.Config().Name, b.Config().Name) })
	r.bridgeList.Store(&list)
}

// bridgeStats reads the counters of the running bridges; any goroutine.
func (r *running) bridgeStats() []bridge.Stats {
	p := r.bridgeList.Load()
	if p == nil {
		return nil
	}
	out := make([]bridge.Stats, 0, len(*p))
	for _, b := range *p {
		out = append(out, b.Stats())
	}
	return out
}

// bridgeSys publishes each bridge's counters under $SYS/broker/bridges/NAME/
// (mqttd's own topics; the state topic of Mosquitto's notifications is the
// bridge's own).
func (r *running) bridgeSys(put func(topic, value string)) {
	for _, st := range r.bridgeStats() {
		p := "$SYS/broker/bridges/" + st.Name + "/"
		u := func(v uint64) string { return strconv.FormatUint(v, 10) }
		state := "0"
		if st.Connected {
			state = "1"
		}
		put(p+"state", state)
		put(p+"messages/sent", u(st.MsgsOut))
		put(p+"messages/received", u(st.MsgsIn))
		put(p+"bytes/sent", u(st.BytesOut))
		put(p+"bytes/received", u(st.BytesIn))
		put(p+"queued", strconv.Itoa(st.Queued))
		put(p+"reconnects", u(st.Reconnects))
		put(p+"dropped", u(st.Dropped+st.Refused))
	}
}

// reloadBridges stops the bridges whose section is gone or changed and
// starts the new and changed ones; unchanged bridges stay up.
func (r *running) reloadBridges(cs []*bridge.Config) {
	want := map[string]*bridge.Config{}
	for _, c := range cs {
		want[c.Name] = c
	}
	for name, b := range r.bridges {
		if c := want[name]; c == nil || !c.Equal(b.Config()) {
			r.log.Info("bridge configuration changed; restarting it", "bridge", name)
			b.Stop()
			delete(r.bridges, name)
		}
	}
	r.startBridges(cs)
}

// openingMessage is Mosquitto's line for a listener being opened.
func openingMessage(l *config.Listener, ln net.Listener) string {
	switch {
	case l.Unix:
		return "Opening unix listen socket on path " + l.Address + "."
	case l.Protocol == "websockets":
		return "Opening websockets listen socket on port " + strconv.Itoa(l.Port) + " (" + ln.Addr().String() + ")."
	}
	return "Opening listen socket on port " + strconv.Itoa(l.Port) + " (" + ln.Addr().String() + ")."
}

// notApplied names the options that were set to something mqttd does not
// act on yet.
func notApplied(cfg *config.Config) []string {
	var out []string
	note := func(cond bool, what string) {
		if cond {
			out = append(out, what+" is accepted but not applied yet")
		}
	}
	note(cfg.MaxInflightBytes > 0, "max_inflight_bytes")
	note(cfg.UpgradeOutgoingQoS, "upgrade_outgoing_qos true")
	for _, l := range cfg.Listeners {
		note(l.UseUsernameAsClientID, "use_username_as_clientid")
		note(l.CiphersTLS13 != "", "ciphers_tls1.3 (Go enables every TLS 1.3 suite)")
	}
	for _, d := range cfg.Log.Dests {
		note(d.Kind == "topic", "log_dest topic")
	}
	return out
}

// snapshot reads the broker's counters for the metrics endpoint.
func (r *running) snapshot() metrics.Snapshot {
	s := r.srv.Stats()
	return metrics.Snapshot{
		ClientsConnected: s.ClientsConnected, ClientsDisconnected: s.ClientsDisconnected,
		ClientsMaximum: s.ClientsMaximum, ClientsExpired: s.ClientsExpired, SocketsAccepted: s.SocketsAccepted,
		Subscriptions: s.Subscriptions, Retained: s.Retained,
		PacketsReceived: s.MessagesReceived, PacketsSent: s.MessagesSent,
		BytesReceived: s.BytesReceived, BytesSent: s.BytesSent,
		PublishReceived: s.PublishReceivedQoS, PublishSent: s.PublishSentQoS,
		PublishBytesRecv: s.PublishBytesRecv, PublishBytesSent: s.PublishBytesSent,
		DroppedQueueFull: s.DroppedQueueFull, DroppedBacklog: s.DroppedBacklog, DroppedTooLarge: s.DroppedTooLarge,
		DroppedMemory: s.DroppedMemory, StoreWrites: s.StoreWrites,
		StoreWriteSeconds: s.StoreWriteSeconds, RefusedMaxConns: r.srv.ListenerRefusals(),
		RefusedConnRate: s.RefusedConnRate, PublishRateWaits: s.PublishRateWaits,
		Inflight: s.Inflight, Queued: s.Queued, AuthFailures: s.AuthFailures,
		PollSpins: s.PollSpins, PollSpinHits: s.PollSpinHits,
		DisconnectsByReason: r.srv.DisconnectsByReason(),
		Bridges:             bridgeMetrics(r.bridgeStats()),
		Cluster:             r.cluster.Metrics(), // nil for a single broker
		Uptime:              time.Since(startTime),
	}
}

var startTime = time.Now()

// bridgeMetrics turns bridge counters into their metrics.
func bridgeMetrics(sts []bridge.Stats) []metrics.BridgeSnapshot {
	out := make([]metrics.BridgeSnapshot, 0, len(sts))
	for _, st := range sts {
		out = append(out, metrics.BridgeSnapshot{Name: st.Name, Connected: st.Connected,
			MessagesSent: st.MsgsOut, MessagesReceived: st.MsgsIn, BytesSent: st.BytesOut, BytesReceived: st.BytesIn,
			Queued: st.Queued, Reconnects: st.Reconnects, Dropped: st.Dropped + st.Refused})
	}
	return out
}

// reload re-reads the configuration file (if any) and applies what can
// change while running: security files and options, TLS certificates, logs.
func (r *running) reload() {
	r.log.Info("Reloading config.")
	var next *config.Config
	if r.cfg.File != "" {
		c, err := config.Load(r.cfg.File)
		if err != nil {
			r.log.Error("reload: configuration file kept as it was", "err", err)
		} else {
			next = c
		}
	}
	if next != nil {
		if err := r.logging.Reconfigure(next.Log, r.opts.verbose); err != nil {
			r.log.Error("reload: log settings kept as they were", "err", err)
		}
	}
	if err := r.auth.Reload(next); err != nil {
		r.log.Error("reload: password and ACL files kept as they were", "err", err)
	} else if next != nil {
		for _, w := range config.PermissionWarnings(next) {
			r.log.Warn(w)
		}
	}
	for _, t := range r.tls {
		if err := t.Reload(); err != nil {
			r.log.Error("reload: TLS certificates kept as they were", "certfile", t.CertFile, "err", err)
		}
	}
	if next != nil && r.admin != nil {
		r.reloadAdmin(next)
	}
	if next != nil && r.metrics != nil {
		if access, err := metricsAccess(next); err != nil {
			r.log.Error("reload: metrics credentials kept as they were", "err", err)
		} else {
			r.scrape.set(metrics.Protect(r.metricH, access))
		}
	}
	if next != nil {
		r.reloadBridges(next.Bridges)
	}
	r.log.Info("Reload done.")
}

// swapHandler serves the handler set last.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// reloadAdmin reads the admin listener's password file, token and
// certificate again, as Mosquitto reads its password file again on SIGHUP.
// The listener's address stays as it started.
func (r *running) reloadAdmin(next *config.Config) {
	acfg := adminConfig(next)
	if acfg.Addr != r.cfg.AdminAddr {
		r.log.Warn("reload: admin_listener changed; the new address takes effect on restart",
			"listener", r.cfg.AdminAddr)
		acfg.Addr = r.cfg.AdminAddr // the non-loopback check is of the address served
	}
	cr, err := admin.LoadCredentials(acfg)
	if err == nil {
		err = r.admin.Reload(cr)
	}
	if err != nil {
		r.log.Error("reload: admin credentials kept as they were", "err", err)
	}
}

// wait serves until SIGINT or SIGTERM, reloading on SIGHUP.
func (r *running) wait() int {
	sig := r.sig
	defer signal.Stop(sig)
	status := 0
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				r.reload()
				continue
			}
			r.log.Info("mqttd version "+version+" terminating", "signal", s.String())
			break loop
		case err := <-r.errs:
			r.log.Error("listener failed", "err", err)
			status = 1
			break loop
		}
	}
	for name, b := range r.bridges {
		b.Stop()
		delete(r.bridges, name)
	}
	r.listBridges()
	if r.cluster != nil {
		r.leaveCluster()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		r.log.Error("shutdown", "err", err)
		status = 1
	}
	if r.cluster != nil {
		r.cluster.Close()
	}
	r.closeAll()
	r.wg.Wait()
	return status
}

// leaveCluster hands this node's persistent sessions to the other nodes
// of its cluster before the broker shuts down: its clients are
// disconnected (0x8B), nothing can connect, and each session goes to
// another node, so the others neither hold them nor refuse
// acknowledgements when this node's links go (cluster/leave.go).
func (r *running) leaveCluster() {
	qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer qcancel()
	if err := r.srv.Quiesce(qctx); err != nil {
		r.log.Warn("shutdown: clients still connected", "err", err)
	}
	lctx, lcancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer lcancel()
	if moved, err := r.cluster.Leave(lctx); err != nil {
		r.log.Warn("shutdown: not every session handed over to the other nodes: they hold and adopt the rest "+
			"as a lost node's", "sessions", moved, "err", err)
	}
}

// leaveTimeout bounds the handover of a node's sessions at shutdown.
const leaveTimeout = 60 * time.Second

// adminConfig is the admin_* options.
func adminConfig(cfg *config.Config) admin.Config {
	return admin.Config{Addr: cfg.AdminAddr, PasswordFile: cfg.AdminPasswordFile, TokenFile: cfg.AdminTokenFile,
		CertFile: cfg.AdminCertFile, KeyFile: cfg.AdminKeyFile}
}

// clusterDir is where a cluster node keeps its state: beside the store,
// in persistence_location/mqttd-cluster.
func clusterDir(storeDir string) string {
	return filepath.Join(filepath.Dir(storeDir), "mqttd-cluster")
}

// storeDirIf is the store's directory when persistence is on, else "".
func storeDirIf(cfg *config.Config, dir string) string {
	if !cfg.Persistence {
		return ""
	}
	return dir
}

// closeAll stops the metrics endpoint, closes the store (after Shutdown, or
// when starting failed), removes the pid file and closes logs.
func (r *running) closeAll() {
	if r.stopTrim != nil {
		r.stopTrim()
	}
	if r.store != nil {
		if err := r.store.Close(); err != nil {
			r.log.Error("closing the store", "err", err)
		}
		r.store = nil
	}
	if r.metrics != nil {
		r.metrics.Close()
	}
	if r.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r.admin.Shutdown(ctx)
		cancel()
		r.admin = nil
	}
	if r.pidFile != "" {
		if err := os.Remove(r.pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("pid_file not removed", "err", err)
		}
	}
	r.logging.Close()
}

// metricsAccess reads metrics_password_file and metrics_token_file.
func metricsAccess(cfg *config.Config) (metrics.Access, error) {
	var a metrics.Access
	if cfg.MetricsPasswordFile != "" {
		pw, err := auth.LoadPasswordFile(cfg.MetricsPasswordFile)
		if err != nil {
			return a, fmt.Errorf("metrics_password_file: %w", err)
		}
		a.CheckPassword = pw.Check
	}
	if cfg.MetricsTokenFile != "" {
		b, err := os.ReadFile(cfg.MetricsTokenFile)
		if err != nil {
			return a, fmt.Errorf("metrics_token_file: %w", err)
		}
		if a.Token = strings.TrimSpace(string(b)); a.Token == "" {
			return a, fmt.Errorf("metrics_token_file %s: empty token", cfg.MetricsTokenFile)
		}
	}
	return a, nil
}
