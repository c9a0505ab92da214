package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// errHelp is returned by parseArgs for --help.
var errHelp = errors.New("mqtt: help requested")

// usageError is a bad command line. It prints as mosquitto's tools print
// theirs, on one line: "Error: Invalid QoS given: 3."
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// Message sources of mqtt pub (-m, -f, -s, -l, -n).
const (
	msgNone = iota
	msgArg
	msgFile
	msgStdin
	msgLines
	msgNull
)

// config is the parsed command line of every subcommand. The field names
// follow mosquitto's client options.
type config struct {
	cmd string // pub, sub, rr, bench

	host     string
	port     int
	portSet  bool
	scheme   string // mqtt, mqtts, ws, wss (from -L, or mqtts when TLS flags are given)
	wsPath   string
	unixPath string

	topics    []string // -t
	filterOut []string // -T
	unsubs    []string // -U

	msgMode int
	message []byte // -m
	file    string // -f

	qos           byte
	retain        bool
	clientID      string
	idPrefix      string
	username      string
	usernameSet   bool
	password      string
	passwordSet   bool
	keepAlive     int
	clean         bool
	debug         bool
	verbose       bool
	quiet         bool
	version       packet.Version
	versionSet    bool
	count         int  // -C
	timeout       int  // -W seconds
	noRetained    bool // -R
	eol           bool // false with -N
	format        string
	formatSet     bool
	pretty        bool
	sessionExpiry *uint32 // -x
	exitOnSubAck  bool    // -E
	retainedOnly  bool
	removeRet     bool
	retainAsPub   bool
	respTopic     string // -e (rr)
	maxInflight   int    // -M
	repeat        int
	repeatDelay   time.Duration

	willTopic   string
	willPayload []byte
	willPaySet  bool
	willQoS     byte
	willRetain  bool

	cafile, capath, cert, key string
	insecure                  bool
	tlsVersion                string
	tlsOSCerts                bool
	tlsAlpn                   string

	// MQTT v5 properties from -D, by packet.
	connectProps, publishProps, subscribeProps, unsubscribeProps, disconnectProps, willProps packet.Properties
	propsUsed                                                                                bool

	// bench
	scenario   string
	duration   time.Duration
	clients    int
	publishers int
	window     int
	rate       float64
	size       int
	jsonOut    bool
	pid        int
	drain      time.Duration
	// openLoop publishes as fast as the window allows whatever the
	// subscribers receive (the overload behaviour); otherwise publishers
	// pause while maxOutstanding messages are published but not received.
	openLoop       bool
	maxOutstanding int
	// concurrency is how many CONNECTs conns keeps in progress at once.
	concurrency int
	// connSubscribe: conns subscribes each connection to a filter of its
	// own (--subscribe), for idle subscribed connections.
	connSubscribe bool
	// subURL is where the subscribers connect (--sub-url, bench.go);
	// empty: the broker of -h/-p/-L, as the publishers.
	subURL string
}

func defaultConfig(cmd string) *config {
	c := &config{
		cmd:       cmd,
		host:      "localhost",
		keepAlive: 60,
		clean:     true,
		eol:       true,
		version:   packet.V311,
		wsPath:    "/mqtt",
	}
	switch cmd {
	case "rr":
		c.version = packet.V5
	case "bench":
		c.scenario = "pairs"
		c.duration = 5 * time.Second
		c.qos = 1
		c.size = 64
		c.window = 64
		c.drain = 5 * time.Second
		c.maxOutstanding = 500
		c.concurrency = 100
	}
	return c
}

// option describes one command-line flag. cmds lists the subcommands that
// accept it (empty: all of them).
type option struct {
	names []string
	arg   bool
	cmds  string
	set   func(c *config, v string) error
}

const (
	cmdsClient = "pub sub rr"
	cmdsSub    = "sub rr"
	cmdsConn   = "pub sub rr bench"
)

var options = buildOptions()

func buildOptions() map[string]*option {
	opts := []*option{
		{names: []string{"-h", "--host"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.host = v; return nil }},
		{names: []string{"-p", "--port"}, arg: true, cmds: cmdsConn, set: setPort},
		{names: []string{"--unix"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.unixPath = v; return nil }},
		{names: []string{"-L", "--url"}, arg: true, cmds: cmdsConn, set: setURL},
		{names: []string{"--ws-path"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.wsPath = v; return nil }},
		{names: []string{"-t", "--topic"}, arg: true, cmds: cmdsClient, set: setTopic},
		{names: []string{"-T", "--filter-out"}, arg: true, cmds: cmdsSub, set: func(c *config, v string) error {
			if !validFilter(v) {
				return usagef("Error: Invalid filter topic '%s', are all '+' and '#' wildcards correct?", v)
			}
			c.filterOut = append(c.filterOut, v)
			return nil
		}},
		{names: []string{"-U", "--unsubscribe"}, arg: true, cmds: "sub", set: func(c *config, v string) error {
			if !validFilter(v) {
				return usagef("Error: Invalid unsubscribe topic '%s', are all '+' and '#' wildcards correct?", v)
			}
			c.unsubs = append(c.unsubs, v)
			return nil
		}},
		{names: []string{"-m", "--message"}, arg: true, cmds: "pub rr", set: func(c *config, v string) error { c.message = []byte(v); return setMode(c, msgArg) }},
		{names: []string{"-f", "--file"}, arg: true, cmds: "pub rr", set: func(c *config, v string) error { c.file = v; return setMode(c, msgFile) }},
		{names: []string{"-s", "--stdin-file"}, cmds: "pub rr", set: func(c *config, _ string) error { return setMode(c, msgStdin) }},
		{names: []string{"-l", "--stdin-line"}, cmds: "pub", set: func(c *config, _ string) error { return setMode(c, msgLines) }},
		{names: []string{"-n", "--null-message"}, cmds: "pub rr", set: func(c *config, _ string) error { return setMode(c, msgNull) }},
		{names: []string{"-q", "--qos"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			q, err := parseQoS(v)
			if err != nil {
				return usagef("Error: Invalid QoS given: %s", v)
			}
			c.qos = q
			return nil
		}},
		{names: []string{"-r", "--retain"}, cmds: "pub", set: func(c *config, _ string) error { c.retain = true; return nil }},
		{names: []string{"-i", "--id"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			if c.idPrefix != "" {
				return usagef("Error: -i and -I argument cannot be used together.")
			}
			c.clientID = v
			return nil
		}},
		{names: []string{"-I", "--id-prefix"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			if c.clientID != "" {
				return usagef("Error: -i and -I argument cannot be used together.")
			}
			c.idPrefix = v
			return nil
		}},
		{names: []string{"-u", "--username"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			c.username, c.usernameSet = v, true
			return nil
		}},
		{names: []string{"-P", "--pw"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			c.password, c.passwordSet = v, true
			return nil
		}},
		{names: []string{"-k", "--keepalive"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 65535 || (n > 0 && n < 5) {
				return usagef("Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.")
			}
			c.keepAlive = n
			return nil
		}},
		{names: []string{"-c", "--disable-clean-session"}, cmds: cmdsConn, set: func(c *config, _ string) error { c.clean = false; return nil }},
		{names: []string{"-d", "--debug"}, cmds: cmdsClient, set: func(c *config, _ string) error { c.debug = true; return nil }},
		{names: []string{"-v", "--verbose"}, cmds: cmdsSub, set: func(c *config, _ string) error { c.verbose = true; return nil }},
		{names: []string{"--quiet"}, cmds: cmdsConn, set: func(c *config, _ string) error { c.quiet = true; return nil }},
		{names: []string{"-V", "--protocol-version"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			ver, ok := parseVersion(v)
			if !ok {
				return usagef("Error: Invalid protocol version argument given.")
			}
			c.version, c.versionSet = ver, true
			return nil
		}},
		{names: []string{"-C"}, arg: true, cmds: "sub", set: func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return usagef("Error: Invalid message count \"%s\".", v)
			}
			c.count = n
			return nil
		}},
		{names: []string{"-W"}, arg: true, cmds: cmdsSub, set: func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return usagef("Error: Invalid timeout \"%s\".", v)
			}
			c.timeout = n
			return nil
		}},
		{names: []string{"-R"}, cmds: cmdsSub, set: func(c *config, _ string) error { c.noRetained = true; return nil }},
		{names: []string{"-N"}, cmds: cmdsSub, set: func(c *config, _ string) error { c.eol = false; return nil }},
		{names: []string{"-F"}, arg: true, cmds: cmdsSub, set: func(c *config, v string) error {
			if _, err := compileFormat(v); err != nil {
				return err
			}
			c.format, c.formatSet = v, true
			return nil
		}},
		{names: []string{"--pretty"}, cmds: cmdsSub, set: func(c *config, _ string) error { c.pretty = true; return nil }},
		{names: []string{"-x"}, arg: true, cmds: cmdsClient, set: func(c *config, v string) error {
			x, err := parseExpiry(v)
			if err != nil {
				return usagef("Error: Invalid session-expiry-interval given.")
			}
			c.sessionExpiry = &x
			return nil
		}},
		{names: []string{"-E"}, cmds: "sub", set: func(c *config, _ string) error { c.exitOnSubAck = true; return nil }},
		{names: []string{"--retained-only"}, cmds: "sub", set: func(c *config, _ string) error { c.retainedOnly = true; return nil }},
		{names: []string{"--remove-retained"}, cmds: "sub", set: func(c *config, _ string) error { c.removeRet = true; return nil }},
		{names: []string{"--retain-as-published"}, cmds: "sub", set: func(c *config, _ string) error { c.retainAsPub = true; return nil }},
		{names: []string{"-e"}, arg: true, cmds: "rr", set: func(c *config, v string) error {
			if !validTopicName(v) {
				return usagef("Error: Invalid response topic '%s', does it contain '+' or '#'?", v)
			}
			c.respTopic = v
			return nil
		}},
		{names: []string{"-M"}, arg: true, cmds: "pub", set: func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return usagef("Error: Maximum inflight messages must be greater than 0.")
			}
			c.maxInflight = n
			return nil
		}},
		{names: []string{"--repeat"}, arg: true, cmds: "pub", set: func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return usagef("Error: --repeat argument must be >0.")
			}
			c.repeat = n
			return nil
		}},
		{names: []string{"--repeat-delay"}, arg: true, cmds: "pub", set: func(c *config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				return usagef("Error: --repeat-delay argument must be >=0.0.")
			}
			c.repeatDelay = time.Duration(f * float64(time.Second))
			return nil
		}},
		{names: []string{"--will-topic"}, arg: true, cmds: cmdsClient, set: func(c *config, v string) error {
			if !validTopicName(v) {
				return usagef("Error: Invalid will topic '%s', does it contain '+' or '#'?", v)
			}
			c.willTopic = v
			return nil
		}},
		{names: []string{"--will-payload"}, arg: true, cmds: cmdsClient, set: func(c *config, v string) error {
			c.willPayload, c.willPaySet = []byte(v), true
			return nil
		}},
		{names: []string{"--will-qos"}, arg: true, cmds: cmdsClient, set: func(c *config, v string) error {
			q, err := parseQoS(v)
			if err != nil {
				return usagef("Error: Invalid will QoS %s.", v)
			}
			c.willQoS = q
			return nil
		}},
		{names: []string{"--will-retain"}, cmds: cmdsClient, set: func(c *config, _ string) error { c.willRetain = true; return nil }},
		{names: []string{"--cafile"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.cafile = v; return nil }},
		{names: []string{"--capath"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.capath = v; return nil }},
		{names: []string{"--cert"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.cert = v; return nil }},
		{names: []string{"--key"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.key = v; return nil }},
		{names: []string{"--insecure"}, cmds: cmdsConn, set: func(c *config, _ string) error { c.insecure = true; return nil }},
		{names: []string{"--tls-use-os-certs"}, cmds: cmdsConn, set: func(c *config, _ string) error { c.tlsOSCerts = true; return nil }},
		{names: []string{"--tls-alpn"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error { c.tlsAlpn = v; return nil }},
		{names: []string{"--tls-version"}, arg: true, cmds: cmdsConn, set: func(c *config, v string) error {
			if _, ok := tlsVersions[v]; !ok {
				return usagef("Error: Unknown TLS version '%s' (tlsv1.3, tlsv1.2 or tlsv1.1).", v)
			}
			c.tlsVersion = v
			return nil
		}},
		{names: []string{"--nodelay"}, cmds: cmdsConn, set: func(c *config, _ string) error { return nil }}, // Go sets TCP_NODELAY already
		// bench
		{names: []string{"--duration"}, arg: true, cmds: "bench", set: func(c *config, v string) error {
			d, err := parseSeconds(v)
			if err != nil || d <= 0 {
				return usagef("Error: Invalid --duration %q (a Go duration such as 10s, or seconds).", v)
			}
			c.duration = d
			return nil
		}},
		{names: []string{"--drain"}, arg: true, cmds: "bench", set: func(c *config, v string) error {
			d, err := parseSeconds(v)
			if err != nil || d < 0 {
				return usagef("Error: Invalid --drain %q.", v)
			}
			c.drain = d
			return nil
		}},
		{names: []string{"--size"}, arg: true, cmds: "bench", set: func(c *config, v string) error { return setInt(&c.size, v, "--size", benchHeader, 256<<20) }},
		{names: []string{"--clients"}, arg: true, cmds: "bench", set: func(c *config, v string) error { return setInt(&c.clients, v, "--clients", 1, 1<<20) }},
		{names: []string{"--publishers"}, arg: true, cmds: "bench", set: func(c *config, v string) error { return setInt(&c.publishers, v, "--publishers", 1, 1<<20) }},
		{names: []string{"--window"}, arg: true, cmds: "bench", set: func(c *config, v string) error { return setInt(&c.window, v, "--window", 1, 65535) }},
		{names: []string{"--pid"}, arg: true, cmds: "bench", set: func(c *config, v string) error { return setInt(&c.pid, v, "--pid", 1, 1<<30) }},
		{names: []string{"--rate"}, arg: true, cmds: "bench", set: func(c *config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				return usagef("Error: Invalid --rate %q (messages per second, 0 = unlimited).", v)
			}
			c.rate = f
			return nil
		}},
		{names: []string{"--json"}, cmds: "bench", set: func(c *config, _ string) error { c.jsonOut = true; return nil }},
		{names: []string{"--open-loop"}, cmds: "bench", set: func(c *config, _ string) error { c.openLoop = true; return nil }},
		{names: []string{"--concurrency"}, arg: true, cmds: "bench", set: func(c *config, v string) error {
			return setInt(&c.concurrency, v, "--concurrency", 1, 100000)
		}},
		{names: []string{"--subscribe"}, cmds: "bench", set: func(c *config, _ string) error { c.connSubscribe = true; return nil }},
		{names: []string{"--max-outstanding"}, arg: true, cmds: "bench", set: func(c *config, v string) error {
			return setInt(&c.maxOutstanding, v, "--max-outstanding", 1, 1<<30)
		}},
		{names: []string{"--sub-url"}, arg: true, cmds: "bench", set: setSubURL},
	}
	m := make(map[string]*option)
	for _, o := range opts {
		for _, n := range o.names {
			m[n] = o
		}
	}
	return m
}

func setInt(dst *int, v, name string, lo, hi int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return usagef("Error: Invalid %s %q (an integer from %d to %d).", name, v, lo, hi)
	}
	*dst = n
	return nil
}

// parseSeconds accepts a Go duration ("1.5s", "2m") or a number of seconds.
func parseSeconds(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(v)
}

func setMode(c *config, mode int) error {
	if c.msgMode != msgNone && c.msgMode != mode {
		return usagef("Error: Only one type of message can be sent at once.")
	}
	c.msgMode = mode
	return nil
}

func setTopic(c *config, v string) error {
	switch c.cmd {
	case "pub", "rr":
		if len(c.topics) > 0 {
			return usagef("Error: Duplicate topic argument given.")
		}
		if !validTopicName(v) {
			return usagef("Error: Invalid publish topic '%s', does it contain '+' or '#'?", v)
		}
	default:
		if !validFilter(v) {
			return usagef("Error: Invalid subscription topic '%s', are all '+' and '#' wildcards correct?", v)
		}
	}
	c.topics = append(c.topics, v)
	return nil
}

func setPort(c *config, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return usagef("Error: Invalid port given: %s", v)
	}
	c.port, c.portSet = n, true
	return nil
}

// setURL parses -L scheme://[username[:password]@]host[:port]/topic the way
// mosquitto_sub and mosquitto_pub do: the topic is everything after the
// first "/" that follows the host, taken verbatim (no percent-decoding, and
// "#" and "?" are part of it, so mqtt://host/w/# subscribes to w/#); the
// user name ends at the first ":" and the password runs to the first "@".
// ws:// and wss:// take the WebSocket path from --ws-path. bench needs no
// topic.
func setURL(c *config, v string) error {
	scheme, rest, ok := strings.Cut(v, "://")
	scheme = strings.ToLower(scheme)
	switch {
	case !ok:
		return usagef("Error: Invalid URL for -L argument specified: %s", v)
	case scheme == "mqtt", scheme == "mqtts", scheme == "ws", scheme == "wss":
	default:
		return usagef("Error: Unsupported URL scheme in -L argument: %q (mqtt, mqtts, ws or wss).", scheme)
	}
	authority, topic, hasTopic := strings.Cut(rest, "/")
	if !hasTopic && c.cmd != "bench" {
		return usagef("Error: Invalid URL for -L argument specified - topic missing.")
	}
	if userinfo, host, ok := strings.Cut(authority, "@"); ok {
		user, pw, hasPw := strings.Cut(userinfo, ":")
		c.username, c.usernameSet = user, true
		if hasPw {
			c.password, c.passwordSet = pw, true
		}
		authority = host
	}
	host, port := authority, ""
	if strings.HasPrefix(host, "[") {
		// An IPv6 literal, [::1]:1883 (mosquitto has no syntax for it).
		end := strings.Index(host, "]")
		if end < 0 {
			return usagef("Error: Invalid URL for -L argument specified: %s", v)
		}
		host, port = host[1:end], strings.TrimPrefix(host[end+1:], ":")
	} else {
		host, port, _ = strings.Cut(host, ":")
	}
	if host == "" {
		return usagef("Error: Invalid URL for -L argument specified - no host given.")
	}
	c.scheme, c.host = scheme, host
	if port != "" {
		if err := setPort(c, port); err != nil {
			return err
		}
	}
	if hasTopic && c.cmd != "bench" {
		return setTopic(c, topic)
	}
	return nil
}

func parseQoS(v string) (byte, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 2 {
		return 0, fmt.Errorf("mqtt: invalid QoS %q", v)
	}
	return byte(n), nil
}

func parseVersion(v string) (packet.Version, bool) {
	switch v {
	case "mqttv31", "31":
		return packet.V31, true
	case "mqttv311", "311":
		return packet.V311, true
	case "mqttv5", "5":
		return packet.V5, true
	}
	return 0, false
}

func parseExpiry(v string) (uint32, error) {
	if v == "-1" || v == "∞" {
		return 0xFFFFFFFF, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, err
	}
	return uint32(n), nil
}

// parseArgs parses the arguments of subcommand cmd the way mosquitto's
// clients do: every option is its own argument, values follow as the next
// argument, options may repeat (-t a -t b).
func parseArgs(cmd string, args []string) (*config, error) {
	c := defaultConfig(cmd)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--help" {
			return c, errHelp
		}
		if cmd == "bench" && !strings.HasPrefix(a, "-") && i == 0 {
			c.scenario = a
			continue
		}
		if a == "-D" || a == "--property" {
			n, err := parseProperty(c, args[i+1:])
			if err != nil {
				return c, err
			}
			i += n
			continue
		}
		o, ok := options[a]
		if !ok || (o.cmds != "" && !strings.Contains(" "+o.cmds+" ", " "+cmd+" ")) {
			return c, usagef("Error: Unknown option '%s'.", a)
		}
		v := ""
		if o.arg {
			if i+1 >= len(args) {
				return c, usagef("Error: %s argument given but no value specified.", a)
			}
			i++
			v = args[i]
		}
		if err := o.set(c, v); err != nil {
			return c, err
		}
	}
	return c, c.validate()
}

// validate checks the combination of options, as mosquitto does after
// parsing.
func (c *config) validate() error {
	if c.propsUsed && !c.versionSet {
		c.version = packet.V5
	}
	if c.propsUsed && c.version != packet.V5 {
		return usagef("Error: -D given but MQTT v5 is not in use.")
	}
	switch c.cmd {
	case "pub":
		if len(c.topics) == 0 || c.msgMode == msgNone {
			return usagef("Error: Both topic and message must be supplied.")
		}
		if c.repeat > 1 && c.msgMode == msgLines {
			return usagef("Error: --repeat cannot be used with -l.")
		}
	case "sub":
		if len(c.topics) == 0 && len(c.unsubs) == 0 {
			return usagef("Error: You must specify a topic to subscribe to.")
		}
	case "rr":
		if len(c.topics) == 0 || c.msgMode == msgNone || c.respTopic == "" {
			return usagef("Error: All of topic, message, and response topic must be supplied.")
		}
	case "bench":
		switch c.scenario {
		case "fanin", "fanout", "pairs", "shared", "conns", "latency":
		default:
			return usagef("Error: Unknown bench scenario %q (fanin, fanout, pairs, shared, conns or latency).", c.scenario)
		}
		if c.size < benchHeader {
			return usagef("Error: --size must be at least %d bytes.", benchHeader)
		}
		if c.connSubscribe && c.scenario != "conns" {
			return usagef("Error: --subscribe is for the conns scenario.")
		}
	}
	if c.willTopic == "" && (c.willPaySet || c.willQoS != 0 || c.willRetain) {
		return usagef("Error: Will payload, QoS or retain given, but no will topic given.")
	}
	if c.passwordSet && !c.usernameSet && c.version != packet.V5 {
		return usagef("Error: -P argument given, but no -u argument given.")
	}
	if !c.clean && c.clientID == "" && c.idPrefix == "" && c.cmd != "bench" {
		return usagef("Error: You must provide a client id if you are using the -c option.")
	}
	if c.sessionExpiry != nil && c.version != packet.V5 {
		return usagef("Error: You must use MQTT v5 to use session expiry (-x).")
	}
	if c.key != "" && c.cert == "" || c.cert != "" && c.key == "" {
		return usagef("Error: Both certfile and keyfile must be provided if one of them is set.")
	}
	if c.unixPath != "" && c.scheme != "" {
		return usagef("Error: --unix and -L cannot be used together.")
	}
	return nil
}

// useTLS reports whether the connection is encrypted.
func (c *config) useTLS() bool {
	if c.scheme != "" {
		return c.scheme == "mqtts" || c.scheme == "wss"
	}
	return c.cafile != "" || c.capath != "" || c.cert != "" || c.tlsOSCerts
}

// serverURL is the address handed to client.Dial.
func (c *config) serverURL() string {
	if c.unixPath != "" {
		return "unix://" + c.unixPath
	}
	scheme := c.scheme
	if scheme == "" {
		scheme = "mqtt"
		if c.useTLS() {
			scheme = "mqtts"
		}
	}
	port := c.port
	if !c.portSet {
		switch scheme {
		case "mqtt":
			port = 1883
		case "mqtts":
			port = 8883
		case "ws":
			port = 80
		case "wss":
			port = 443
		}
	}
	u := scheme + "://" + net.JoinHostPort(c.host, strconv.Itoa(port))
	if scheme == "ws" || scheme == "wss" {
		if !strings.HasPrefix(c.wsPath, "/") {
			u += "/"
		}
		u += c.wsPath
	}
	return u
}

// clientIDFor returns the client identifier to use: -i, -I prefix plus the
// process id, or "" (generated or server-assigned).
func (c *config) clientIDFor() string {
	if c.idPrefix != "" {
		return c.idPrefix + strconv.Itoa(os.Getpid())
	}
	return c.clientID
}

// validTopicName: non-empty, no wildcards, no NUL [MQTT-4.7.3-1] [MQTT-3.3.2-2].
func validTopicName(t string) bool { return topic.ValidateName(t) == nil }

// validFilter checks wildcard placement [MQTT-4.7.1-2] [MQTT-4.7.1-3].
func validFilter(f string) bool { return topic.ValidateFilter(f) == nil }
