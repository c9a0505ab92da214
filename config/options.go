package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mqttd/mqttd/bridge"
	"github.com/mqttd/mqttd/broker"
)

// bridgeOption applies a line of a `connection` section (bridge/config.go
// knows each option): `connection NAME` starts one, and the bridge options
// after it belong to it, as in Mosquitto.
func (c *Config) bridgeOption(key, rest, where string) error {
	if key == "connection" {
		b, err := bridge.NewConfig(strings.TrimSpace(rest), where)
		if err != nil {
			return err
		}
		for _, o := range c.Bridges {
			if o.Name == b.Name {
				return fmt.Errorf("duplicate bridge name %q (first at %s)", b.Name, o.Line)
			}
		}
		c.Bridges = append(c.Bridges, b)
		c.curBridge = b
		return nil
	}
	if c.curBridge == nil {
		return fmt.Errorf("%s: a bridge option needs a connection line before it", key)
	}
	return c.curBridge.Set(key, rest)
}

// Scope of an option, as in Mosquitto 2.0.
//
//   - global: applies to the whole broker wherever it appears.
//   - listener: applies to the listener whose `listener` line precedes it
//     (before any listener: the default listener that `port` configures).
//   - security: global, unless per_listener_settings is true, when it applies
//     to the listener that precedes it.
//
// Every option mqttd knows is in one of the tables below or in apply's switch
// (`listener`, `port`, `bind_address`, `per_listener_settings`).

// ignoredOptions are accepted for compatibility and have no effect, with the
// reason (OPTIONS.md lists every option).
var ignoredOptions = map[string]string{
	"allow_duplicate_messages": "deprecated in Mosquitto 2.0; duplicates are always allowed",
	"check_retain_source":      "retained messages are not re-checked against the ACL of their publisher",
	"websockets_log_level":     "libwebsockets-specific",
	"websockets_headers_size":  "the WebSocket library sizes its own buffers",
	"log_facility":             "syslog messages use the daemon facility",
	"retry_interval":           "removed in Mosquitto 1.6; messages are re-sent on reconnect",
	"store_clean_interval":     "removed in Mosquitto 1.6",
}

// unsupportedOptions are option families mqttd refuses with a clear error.
var unsupportedOptions = map[string]string{
	"plugin":                         "plugins are not supported",
	"auth_plugin":                    "plugins are not supported",
	"auth_plugin_deny_special_chars": "plugins are not supported",
	"global_plugin":                  "plugins are not supported",
	"http_dir":                       "serving files over HTTP is not supported",
	"psk_file":                       "TLS-PSK is not supported (Go's TLS has no PSK)",
	"psk_hint":                       "TLS-PSK is not supported (Go's TLS has no PSK)",
	"dhparamfile":                    "Go's TLS does not use finite-field DH parameters",
	"tls_engine":                     "OpenSSL engines are not supported",
	"tls_engine_kpass_sha1":          "OpenSSL engines are not supported",
	"tls_keyform":                    "OpenSSL engines are not supported",
	"enable_control_api":             "the control API is not supported",
}

// apply applies one line's option.
func (c *Config) apply(key, rest, where string) error {
	args := strings.Fields(rest)
	a := argReader{key: key, args: args}
	switch {
	case c.isDynsecOption(key):
		return c.dynsecOption(key, rest, where) // dynsec.go
	case strings.HasPrefix(key, "auth_opt_"), strings.HasPrefix(key, "plugin_opt_"):
		return fmt.Errorf("%s: plugins are not supported", key)
	case bridge.IsOption(key):
		return c.bridgeOption(key, rest, where)
	case strings.HasPrefix(key, "bridge_"), strings.HasPrefix(key, "remote_"), strings.HasPrefix(key, "local_"):
		return fmt.Errorf("%s: unknown bridge option", key)
	case strings.HasPrefix(key, "cluster_") && !isClusterOption(key):
		return fmt.Errorf("%s: unknown cluster option (known: %s)", key, strings.Join(clusterOptions, ", "))
	}
	if why, ok := unsupportedOptions[key]; ok {
		return fmt.Errorf("%s: %s", key, why)
	}
	if _, ok := ignoredOptions[key]; ok {
		if len(args) == 0 {
			return fmt.Errorf("%s needs a value", key)
		}
		return nil
	}
	if f, ok := c.listenerOption(key); ok {
		if c.cur == c.defaultListener && c.defaultListener.Line == "" {
			c.defaultListener.Line = where
		}
		return f(c.cur, &a)
	}
	if strings.HasPrefix(key, "auth_http_") || strings.HasPrefix(key, "auth_jwt_") {
		return c.authBackendOption(key, rest, &a, where) // authbackend.go
	}
	if f, ok := securityOptions[key]; ok {
		s := &c.Security
		if c.PerListenerSettings {
			s = &c.cur.Security
		}
		if c.firstSecurity == "" {
			c.firstSecurity = where
		}
		return f(s, &a)
	}
	o := &c.Broker
	var err error
	var n int64
	switch key {
	case "listener":
		if len(args) < 1 || len(args) > 2 {
			return fmt.Errorf("listener takes a port and an optional address")
		}
		p, perr := strconv.Atoi(args[0])
		if perr != nil || p < 0 || p > 65535 {
			return fmt.Errorf("listener: invalid port %q", args[0])
		}
		l := &Listener{Port: p, MaxConnections: -1, Line: where, Security: defaultSecurity()}
		if len(args) == 2 {
			l.Address = args[1]
		}
		if p == 0 {
			if len(args) != 2 {
				return fmt.Errorf("listener 0 needs the path of a unix socket")
			}
			l.Unix = true
		}
		c.Listeners = append(c.Listeners, l)
		c.cur = l
	case "port":
		n, err = a.integer(1, 65535)
		c.defaultListener.Port = int(n)
		c.defaultListener.Line = where
		c.defaultUsed = true
	case "bind_address":
		var s string
		s, err = a.one()
		c.defaultListener.Address = s
		c.defaultUsed = true
	case "per_listener_settings":
		var v bool
		v, err = a.boolean()
		if err == nil && v && c.firstSecurity != "" {
			return fmt.Errorf("per_listener_settings must come before the security options (first at %s)", c.firstSecurity)
		}
		c.PerListenerSettings = v
	case "clientid_prefixes":
		c.ClientIDPrefixes, err = a.one()
	case "acl_check_subscribe":
		c.ACLCheckSubscribe, err = a.boolean()
	case "bad_credentials_code":
		var s string
		if s, err = a.oneOf("not_authorized", "bad_username_or_password"); err == nil {
			c.BadCredentialsNotAuthorized = s == "not_authorized"
		}
	case "max_inflight_messages":
		n, err = a.integer(0, 65535)
		o.MaxInflight = int(n)
		if n == 0 {
			o.MaxInflight = -1 // 0 means no limit in mosquitto.conf
		}
	case "max_inflight_bytes":
		c.MaxInflightBytes, err = a.integer(0, 1<<62)
	case "max_queued_messages":
		n, err = a.integer(0, 1<<31-1)
		o.MaxQueuedMessages = int(n)
		if n == 0 {
			o.MaxQueuedMessages = -1
		}
	case "max_queued_bytes":
		o.MaxQueuedBytes, err = a.integer(0, 1<<62)
	case "max_queued_bytes_total":
		// mqttd: a broker-wide bound on the bytes queued for all sessions,
		// so that abandoned persistent sessions cannot exhaust memory or disk.
		o.MaxQueuedBytesTotal, err = a.integer(0, 1<<62)
	case "max_backlog_bytes":
		// mqttd: the bytes waiting to be written to one connection
		// (broker.Options.MaxBacklogBytes); 0 = the default, 8 MiB.
		n, err = a.integer(0, 1<<40)
		o.MaxBacklogBytes = int(n)
	case "queue_qos0_messages":
		o.QueueQoS0, err = a.boolean()
	case "message_size_limit":
		n, err = a.integer(0, 268435455)
		o.MessageSizeLimit = int(n)
	case "max_packet_size":
		n, err = a.integer(0, 268435460)
		if err == nil && n > 0 && n < 20 {
			err = fmt.Errorf("max_packet_size: %d is too small (at least 20)", n)
		}
		o.MaxPacketSize = int(n)
	case "max_connect_packet_size":
		// mqttd: the bound on packets before CONNACK (broker.Options).
		n, err = a.integer(20, 268435460)
		o.MaxConnectPacketSize = int(n)
	case "auth_failure_delay":
		// mqttd: the longest delay of a refused login after failed ones from
		// the same address, in seconds (broker.Options.AuthFailureDelay).
		n, err = a.integer(0, 3600)
		o.AuthFailureDelay = time.Duration(n) * time.Second
		if n == 0 {
			o.AuthFailureDelay = -1 // 0 disables the delays
		}
	case "max_keepalive":
		n, err = a.integer(0, 65535)
		o.MaxKeepAlive = uint16(n)
		if n == 0 {
			o.MaxKeepAlive = 65535
		}
	case "max_topic_alias":
		n, err = a.integer(0, 65535)
		c.MaxTopicAlias = int(n)
		o.MaxTopicAlias = int(n)
		if n == 0 {
			o.MaxTopicAlias = -1 // 0: no aliases accepted
		}
	case "topic_alias_out":
		// mqttd: whether the server assigns topic aliases on the PUBLISH
		// it sends to 5.0 clients that allow them (default true).
		var on bool
		on, err = a.boolean()
		o.TopicAliasPolicy = broker.TopicAliasLRU
		if !on {
			o.TopicAliasPolicy = broker.TopicAliasOff
		}
	case "max_publish_rate":
		// mqttd: PUBLISH packets per second one client may send; past it
		// the broker stops reading from it (back-pressure). 0: unlimited.
		n, err = a.integer(0, 1<<31-1)
		o.MaxPublishRate = int(n)
	case "memory_limit":
		c.MemoryLimit, err = a.integer(0, 1<<62)
		o.MemoryLimit = c.MemoryLimit // 0: no limit
	case "persistence_min_free_bytes":
		// mqttd: below this much free space on the store's file system,
		// QoS 1/2 and retained messages are refused; 0 turns the check off.
		n, err = a.integer(0, 1<<62)
		o.StoreMinFreeBytes = n
		if n == 0 {
			o.StoreMinFreeBytes = -1
		}
	case "retain_available":
		c.RetainAvailable, err = a.boolean()
		o.RetainAvailable = &c.RetainAvailable
	case "max_qos":
		n, err = a.integer(0, 2)
		c.MaxQoS = int(n)
		q := byte(n)
		o.MaxQoS = &q
	case "upgrade_outgoing_qos":
		c.UpgradeOutgoingQoS, err = a.boolean()
	case "set_tcp_nodelay":
		var v bool
		v, err = a.boolean()
		c.SetTCPNoDelay = &v
	case "persistence":
		c.Persistence, err = a.boolean()
	case "persistence_location":
		c.PersistenceLocation, err = a.one()
	case "cluster_name", "cluster_node", "cluster_listen", "cluster_peer", "cluster_cafile", "cluster_certfile",
		"cluster_keyfile", "cluster_adopt_after":
		err = c.Cluster.option(&a, where) // cluster.go
	case "persistence_file":
		c.PersistenceFile, err = a.one()
	case "autosave_interval":
		n, err = a.integer(0, 1<<31-1)
		c.AutosaveInterval = time.Duration(n) * time.Second
	case "autosave_on_changes":
		c.AutosaveOnChanges, err = a.boolean()
	case "persistence_sync":
		c.PersistenceSync, err = a.oneOf("always", "batch", "never")
	case "persistence_on_corruption":
		c.PersistenceOnCorruption, err = a.oneOf("refuse", "move-aside")
	case "persistent_client_expiration":
		var s string
		if s, err = a.one(); err == nil {
			o.PersistentClientExpiration, err = parseExpiration(s)
		}
	case "poll_spin":
		n, err = a.integer(0, 1000000)
		o.PollSpin = time.Duration(n) * time.Microsecond
		if n == 0 {
			o.PollSpin = -1 // 0: never spin
		}
	case "sys_interval":
		n, err = a.integer(0, 65535)
		o.SysInterval = time.Duration(n) * time.Second
		if n == 0 {
			o.SysInterval = -1 // 0 disables $SYS
		}
	case "log_dest":
		err = c.logDest(args)
	case "log_type":
		var s string
		if s, err = a.oneOf("error", "warning", "notice", "information", "debug", "subscribe",
			"unsubscribe", "websockets", "all", "none"); err == nil {
			c.Log.Types = append(c.Log.Types, s)
		}
	case "log_timestamp":
		c.Log.Timestamp, err = a.boolean()
	case "log_timestamp_format":
		if rest == "" {
			return fmt.Errorf("log_timestamp_format needs a format")
		}
		c.Log.TimestampFormat = rest
	case "connection_messages":
		c.Log.ConnectionMessages, err = a.boolean()
	case "pid_file":
		c.PidFile, err = a.one()
	case "user":
		c.User, err = a.one()
	case "metrics_listener":
		err = c.metricsListener(args)
	case "metrics_password_file":
		c.MetricsPasswordFile, err = a.one()
	case "metrics_token_file":
		c.MetricsTokenFile, err = a.one()
	case "admin_listener":
		c.AdminAddr, err = loopbackListener("admin_listener", args)
	case "admin_password_file":
		c.AdminPasswordFile, err = a.one()
	case "admin_token_file":
		c.AdminTokenFile, err = a.one()
	case "admin_certfile":
		c.AdminCertFile, err = a.one()
	case "admin_keyfile":
		c.AdminKeyFile, err = a.one()
	default:
		return fmt.Errorf("unknown option %q", key)
	}
	return err
}

// logDest adds one log_dest.
func (c *Config) logDest(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("log_dest needs a destination")
	}
	d := LogDest{Kind: args[0]}
	switch d.Kind {
	case "stderr", "stdout", "syslog", "topic", "none":
		if len(args) != 1 {
			return fmt.Errorf("log_dest %s takes no more values", d.Kind)
		}
	case "file":
		if len(args) != 2 {
			return fmt.Errorf("log_dest file needs one path")
		}
		d.Path = args[1]
	case "dlt":
		return fmt.Errorf("log_dest dlt is not supported")
	default:
		return fmt.Errorf("log_dest: unknown destination %q (want stderr, stdout, file, syslog, topic or none)", d.Kind)
	}
	c.Log.Dests = append(c.Log.Dests, d)
	return nil
}

// loopbackListener parses "PORT [ADDRESS]" of an HTTP listener that binds
// 127.0.0.1 unless an address is given.
func loopbackListener(key string, args []string) (string, error) {
	if len(args) < 1 || len(args) > 2 {
		return "", fmt.Errorf("%s takes a port and an optional address", key)
	}
	p, err := strconv.Atoi(args[0])
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("%s: invalid port %q", key, args[0])
	}
	host := "127.0.0.1"
	if len(args) == 2 {
		host = args[1]
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func (c *Config) metricsListener(args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return fmt.Errorf("metrics_listener takes a port and an optional address")
	}
	p, err := strconv.Atoi(args[0])
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("metrics_listener: invalid port %q", args[0])
	}
	// Unlike an MQTT listener, the metrics endpoint is loopback-only unless
	// an address is given: it has no TLS and is open without
	// metrics_password_file or metrics_token_file.
	host := "127.0.0.1"
	if len(args) == 2 {
		host = args[1]
	}
	c.MetricsAddr = net.JoinHostPort(host, strconv.Itoa(p))
	return nil
}

// listenerOption returns the setter of a listener-scoped option.
func (c *Config) listenerOption(key string) (func(*Listener, *argReader) error, bool) {
	f, ok := listenerOptions[key]
	return f, ok
}

var listenerOptions = map[string]func(*Listener, *argReader) error{
	"protocol": func(l *Listener, a *argReader) (err error) {
		l.Protocol, err = a.oneOf("mqtt", "websockets")
		return
	},
	"socket_domain": func(l *Listener, a *argReader) (err error) {
		l.SocketDomain, err = a.oneOf("ipv4", "ipv6")
		return
	},
	"bind_interface": func(l *Listener, a *argReader) (err error) {
		l.BindInterface, err = a.one()
		return
	},
	"max_connections": func(l *Listener, a *argReader) error {
		n, err := a.integer(-1, 1<<31-1)
		l.MaxConnections = int(n)
		return err
	},
	// mqttd: new connections accepted per second; past it sockets are
	// closed at once. 0: unlimited.
	"max_connection_rate": func(l *Listener, a *argReader) error {
		n, err := a.integer(0, 1<<31-1)
		l.MaxConnectionRate = int(n)
		return err
	},
	"mount_point": func(l *Listener, a *argReader) (err error) {
		l.MountPoint, err = a.one()
		if err == nil && strings.ContainsAny(l.MountPoint, "+#") {
			err = fmt.Errorf("mount_point %q must not contain + or #", l.MountPoint)
		}
		return
	},
	// mqttd: the bounds that keep idle or slow handshakes from locking
	// others out of a TLS or WebSocket listener.
	"handshake_timeout": func(l *Listener, a *argReader) error {
		n, err := a.integer(1, 3600)
		l.HandshakeTimeout = time.Duration(n) * time.Second
		return err
	},
	"max_pending_handshakes_per_address": func(l *Listener, a *argReader) error {
		n, err := a.integer(0, 1<<20)
		l.MaxPendingPerAddress = int(n)
		if n == 0 {
			l.MaxPendingPerAddress = -1 // 0: no limit
		}
		return err
	},
	// mqttd: the browser origins a WebSocket listener accepts; repeatable.
	"websockets_origin": func(l *Listener, a *argReader) error {
		if len(a.args) == 0 {
			return fmt.Errorf("websockets_origin needs at least one origin")
		}
		for _, o := range a.args {
			if err := checkOrigin(o); err != nil {
				return err
			}
		}
		l.WebSocketsOrigins = append(l.WebSocketsOrigins, a.args...)
		return nil
	},
	"cafile":   func(l *Listener, a *argReader) (err error) { l.CAFile, err = a.one(); return },
	"capath":   func(l *Listener, a *argReader) (err error) { l.CAPath, err = a.one(); return },
	"certfile": func(l *Listener, a *argReader) (err error) { l.CertFile, err = a.one(); return },
	"keyfile":  func(l *Listener, a *argReader) (err error) { l.KeyFile, err = a.one(); return },
	"crlfile":  func(l *Listener, a *argReader) (err error) { l.CRLFile, err = a.one(); return },
	"require_certificate": func(l *Listener, a *argReader) (err error) {
		l.RequireCertificate, err = a.boolean()
		return
	},
	"use_identity_as_username": func(l *Listener, a *argReader) (err error) {
		l.UseIdentityAsUsername, err = a.boolean()
		return
	},
	"use_subject_as_username": func(l *Listener, a *argReader) (err error) {
		l.UseSubjectAsUsername, err = a.boolean()
		return
	},
	"use_username_as_clientid": func(l *Listener, a *argReader) (err error) {
		l.UseUsernameAsClientID, err = a.boolean()
		return
	},
	"tls_version": func(l *Listener, a *argReader) (err error) {
		if len(a.args) == 1 && strings.EqualFold(a.args[0], "tlsv1.1") {
			// TLS 1.1 means CBC suites with SHA-1 MACs; Mosquitto on
			// OpenSSL 3 refuses it too.
			return fmt.Errorf("tls_version tlsv1.1 is refused: TLS 1.1 is insecure (CBC with SHA-1) and deprecated " +
				"(RFC 8996); use tlsv1.2 (the default) or tlsv1.3")
		}
		l.TLSVersion, err = a.oneOf("tlsv1.3", "tlsv1.2")
		return
	},
	"ciphers": func(l *Listener, a *argReader) (err error) { l.Ciphers, err = a.one(); return },
	"ciphers_tls1.3": func(l *Listener, a *argReader) (err error) {
		l.CiphersTLS13, err = a.one()
		return
	},
}

var securityOptions = map[string]func(*Security, *argReader) error{
	"allow_anonymous": func(s *Security, a *argReader) (err error) {
		s.AllowAnonymous, err = a.boolean()
		s.AllowAnonymousSet = true
		return
	},
	"password_file": func(s *Security, a *argReader) (err error) { s.PasswordFile, err = a.one(); return },
	"acl_file":      func(s *Security, a *argReader) (err error) { s.ACLFile, err = a.one(); return },
	"allow_zero_length_clientid": func(s *Security, a *argReader) (err error) {
		s.AllowZeroLengthClientID, err = a.boolean()
		return
	},
	"auto_id_prefix": func(s *Security, a *argReader) (err error) { s.AutoIDPrefix, err = a.one(); return },
}

// argReader checks an option's values.
type argReader struct {
	key  string
	args []string
}

func (a *argReader) one() (string, error) {
	if len(a.args) != 1 {
		return "", fmt.Errorf("%s takes one value", a.key)
	}
	return a.args[0], nil
}

func (a *argReader) integer(lo, hi int64) (int64, error) {
	s, err := a.one()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s: %q is not a number from %d to %d", a.key, s, lo, hi)
	}
	return n, nil
}

func (a *argReader) boolean() (bool, error) {
	s, err := a.one()
	if err != nil {
		return false, err
	}
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%s: %q is not true or false", a.key, s)
}

func (a *argReader) oneOf(values ...string) (string, error) {
	s, err := a.one()
	if err != nil {
		return "", err
	}
	for _, v := range values {
		if s == v {
			return s, nil
		}
	}
	return "", fmt.Errorf("%s: %q is not one of %s", a.key, s, strings.Join(values, ", "))
}

// checkOrigin accepts an origin as browsers send it in the Origin header:
// http or https, a host and an optional port, nothing more.
func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "#") || strings.HasSuffix(o, "?") {
		return fmt.Errorf("websockets_origin: %q is not an origin like https://example.com or http://host:8080", o)
	}
	return nil
}

// parseExpiration reads Mosquitto's duration syntax: a number followed by h
// (hours), d (days), w (weeks), m (months of 30 days) or y (years of 365 days).
func parseExpiration(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("persistent_client_expiration: invalid duration %q", s)
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("persistent_client_expiration: invalid duration %q", s)
	}
	unit := map[byte]time.Duration{'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour,
		'm': 30 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}[s[len(s)-1]]
	if unit == 0 {
		return 0, fmt.Errorf("persistent_client_expiration: unit of %q must be h, d, w, m or y", s)
	}
	return time.Duration(n) * unit, nil
}
