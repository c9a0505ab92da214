package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/mqttd/mqttd/internal/brokertest"
)

// Issue 15 bug 5: -L takes the topic as mosquitto_sub does, verbatim after
// the first "/" behind the host: the fragment and query are part of it and
// %23 is not decoded.
func TestURLTopicAsMosquitto(t *testing.T) {
	tests := []struct {
		cmd, url          string
		topic, user, pass string
		server            string
	}{
		{"sub", "mqtt://host/w/#", "w/#", "", "", "mqtt://host:1883"},
		{"sub", "mqtt://host:1884/a/+/c", "a/+/c", "", "", "mqtt://host:1884"},
		{"pub", "mqtt://host/w/%23", "w/%23", "", "", "mqtt://host:1883"},
		{"pub", "mqtt://host/q?x=1", "q?x=1", "", "", "mqtt://host:1883"},
		{"sub", "mqtts://al:p%40ss@example.com:9000/x/y", "x/y", "al", "p%40ss", "mqtts://example.com:9000"},
		{"sub", "mqtt://u@h/t/#", "t/#", "u", "", "mqtt://h:1883"},
		{"sub", "mqtt://[::1]:1884/v6", "v6", "", "", "mqtt://[::1]:1884"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd+" "+tt.url, func(t *testing.T) {
			args := []string{"-L", tt.url}
			if tt.cmd == "pub" {
				args = append(args, "-n")
			}
			c, err := parseArgs(tt.cmd, args)
			if err != nil {
				t.Fatalf("parseArgs: %v", err)
			}
			if len(c.topics) != 1 || c.topics[0] != tt.topic {
				t.Errorf("topics %q, want %q", c.topics, tt.topic)
			}
			if c.username != tt.user || c.password != tt.pass || c.serverURL() != tt.server {
				t.Errorf("user %q pass %q server %q", c.username, c.password, c.serverURL())
			}
		})
	}
	for _, bad := range []struct{ url, want string }{
		{"mqtt://host", "Error: Invalid URL for -L argument specified - topic missing."},
		{"http://host/t", `Error: Unsupported URL scheme in -L argument: "http" (mqtt, mqtts, ws or wss).`},
		{"mqtt:///t", "Error: Invalid URL for -L argument specified - no host given."},
	} {
		_, err := parseArgs("sub", []string{"-L", bad.url})
		if err == nil || err.Error() != bad.want {
			t.Errorf("-L %s: %v, want %q", bad.url, err, bad.want)
		}
	}
}

// Issue 15 bug 6: mqtt rr --help states one default protocol version.
func TestRRHelpDefaultVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"rr", "--help"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	h := out.String()
	if strings.Contains(h, "mqttv311 (default)") || !strings.Contains(h, "mqttv5 (default)") {
		t.Fatalf("rr help contradicts its v5 default:\n%s", h)
	}
	out.Reset()
	run(context.Background(), []string{"sub", "--help"}, strings.NewReader(""), &out, &errOut)
	if !strings.Contains(out.String(), "mqttv311 (default)") {
		t.Fatalf("sub help lost its default:\n%s", out.String())
	}
}

// -d prints the packets the client really sends and receives (the
// library's trace), as mosquitto_pub -d does.
func TestDebugPrintsPackets(t *testing.T) {
	srv := brokertest.Start(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"pub", "-d", "-L", srv.URL() + "/dbg/t", "-m", "hello", "-q", "2", "-i", "dbgclient"},
		strings.NewReader(""), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := []string{
		"Client dbgclient sending CONNECT",
		"Client dbgclient received CONNACK (0)",
		"Client dbgclient sending PUBLISH (d0, q2, r0, m1, 'dbg/t', ... (5 bytes))",
		"Client dbgclient received PUBREC (Mid: 1)",
		"Client dbgclient sending PUBREL (m1)",
		"Client dbgclient received PUBCOMP (Mid: 1, RC:0)",
		"Client dbgclient sending DISCONNECT",
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("-d output:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
	}
}
