package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name  string
		cmd   string
		args  []string
		check func(t *testing.T, c *config)
	}{
		{"sub repeated topics and short flags", "sub", []string{"-h", "broker", "-p", "1884", "-t", "a/b", "-t", "c/#", "-q", "2", "-v", "-C", "3", "-W", "9"},
			func(t *testing.T, c *config) {
				if c.host != "broker" || c.port != 1884 || len(c.topics) != 2 || c.topics[1] != "c/#" || c.qos != 2 ||
					!c.verbose || c.count != 3 || c.timeout != 9 {
					t.Errorf("got %+v", c)
				}
				if got := c.serverURL(); got != "mqtt://broker:1884" {
					t.Errorf("serverURL = %q", got)
				}
			}},
		{"long flags", "pub", []string{"--host", "h", "--port", "1", "--topic", "t", "--message", "m", "--qos", "1", "--retain",
			"--will-topic", "w", "--will-payload", "bye", "--will-qos", "2", "--will-retain", "--id", "me", "--username", "u", "--pw", "p"},
			func(t *testing.T, c *config) {
				if c.host != "h" || c.topics[0] != "t" || string(c.message) != "m" || c.qos != 1 || !c.retain ||
					c.willTopic != "w" || string(c.willPayload) != "bye" || c.willQoS != 2 || !c.willRetain ||
					c.clientID != "me" || c.username != "u" || c.password != "p" {
					t.Errorf("got %+v", c)
				}
			}},
		{"-L URL with credentials and topic", "sub", []string{"-L", "mqtts://al:pw@example.com:9000/x/y"},
			func(t *testing.T, c *config) {
				if c.username != "al" || c.password != "pw" || c.topics[0] != "x/y" || !c.useTLS() {
					t.Errorf("got %+v", c)
				}
				if got := c.serverURL(); got != "mqtts://example.com:9000" {
					t.Errorf("serverURL = %q", got)
				}
			}},
		{"-L ws default port and path", "pub", []string{"-L", "ws://h/t", "-n"},
			func(t *testing.T, c *config) {
				if got := c.serverURL(); got != "ws://h:80/mqtt" {
					t.Errorf("serverURL = %q", got)
				}
			}},
		{"TLS flags switch to 8883", "pub", []string{"-t", "t", "-m", "x", "--cafile", "ca.pem", "--insecure", "--tls-version", "tlsv1.3"},
			func(t *testing.T, c *config) {
				if got := c.serverURL(); got != "mqtts://localhost:8883" {
					t.Errorf("serverURL = %q", got)
				}
			}},
		{"-V mqttv5 and -x never", "sub", []string{"-t", "a", "-V", "mqttv5", "-x", "-1", "-c", "-i", "id"},
			func(t *testing.T, c *config) {
				if c.version != packet.V5 || c.sessionExpiry == nil || *c.sessionExpiry != 0xFFFFFFFF || c.clean {
					t.Errorf("got %+v", c)
				}
			}},
		{"-D implies v5 and fills properties", "pub", []string{"-t", "a", "-m", "x", "-D", "publish", "user-property", "k", "v",
			"-D", "PUBLISH", "message-expiry-interval", "30", "-D", "connect", "receive-maximum", "10"},
			func(t *testing.T, c *config) {
				if c.version != packet.V5 || len(c.publishProps.User) != 1 || c.publishProps.User[0] != (packet.UserProperty{Key: "k", Value: "v"}) ||
					*c.publishProps.MessageExpiry != 30 || *c.connectProps.ReceiveMaximum != 10 {
					t.Errorf("got %+v", c)
				}
			}},
		{"rr defaults to v5", "rr", []string{"-t", "req", "-e", "resp", "-m", "q"},
			func(t *testing.T, c *config) {
				if c.version != packet.V5 || c.respTopic != "resp" {
					t.Errorf("got %+v", c)
				}
			}},
		{"bench scenario and options", "bench", []string{"fanout", "--clients", "7", "--duration", "1.5", "--qos", "2", "--size", "100", "--window", "8", "--rate", "500", "--json", "-V", "5"},
			func(t *testing.T, c *config) {
				if c.scenario != "fanout" || c.clients != 7 || c.duration != 1500*time.Millisecond || c.qos != 2 || c.size != 100 ||
					c.window != 8 || c.rate != 500 || !c.jsonOut || c.version != packet.V5 {
					t.Errorf("got %+v", c)
				}
			}},
		{"-N and -F", "sub", []string{"-t", "a", "-N", "-F", "%t %p"},
			func(t *testing.T, c *config) {
				if c.eol || c.format != "%t %p" {
					t.Errorf("got %+v", c)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseArgs(tt.cmd, tt.args)
			if err != nil {
				t.Fatalf("parseArgs: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// TestParseArgsErrors checks the messages against mosquitto_pub/sub 2.0's.
func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		cmd  string
		args []string
		want string
	}{
		{"sub", []string{"-p", "1", "-Z"}, "Error: Unknown option '-Z'."},
		{"sub", []string{"-t"}, "Error: -t argument given but no value specified."},
		{"sub", []string{"-p", "1"}, "Error: You must specify a topic to subscribe to."},
		{"sub", []string{"-q", "3", "-t", "a"}, "Error: Invalid QoS given: 3"},
		{"sub", []string{"-t", "a", "-V", "7"}, "Error: Invalid protocol version argument given."},
		{"sub", []string{"-t", "a/#/b"}, "Error: Invalid subscription topic 'a/#/b', are all '+' and '#' wildcards correct?"},
		{"sub", []string{"-t", "a", "-F", "%z"}, "Error: Invalid format specifier 'z'."},
		{"sub", []string{"-t", "a", "-F", "a%"}, "Error: Incomplete format specifier."},
		{"sub", []string{"-t", "a", "-F", `\q`}, "Error: Invalid escape specifier 'q'."},
		{"sub", []string{"-t", "a", "-c"}, "Error: You must provide a client id if you are using the -c option."},
		{"sub", []string{"-t", "a", "-e", "r"}, "Error: Unknown option '-e'."},
		{"pub", []string{"-t", "a"}, "Error: Both topic and message must be supplied."},
		{"pub", []string{"-m", "a"}, "Error: Both topic and message must be supplied."},
		{"pub", []string{"-t", "a", "-m", "x", "-n"}, "Error: Only one type of message can be sent at once."},
		{"pub", []string{"-t", "a/+", "-m", "x"}, "Error: Invalid publish topic 'a/+', does it contain '+' or '#'?"},
		{"pub", []string{"-t", "a", "-m", "x", "-p", "x"}, "Error: Invalid port given: x"},
		{"pub", []string{"-t", "a", "-m", "x", "--will-qos", "1"}, "Error: Will payload, QoS or retain given, but no will topic given."},
		{"pub", []string{"-t", "a", "-m", "x", "-D", "publish", "bogus", "1"}, "Error: Invalid property name bogus given in -D argument."},
		{"pub", []string{"-t", "a", "-m", "x", "-V", "311", "-D", "publish", "content-type", "x"}, "Error: -D given but MQTT v5 is not in use."},
		{"rr", []string{"-t", "a", "-m", "x"}, "Error: All of topic, message, and response topic must be supplied."},
		{"bench", []string{"nope"}, `Error: Unknown bench scenario "nope" (fanin, fanout, pairs, shared, conns or latency).`},
		{"bench", []string{"pairs", "--size", "8"}, `Error: Invalid --size "8" (an integer from 16 to 268435456).`},
	}
	for _, tt := range tests {
		t.Run(tt.cmd+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseArgs(tt.cmd, tt.args)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want usage error %q", err, tt.want)
			}
			if ue.msg != tt.want {
				t.Errorf("message\n got %q\nwant %q", ue.msg, tt.want)
			}
		})
	}
}

func TestTopicMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true}, // [MQTT-4.7.1-2] '#' matches the parent level
		{"a/#", "a/b/c", true},
		{"#", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/b", "a", false},
	}
	for _, tt := range tests {
		if got := topicMatch(tt.filter, tt.topic); got != tt.want {
			t.Errorf("topicMatch(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}
