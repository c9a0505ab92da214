package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// mqttBin is the mqtt binary built once by TestMain.
var mqttBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mqtt-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mqttBin = filepath.Join(dir, "mqtt")
	build := exec.Command("go", "build", "-o", mqttBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building mqtt:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the mqtt binary to completion (at most 20 s).
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mqttBin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("mqtt %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("mqtt %v: still running after 20s; stdout %q stderr %q", args, r.stdout, r.stderr)
	}
	return r
}

func portOf(t *testing.T, srv *brokertest.Server) string {
	t.Helper()
	_, port, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// startSub starts "mqtt sub -d ..." and returns once the broker has
// acknowledged the subscription; wait() returns the non-debug output.
func startSub(t *testing.T, args ...string) (wait func() result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	cmd := exec.CommandContext(ctx, mqttBin, append([]string{"sub", "-d"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(stdout)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			cancel()
			cmd.Wait()
			t.Fatalf("mqtt sub ended before subscribing: %v; stderr %q", err, errOut.String())
		}
		if strings.HasPrefix(line, "Subscribed (mid: ") {
			break
		}
	}
	return func() result {
		t.Helper()
		defer cancel()
		rest, _ := io.ReadAll(br)
		err := cmd.Wait()
		var r result
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("mqtt sub: %v", err)
		}
		var lines []string
		for _, l := range strings.SplitAfter(string(rest), "\n") {
			if !strings.HasPrefix(l, "Client ") && l != "" {
				lines = append(lines, l)
			}
		}
		r.stdout, r.stderr = strings.Join(lines, ""), errOut.String()
		return r
	}
}

func TestCLIPubSubVerbose(t *testing.T) {
	srv := brokertest.Start(t)
	port := portOf(t, srv)
	wait := startSub(t, "-p", port, "-t", "v/#", "-v", "-q", "1", "-C", "3")
	for _, args := range [][]string{
		{"-t", "v/a", "-m", "hello world", "-q", "1"},
		{"-t", "v/b", "-n", "-q", "2"},
		{"-t", "v/c", "-m", "x"},
	} {
		if r := runCLI(t, "", append([]string{"pub", "-p", port}, args...)...); r.code != 0 {
			t.Fatalf("pub %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	r := wait()
	want := "v/a hello world\nv/b (null)\nv/c x\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("sub: exit %d, stdout %q, want %q (stderr %q)", r.code, r.stdout, want, r.stderr)
	}
}

func TestCLIFormatAndNoEOL(t *testing.T) {
	srv := brokertest.Start(t)
	port := portOf(t, srv)
	runCLI(t, "", "pub", "-p", port, "-t", "f/1", "-m", "AB", "-q", "2", "-r")
	runCLI(t, "", "pub", "-p", port, "-t", "f/2", "-m", "c", "-q", "1", "-r")
	r := runCLI(t, "", "sub", "-p", port, "-t", "f/+", "-q", "2", "-C", "2", "-F", `%t|%p|%l|%x|%r\t`, "-N")
	got := strings.SplitAfter(r.stdout, "\t")
	slices.Sort(got) // retained messages of different topics come in any order
	want := []string{"", "f/1|AB|2|4142|1\t", "f/2|c|1|63|1\t"}
	if r.code != 0 || !slices.Equal(got, want) {
		t.Errorf("exit %d, stdout %q, want %q", r.code, r.stdout, want)
	}
}

func TestCLIJSONFormat(t *testing.T) {
	srv := brokertest.Start(t)
	port := portOf(t, srv)
	wait := startSub(t, "-p", port, "-t", "j", "-C", "1", "-F", "%j", "-V", "mqttv5")
	runCLI(t, "", "pub", "-p", port, "-t", "j", "-m", `say "hi"`, "-D", "publish", "user-property", "k", "v")
	r := wait()
	var got struct {
		Tst        string
		Topic      string
		QoS        int
		Retain     int
		PayloadLen int
		Payload    string
		Properties struct {
			UserProperties map[string]string `json:"user-properties"`
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	if got.Topic != "j" || got.Payload != `say "hi"` || got.PayloadLen != 8 || got.Properties.UserProperties["k"] != "v" || got.Tst == "" {
		t.Errorf("got %+v from %q", got, r.stdout)
	}
}

// TestCLIRetained: -r stores the message [MQTT-3.3.1-5]; a later sub gets
// it with the retain flag, -R hides it, and an empty retained message
// removes it [MQTT-3.3.1-10].
func TestCLIRetained(t *testing.T) {
	srv := brokertest.Start(t)
	port := portOf(t, srv)
	if r := runCLI(t, "", "pub", "-p", port, "-t", "r/1", "-m", "kept", "-r", "-q", "1"); r.code != 0 {
		t.Fatalf("pub: exit %d %q", r.code, r.stderr)
	}
	r := runCLI(t, "", "sub", "-p", port, "-t", "r/#", "-C", "1", "-F", "%t %p %r")
	if r.code != 0 || r.stdout != "r/1 kept 1\n" {
		t.Errorf("sub: exit %d, stdout %q", r.code, r.stdout)
	}
	r = runCLI(t, "", "sub", "-p", port, "-t", "r/#", "-R", "-W", "1")
	if r.code != exitTimeout || r.stdout != "" {
		t.Errorf("sub -R: exit %d, stdout %q; want 27 and nothing printed", r.code, r.stdout)
	}
	runCLI(t, "", "pub", "-p", port, "-t", "r/1", "-n", "-r")
	r = runCLI(t, "", "sub", "-p", port, "-t", "r/#", "-W", "1")
	if r.code != exitTimeout || r.stdout != "" || r.stderr != "Timed out\n" {
		t.Errorf("after clearing: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestCLIPubLines(t *testing.T) {
	srv := brokertest.Start(t)
	port := portOf(t, srv)
	wait := startSub(t, "-p", port, "-t", "l", "-C", "3", "-q", "1")
	if r := runCLI(t, "one\ntwo\r\nthree", "pub", "-p", port, "-t", "l", "-l", "-q", "1"); r.code != 0 {
		t.Fatalf("pub -l: exit %d %q", r.code, r.stderr)
	}
	if r := wait(); r.stdout != "one\ntwo\nthree\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestCLIRequestResponse(t *testing.T) {
	srv := brokertest.Start(t)
	port := portOf(t, srv)
	ctx := context.Background()
	responder, err := client.Dial(ctx, srv.URL(), client.Options{Version: packet.V5})
	if err != nil {
		t.Fatal(err)
	}
	defer responder.Close()
	_, err = responder.Subscribe(ctx, []packet.Subscription{{Filter: "svc/req"}}, func(m *client.Message) {
		if m.Props == nil || m.Props.ResponseTopic == "" {
			return
		}
		_ = responder.PublishAsync(ctx, m.Props.ResponseTopic, append([]byte("re: "), m.Payload...), client.PublishOptions{}, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "", "rr", "-p", port, "-t", "svc/req", "-e", "svc/resp", "-m", "ping", "-v", "-W", "5")
	if r.code != 0 || r.stdout != "svc/resp re: ping\n" {
		t.Errorf("rr: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "", "rr", "-p", port, "-t", "nobody/home", "-e", "svc/resp2", "-m", "ping", "-W", "1")
	if r.code != exitTimeout {
		t.Errorf("rr without responder: exit %d, want 27", r.code)
	}
}

// TestCLIErrors: bad flags and unreachable brokers give one line on stderr
// and a non-zero exit status.
func TestCLIErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	tests := []struct {
		name   string
		args   []string
		code   int
		prefix string
	}{
		{"unknown option", []string{"sub", "-t", "a", "--bogus"}, 1, "Error: Unknown option '--bogus'."},
		{"bad qos", []string{"pub", "-t", "a", "-m", "x", "-q", "3"}, 1, "Error: Invalid QoS given: 3"},
		{"missing message", []string{"pub", "-t", "a"}, 1, "Error: Both topic and message must be supplied."},
		{"unknown command", []string{"publish"}, 1, "Error: Unknown command 'publish'"},
		{"sub unreachable", []string{"sub", "-p", closedPort, "-h", "127.0.0.1", "-t", "a"}, 1, "Error: "},
		{"pub unreachable", []string{"pub", "-p", closedPort, "-h", "127.0.0.1", "-t", "a", "-m", "x"}, 1, "Error: "},
		{"bench unreachable", []string{"bench", "pairs", "-p", closedPort, "-h", "127.0.0.1", "--duration", "1"}, 1, "Error: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d", r.code, tt.code)
			}
			if !strings.HasPrefix(r.stderr, tt.prefix) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr %q: want one line starting %q", r.stderr, tt.prefix)
			}
		})
	}
}

// TestCLIBench runs short bench scenarios and checks that the counters add
// up: at QoS 1 and 2 every message sent is received once.
func TestCLIBench(t *testing.T) {
	srv := brokertest.Start(t)
	port := portOf(t, srv)
	tests := []struct {
		scenario string
		args     []string
		subs     int
	}{
		{"pairs", []string{"--clients", "2", "--qos", "1"}, 2},
		{"fanout", []string{"--clients", "3", "--qos", "2", "--size", "100"}, 3},
		{"fanin", []string{"--clients", "3", "--qos", "1", "-V", "mqttv5"}, 1},
		{"shared", []string{"--clients", "2", "--publishers", "2", "--qos", "1", "-V", "5"}, 2},
		{"latency", []string{"--qos", "1", "--rate", "200"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			// A bounded offered rate: brokers (Mosquitto as well) drop QoS 1
			// messages for subscribers whose queues overflow.
			args := append([]string{"bench", tt.scenario, "-h", "127.0.0.1", "-p", port, "--duration", "1", "--json", "--rate", "2000"}, tt.args...)
			r := runCLI(t, "", args...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			var res benchResult
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
				t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
			}
			if res.Sent == 0 || res.PublishErrors != 0 || res.Lost != 0 || res.Duplicates != 0 || res.Foreign != 0 {
				t.Errorf("counters: %+v", res)
			}
			perMsg := uint64(1)
			if tt.scenario == "fanout" {
				perMsg = uint64(tt.subs)
			}
			if res.Expected != res.Sent*perMsg || res.Received != res.Expected || res.Unique != res.Received {
				t.Errorf("sent %d, expected %d, received %d, unique %d", res.Sent, res.Expected, res.Received, res.Unique)
			}
			if res.Subscribers != tt.subs || res.Latency == nil || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
				t.Errorf("report: %+v latency %+v", res, res.Latency)
			}
			if tt.scenario == "latency" && (res.Sent < 100 || res.Sent > 300) {
				t.Errorf("latency at 200 msg/s for 1s sent %d", res.Sent)
			}
			if !strings.Contains(r.stderr, tt.scenario) {
				t.Errorf("no progress line on stderr: %q", r.stderr)
			}
		})
	}
}

func TestCLIBenchConns(t *testing.T) {
	srv := brokertest.Start(t)
	r := runCLI(t, "", "bench", "conns", "-L", srv.URL(), "--clients", "50", "--duration", "0.2", "--pid", fmt.Sprint(os.Getpid()), "--json")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var res benchResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatal(err)
	}
	if res.Connections != 50 || res.ConnectErrors != 0 || res.ConnectRate <= 0 || res.RSSBeforeKB <= 0 || res.RSSAfterKB <= 0 {
		t.Errorf("got %+v", res)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "broker RSS ") }) {
		t.Errorf("summary lacks the memory line: %q", r.stdout)
	}
}

// TestCLIBenchClosedLoop: against a broker whose queues are small, the
// default run pauses publishers while messages are outstanding and loses
// nothing; --open-loop overruns the same queues, and the loss is reported
// with exit status 3.
func TestCLIBenchClosedLoop(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxQueuedMessages = 50; o.MaxInflight = 5 })
	port := portOf(t, srv)
	run := func(extra ...string) (benchResult, int) {
		args := append([]string{"bench", "fanin", "-h", "127.0.0.1", "-p", port, "--duration", "1", "--json",
			"--clients", "4", "--qos", "1", "--drain", "2"}, extra...)
		r := runCLI(t, "", args...)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		var res benchResult
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
			t.Fatalf("last line %q: %v (stderr %q)", lines[len(lines)-1], err, r.stderr)
		}
		return res, r.code
	}
	res, code := run("--max-outstanding", "40")
	if code != 0 || res.Lost != 0 || res.Sent < 100 || res.OpenLoop || res.Outstanding != 40 {
		t.Errorf("closed loop: exit %d, %+v", code, res)
	}
	res, code = run("--open-loop")
	if code != 3 || res.Lost <= 0 || !res.OpenLoop {
		t.Errorf("open loop against a queue of 50: exit %d, lost %d (want exit 3 and a loss)", code, res.Lost)
	}
}
