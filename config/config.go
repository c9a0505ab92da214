// Package config reads mosquitto.conf-compatible configuration files and
// turns them into broker options and listeners. It is the only package that
// wires the others together: Parse and Load read a file with Mosquitto 2.0's
// semantics (options.go lists every key), Security turns the password and
// ACL files into broker hooks that SIGHUP can reload, and Logging formats
// logs and connection messages as Mosquitto does.
package config

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mqttd/mqttd/auth/httpauth"
	"github.com/mqttd/mqttd/auth/jwtauth"
	"github.com/mqttd/mqttd/bridge"
	"github.com/mqttd/mqttd/broker"
)

// Security holds the options that per_listener_settings moves from the
// whole broker to each listener.
type Security struct {
	AllowAnonymous    bool
	AllowAnonymousSet bool   // allow_anonymous appeared (else Mosquitto 2.0's default applies)
	PasswordFile      string // password_file
	ACLFile           string // acl_file
	// AllowZeroLengthClientID lets 3.1.1 and 5.0 clients connect with an empty
	// client id and get one assigned (allow_zero_length_clientid, default true).
	AllowZeroLengthClientID bool
	AutoIDPrefix            string // auto_id_prefix, default "auto-"
}

func defaultSecurity() Security {
	return Security{AllowZeroLengthClientID: true, AutoIDPrefix: "auto-"}
}

// Listener is one configured network listener with its own settings.
type Listener struct {
	Port    int
	Address string // bind address ("" = all interfaces); for unix sockets the path
	Unix    bool   // `listener 0 /path`: a unix socket at Address
	Line    string // file:line of its `listener` (or `port`) option, for errors

	Protocol       string // mqtt (default) or websockets
	SocketDomain   string // "" (both), ipv4 or ipv6
	BindInterface  string
	MaxConnections int    // -1 unlimited
	MountPoint     string // mount_point

	// MaxConnectionRate (max_connection_rate, mqttd): new connections per
	// second; 0 = unlimited.
	MaxConnectionRate int

	// HandshakeTimeout (handshake_timeout, mqttd) bounds each TLS handshake
	// and WebSocket upgrade; 0 = listener.DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxPendingPerAddress (max_pending_handshakes_per_address, mqttd)
	// bounds the handshakes in progress from one address; 0 =
	// listener.DefaultMaxPendingPerAddress, -1 = no limit.
	MaxPendingPerAddress int
	// WebSocketsOrigins (websockets_origin, mqttd) are the browser origins a
	// WebSocket upgrade may come from; empty = any.
	WebSocketsOrigins []string

	CAFile, CAPath, CertFile, KeyFile, CRLFile string
	RequireCertificate                         bool
	UseIdentityAsUsername                      bool
	UseSubjectAsUsername                       bool
	TLSVersion                                 string
	Ciphers                                    string
	CiphersTLS13                               string // ciphers_tls1.3: accepted; Go enables every TLS 1.3 suite

	// UseUsernameAsClientID is accepted and not applied (see options.go).
	UseUsernameAsClientID bool
	// Security is this listener's own security settings; only used with
	// per_listener_settings true.
	Security Security
}

// Addr is the host:port to listen on (the path for a unix socket).
func (l *Listener) Addr() string {
	if l.Unix {
		return l.Address
	}
	return net.JoinHostPort(l.Address, strconv.Itoa(l.Port))
}

// TLS reports whether the listener speaks TLS (certfile given).
func (l *Listener) TLS() bool { return l.CertFile != "" || l.KeyFile != "" }

// LogConfig are the logging options.
type LogConfig struct {
	Dests              []LogDest // log_dest; default stderr
	Types              []string  // log_type; default error, warning, notice, information
	Timestamp          bool      // log_timestamp, default true
	TimestampFormat    string    // log_timestamp_format (strftime), "" = Unix seconds
	ConnectionMessages bool      // connection_messages, default true
}

// LogDest is one log_dest: stderr, stdout, file (with Path), syslog, topic
// or none.
type LogDest struct {
	Kind string
	Path string
}

// Cluster is the cluster_* options: nodes with the same cluster_name,
// linked by cluster_listen and cluster_peer, form one cluster (cluster.go).
type Cluster struct {
	Name                      string        // cluster_name
	Node                      string        // cluster_node (default: the host name)
	Listen                    string        // cluster_listen host:port
	Peers                     []string      // cluster_peer, repeatable
	CAFile, CertFile, KeyFile string        // cluster_cafile, cluster_certfile, cluster_keyfile
	AdoptAfter                time.Duration // cluster_adopt_after (seconds; 0 = the cluster's default)
	Line                      string        // file:line of the first cluster_* line

	lines map[string]string // option → file:line that set it
}

// clusterOptions are the cluster_* keys.
var clusterOptions = []string{"cluster_name", "cluster_node", "cluster_listen", "cluster_peer", "cluster_cafile",
	"cluster_certfile", "cluster_keyfile", "cluster_adopt_after"}

func isClusterOption(key string) bool {
	for _, k := range clusterOptions {
		if k == key {
			return true
		}
	}
	return false
}

// option applies one cluster_* line, read at where (file:line).
func (c *Cluster) option(a *argReader, where string) error {
	v, err := a.one()
	if err != nil {
		return err
	}
	if c.Line == "" {
		c.Line = where
	}
	if c.lines == nil {
		c.lines = make(map[string]string)
	}
	if prev, ok := c.lines[a.key]; ok && a.key != "cluster_peer" {
		return fmt.Errorf("%s given twice (first at %s)", a.key, prev)
	}
	c.lines[a.key] = where
	switch a.key {
	case "cluster_name", "cluster_node":
		if err := checkClusterName(v); err != nil {
			return fmt.Errorf("%s: %w", a.key, err)
		}
		if a.key == "cluster_name" {
			c.Name = v
		} else {
			c.Node = v
		}
	case "cluster_listen", "cluster_peer":
		// cluster_listen may leave the host out (every interface).
		if err := checkHostPort(v, a.key == "cluster_peer"); err != nil {
			return fmt.Errorf("%s: %w", a.key, err)
		}
		if a.key == "cluster_listen" {
			c.Listen = v
			break
		}
		for _, p := range c.Peers {
			if p == v {
				return fmt.Errorf("cluster_peer %s given twice", v)
			}
		}
		c.Peers = append(c.Peers, v)
	case "cluster_cafile":
		c.CAFile = v
	case "cluster_certfile":
		c.CertFile = v
	case "cluster_keyfile":
		c.KeyFile = v
	case "cluster_adopt_after":
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 1 || secs > 86400 {
			return fmt.Errorf("cluster_adopt_after: %q is not a number of seconds from 1 to 86400", v)
		}
		c.AdoptAfter = time.Duration(secs) * time.Second
	}
	return nil
}

// checkClusterName accepts what package cluster accepts for cluster_name
// and cluster_node: 1 to 128 letters, digits, '-', '_' and '.'.
func checkClusterName(s string) error {
	if len(s) > 128 {
		return fmt.Errorf("%q: more than 128 characters", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%q: only letters, digits, '-', '_' and '.'", s)
		}
	}
	return nil
}

// checkHostPort accepts host:port with a port from 1 to 65535.
func checkHostPort(a string, needHost bool) error {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", a, err)
	}
	if h == "" && needHost {
		return fmt.Errorf("%q has no host", a)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", a, p)
	}
	return nil
}

// Enabled reports whether any cluster_* line was given.
func (c *Cluster) Enabled() bool {
	return c.Line != "" || c.Name != "" || c.Node != "" || c.Listen != "" || len(c.Peers) > 0 || c.CAFile != "" ||
		c.CertFile != "" || c.KeyFile != ""
}

// check refuses an incomplete cluster configuration; the error names the
// file and line of the first cluster_* line (or of the TLS line given).
func (c *Cluster) check() error {
	if !c.Enabled() {
		return nil
	}
	if c.Name == "" {
		return fmt.Errorf("%s: cluster_* options need cluster_name", c.Line)
	}
	if c.Listen == "" {
		return fmt.Errorf("%s: cluster_* options need cluster_listen", c.Line)
	}
	if tls := (c.CAFile != "") == (c.CertFile != "") && (c.CertFile != "") == (c.KeyFile != ""); !tls {
		where := c.lines["cluster_cafile"]
		for _, k := range []string{"cluster_certfile", "cluster_keyfile"} {
			if where == "" {
				where = c.lines[k]
			}
		}
		return fmt.Errorf("%s: cluster TLS needs cluster_cafile, cluster_certfile and cluster_keyfile together", where)
	}
	return nil
}

// CheckFiles loads the cluster's TLS files, as the node will (mqttd
// --test-config).
func (c *Cluster) CheckFiles() error {
	if c.CertFile == "" {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		return fmt.Errorf("%s: cluster_certfile/cluster_keyfile: %w", c.lines["cluster_certfile"], err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return fmt.Errorf("%s: cluster_cafile: %w", c.lines["cluster_cafile"], err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: cluster_cafile %s: no PEM certificate", c.lines["cluster_cafile"], c.CAFile)
	}
	return nil
}

// Config is a parsed configuration.
type Config struct {
	File string // the file it was read from, "" for defaults

	// Broker holds the options that map straight onto the broker.
	Broker    broker.Options
	Listeners []*Listener

	PerListenerSettings bool
	// Security is the broker-wide security (per_listener_settings false).
	Security          Security
	ClientIDPrefixes  string // clientid_prefixes
	ACLCheckSubscribe bool   // acl_check_subscribe (mqttd)
	// BadCredentialsNotAuthorized answers a wrong user name or password with
	// "not authorized" (3.x return code 5, 5.0 0x87) as Mosquitto 2.0 does;
	// false answers "bad user name or password" (4 / 0x86). Option
	// bad_credentials_code not_authorized|bad_username_or_password (mqttd).
	BadCredentialsNotAuthorized bool

	Persistence             bool
	PersistenceLocation     string
	PersistenceFile         string
	AutosaveInterval        time.Duration
	AutosaveOnChanges       bool
	PersistenceSync         string // always (default), batch, never
	PersistenceOnCorruption string // refuse (default), move-aside

	MaxInflightBytes   int64 // accepted, not yet applied
	RetainAvailable    bool  // retain_available (also in Broker)
	MaxQoS             int   // max_qos (also in Broker)
	UpgradeOutgoingQoS bool  // accepted, not yet applied
	MaxTopicAlias      int   // max_topic_alias (also in Broker)
	MemoryLimit        int64 // accepted, not yet applied
	SetTCPNoDelay      *bool // nil: unset (mqttd sets TCP_NODELAY)

	Log     LogConfig
	PidFile string
	User    string // user: privileges to drop to when started as root

	MetricsAddr string // metrics_listener PORT [ADDRESS] as host:port (default address 127.0.0.1); "" = none
	// MetricsPasswordFile (metrics_password_file) holds the users, in
	// mosquitto_passwd format, that may scrape with HTTP basic auth.
	MetricsPasswordFile string
	// MetricsTokenFile (metrics_token_file) holds a bearer token that may
	// scrape. With neither file the endpoint is open.
	MetricsTokenFile string

	// AdminAddr is admin_listener PORT [ADDRESS] as host:port (default
	// address 127.0.0.1): the admin API and dashboard (package admin); ""
	// = none. A non-loopback address needs AdminPasswordFile or
	// AdminTokenFile.
	AdminAddr         string
	AdminPasswordFile string // admin_password_file: mosquitto_passwd-format users (HTTP Basic)
	AdminTokenFile    string // admin_token_file: a bearer token
	AdminCertFile     string // admin_certfile: serve the admin listener over HTTPS
	AdminKeyFile      string // admin_keyfile

	// HTTPAuth are the auth_http_* options (mqttd): authentication and
	// authorization by an HTTP service (auth/httpauth). Global scope.
	HTTPAuth httpauth.Config
	// JWTAuth are the auth_jwt_* options (mqttd): JSON Web Tokens as
	// passwords (auth/jwtauth). Global scope.
	JWTAuth jwtauth.Config
	// DynSec is the built-in dynamic-security plugin (`plugin
	// .../mosquitto_dynamic_security.so`, plugin_opt_config_file; dynsec.go).
	DynSec DynSec

	// httpLine and jwtLine are the file:line of the first auth_http_ and
	// auth_jwt_ option, for errors; "" when none was given.
	httpLine, jwtLine string

	// Bridges are the `connection` sections, in order (bridge package).
	Bridges   []*bridge.Config
	curBridge *bridge.Config

	// Cluster is the cluster_* lines (cluster package); empty for a
	// single broker.
	Cluster Cluster

	// Warnings are things that parsed but deserve a word in the log.
	Warnings []string

	defaultListener *Listener // `port`/`bind_address` and options before the first listener
	defaultUsed     bool      // `port` or `bind_address` given
	cur             *Listener // the listener options apply to
	firstSecurity   string    // file:line of the first security option
}

// Default is the configuration of a broker started without a file:
// Mosquitto 2.0's local-only mode, loopback port 1883 with anonymous access.
func Default() *Config {
	c := newConfig("")
	if err := c.finish(); err != nil {
		panic(err) // the defaults are valid
	}
	return c
}

func newConfig(name string) *Config {
	// Unlike Mosquitto, mqttd persists by default: to its embedded store in
	// a "data" directory beside the configuration (or the working directory).
	c := &Config{File: name, Security: defaultSecurity(), RetainAvailable: true, MaxQoS: 2,
		Persistence: true, PersistenceSync: "always", PersistenceOnCorruption: "refuse"}
	c.Log = LogConfig{Timestamp: true, ConnectionMessages: true}
	c.BadCredentialsNotAuthorized = true
	c.defaultListener = &Listener{Port: 1883, MaxConnections: -1, Security: defaultSecurity()}
	c.cur = c.defaultListener
	return c
}

// ErrInvalid is wrapped by every configuration error.
var ErrInvalid = errors.New("config: invalid configuration")

// maxIncludeDepth bounds include_dir nesting (a directory including itself).
const maxIncludeDepth = 8

// Load reads the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a configuration in mosquitto.conf syntax: one "key value..."
// per line, '#' comments, blank lines ignored. name labels errors and is
// where relative include_dir paths start... as in Mosquitto, they are taken
// as given (relative to the working directory).
func Parse(r io.Reader, name string) (*Config, error) {
	c := newConfig(name)
	if err := c.read(r, name, 0); err != nil {
		return nil, err
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return c, nil
}

// read parses one file's lines into c.
func (c *Config) read(r io.Reader, name string, depth int) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, rest, _ := strings.Cut(text, " ")
		if k, r2, ok := strings.Cut(text, "\t"); ok && len(k) < len(key) {
			key, rest = k, r2
		}
		rest = strings.TrimSpace(rest)
		where := fmt.Sprintf("%s:%d", name, line)
		if key == "include_dir" {
			if err := c.includeDir(rest, where, depth); err != nil {
				return err
			}
			continue
		}
		if err := c.apply(key, rest, where); err != nil {
			return fmt.Errorf("%w: %s: %s", ErrInvalid, where, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config: %s: %w", name, err)
	}
	return nil
}

// includeDir reads every file ending in ".conf" in dir, in sorted order, as
// Mosquitto does.
func (c *Config) includeDir(dir, where string, depth int) error {
	if dir == "" {
		return fmt.Errorf("%w: %s: include_dir needs a directory", ErrInvalid, where)
	}
	if depth >= maxIncludeDepth {
		return fmt.Errorf("%w: %s: include_dir nested more than %d deep", ErrInvalid, where, maxIncludeDepth)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: %s: include_dir: %w", ErrInvalid, where, err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		path := filepath.Join(dir, n)
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("%w: %s: include_dir: %w", ErrInvalid, where, err)
		}
		err = c.read(f, path, depth+1)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// finish applies Mosquitto 2.0's defaults: with no listener, loopback port
// 1883 and anonymous access (local-only mode); with listeners, anonymous
// access only if asked. It also checks what single lines cannot.
func (c *Config) finish() error {
	d := c.defaultListener
	switch {
	case c.defaultUsed:
		c.Listeners = append([]*Listener{d}, c.Listeners...)
	case len(c.Listeners) == 0:
		// Local-only mode: the default listener on loopback.
		if d.Address == "" {
			d.Address = "127.0.0.1"
		}
		c.Listeners = []*Listener{d}
		if !c.Security.AllowAnonymousSet {
			c.Security.AllowAnonymous = true
		}
		if !d.Security.AllowAnonymousSet {
			d.Security.AllowAnonymous = true
		}
	case d.Line != "":
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s: %s; it has no listener of its own "+
			"(no port option), so it is not used", d.Line, "this option applies to the default listener"))
	}
	for _, l := range c.Listeners {
		where := l.Line
		if where == "" {
			where = c.File
		}
		if (l.CertFile == "") != (l.KeyFile == "") {
			return fmt.Errorf("%w: %s: listener %s: certfile and keyfile must both be given", ErrInvalid, where, l.Addr())
		}
		if l.CertFile == "" && (l.RequireCertificate || l.UseIdentityAsUsername || l.UseSubjectAsUsername ||
			l.CAFile != "" || l.CAPath != "" || l.CRLFile != "") {
			return fmt.Errorf("%w: %s: listener %s: TLS options need certfile and keyfile", ErrInvalid, where, l.Addr())
		}
		if (l.UseIdentityAsUsername || l.UseSubjectAsUsername) && !l.RequireCertificate {
			return fmt.Errorf("%w: %s: listener %s: use_identity_as_username and use_subject_as_username need require_certificate true",
				ErrInvalid, where, l.Addr())
		}
		if l.RequireCertificate && l.CAFile == "" && l.CAPath == "" {
			return fmt.Errorf("%w: %s: listener %s: require_certificate needs cafile or capath", ErrInvalid, where, l.Addr())
		}
		if l.Unix && l.Protocol == "websockets" {
			return fmt.Errorf("%w: %s: listener %s: websockets over a unix socket is not supported", ErrInvalid, where, l.Addr())
		}
		if len(l.WebSocketsOrigins) > 0 && l.Protocol != "websockets" {
			return fmt.Errorf("%w: %s: listener %s: websockets_origin needs protocol websockets", ErrInvalid, where, l.Addr())
		}
	}
	if err := c.finishAuthBackends(); err != nil {
		return err
	}
	for _, b := range c.Bridges {
		if err := b.Finish(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, b.Line, err)
		}
	}
	if err := bridge.CheckAll(c.Bridges); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, c.File, err)
	}
	if err := c.Cluster.check(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err) // the error names file:line
	}
	if len(c.Log.Dests) == 0 {
		c.Log.Dests = []LogDest{{Kind: "stderr"}}
	}
	if len(c.Log.Types) == 0 {
		c.Log.Types = []string{"error", "warning", "notice", "information"}
	}
	return nil
}

// AddPort adds a listener as mqttd's -p flag does: on loopback when no file
// was given (local-only mode), else on every interface.
func (c *Config) AddPort(port int) {
	addr := ""
	sec := c.Security
	if c.File == "" {
		addr = "127.0.0.1"
		// -p replaces the default listener of local-only mode.
		if len(c.Listeners) == 1 && c.Listeners[0] == c.defaultListener {
			sec = c.defaultListener.Security
			c.Listeners = nil
		}
	}
	c.Listeners = append(c.Listeners, &Listener{Port: port, Address: addr, MaxConnections: -1, Security: sec,
		Line: "-p " + strconv.Itoa(port)})
}

// ListenerSecurity returns the security settings that apply to l: its own
// with per_listener_settings true, else the broker-wide ones.
func (c *Config) ListenerSecurity(l *Listener) Security {
	if c.PerListenerSettings {
		return l.Security
	}
	return c.Security
}
