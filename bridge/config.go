// Package bridge connects the broker to another MQTT broker as Mosquitto's
// `connection` sections do: topics flow out (local to remote), in (remote
// to local) or both, with Mosquitto's topic and prefix rules.
//
// A bridge is two MQTT client connections made with the client package:
// one to the remote broker and one to the local broker over
// broker.Server.DialLocal, with a persistent session subscribed to the
// `out` topics with No Local. An outbound QoS 1/2 message is acknowledged
// to the local broker only once the remote broker has acknowledged it, so
// the local broker's store keeps it across a link loss, a remote restart
// or a crash, and it is sent again (DUP) afterwards. Inbound messages are
// acknowledged to the remote broker only after the local broker has
// acknowledged them.
package bridge

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

// Direction of a bridged topic.
type Direction uint8

// Directions, as in `topic pattern [out|in|both]`.
const (
	Out Direction = iota + 1
	In
	Both
)

func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	case Both:
		return "both"
	}
	return "?"
}

func (d Direction) out() bool { return d == Out || d == Both }
func (d Direction) in() bool  { return d == In || d == Both }

// Topic is one `topic` line of a bridge, with Mosquitto's derived filters.
type Topic struct {
	Pattern      string // "" when the line's pattern is `""`
	Direction    Direction
	QoS          byte
	LocalPrefix  string // "" = none
	RemotePrefix string // "" = none
	// LocalTopic and RemoteTopic are the filters subscribed on each side:
	// the prefix followed by the pattern (or the prefix alone when the
	// pattern is `""`).
	LocalTopic  string
	RemoteTopic string
}

// StartType is start_type.
type StartType uint8

// Start types.
const (
	StartAutomatic StartType = iota
	StartLazy
	StartOnce
)

func (s StartType) String() string {
	return [...]string{"automatic", "lazy", "once"}[s]
}

// Address is one remote broker address.
type Address struct {
	Host string
	Port int
	// URL is set for the mqttd extension `address ws://host:port/path`
	// (or wss://); Host and Port are then from it.
	URL string
}

func (a Address) String() string {
	if a.URL != "" {
		return a.URL
	}
	return net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

// Config is one `connection` section.
type Config struct {
	Name string
	Line string // file:line of the `connection` line

	Addresses  []Address
	RoundRobin bool
	Topics     []Topic

	Version                      packet.Version // bridge_protocol_version, default 3.1.1
	RemoteID                     string         // remote_clientid (clientid); default hostname.NAME
	LocalID                      string         // local_clientid; default local.<remote id>
	RemoteUser                   string
	RemotePass                   string
	HasRemoteUser, HasRemotePass bool
	LocalUser, LocalPass         string // accepted; the local connection is the server's own (not authenticated)

	CleanSession      bool // cleansession, default false
	LocalCleanSession int  // local_cleansession: -1 unset (the local session is always persistent)
	KeepAlive         time.Duration

	RestartTimeout time.Duration // restart_timeout with one value (constant); 0 = backoff
	BackoffBase    time.Duration // default 5 s
	BackoffCap     time.Duration // default 30 s

	Start       StartType
	IdleTimeout time.Duration // default 60 s
	Threshold   int           // default 10

	TryPrivate             bool // default true
	Notifications          bool // default true
	NotificationTopic      string
	NotificationsLocalOnly bool
	OutgoingRetain         bool // bridge_outgoing_retain, default true
	AttemptUnsubscribe     bool // bridge_attempt_unsubscribe, default true
	MaxPacketSize          uint32

	CAFile, CAPath, CertFile, KeyFile string
	Insecure                          bool
	ALPN                              string
	TLSVersion                        string
	BindAddress                       string
}

// NewConfig starts a `connection NAME` section with Mosquitto's defaults.
func NewConfig(name, line string) (*Config, error) {
	if name == "" || strings.ContainsAny(name, " \t") {
		return nil, fmt.Errorf("connection needs one name")
	}
	return &Config{Name: name, Line: line, Version: packet.V311, KeepAlive: 60 * time.Second,
		BackoffBase: 5 * time.Second, BackoffCap: 30 * time.Second, IdleTimeout: 60 * time.Second,
		Threshold: 10, TryPrivate: true, Notifications: true, OutgoingRetain: true, AttemptUnsubscribe: true,
		LocalCleanSession: -1}, nil
}

// IsOption reports whether key is a bridge option (one that belongs to the
// `connection` section before it).
func IsOption(key string) bool {
	_, ok := setters[key]
	return ok || key == "connection"
}

// Unsupported bridge options, with the reason.
var unsupported = map[string]string{
	"bridge_identity":     "TLS-PSK is not supported (Go's TLS has no PSK)",
	"bridge_psk":          "TLS-PSK is not supported (Go's TLS has no PSK)",
	"bridge_require_ocsp": "OCSP stapling checks of the remote broker are not supported",
}

type setter func(c *Config, args []string, raw string) error

var setters = map[string]setter{
	"address":                    setAddress,
	"addresses":                  setAddress,
	"topic":                      setTopic,
	"round_robin":                boolean(func(c *Config) *bool { return &c.RoundRobin }),
	"bridge_protocol_version":    setVersion,
	"remote_clientid":            str(func(c *Config) *string { return &c.RemoteID }),
	"clientid":                   str(func(c *Config) *string { return &c.RemoteID }),
	"local_clientid":             str(func(c *Config) *string { return &c.LocalID }),
	"remote_username":            setRemoteUser,
	"username":                   setRemoteUser,
	"remote_password":            setRemotePass,
	"password":                   setRemotePass,
	"local_username":             str(func(c *Config) *string { return &c.LocalUser }),
	"local_password":             str(func(c *Config) *string { return &c.LocalPass }),
	"cleansession":               boolean(func(c *Config) *bool { return &c.CleanSession }),
	"local_cleansession":         setLocalClean,
	"keepalive_interval":         setKeepAlive,
	"restart_timeout":            setRestart,
	"start_type":                 setStart,
	"idle_timeout":               setIdle,
	"threshold":                  setThreshold,
	"try_private":                boolean(func(c *Config) *bool { return &c.TryPrivate }),
	"notifications":              boolean(func(c *Config) *bool { return &c.Notifications }),
	"notifications_local_only":   boolean(func(c *Config) *bool { return &c.NotificationsLocalOnly }),
	"notification_topic":         setNotificationTopic,
	"bridge_outgoing_retain":     boolean(func(c *Config) *bool { return &c.OutgoingRetain }),
	"bridge_attempt_unsubscribe": boolean(func(c *Config) *bool { return &c.AttemptUnsubscribe }),
	"bridge_max_packet_size":     setMaxPacket,
	"bridge_cafile":              str(func(c *Config) *string { return &c.CAFile }),
	"bridge_capath":              str(func(c *Config) *string { return &c.CAPath }),
	"bridge_certfile":            str(func(c *Config) *string { return &c.CertFile }),
	"bridge_keyfile":             str(func(c *Config) *string { return &c.KeyFile }),
	"bridge_insecure":            boolean(func(c *Config) *bool { return &c.Insecure }),
	"bridge_alpn":                str(func(c *Config) *string { return &c.ALPN }),
	"bridge_tls_version":         setTLSVersion,
	"bridge_bind_address":        str(func(c *Config) *string { return &c.BindAddress }),
	"bridge_identity":            nil,
	"bridge_psk":                 nil,
	"bridge_require_ocsp":        nil,
}

// Set applies one option line (key and the rest of the line) to c.
func (c *Config) Set(key, rest string) error {
	f, ok := setters[key]
	if !ok {
		return fmt.Errorf("%s is not a bridge option", key)
	}
	if why, bad := unsupported[key]; bad {
		if key == "bridge_require_ocsp" && strings.TrimSpace(rest) == "false" {
			return nil
		}
		return fmt.Errorf("%s: %s", key, why)
	}
	args := strings.Fields(rest)
	// A word starting with # ends the line, as in Mosquitto, except a
	// topic's pattern and direction.
	first := 0
	if key == "topic" {
		first = 2
	}
	for i := first; i < len(args); i++ {
		if strings.HasPrefix(args[i], "#") {
			args = args[:i]
			break
		}
	}
	if len(args) == 0 {
		return fmt.Errorf("%s needs a value", key)
	}
	if err := f(c, args, rest); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

func str(field func(*Config) *string) setter {
	return func(c *Config, args []string, raw string) error {
		if len(args) != 1 {
			return errors.New("takes one value")
		}
		*field(c) = args[0]
		return nil
	}
}

func boolean(field func(*Config) *bool) setter {
	return func(c *Config, args []string, raw string) error {
		if len(args) != 1 {
			return errors.New("takes true or false")
		}
		switch args[0] {
		case "true":
			*field(c) = true
		case "false":
			*field(c) = false
		default:
			return fmt.Errorf("%q is not true or false", args[0])
		}
		return nil
	}
}

func integer(args []string, min, max int) (int, error) {
	if len(args) != 1 {
		return 0, errors.New("takes one number")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", args[0])
	}
	if n < min || n > max {
		return 0, fmt.Errorf("%d is out of range %d..%d", n, min, max)
	}
	return n, nil
}

func setAddress(c *Config, args []string, raw string) error {
	if len(c.Addresses) > 0 {
		return errors.New("given twice in one connection (list every address on one line)")
	}
	for _, a := range args {
		addr, err := ParseAddress(a)
		if err != nil {
			return err
		}
		c.Addresses = append(c.Addresses, addr)
	}
	return nil
}

// ParseAddress reads `host[:port]` (port 1883 by default; an IPv6 address
// needs its port, as in Mosquitto: the last colon separates it) or an
// mqttd ws:// / wss:// URL.
func ParseAddress(s string) (Address, error) {
	if strings.HasPrefix(s, "ws://") || strings.HasPrefix(s, "wss://") {
		rest := s[strings.Index(s, "//")+2:]
		hostport, _, _ := strings.Cut(rest, "/")
		def := 80
		if strings.HasPrefix(s, "wss://") {
			def = 443
		}
		a, err := hostPort(hostport, def)
		if err != nil {
			return Address{}, err
		}
		a.URL = s
		return a, nil
	}
	if strings.Contains(s, "://") {
		return Address{}, fmt.Errorf("address %q: only ws:// and wss:// URLs are understood", s)
	}
	return hostPort(s, 1883)
}

func hostPort(s string, def int) (Address, error) {
	host, port := s, def
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host = s[:i]
		p, err := strconv.Atoi(s[i+1:])
		if err != nil || p < 1 || p > 65535 {
			return Address{}, fmt.Errorf("invalid port value in %q", s)
		}
		port = p
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return Address{}, fmt.Errorf("address %q has no host", s)
	}
	return Address{Host: host, Port: port}, nil
}

// setTopic reads `topic pattern [[[out|in|both] qos] local-prefix
// remote-prefix]` with Mosquitto's rules: `""` stands for an empty pattern
// or prefix, a pattern may be `""` only when both prefixes are given, the
// prefixes are topic names (no wildcards) and prefix+pattern must be a valid
// filter.
func setTopic(c *Config, args []string, raw string) error {
	if len(args) > 5 {
		return errors.New("takes a pattern, a direction, a QoS and two prefixes at most")
	}
	t := Topic{Direction: Out}
	pattern := args[0]
	if len(args) > 1 {
		switch strings.ToLower(args[1]) {
		case "out":
			t.Direction = Out
		case "in":
			t.Direction = In
		case "both":
			t.Direction = Both
		default:
			return fmt.Errorf("invalid bridge topic direction %q", args[1])
		}
	}
	if len(args) > 2 {
		q, err := strconv.Atoi(args[2])
		if err != nil || q < 0 || q > 2 {
			return fmt.Errorf("invalid bridge QoS level %q", args[2])
		}
		t.QoS = byte(q)
	}
	var local, remote *string
	if len(args) > 3 && args[3] != `""` {
		local = &args[3]
	}
	if len(args) > 4 && args[4] != `""` {
		remote = &args[4]
	}
	if pattern != `""` {
		t.Pattern = pattern
	}
	for _, p := range []*string{local, remote} {
		if p != nil {
			if err := topic.ValidateName(*p); err != nil {
				return fmt.Errorf("invalid bridge topic prefix %q", *p)
			}
		}
	}
	if t.Pattern == "" && (local == nil || remote == nil) {
		return errors.New(`invalid bridge remapping: a "" pattern needs both prefixes`)
	}
	if local != nil {
		t.LocalPrefix = *local
	}
	if remote != nil {
		t.RemotePrefix = *remote
	}
	t.LocalTopic = t.LocalPrefix + t.Pattern
	t.RemoteTopic = t.RemotePrefix + t.Pattern
	for _, f := range []string{t.LocalTopic, t.RemoteTopic} {
		if err := topic.ValidateFilter(f); err != nil {
			if local == nil && remote == nil {
				return fmt.Errorf("invalid bridge topic %q", f)
			}
			return fmt.Errorf("invalid bridge topic prefix and pattern combination %q", f)
		}
	}
	c.Topics = append(c.Topics, t)
	return nil
}

func setVersion(c *Config, args []string, raw string) error {
	if len(args) != 1 {
		return errors.New("takes mqttv31, mqttv311 or mqttv50")
	}
	switch args[0] {
	case "mqttv31":
		c.Version = packet.V31
	case "mqttv311":
		c.Version = packet.V311
	case "mqttv50":
		c.Version = packet.V5
	default:
		return fmt.Errorf("invalid value %q (mqttv31, mqttv311 or mqttv50)", args[0])
	}
	return nil
}

func setRemoteUser(c *Config, args []string, raw string) error {
	if len(args) != 1 {
		return errors.New("takes one value")
	}
	c.RemoteUser, c.HasRemoteUser = args[0], true
	return nil
}

func setRemotePass(c *Config, args []string, raw string) error {
	if len(args) != 1 {
		return errors.New("takes one value")
	}
	c.RemotePass, c.HasRemotePass = args[0], true
	return nil
}

func setLocalClean(c *Config, args []string, raw string) error {
	var b bool
	if err := boolean(func(*Config) *bool { return &b })(c, args, raw); err != nil {
		return err
	}
	c.LocalCleanSession = 0
	if b {
		c.LocalCleanSession = 1
	}
	return nil
}

func setKeepAlive(c *Config, args []string, raw string) error {
	n, err := integer(args, -1<<31, 65535)
	if err != nil {
		return err
	}
	c.KeepAlive = time.Duration(max(n, 5)) * time.Second // Mosquitto: below 5 s, 5 s
	return nil
}

func setRestart(c *Config, args []string, raw string) error {
	if len(args) > 2 {
		return errors.New("takes a delay, or a base and a cap")
	}
	n, err := integer(args[:1], -1<<31, 1<<31-1)
	if err != nil {
		return err
	}
	n = max(n, 1) // Mosquitto: below 1 s, 1 s
	if len(args) == 1 {
		c.RestartTimeout, c.BackoffBase, c.BackoffCap = time.Duration(n)*time.Second, 0, 0
		return nil
	}
	capN, err := integer(args[1:], -1<<31, 1<<31-1)
	if err != nil {
		return err
	}
	if capN < n {
		return errors.New("backoff cap is lower than the base")
	}
	c.RestartTimeout, c.BackoffBase, c.BackoffCap = 0, time.Duration(n)*time.Second, time.Duration(capN)*time.Second
	return nil
}

func setStart(c *Config, args []string, raw string) error {
	if len(args) != 1 {
		return errors.New("takes automatic, lazy or once")
	}
	switch args[0] {
	case "automatic":
		c.Start = StartAutomatic
	case "lazy":
		c.Start = StartLazy
	case "once":
		c.Start = StartOnce
	case "manual":
		return errors.New("manual start_type not supported (as in Mosquitto)")
	default:
		return fmt.Errorf("invalid value %q", args[0])
	}
	return nil
}

func setIdle(c *Config, args []string, raw string) error {
	n, err := integer(args, -1<<31, 1<<31-1)
	if err != nil {
		return err
	}
	c.IdleTimeout = time.Duration(max(n, 1)) * time.Second
	return nil
}

func setThreshold(c *Config, args []string, raw string) error {
	n, err := integer(args, -1<<31, 1<<31-1)
	if err != nil {
		return err
	}
	c.Threshold = max(n, 1)
	return nil
}

func setNotificationTopic(c *Config, args []string, raw string) error {
	if len(args) != 1 {
		return errors.New("takes one topic")
	}
	if err := topic.ValidateName(args[0]); err != nil {
		return fmt.Errorf("invalid topic %q", args[0])
	}
	c.NotificationTopic = args[0]
	return nil
}

func setMaxPacket(c *Config, args []string, raw string) error {
	n, err := integer(args, -1<<31, packet.MaxRemainingLength+5)
	if err != nil {
		return err
	}
	c.MaxPacketSize = uint32(max(n, 0))
	return nil
}

func setTLSVersion(c *Config, args []string, raw string) error {
	if len(args) != 1 {
		return errors.New("takes one value")
	}
	switch args[0] {
	case "tlsv1.2", "tlsv1.3":
		c.TLSVersion = args[0]
	case "tlsv1", "tlsv1.1":
		return fmt.Errorf("%s is refused: insecure and deprecated (use tlsv1.2 or tlsv1.3)", args[0])
	default:
		return fmt.Errorf("invalid value %q (tlsv1.2 or tlsv1.3)", args[0])
	}
	return nil
}

// Finish checks the section as a whole and fills in the client ids
// Mosquitto derives: remote_clientid hostname.NAME, local_clientid
// local.<remote_clientid>, notification topic
// $SYS/broker/connection/<remote_clientid>/state.
func (c *Config) Finish() error {
	if len(c.Addresses) == 0 {
		return fmt.Errorf("connection %s: no address", c.Name)
	}
	if len(c.Topics) == 0 {
		return fmt.Errorf("connection %s: no topic", c.Name)
	}
	if c.RemoteID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("connection %s: %w", c.Name, err)
		}
		c.RemoteID = h + "." + c.Name
	}
	if c.LocalID == "" {
		c.LocalID = "local." + c.RemoteID
	}
	if c.NotificationTopic == "" {
		c.NotificationTopic = "$SYS/broker/connection/" + c.RemoteID + "/state"
	}
	if c.HasRemotePass && !c.HasRemoteUser && c.Version != packet.V5 {
		return fmt.Errorf("connection %s: remote_password needs remote_username before MQTT 5", c.Name)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("connection %s: bridge_certfile and bridge_keyfile must both be given", c.Name)
	}
	if (c.CertFile != "" || c.Insecure || c.ALPN != "" || c.TLSVersion != "") && !c.TLS() {
		return fmt.Errorf("connection %s: TLS options need bridge_cafile or bridge_capath", c.Name)
	}
	return nil
}

// TLS reports whether the remote connection uses TLS (bridge_cafile or
// bridge_capath given, as in Mosquitto).
func (c *Config) TLS() bool { return c.CAFile != "" || c.CAPath != "" }

// CheckAll checks what concerns several sections: unique names and local
// client ids.
func CheckAll(cs []*Config) error {
	names := map[string]bool{}
	ids := map[string]bool{}
	for _, c := range cs {
		if names[c.Name] {
			return fmt.Errorf("duplicate bridge name %q", c.Name)
		}
		names[c.Name] = true
		if ids[c.LocalID] {
			return fmt.Errorf("bridge local_clientid %q is not unique", c.LocalID)
		}
		ids[c.LocalID] = true
	}
	return nil
}

// Equal reports whether a and b configure the same bridge (SIGHUP
// restarts only the bridges whose section changed).
func (c *Config) Equal(o *Config) bool {
	if c == nil || o == nil {
		return c == o
	}
	a, b := *c, *o
	a.Line, b.Line = "", ""
	return fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

// RemoteTopic maps a local topic name to the remote one for an outbound
// message, or reports false when no out/both line covers it. The first
// line whose local filter matches decides, as in Mosquitto: its local
// prefix is removed and its remote prefix added.
func (c *Config) RemoteTopic(name string) (string, byte, bool) {
	for _, t := range c.Topics {
		if !t.Direction.out() || !topic.Match(t.LocalTopic, name) {
			continue
		}
		out := name
		if t.LocalPrefix != "" {
			out = strings.TrimPrefix(out, t.LocalPrefix)
		}
		return t.RemotePrefix + out, t.QoS, true
	}
	return "", 0, false
}

// LocalTopic maps a remote topic name to the local one for an inbound
// message (the remote prefix removed, the local prefix added).
func (c *Config) LocalTopic(name string) (string, bool) {
	for _, t := range c.Topics {
		if !t.Direction.in() || !topic.Match(t.RemoteTopic, name) {
			continue
		}
		out := name
		if t.RemotePrefix != "" {
			out = strings.TrimPrefix(out, t.RemotePrefix)
		}
		return t.LocalPrefix + out, true
	}
	return "", false
}
