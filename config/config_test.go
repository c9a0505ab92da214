package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
)

func parse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := Parse(strings.NewReader(text), "test.conf")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// TestEveryOption sets each option once and checks where it lands.
func TestEveryOption(t *testing.T) {
	cases := []struct {
		line  string
		check func(c *Config) bool
	}{
		{"max_inflight_messages 40", func(c *Config) bool { return c.Broker.MaxInflight == 40 }},
		{"max_inflight_messages 0", func(c *Config) bool { return c.Broker.MaxInflight == -1 }},
		{"max_inflight_bytes 5000", func(c *Config) bool { return c.MaxInflightBytes == 5000 }},
		{"max_queued_messages 200", func(c *Config) bool { return c.Broker.MaxQueuedMessages == 200 }},
		{"max_queued_messages 0", func(c *Config) bool { return c.Broker.MaxQueuedMessages == -1 }},
		{"max_queued_bytes 1000000", func(c *Config) bool { return c.Broker.MaxQueuedBytes == 1000000 }},
		{"queue_qos0_messages true", func(c *Config) bool { return c.Broker.QueueQoS0 }},
		{"message_size_limit 1024", func(c *Config) bool { return c.Broker.MessageSizeLimit == 1024 }},
		{"max_packet_size 2048", func(c *Config) bool { return c.Broker.MaxPacketSize == 2048 }},
		{"max_keepalive 120", func(c *Config) bool { return c.Broker.MaxKeepAlive == 120 }},
		{"max_keepalive 0", func(c *Config) bool { return c.Broker.MaxKeepAlive == 65535 }},
		{"retain_available false", func(c *Config) bool { return !c.RetainAvailable }},
		{"max_qos 1", func(c *Config) bool { return c.MaxQoS == 1 }},
		{"upgrade_outgoing_qos true", func(c *Config) bool { return c.UpgradeOutgoingQoS }},
		{"set_tcp_nodelay false", func(c *Config) bool { return c.SetTCPNoDelay != nil && !*c.SetTCPNoDelay }},
		{"sys_interval 5", func(c *Config) bool { return c.Broker.SysInterval == 5*time.Second }},
		{"sys_interval 0", func(c *Config) bool { return c.Broker.SysInterval < 0 }},
		{"poll_spin 500", func(c *Config) bool { return c.Broker.PollSpin == 500*time.Microsecond }},
		{"poll_spin 0", func(c *Config) bool { return c.Broker.PollSpin < 0 }},
		{"persistence true", func(c *Config) bool { return c.Persistence }},
		{"persistence_location /var/lib/mqttd", func(c *Config) bool { return c.PersistenceLocation == "/var/lib/mqttd" }},
		{"persistence_file m.db", func(c *Config) bool { return c.PersistenceFile == "m.db" }},
		{"persistent_client_expiration 2d", func(c *Config) bool { return c.Broker.PersistentClientExpiration == 48*time.Hour }},
		{"persistent_client_expiration 1w", func(c *Config) bool { return c.Broker.PersistentClientExpiration == 7*24*time.Hour }},
		{"autosave_interval 900", func(c *Config) bool { return c.AutosaveInterval == 900*time.Second }},
		{"autosave_on_changes true", func(c *Config) bool { return c.AutosaveOnChanges }},
		{"persistence_sync batch", func(c *Config) bool { return c.PersistenceSync == "batch" }},
		{"persistence_on_corruption move-aside", func(c *Config) bool { return c.PersistenceOnCorruption == "move-aside" }},
		{"log_dest stdout", func(c *Config) bool { return len(c.Log.Dests) == 1 && c.Log.Dests[0].Kind == "stdout" }},
		{"log_dest file /tmp/x.log", func(c *Config) bool { return c.Log.Dests[0] == LogDest{"file", "/tmp/x.log"} }},
		{"log_dest syslog", func(c *Config) bool { return c.Log.Dests[0].Kind == "syslog" }},
		{"log_dest none", func(c *Config) bool { return c.Log.Dests[0].Kind == "none" }},
		{"log_type debug", func(c *Config) bool { return len(c.Log.Types) == 1 && c.Log.Types[0] == "debug" }},
		{"log_timestamp false", func(c *Config) bool { return !c.Log.Timestamp }},
		{"log_timestamp_format %Y-%m-%dT%H:%M:%S", func(c *Config) bool { return c.Log.TimestampFormat == "%Y-%m-%dT%H:%M:%S" }},
		{"connection_messages false", func(c *Config) bool { return !c.Log.ConnectionMessages }},
		{"pid_file /run/mqttd.pid", func(c *Config) bool { return c.PidFile == "/run/mqttd.pid" }},
		{"user mosquitto", func(c *Config) bool { return c.User == "mosquitto" }},
		{"metrics_listener 9100", func(c *Config) bool { return c.MetricsAddr == "127.0.0.1:9100" }},
		{"metrics_listener 9100 0.0.0.0", func(c *Config) bool { return c.MetricsAddr == "0.0.0.0:9100" }},
		{"metrics_password_file /etc/m.pw", func(c *Config) bool { return c.MetricsPasswordFile == "/etc/m.pw" }},
		{"metrics_token_file /etc/m.tok", func(c *Config) bool { return c.MetricsTokenFile == "/etc/m.tok" }},
		{"metrics_listener 9100 127.0.0.1", func(c *Config) bool { return c.MetricsAddr == "127.0.0.1:9100" }},
		{"acl_check_subscribe true", func(c *Config) bool { return c.ACLCheckSubscribe }},
		{"clientid_prefixes sensor-", func(c *Config) bool { return c.ClientIDPrefixes == "sensor-" }},
		{"bad_credentials_code bad_username_or_password", func(c *Config) bool { return !c.BadCredentialsNotAuthorized }},
		{"allow_anonymous true", func(c *Config) bool { return c.Security.AllowAnonymous && c.Security.AllowAnonymousSet }},
		{"password_file /etc/pw", func(c *Config) bool { return c.Security.PasswordFile == "/etc/pw" }},
		{"acl_file /etc/acl", func(c *Config) bool { return c.Security.ACLFile == "/etc/acl" }},
		{"allow_zero_length_clientid false", func(c *Config) bool { return !c.Security.AllowZeroLengthClientID }},
		{"auto_id_prefix dev-", func(c *Config) bool { return c.Security.AutoIDPrefix == "dev-" }},
		{"max_topic_alias 5", func(c *Config) bool { return c.MaxTopicAlias == 5 }},
		{"memory_limit 1000000", func(c *Config) bool { return c.MemoryLimit == 1000000 && c.Broker.MemoryLimit == 1000000 }},
		{"persistence_min_free_bytes 1048576", func(c *Config) bool { return c.Broker.StoreMinFreeBytes == 1048576 }},
		{"persistence_min_free_bytes 0", func(c *Config) bool { return c.Broker.StoreMinFreeBytes == -1 }},
		{"check_retain_source true", func(c *Config) bool { return true }}, // accepted, ignored
		{"allow_duplicate_messages false", func(c *Config) bool { return true }},
		// Listener-scoped options after a listener line apply to it.
		{"protocol websockets", func(c *Config) bool { return c.Listeners[0].Protocol == "websockets" }},
		{"socket_domain ipv4", func(c *Config) bool { return c.Listeners[0].SocketDomain == "ipv4" }},
		{"bind_interface lo", func(c *Config) bool { return c.Listeners[0].BindInterface == "lo" }},
		{"max_connections 10", func(c *Config) bool { return c.Listeners[0].MaxConnections == 10 }},
		{"max_connection_rate 5", func(c *Config) bool {
			return c.Listeners[0].MaxConnectionRate == 5 && c.ListenerOptions(c.Listeners[0]).MaxConnectionRate == 5
		}},
		{"max_publish_rate 50", func(c *Config) bool { return c.Broker.MaxPublishRate == 50 }},
		{"mount_point tenant/", func(c *Config) bool { return c.Listeners[0].MountPoint == "tenant/" }},
		{"use_username_as_clientid true", func(c *Config) bool { return c.Listeners[0].UseUsernameAsClientID }},
		{"ciphers_tls1.3 TLS_AES_128_GCM_SHA256", func(c *Config) bool { return c.Listeners[0].CiphersTLS13 != "" }},
		{"handshake_timeout 3", func(c *Config) bool {
			return c.Listeners[0].HandshakeTimeout == 3*time.Second && c.ListenerConfig(c.Listeners[0]).HandshakeTimeout == 3*time.Second
		}},
		{"max_pending_handshakes_per_address 4", func(c *Config) bool {
			return c.Listeners[0].MaxPendingPerAddress == 4 && c.ListenerConfig(c.Listeners[0]).MaxPendingPerAddress == 4
		}},
		{"max_pending_handshakes_per_address 0", func(c *Config) bool { return c.Listeners[0].MaxPendingPerAddress == -1 }},
		{"max_packet_size 2048", func(c *Config) bool { return c.ListenerConfig(c.Listeners[0]).MaxMessageSize == 2048 }},
	}
	for _, tc := range cases {
		t.Run(tc.line, func(t *testing.T) {
			cfg := parse(t, "listener 1883\n"+tc.line+"\n")
			if !tc.check(cfg) {
				t.Errorf("%q not applied: %+v / %+v", tc.line, cfg, cfg.Listeners[0])
			}
		})
	}
}

func TestTLSOptions(t *testing.T) {
	cfg := parse(t, `listener 8883
cafile /ca.pem
capath /certs
certfile /s.pem
keyfile /s.key
crlfile /crl.pem
require_certificate true
use_identity_as_username true
tls_version tlsv1.3
ciphers ECDHE-RSA-AES128-GCM-SHA256
`)
	l := cfg.Listeners[0]
	want := Listener{Port: 8883, CAFile: "/ca.pem", CAPath: "/certs", CertFile: "/s.pem", KeyFile: "/s.key",
		CRLFile: "/crl.pem", RequireCertificate: true, UseIdentityAsUsername: true, TLSVersion: "tlsv1.3",
		Ciphers: "ECDHE-RSA-AES128-GCM-SHA256", MaxConnections: -1}
	l.Line, l.Security = "", Security{}
	if !reflect.DeepEqual(*l, want) {
		t.Errorf("got %+v\nwant %+v", *l, want)
	}
	lc := cfg.ListenerConfig(cfg.Listeners[0])
	if lc.TLS == nil || lc.TLS.CertFile != "/s.pem" || lc.TLS.MinVersion != "tlsv1.3" || !lc.TLS.RequireCertificate {
		t.Errorf("listener config: %+v", lc.TLS)
	}
	if lo := cfg.ListenerOptions(cfg.Listeners[0]); lo.Identity == nil || lo.Port != 8883 {
		t.Errorf("listener options: %+v", lo)
	}
}

// Options after a `listener` line apply to that listener; before any, to
// the default listener that `port` configures.
func TestListenerScope(t *testing.T) {
	cfg := parse(t, `
port 1884
max_connections 5
listener 1885 127.0.0.1
mount_point a/
listener 1886
protocol websockets
listener 0 /tmp/mqttd.sock
`)
	if len(cfg.Listeners) != 4 {
		t.Fatalf("listeners: %d", len(cfg.Listeners))
	}
	d, a, ws, ux := cfg.Listeners[0], cfg.Listeners[1], cfg.Listeners[2], cfg.Listeners[3]
	if d.Addr() != ":1884" || d.MaxConnections != 5 {
		t.Errorf("default listener: %+v", d)
	}
	if a.Addr() != "127.0.0.1:1885" || a.MountPoint != "a/" || a.MaxConnections != -1 || a.Protocol != "" {
		t.Errorf("listener 1885: %+v", a)
	}
	if ws.Protocol != "websockets" || ws.MountPoint != "" {
		t.Errorf("listener 1886: %+v", ws)
	}
	if !ux.Unix || ux.Addr() != "/tmp/mqttd.sock" {
		t.Errorf("unix listener: %+v", ux)
	}
	if lc := cfg.ListenerConfig(ux); lc.Network != "unix" || lc.Address != "/tmp/mqttd.sock" {
		t.Errorf("unix listener config: %+v", lc)
	}
}

// Security options are global without per_listener_settings, wherever they
// appear; with it they belong to the listener before them.
func TestPerListenerSettings(t *testing.T) {
	global := parse(t, `
listener 1883
allow_anonymous true
listener 1884
password_file /pw
`)
	for _, l := range global.Listeners {
		s := global.ListenerSecurity(l)
		if !s.AllowAnonymous || s.PasswordFile != "/pw" {
			t.Errorf("global: listener %s security %+v", l.Addr(), s)
		}
	}
	per := parse(t, `
per_listener_settings true
listener 1883
allow_anonymous true
listener 1884
password_file /pw
acl_file /acl
allow_zero_length_clientid false
auto_id_prefix x-
`)
	a, b := per.ListenerSecurity(per.Listeners[0]), per.ListenerSecurity(per.Listeners[1])
	if !a.AllowAnonymous || a.PasswordFile != "" || !a.AllowZeroLengthClientID || a.AutoIDPrefix != "auto-" {
		t.Errorf("per-listener 1883: %+v", a)
	}
	if b.AllowAnonymous || b.PasswordFile != "/pw" || b.ACLFile != "/acl" || b.AllowZeroLengthClientID || b.AutoIDPrefix != "x-" {
		t.Errorf("per-listener 1884: %+v", b)
	}
	if lo := per.ListenerOptions(per.Listeners[1]); !lo.RefuseEmptyClientID || lo.AutoIDPrefix != "x-" {
		t.Errorf("listener options 1884: %+v", lo)
	}
}

// Mosquitto 2.0: no listener means loopback:1883 with anonymous access; a
// configured listener without allow_anonymous refuses anonymous clients.
func TestDefaults(t *testing.T) {
	d := Default()
	if len(d.Listeners) != 1 || d.Listeners[0].Addr() != "127.0.0.1:1883" || !d.Security.AllowAnonymous {
		t.Errorf("default: %+v", d)
	}
	if len(d.Log.Dests) != 1 || d.Log.Dests[0].Kind != "stderr" || !d.Log.Timestamp || !d.Log.ConnectionMessages {
		t.Errorf("default log: %+v", d.Log)
	}
	if len(d.Log.Types) != 4 {
		t.Errorf("default log types: %v", d.Log.Types)
	}
	if cfg := parse(t, "listener 1883\n"); cfg.Security.AllowAnonymous {
		t.Error("listener without allow_anonymous must refuse anonymous clients")
	}
	if cfg := parse(t, "allow_anonymous false\n"); cfg.Security.AllowAnonymous {
		t.Error("explicit allow_anonymous false in local-only mode")
	}
	if cfg := parse(t, "log_type error\nlog_type warning\nlog_dest stdout\nlog_dest file /x\n"); len(cfg.Log.Types) != 2 || len(cfg.Log.Dests) != 2 {
		t.Errorf("log_type and log_dest accumulate: %+v", cfg.Log)
	}
	// `port` makes the default listener listen on every interface.
	if cfg := parse(t, "port 1999\n"); cfg.Listeners[0].Addr() != ":1999" {
		t.Errorf("port: %+v", cfg.Listeners[0])
	}
	// Options for the default listener with only `listener` lines: a warning.
	if cfg := parse(t, "max_connections 3\nlistener 1883\n"); len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "test.conf:1") {
		t.Errorf("warnings: %q", cfg.Warnings)
	}
}

func TestAddPort(t *testing.T) {
	d := Default()
	d.AddPort(1999)
	if len(d.Listeners) != 1 || d.Listeners[0].Addr() != "127.0.0.1:1999" || !d.ListenerSecurity(d.Listeners[0]).AllowAnonymous {
		t.Errorf("-p without a file: %+v", d.Listeners[0])
	}
	cfg := parse(t, "listener 1883\n")
	cfg.File = "f.conf"
	cfg.AddPort(1999)
	if len(cfg.Listeners) != 2 || cfg.Listeners[1].Addr() != ":1999" {
		t.Errorf("-p with a file: %+v", cfg.Listeners)
	}
}

func TestIncludeDir(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "conf.d")
	os.Mkdir(inc, 0o755)
	os.WriteFile(filepath.Join(inc, "b.conf"), []byte("listener 1885\nmount_point b/\n"), 0o644)
	os.WriteFile(filepath.Join(inc, "a.conf"), []byte("listener 1884\n"), 0o644)
	os.WriteFile(filepath.Join(inc, "ignored.txt"), []byte("bogus line\n"), 0o644)
	main := filepath.Join(dir, "m.conf")
	os.WriteFile(main, []byte("listener 1883\ninclude_dir "+inc+"\nallow_anonymous true\n"), 0o644)
	cfg, err := Load(main)
	if err != nil {
		t.Fatal(err)
	}
	var ports []int
	for _, l := range cfg.Listeners {
		ports = append(ports, l.Port)
	}
	// Sorted file order: a.conf before b.conf; options after include_dir
	// continue in the main file.
	if len(ports) != 3 || ports[0] != 1883 || ports[1] != 1884 || ports[2] != 1885 || cfg.Listeners[2].MountPoint != "b/" {
		t.Errorf("listeners %v %+v", ports, cfg.Listeners)
	}
	if !cfg.Security.AllowAnonymous {
		t.Error("option after include_dir lost")
	}
	// An error inside an included file names that file and line.
	os.WriteFile(filepath.Join(inc, "c.conf"), []byte("\nnot_an_option 1\n"), 0o644)
	_, err = Load(main)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(inc, "c.conf")+":2: unknown option") {
		t.Errorf("error from included file: %v", err)
	}
	// A directory that includes itself stops at the depth limit.
	os.WriteFile(filepath.Join(inc, "c.conf"), []byte("include_dir "+inc+"\n"), 0o644)
	if _, err = Load(main); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Errorf("recursive include_dir: %v", err)
	}
	if _, err = Parse(strings.NewReader("include_dir "+filepath.Join(dir, "missing")+"\n"), "x.conf"); err == nil ||
		!strings.Contains(err.Error(), "x.conf:1: include_dir") {
		t.Errorf("missing include_dir: %v", err)
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	cases := []struct{ in, want string }{
		{"listener 1883\nbogus_option 1\n", `f.conf:2: unknown option "bogus_option"`},
		{"\n\nmax_inflight_messages lots\n", `f.conf:3: max_inflight_messages: "lots" is not a number`},
		{"allow_anonymous yes\n", `f.conf:1: allow_anonymous: "yes" is not true or false`},
		{"listener 99999\n", `f.conf:1: listener: invalid port "99999"`},
		{"listener\n", `f.conf:1: listener takes a port`},
		{"listener 0\n", `f.conf:1: listener 0 needs the path of a unix socket`},
		{"persistent_client_expiration 5s\n", `f.conf:1: persistent_client_expiration: unit of "5s"`},
		{"persistent_client_expiration d\n", `f.conf:1: persistent_client_expiration: invalid duration "d"`},
		{"max_packet_size 10\n", `f.conf:1: max_packet_size: 10 is too small`},
		{"sys_interval 1 2\n", `f.conf:1: sys_interval takes one value`},
		{"listener 1883\nprotocol http\n", `f.conf:2: protocol: "http" is not one of mqtt, websockets`},
		{"listener 1883\nsocket_domain ipx\n", `f.conf:2: socket_domain: "ipx" is not one of`},
		{"listener 1883\ntls_version tlsv1.0\n", `f.conf:2: tls_version: "tlsv1.0" is not one of`},
		{"listener 1883\ntls_version tlsv1.1\n", `f.conf:2: tls_version tlsv1.1 is refused: TLS 1.1 is insecure`},
		{"listener 1883\nmount_point a/#\n", `f.conf:2: mount_point "a/#" must not contain`},
		{"max_qos 3\n", `f.conf:1: max_qos: "3" is not a number from 0 to 2`},
		{"persistence_sync sometimes\n", `f.conf:1: persistence_sync: "sometimes" is not one of always, batch, never`},
		{"persistence_on_corruption ignore\n", `f.conf:1: persistence_on_corruption:`},
		{"log_dest carrier-pigeon\n", `f.conf:1: log_dest: unknown destination`},
		{"log_dest file\n", `f.conf:1: log_dest file needs one path`},
		{"log_type chatter\n", `f.conf:1: log_type: "chatter" is not one of`},
		{"metrics_listener http\n", `f.conf:1: metrics_listener: invalid port "http"`},
		{"connection bridge1\n", `f.conf:1: connection bridge1: no address`},
		{"auth_opt_db x\n", `f.conf:1: auth_opt_db: plugins are not supported`},
		{"plugin /x.so\n", `f.conf:1: plugin: plugins are not supported`},
		{"http_dir /www\n", `f.conf:1: http_dir: serving files over HTTP is not supported`},
		{"psk_hint x\n", `f.conf:1: psk_hint: TLS-PSK is not supported`},
		{"check_retain_source\n", `f.conf:1: check_retain_source needs a value`},
		{"password_file /pw\nper_listener_settings true\n", `f.conf:2: per_listener_settings must come before the security options (first at f.conf:1)`},
		{"listener 8883\ncertfile /s.pem\n", `f.conf:1: listener :8883: certfile and keyfile must both be given`},
		{"listener 8883\nrequire_certificate true\n", `f.conf:1: listener :8883: TLS options need certfile and keyfile`},
		{"listener 8883\ncertfile /c\nkeyfile /k\nuse_identity_as_username true\n", `need require_certificate true`},
		{"listener 8883\ncertfile /c\nkeyfile /k\nrequire_certificate true\n", `require_certificate needs cafile or capath`},
		{"listener 0 /s.sock\nprotocol websockets\n", `websockets over a unix socket is not supported`},
		{"listener 1883\nhandshake_timeout 0\n", `f.conf:2: handshake_timeout: "0" is not a number from 1 to 3600`},
		{"listener 1883\nmax_pending_handshakes_per_address -1\n", `f.conf:2: max_pending_handshakes_per_address: "-1" is not a number`},
		{"listener 1883\nwebsockets_origin\n", `f.conf:2: websockets_origin needs at least one origin`},
		{"listener 1883\nprotocol websockets\nwebsockets_origin example.com\n", `f.conf:3: websockets_origin: "example.com" is not an origin`},
		{"listener 1883\nprotocol websockets\nwebsockets_origin https://a.example/app\n", `websockets_origin: "https://a.example/app" is not an origin`},
		{"listener 1883\nwebsockets_origin https://a.example\n", `f.conf:1: listener :1883: websockets_origin needs protocol websockets`},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			_, err := Parse(strings.NewReader(c.in), "f.conf")
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: got %v, want %q", c.in, err, c.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.conf")
	os.WriteFile(path, []byte("listener 1883 127.0.0.1\nallow_anonymous true\n"), 0o644)
	cfg, err := Load(path)
	if err != nil || cfg.File != path || !cfg.Security.AllowAnonymous {
		t.Fatalf("Load: %+v %v", cfg, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.conf")); err == nil {
		t.Fatal("missing file: no error")
	}
}

// The MQTT 5 capability options reach the broker's options.
func TestCapabilityOptionsReachBroker(t *testing.T) {
	cfg, err := Parse(strings.NewReader("retain_available false\nmax_qos 1\nmax_topic_alias 0\n"), "caps.conf")
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Broker
	if o.RetainAvailable == nil || *o.RetainAvailable || o.MaxQoS == nil || *o.MaxQoS != 1 || o.MaxTopicAlias != -1 {
		t.Fatalf("not applied: retain %v, max_qos %v, max_topic_alias %d", o.RetainAvailable, o.MaxQoS, o.MaxTopicAlias)
	}
	cfg, _ = Parse(strings.NewReader("max_topic_alias 20\n"), "caps.conf")
	if cfg.Broker.MaxTopicAlias != 20 || cfg.Broker.RetainAvailable != nil || cfg.Broker.MaxQoS != nil {
		t.Fatalf("defaults changed: %+v", cfg.Broker)
	}
}

// TestTopicAliasOut: the server's own topic aliases are on by default and
// `topic_alias_out false` turns them off.
func TestTopicAliasOut(t *testing.T) {
	for in, want := range map[string]broker.TopicAliasPolicy{"": broker.TopicAliasLRU,
		"topic_alias_out true\n": broker.TopicAliasLRU, "topic_alias_out false\n": broker.TopicAliasOff} {
		cfg, err := Parse(strings.NewReader(in), "a.conf")
		if err != nil {
			t.Errorf("%q: %v", in, err)
		} else if cfg.Broker.TopicAliasPolicy != want {
			t.Errorf("%q: TopicAliasPolicy %v, want %v", in, cfg.Broker.TopicAliasPolicy, want)
		}
	}
	if _, err := Parse(strings.NewReader("topic_alias_out maybe\n"), "a.conf"); err == nil {
		t.Error("topic_alias_out maybe accepted")
	}
}

func TestAuthFailureDelay(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "auth_failure_delay 3\n": 3 * time.Second,
		"auth_failure_delay 0\n": -1} {
		cfg, err := Parse(strings.NewReader(in), "d.conf")
		if err != nil {
			t.Errorf("%q: %v", in, err)
		} else if cfg.Broker.AuthFailureDelay != want {
			t.Errorf("%q: AuthFailureDelay %v, want %v", in, cfg.Broker.AuthFailureDelay, want)
		}
	}
	if _, err := Parse(strings.NewReader("auth_failure_delay -1\n"), "d.conf"); err == nil {
		t.Error("auth_failure_delay -1 accepted")
	}
}

// TestWebSocketsOrigin checks that websockets_origin lists accumulate per
// listener and reach the listener's configuration; without it any origin
// is allowed, as in Mosquitto.
func TestWebSocketsOrigin(t *testing.T) {
	cfg := parse(t, `listener 8080
protocol websockets
websockets_origin https://app.example.com http://localhost:3000
websockets_origin https://admin.example.com
listener 8081
protocol websockets
`)
	want := []string{"https://app.example.com", "http://localhost:3000", "https://admin.example.com"}
	if got := cfg.ListenerConfig(cfg.Listeners[0]).AllowedOrigins; !reflect.DeepEqual(got, want) {
		t.Errorf("allowed origins %q, want %q", got, want)
	}
	if got := cfg.ListenerConfig(cfg.Listeners[1]).AllowedOrigins; len(got) != 0 {
		t.Errorf("listener without websockets_origin allows only %q", got)
	}
	if lc := cfg.ListenerConfig(cfg.Listeners[1]); lc.MaxMessageSize != broker.DefaultMaxPacketSize ||
		lc.HandshakeTimeout != 0 || lc.MaxPendingPerAddress != 0 {
		t.Errorf("defaults: %+v", lc)
	}
}

func TestMaxQueuedBytesTotal(t *testing.T) {
	cfg, err := Parse(strings.NewReader("max_queued_bytes_total 1048576\n"), "q.conf")
	if err != nil || cfg.Broker.MaxQueuedBytesTotal != 1<<20 {
		t.Fatalf("max_queued_bytes_total: %v %d", err, cfg.Broker.MaxQueuedBytesTotal)
	}
}

// Secret files every user can read are named in a warning; private ones
// are not.
func TestPermissionWarnings(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.pw")
	private := filepath.Join(dir, "private.acl")
	tok := filepath.Join(dir, "metrics.tok")
	for f, mode := range map[string]os.FileMode{open: 0o644, private: 0o600, tok: 0o604} {
		if err := os.WriteFile(f, []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	cfg := parse(t, "password_file "+open+"\nacl_file "+private+"\nmetrics_token_file "+tok+"\n")
	w := strings.Join(PermissionWarnings(cfg), "\n")
	if !strings.Contains(w, "password_file "+open+" is readable by every user (mode 0644)") ||
		!strings.Contains(w, "metrics_token_file "+tok) || strings.Contains(w, private) {
		t.Errorf("warnings:\n%s", w)
	}
}
