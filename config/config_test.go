package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`
# comment
listener 1884 0.0.0.0
listener 1885
allow_anonymous true
max_inflight_messages 40
max_queued_messages 200
max_queued_bytes 1000000
queue_qos0_messages true
message_size_limit 1024
max_packet_size 2048
max_keepalive 120
persistence false
persistence_location /var/lib/mqttd
sys_interval 5
persistent_client_expiration 2d
`), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Broker
	if len(cfg.Listeners) != 2 || cfg.Listeners[0].Addr() != "0.0.0.0:1884" || cfg.Listeners[1].Addr() != ":1885" {
		t.Errorf("listeners: %+v", cfg.Listeners)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"allow_anonymous", o.AllowAnonymous},
		{"max_inflight_messages", o.MaxInflight == 40},
		{"max_queued_messages", o.MaxQueuedMessages == 200},
		{"max_queued_bytes", o.MaxQueuedBytes == 1000000},
		{"queue_qos0_messages", o.QueueQoS0},
		{"message_size_limit", o.MessageSizeLimit == 1024},
		{"max_packet_size", o.MaxPacketSize == 2048},
		{"max_keepalive", o.MaxKeepAlive == 120},
		{"persistence", !cfg.Persistence},
		{"persistence_location", cfg.PersistenceLocation == "/var/lib/mqttd"},
		{"sys_interval", o.SysInterval == 5*time.Second},
		{"persistent_client_expiration", o.PersistentClientExpiration == 48*time.Hour},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s not applied: %+v", c.name, o)
		}
	}
}

// Mosquitto 2.0: no listener means loopback:1883 with anonymous access; a
// configured listener without allow_anonymous refuses anonymous clients.
func TestDefaults(t *testing.T) {
	d := Default()
	if len(d.Listeners) != 1 || d.Listeners[0].Addr() != "127.0.0.1:1883" || !d.Broker.AllowAnonymous {
		t.Errorf("default: %+v", d)
	}
	cfg, err := Parse(strings.NewReader("listener 1883\n"), "x")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker.AllowAnonymous {
		t.Error("listener without allow_anonymous must refuse anonymous clients")
	}
	cfg, _ = Parse(strings.NewReader("allow_anonymous false\n"), "x")
	if cfg.Broker.AllowAnonymous {
		t.Error("explicit allow_anonymous false in local-only mode")
	}
	cfg, _ = Parse(strings.NewReader("max_inflight_messages 0\nmax_queued_messages 0\nsys_interval 0\n"), "x")
	if cfg.Broker.MaxInflight != -1 || cfg.Broker.MaxQueuedMessages != -1 || cfg.Broker.SysInterval >= 0 {
		t.Errorf("zero means unlimited / disabled: %+v", cfg.Broker)
	}
}

func TestAddPort(t *testing.T) {
	d := Default()
	d.AddPort(1999)
	if len(d.Listeners) != 1 || d.Listeners[0].Addr() != "127.0.0.1:1999" {
		t.Errorf("-p without a file: %+v", d.Listeners)
	}
	cfg, _ := Parse(strings.NewReader("listener 1883\n"), "f.conf")
	cfg.AddPort(1999)
	if len(cfg.Listeners) != 2 || cfg.Listeners[1].Addr() != ":1999" {
		t.Errorf("-p with a file: %+v", cfg.Listeners)
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	cases := []struct{ in, want string }{
		{"listener 1883\nbogus_option 1\n", `f.conf:2: unknown option "bogus_option"`},
		{"\n\nmax_inflight_messages lots\n", `f.conf:3: max_inflight_messages: "lots" is not a number`},
		{"allow_anonymous yes\n", `f.conf:1: allow_anonymous: "yes" is not true or false`},
		{"listener 99999\n", `f.conf:1: listener: invalid port "99999"`},
		{"listener\n", `f.conf:1: listener takes a port`},
		{"persistent_client_expiration 5s\n", `f.conf:1: persistent_client_expiration: unit of "5s"`},
		{"persistent_client_expiration d\n", `f.conf:1: persistent_client_expiration: invalid duration "d"`},
		{"max_packet_size 10\n", `f.conf:1: max_packet_size: 10 is too small`},
		{"sys_interval 1 2\n", `f.conf:1: sys_interval takes one value`},
	}
	for _, c := range cases {
		_, err := Parse(strings.NewReader(c.in), "f.conf")
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: got %v, want %q", c.in, err, c.want)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.conf")
	os.WriteFile(path, []byte("listener 1883 127.0.0.1\nallow_anonymous true\n"), 0o644)
	cfg, err := Load(path)
	if err != nil || cfg.File != path || !cfg.Broker.AllowAnonymous {
		t.Fatalf("Load: %+v %v", cfg, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.conf")); err == nil {
		t.Fatal("missing file: no error")
	}
}
