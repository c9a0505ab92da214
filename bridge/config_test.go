package bridge

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// parse builds a section from "key value" lines after `connection b1`.
func parse(t *testing.T, lines ...string) (*Config, error) {
	t.Helper()
	c, err := NewConfig("b1", "test:1")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		k, rest, _ := strings.Cut(l, " ")
		if err := c.Set(k, rest); err != nil {
			return c, err
		}
	}
	return c, c.Finish()
}

func TestConfigDefaults(t *testing.T) {
	c, err := parse(t, "address 127.0.0.1", "topic a/#")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := os.Hostname()
	if c.RemoteID != h+".b1" || c.LocalID != "local."+h+".b1" {
		t.Errorf("ids %q %q", c.RemoteID, c.LocalID)
	}
	if c.NotificationTopic != "$SYS/broker/connection/"+h+".b1/state" {
		t.Errorf("notification topic %q", c.NotificationTopic)
	}
	want := Topic{Pattern: "a/#", Direction: Out, QoS: 0, LocalTopic: "a/#", RemoteTopic: "a/#"}
	if c.Topics[0] != want {
		t.Errorf("topic %+v", c.Topics[0])
	}
	if c.Version != packet.V311 || c.KeepAlive != 60*time.Second || !c.TryPrivate || !c.Notifications ||
		!c.OutgoingRetain || c.CleanSession || c.Start != StartAutomatic || c.Threshold != 10 ||
		c.IdleTimeout != 60*time.Second || c.BackoffBase != 5*time.Second || c.BackoffCap != 30*time.Second ||
		c.Addresses[0].Port != 1883 {
		t.Errorf("defaults %+v", c)
	}
}

func TestConfigOptions(t *testing.T) {
	c, err := parse(t,
		"address a.example:1884 b.example ws://c.example:8080/mqtt",
		"round_robin true",
		"topic x/# both 2 l/ r/",
		"bridge_protocol_version mqttv50",
		"remote_clientid rid", "local_clientid lid",
		"remote_username u", "remote_password p", "local_username lu", "local_password lp",
		"cleansession true", "local_cleansession false",
		"keepalive_interval 2", "restart_timeout 3 20", "start_type lazy", "idle_timeout 0", "threshold 0",
		"try_private false", "notifications false", "notification_topic n/t", "notifications_local_only true",
		"bridge_outgoing_retain false", "bridge_attempt_unsubscribe false", "bridge_max_packet_size 1000",
		"bridge_cafile ca.pem", "bridge_capath /etc/ssl/certs", "bridge_certfile c.pem", "bridge_keyfile k.pem",
		"bridge_insecure true", "bridge_alpn mqtt", "bridge_tls_version tlsv1.3", "bridge_bind_address 127.0.0.1",
		"bridge_require_ocsp false")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Addresses) != 3 || c.Addresses[0] != (Address{Host: "a.example", Port: 1884}) ||
		c.Addresses[1].Port != 1883 || c.Addresses[2].URL != "ws://c.example:8080/mqtt" || c.Addresses[2].Port != 8080 {
		t.Errorf("addresses %+v", c.Addresses)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"round_robin", c.RoundRobin}, {"version", c.Version == packet.V5},
		{"ids", c.RemoteID == "rid" && c.LocalID == "lid"},
		{"credentials", c.RemoteUser == "u" && c.RemotePass == "p" && c.HasRemoteUser && c.HasRemotePass && c.LocalUser == "lu" && c.LocalPass == "lp"},
		{"cleansession", c.CleanSession && c.LocalCleanSession == 0},
		{"keepalive raised to 5 s as Mosquitto", c.KeepAlive == 5*time.Second},
		{"restart backoff", c.RestartTimeout == 0 && c.BackoffBase == 3*time.Second && c.BackoffCap == 20*time.Second},
		{"lazy", c.Start == StartLazy}, {"idle raised to 1 s", c.IdleTimeout == time.Second}, {"threshold raised to 1", c.Threshold == 1},
		{"try_private", !c.TryPrivate}, {"notifications", !c.Notifications && c.NotificationTopic == "n/t" && c.NotificationsLocalOnly},
		{"retain", !c.OutgoingRetain}, {"unsubscribe", !c.AttemptUnsubscribe}, {"max packet", c.MaxPacketSize == 1000},
		{"tls", c.TLS() && c.CAFile == "ca.pem" && c.CAPath == "/etc/ssl/certs" && c.CertFile == "c.pem" && c.KeyFile == "k.pem" && c.Insecure && c.ALPN == "mqtt" && c.TLSVersion == "tlsv1.3"},
		{"bind", c.BindAddress == "127.0.0.1"},
	}
	for _, k := range checks {
		if !k.ok {
			t.Errorf("%s: %+v", k.name, c)
		}
	}
	c2, err := parse(t, "address h", "topic a", "restart_timeout 0")
	if err != nil || c2.RestartTimeout != time.Second || c2.BackoffBase != 0 {
		t.Errorf("restart_timeout 0: %v %+v", err, c2)
	}
}

// TestTopicLines checks Mosquitto's `topic` rules: directions, QoS, `""`
// patterns and prefixes, and the filters each side subscribes to.
func TestTopicLines(t *testing.T) {
	cases := []struct {
		line          string
		local, remote string // derived filters; "" with err
		err           string
	}{
		{line: "a/#", local: "a/#", remote: "a/#"},
		{line: "a/# in", local: "a/#", remote: "a/#"},
		{line: "a/# both 2", local: "a/#", remote: "a/#"},
		{line: "a/# out 1 l/ r/", local: "l/a/#", remote: "r/a/#"},
		{line: `a/# out 1 "" r/`, local: "a/#", remote: "r/a/#"},
		{line: `a/# out 1 l/ ""`, local: "l/a/#", remote: "a/#"},
		{line: `a/# out 1 l/`, local: "l/a/#", remote: "a/#"},
		{line: `"" out 1 local/topic remote/topic`, local: "local/topic", remote: "remote/topic"},
		{line: `"" in 0 local/x remote/y`, local: "local/x", remote: "remote/y"},
		{line: `"" out 1 l/`, err: "remapping"},
		{line: `"" out 1 "" r/`, err: "remapping"},
		{line: `""`, err: "remapping"},
		{line: "a sideways", err: "direction"},
		{line: "a out 3", err: "QoS"},
		{line: "a out x", err: "QoS"},
		{line: "a out 1 l/+/ r/", err: "prefix"},
		{line: "a out 1 l/ r/#", err: "prefix"},
		{line: "# out 1 l/# r/", err: "prefix"},
		{line: "a/# out 1 l r", local: "la/#", remote: "ra/#"},
		{line: "#a out 0", err: "invalid bridge topic"},
		{line: "# out #0 l/ r/", local: "#", remote: "#"}, // a # word after the direction starts a comment
		{line: "a out 0 l/ r/ extra", err: "at most"},
		{line: "a/# out 1 l/ r/ # a comment", local: "l/a/#", remote: "r/a/#"},
	}
	for _, k := range cases {
		t.Run(k.line, func(t *testing.T) {
			c, _ := NewConfig("b", "x")
			err := c.Set("topic", k.line)
			if k.err != "" {
				if err == nil || !strings.Contains(err.Error(), k.err) {
					t.Fatalf("got %v, want an error with %q", err, k.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tp := c.Topics[0]
			if tp.LocalTopic != k.local || tp.RemoteTopic != k.remote {
				t.Errorf("filters %q %q, want %q %q", tp.LocalTopic, tp.RemoteTopic, k.local, k.remote)
			}
		})
	}
}

// TestTopicMapping: the first matching line maps a message, removing one
// side's prefix and adding the other's, as Mosquitto's bridge does.
func TestTopicMapping(t *testing.T) {
	c, err := parse(t, "address h",
		"topic sensors/# out 1 edge/ site1/",
		`topic "" out 2 cmd/local cmd/remote`,
		"topic ctl/# in 1 in/ remote/",
		"topic both/# both 0",
		"topic x/# out 0 \"\" up/",
		"topic x/y out 2 first/ never/")
	if err != nil {
		t.Fatal(err)
	}
	outs := []struct {
		local, remote string
		qos           byte
		ok            bool
	}{
		{"edge/sensors/t1", "site1/sensors/t1", 1, true},
		{"cmd/local", "cmd/remote", 2, true},
		{"both/a", "both/a", 0, true},
		{"x/y", "up/x/y", 0, true}, // the first matching line wins
		{"sensors/t1", "", 0, false},
		{"remote/ctl/a", "", 0, false}, // an in line does not send out
	}
	for _, o := range outs {
		got, q, ok := c.RemoteTopic(o.local)
		if got != o.remote || q != o.qos || ok != o.ok {
			t.Errorf("out %q: %q %d %v, want %q %d %v", o.local, got, q, ok, o.remote, o.qos, o.ok)
		}
	}
	ins := []struct {
		remote, local string
		ok            bool
	}{
		{"remote/ctl/a", "in/ctl/a", true},
		{"both/z", "both/z", true},
		{"site1/sensors/t1", "", false}, // an out line does not bring in
		{"ctl/a", "", false},
	}
	for _, i := range ins {
		got, ok := c.LocalTopic(i.remote)
		if got != i.local || ok != i.ok {
			t.Errorf("in %q: %q %v, want %q %v", i.remote, got, ok, i.local, i.ok)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		lines []string
		want  string
	}{
		{[]string{"topic a"}, "no address"},
		{[]string{"address h"}, "no topic"},
		{[]string{"address h", "address g", "topic a"}, "given twice"},
		{[]string{"address h:0", "topic a"}, "port"},
		{[]string{"address h:70000", "topic a"}, "port"},
		{[]string{"address :1883", "topic a"}, "no host"},
		{[]string{"address mqtt://h", "topic a"}, "ws://"},
		{[]string{"address h", "topic a", "bridge_protocol_version mqttv4"}, "invalid value"},
		{[]string{"address h", "topic a", "start_type manual"}, "manual"},
		{[]string{"address h", "topic a", "start_type sometimes"}, "invalid value"},
		{[]string{"address h", "topic a", "restart_timeout 10 5"}, "cap is lower"},
		{[]string{"address h", "topic a", "keepalive_interval 70000"}, "out of range"},
		{[]string{"address h", "topic a", "cleansession yes"}, "true or false"},
		{[]string{"address h", "topic a", "try_private"}, "needs a value"},
		{[]string{"address h", "topic a", "bridge_tls_version tlsv1.1"}, "insecure"},
		{[]string{"address h", "topic a", "bridge_psk 0102"}, "PSK"},
		{[]string{"address h", "topic a", "bridge_identity me"}, "PSK"},
		{[]string{"address h", "topic a", "bridge_require_ocsp true"}, "OCSP"},
		{[]string{"address h", "topic a", "bridge_certfile c.pem", "bridge_cafile ca"}, "both"},
		{[]string{"address h", "topic a", "bridge_insecure true"}, "need bridge_cafile"},
		{[]string{"address h", "topic a", "notification_topic a/+"}, "invalid topic"},
		{[]string{"address h", "topic a", "remote_password p"}, "remote_username"},
	}
	for _, k := range cases {
		_, err := parse(t, k.lines...)
		if err == nil || !strings.Contains(err.Error(), k.want) {
			t.Errorf("%q: got %v, want %q", k.lines, err, k.want)
		}
	}
	c1, _ := parse(t, "address h", "topic a")
	c2, _ := parse(t, "address h", "topic a")
	c2.Name = "b2"
	if err := CheckAll([]*Config{c1, c2}); err == nil || !strings.Contains(err.Error(), "not unique") {
		t.Errorf("same local id: %v", err)
	}
	if !c1.Equal(c1) || c1.Equal(c2) {
		t.Error("Equal")
	}
}

// TestMosquittoAgrees runs Debian's mosquitto on the same lines: what our
// parser accepts it accepts and what it refuses we refuse.
func TestMosquittoAgrees(t *testing.T) {
	bin := mosquittoBinary(t)
	cases := []struct {
		lines []string
		ok    bool
	}{
		{[]string{"address 127.0.0.1:1", "topic a/# both 2 l/ r/"}, true},
		{[]string{"address 127.0.0.1:1", `topic "" out 1 l/x r/y`}, true},
		{[]string{"address 127.0.0.1:1", `topic "" out 1 l/x`}, false},
		{[]string{"address 127.0.0.1:1", "topic a sideways"}, false},
		{[]string{"address 127.0.0.1:1", "topic a out 3"}, false},
		{[]string{"address 127.0.0.1:1", "topic a out 1 l/+ r/"}, false},
		{[]string{"address 127.0.0.1:1", "topic a", "start_type manual"}, false},
		{[]string{"address 127.0.0.1:1", "topic a", "restart_timeout 10 5"}, false},
		{[]string{"address 127.0.0.1:1", "topic a", "bridge_protocol_version mqttv4"}, false},
		{[]string{"address 127.0.0.1:1", "topic a", "keepalive_interval 70000"}, false},
		{[]string{"address 127.0.0.1:0", "topic a"}, false},
		{[]string{"address 127.0.0.1:1", "topic a", "cleansession true", "try_private false", "notifications false",
			"bridge_outgoing_retain false", "restart_timeout 2 10", "start_type lazy", "threshold 5", "idle_timeout 9",
			"round_robin true", "bridge_protocol_version mqttv50", "keepalive_interval 30"}, true},
	}
	for _, k := range cases {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(addr)
		conf := "listener " + port + " 127.0.0.1\nallow_anonymous true\nconnection b1\n" + strings.Join(k.lines, "\n") + "\n"
		f := filepath.Join(t.TempDir(), "m.conf")
		if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		theirs, out := mosquittoAccepts(t, bin, f, addr)
		_, ours := parse(t, k.lines...)
		if theirs != k.ok || (ours == nil) != k.ok {
			t.Errorf("%q: mosquitto ok=%v (%s), mqttd err=%v, want ok=%v", k.lines, theirs, out, ours, k.ok)
		}
	}
}

// mosquittoAccepts starts mosquitto on conf: it accepted the file once it
// listens on addr, refused it when it exits first.
func mosquittoAccepts(t *testing.T, bin, conf, addr string) (bool, string) {
	t.Helper()
	var out strings.Builder
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false, strings.TrimSpace(out.String())
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			_ = cmd.Process.Kill()
			<-exited
			return true, ""
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	t.Fatalf("mosquitto neither listened nor exited: %s", out.String())
	return false, ""
}

// mosquittoBinary returns Debian's mosquitto, skipping the test when it is
// missing outside CI.
func mosquittoBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("MOSQUITTO")
	if bin == "" {
		bin = "/usr/sbin/mosquitto"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto is required in CI: %v", err)
		}
		t.Skipf("no mosquitto binary: %v", err)
	}
	return bin
}
