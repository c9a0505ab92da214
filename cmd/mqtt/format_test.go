package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/internal/strftime"
	"github.com/mqttd/mqttd/packet"
)

// fixedNow is the clock of the format tests: 2026-11-22 04:22:24.611790639 UTC.
var fixedNow = time.Date(2026, 11, 22, 4, 22, 24, 611790639, time.UTC)

func render(t *testing.T, c *config, m *client.Message) (string, string) {
	t.Helper()
	var errBuf bytes.Buffer
	p, err := newPrinter(c, &errBuf)
	if err != nil {
		t.Fatalf("newPrinter: %v", err)
	}
	p.now = func() time.Time { return fixedNow }
	var out bytes.Buffer
	p.print(&out, m)
	return out.String(), errBuf.String()
}

// TestPrintPlainAndVerbose checks the default, -v and -N outputs against
// mosquitto_sub 2.0.11: an empty payload prints nothing, or "topic (null)"
// with -v (and nothing at all with -v -N).
func TestPrintPlainAndVerbose(t *testing.T) {
	msg := &client.Message{Topic: "a/b", Payload: []byte("hello")}
	empty := &client.Message{Topic: "a/n"}
	tests := []struct {
		name    string
		verbose bool
		eol     bool
		m       *client.Message
		want    string
	}{
		{"plain", false, true, msg, "hello\n"},
		{"verbose", true, true, msg, "a/b hello\n"},
		{"verbose -N", true, false, msg, "a/b hello"},
		{"plain -N", false, false, msg, "hello"},
		{"plain empty", false, true, empty, ""},
		{"verbose empty", true, true, empty, "a/n (null)\n"},
		{"verbose empty -N", true, false, empty, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultConfig("sub")
			c.verbose, c.eol = tt.verbose, tt.eol
			if got, _ := render(t, c, tt.m); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestFormat is a table of -F formats with the output mosquitto_sub 2.0.11
// printed for the same message (recorded with -N).
func TestFormat(t *testing.T) {
	ab := &client.Message{Topic: "f/1", Payload: []byte("ab")}
	ctl := &client.Message{Topic: "f/1", Payload: []byte("a\x01b\tc\"\\")}
	q1 := &client.Message{Topic: "g/1", Payload: []byte(`he"l\lo`), QoS: 1, PacketID: 1}
	v5 := &client.Message{Topic: "g/1", Payload: []byte("hello"), QoS: 1, PacketID: 1, Props: &packet.Properties{
		SubscriptionIDs: []uint32{7}, ContentType: "text/x", User: []packet.UserProperty{{Key: "k1", Value: "v1"}, {Key: "k2", Value: "v2"}},
		ResponseTopic: "resp", CorrelationData: []byte("cd"), PayloadFormat: packet.Ptr[byte](1), MessageExpiry: packet.Ptr[uint32](100),
	}}
	tests := []struct {
		format string
		m      *client.Message
		want   string
	}{
		{"%6x", ab, "    61"}, // mosquitto halves the bytes printed in hex under a width
		{"%6x", ctl, "610162"},
		{"%-6X|", ab, "61    |"},
		{"%08x", ab, "00000061"},
		{"%08x", ctl, "00610162"},
		{"%3p|", ab, " ab|"},
		{"%3p|", ctl, "a\x01b|"},
		{"%-3p|", ab, "ab |"},
		{"%05p", ab, "000ab"},
		{"%05p", ctl, "a\x01b\tc"},
		{"%10.2t|", ab, "        f/|"},
		{"%-10t|", ab, "f/1       |"},
		{"%05l", ctl, "00007"},
		{"%-5l|", ab, "2    |"},
		{"%5m|", ab, "    0|"},
		{"%q%r", ab, "00"},
		{"%x", ctl, "610162096322" + "5c"},
		{"%X", ctl, "610162096322" + "5C"},
		{`%%@@\\`, ab, `%@\`},
		{"%E|%5E|%-5F|%05A|%C|%3C|%-05E|", ab, "|     |     |00000||   |00000|"},
		{"%%|%t|%p|%q|%r|%l|%m|%x|%X|", q1, `%|g/1|he"l\lo|1|0|7|1|6865226c5c6c6f|6865226C5C6C6F|`},
		{`%U|%I|@Y-@m-@dT@H:@M:@S@z|@N|\t|\e|\0|\a|\v|\r|\n|%A|%C|%D|%E|%F|%P|%R|%S|`, q1,
			"1795321344.611790639|2026-11-22T04:22:24+0000|2026-11-22T04:22:24+0000|611790639|\t|\x1b|\x00|\a|\v|\r|\n|||||||||"},
		{"%j", q1, `{"tst":"2026-11-22T04:22:24.611790Z+0000","topic":"g/1","qos":1,"retain":0,"payloadlen":7,"mid":1,"payload":"he\"l\\lo"}`},
		{"%j", &client.Message{Topic: "f/1", Payload: []byte("a\x01b")},
			`{"tst":"2026-11-22T04:22:24.611790Z+0000","topic":"f/1","qos":0,"retain":0,"payloadlen":3,"payload":"a\u0001b"}`},
		{"%j", &client.Message{Topic: "f/1"},
			`{"tst":"2026-11-22T04:22:24.611790Z+0000","topic":"f/1","qos":0,"retain":0,"payloadlen":0,"payload":null}`},
		{"%j", &client.Message{Topic: "f/1", Payload: []byte("é")},
			`{"tst":"2026-11-22T04:22:24.611790Z+0000","topic":"f/1","qos":0,"retain":0,"payloadlen":2,"payload":"é"}`},
		{"%A|%C|%D|%E|%F|%P|%R|%S|%j|%5E|%05F|%-4A|", v5,
			`|text/x|cd|100|1|k1:v1 k2:v2|resp|7|{"tst":"2026-11-22T04:22:24.611790Z+0000","topic":"g/1","qos":1,"retain":0,"payloadlen":5,"mid":1,"properties":{"subscription-identifier":7,"content-type":"text/x","user-properties":{"k1":"v1","k2":"v2"},"response-topic":"resp","correlation-data":"cd","payload-format-indicator":1,"message-expiry-interval":100},"payload":"hello"}|  100|00001|    |`},
		{"%J", &client.Message{Topic: "g/1", Payload: []byte(`{"a": [1, 2]}`), QoS: 2, PacketID: 1},
			`{"tst":"2026-11-22T04:22:24.611790Z+0000","topic":"g/1","qos":2,"retain":0,"payloadlen":13,"mid":1,"payload":{"a":[1,2]}}`},
		{"[%J]", &client.Message{Topic: "g/1", Payload: []byte("not json")}, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			c := defaultConfig("sub")
			c.format, c.formatSet, c.eol = tt.format, true, false
			got, _ := render(t, c, tt.m)
			if got != tt.want {
				t.Errorf("\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestFormatInvalidJSONWarns(t *testing.T) {
	c := defaultConfig("sub")
	c.format, c.formatSet = "%J", true
	out, errOut := render(t, c, &client.Message{Topic: "g/1", Payload: []byte("{")})
	if out != "\n" {
		t.Errorf("stdout %q, want only the newline", out)
	}
	if want := "Error: Message payload is not valid JSON on topic g/1.\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
}

func TestCompileFormatErrors(t *testing.T) {
	tests := map[string]string{
		"a%":   "Error: Incomplete format specifier.",
		"a@":   "Error: Incomplete format specifier.",
		`a\`:   "Error: Incomplete escape specifier.",
		"%-":   "Error: Incomplete format specifier.",
		"%5.":  "Error: Incomplete format specifier.",
		"[%]":  "Error: Invalid format specifier ']'.",
		`[\]`:  "Error: Invalid escape specifier ']'.",
		"%z":   "Error: Invalid format specifier 'z'.",
		`\q`:   "Error: Invalid escape specifier 'q'.",
		"%05z": "Error: Invalid format specifier 'z'.",
	}
	for f, want := range tests {
		_, err := compileFormat(f)
		if err == nil || err.Error() != want {
			t.Errorf("compileFormat(%q) = %v, want %q", f, err, want)
		}
	}
}

func TestStrftime(t *testing.T) {
	tm := time.Date(2026, 3, 7, 15, 4, 5, 0, time.FixedZone("X", 3600))
	var b strings.Builder
	for _, c := range "YmdHMSzyjaAbBpIeFTs" {
		b.WriteString(strftime.Conv(byte(c), tm))
		b.WriteByte(' ')
	}
	want := "2026 03 07 15 04 05 +0100 26 066 Sat Saturday Mar March PM 03  7 2026-03-07 15:04:05 1772892245 "
	if got := b.String(); got != want {
		t.Errorf("\n got %q\nwant %q", got, want)
	}
	if got := strftime.Conv('q', tm); got != "%q" {
		t.Errorf("unknown conversion = %q, want %%q as glibc", got)
	}
}
