package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/admin"
	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// env is a broker on a real socket with its admin server on another.
type env struct {
	b     *broker.Server
	a     *admin.Server
	mqtt  string // broker address
	base  string // http://host:port/api/v1
	http  *http.Client
	user  string
	pass  string
	token string
}

func start(t *testing.T, cfg admin.Config) *env {
	t.Helper()
	b := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	a, err := admin.New(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Serve(ml) }()
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Serve(al); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("admin shutdown: %v", err)
		}
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
		<-done
	})
	return &env{b: b, a: a, mqtt: ml.Addr().String(), base: "http://" + al.Addr().String() + "/api/v1",
		http: &http.Client{Timeout: 10 * time.Second}}
}

func (e *env) do(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	} else if e.user != "" {
		req.SetBasicAuth(e.user, e.pass)
	}
	res, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d, not a JSON object: %q", method, path, res.StatusCode, raw)
	}
	return res.StatusCode, out
}

func connect(t *testing.T, addr, id string, v packet.Version) *brokertest.Conn {
	t.Helper()
	c := brokertest.Dial(t, addr, v)
	c.Connect(&packet.Connect{ClientID: id, CleanStart: true, KeepAlive: 60})
	return c
}

func items(t *testing.T, m map[string]any) []map[string]any {
	t.Helper()
	raw, ok := m["items"].([]any)
	if !ok {
		t.Fatalf("no items in %v", m)
	}
	out := make([]map[string]any, len(raw))
	for i, r := range raw {
		out[i] = r.(map[string]any)
	}
	return out
}

func TestClientsPagingAndDetail(t *testing.T) {
	e := start(t, admin.Config{})
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("pg-%02d", (i*7)%25)
		want = append(want, id)
		c := connect(t, e.mqtt, id, packet.V5)
		if i == 3 {
			c.Subscribe(1, 1, "room/+/temp", "$share/g/jobs")
		}
	}
	connect(t, e.mqtt, "other", packet.V311)
	slices.Sort(want)
	brokertest.Eventually(t, 5*time.Second, func() bool { return e.b.SessionCount() == 26 })

	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		st, m := e.do(t, "GET", "/clients?id=pg-&limit=10&cursor="+cursor, nil)
		if st != 200 {
			t.Fatalf("status %d %v", st, m)
		}
		for _, it := range items(t, m) {
			got = append(got, it["id"].(string))
			if it["protocol"] != "5.0" || it["connected"] != true || !strings.HasPrefix(it["remote"].(string), "127.0.0.1:") {
				t.Errorf("client %v", it)
			}
		}
		cursor = m["next_cursor"].(string)
		if cursor == "" {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged %v\nwant %v", got, want)
	}
	_, m := e.do(t, "GET", "/clients?offset=24&limit=5", nil)
	if it := items(t, m); len(it) != 2 || it[0]["id"] != "pg-23" || it[1]["id"] != "pg-24" {
		t.Fatalf("offset page %v", it)
	}
	_, m = e.do(t, "GET", "/clients?address=127.0.0.1&id=other", nil)
	if it := items(t, m); len(it) != 1 || it[0]["protocol"] != "3.1.1" {
		t.Fatalf("filtered %v", it)
	}
	if st, m := e.do(t, "GET", "/clients?limit=0", nil); st != 400 || m["error"] == "" {
		t.Fatalf("limit=0: %d %v", st, m)
	}
	if st, _ := e.do(t, "GET", "/clients?cursor=!!", nil); st != 400 {
		t.Fatalf("bad cursor: %d", st)
	}

	// the subscribing client is the 4th connected: id pg-21
	st, m := e.do(t, "GET", "/clients/pg-21", nil)
	if st != 200 {
		t.Fatalf("detail %d %v", st, m)
	}
	subs := m["subscriptions"].([]any)
	if len(subs) != 2 || subs[0].(map[string]any)["filter"] != "$share/g/jobs" || subs[1].(map[string]any)["qos"] != 1.0 {
		t.Fatalf("subscriptions %v", subs)
	}
	if m["connected_since"] == nil {
		t.Fatalf("no connected_since: %v", m)
	}
	if st, m := e.do(t, "GET", "/clients/nobody", nil); st != 404 || m["error"] == nil {
		t.Fatalf("missing client: %d %v", st, m)
	}
	st, m = e.do(t, "GET", "/subscriptions?limit=1", nil)
	if it := items(t, m); st != 200 || len(it) != 1 || m["next_cursor"] == "" {
		t.Fatalf("subscriptions page 1: %d %v", st, m)
	}
	_, m = e.do(t, "GET", "/subscriptions?limit=5&cursor="+m["next_cursor"].(string), nil)
	if it := items(t, m); len(it) != 1 || it[0]["filter"] != "room/+/temp" || m["next_cursor"] != "" {
		t.Fatalf("subscriptions page 2: %v", m)
	}
}

// A client id with a slash is addressed with %2F.
func TestClientIDWithSlash(t *testing.T) {
	e := start(t, admin.Config{})
	connect(t, e.mqtt, "a/b", packet.V311)
	if st, m := e.do(t, "GET", "/clients/a%2Fb", nil); st != 200 || m["client"].(map[string]any)["id"] != "a/b" {
		t.Fatalf("%d %v", st, m)
	}
}

func TestKickSendsAdministrativeAction(t *testing.T) {
	e := start(t, admin.Config{})
	c := connect(t, e.mqtt, "victim", packet.V5)
	st, m := e.do(t, "POST", "/clients/victim/kick", nil)
	if st != 200 || m["disconnected"] != true {
		t.Fatalf("kick: %d %v", st, m)
	}
	var got *packet.Disconnect
	for _, p := range c.ExpectClosed() {
		if d, ok := p.(*packet.Disconnect); ok {
			got = d
		}
	}
	if got == nil || got.ReasonCode != packet.AdministrativeAction {
		t.Fatalf("DISCONNECT %v, want 0x98", got)
	}
	brokertest.Eventually(t, 5*time.Second, func() bool {
		st, _ := e.do(t, "DELETE", "/clients/victim", nil)
		return st == 404
	})
	c2 := connect(t, e.mqtt, "victim2", packet.V311)
	if st, _ := e.do(t, "DELETE", "/clients/victim2", nil); st != 200 {
		t.Fatalf("DELETE: %d", st)
	}
	c2.ExpectClosed()
}

func TestRetainedPublishAndDelete(t *testing.T) {
	e := start(t, admin.Config{})
	sub := connect(t, e.mqtt, "sub", packet.V311)
	sub.Subscribe(1, 1, "r/#")
	for _, tp := range []string{"r/a", "r/b/c", "r/b", "x"} {
		st, m := e.do(t, "POST", "/publish", map[string]any{"topic": tp, "payload": "v-" + tp, "qos": 1, "retain": true})
		if st != 200 {
			t.Fatalf("publish %s: %d %v", tp, st, m)
		}
	}
	for range 3 {
		p := sub.ExpectPublish()
		if !strings.HasPrefix(string(p.Payload), "v-r/") {
			t.Fatalf("got %q", p.Payload)
		}
		sub.Ack(p)
	}
	_, m := e.do(t, "GET", "/retained?prefix=r&limit=2", nil)
	it := items(t, m)
	if len(it) != 2 || it[0]["topic"] != "r/a" || it[1]["topic"] != "r/b" || m["next_cursor"] == "" {
		t.Fatalf("retained page 1 %v", m)
	}
	_, m = e.do(t, "GET", "/retained?prefix=r&limit=2&cursor="+m["next_cursor"].(string), nil)
	if it := items(t, m); len(it) != 1 || it[0]["topic"] != "r/b/c" || m["next_cursor"] != "" {
		t.Fatalf("retained page 2 %v", m)
	}
	_, m = e.do(t, "GET", "/topics?prefix=r", nil)
	it = items(t, m)
	if len(it) != 2 || it[1]["level"] != "b" || it[1]["retained"] != true || it[1]["children"] != 1.0 {
		t.Fatalf("topics %v", m)
	}
	if st, m := e.do(t, "GET", "/retained/r%2Fb%2Fc", nil); st != 200 || m["payload"] != "v-r/b/c" {
		t.Fatalf("retained one %d %v", st, m)
	}
	// [MQTT-3.3.1-10]: the empty retained message clears it, and is
	// delivered to the subscribers as any message.
	if st, m := e.do(t, "DELETE", "/retained/r/b/c", nil); st != 200 || m["deleted"] != true {
		t.Fatalf("delete: %d %v", st, m)
	}
	if p := sub.ExpectPublish(); p.Topic != "r/b/c" || len(p.Payload) != 0 {
		t.Fatalf("got %v %q dup=%v id=%d", p.Topic, p.Payload, p.Dup, p.PacketID)
	}
	if st, _ := e.do(t, "GET", "/retained/r/b/c", nil); st != 404 {
		t.Fatalf("still retained: %d", st)
	}
	if st, _ := e.do(t, "DELETE", "/retained/r/b/c", nil); st != 404 {
		t.Fatalf("second delete: %d", st)
	}
	for _, bad := range []map[string]any{{"topic": "a/#"}, {"topic": "t", "qos": 3}, {"topic": "t", "bogus": 1},
		{"topic": "t", "payload": "%%", "payload_base64": true}} {
		if st, m := e.do(t, "POST", "/publish", bad); st != 400 || m["error"] == nil {
			t.Errorf("publish %v: %d %v", bad, st, m)
		}
	}
	if st, _ := e.do(t, "POST", "/publish", map[string]any{"topic": "$SYS/x"}); st != 403 {
		t.Errorf("$SYS publish: %d", st)
	}
	if st, _ := e.do(t, "GET", "/topics?prefix=a/%2B", nil); st != 400 {
		t.Errorf("wildcard prefix: %d", st)
	}
}

// sseReader reads events of a server-sent-events response.
type sseReader struct{ r *bufio.Reader }

func (s sseReader) next(t *testing.T) (string, map[string]any) {
	t.Helper()
	var name, data string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = line[7:]
		case strings.HasPrefix(line, "data: "):
			data += line[6:]
		case line == "" && data != "":
			var m map[string]any
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatal(err)
			}
			return name, m
		}
	}
}

func (e *env) stream(t *testing.T, path string) (sseReader, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+path, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream %s: %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	stop := func() { cancel(); res.Body.Close() }
	t.Cleanup(stop)
	return sseReader{bufio.NewReader(res.Body)}, stop
}

func TestStreamWatch(t *testing.T) {
	e := start(t, admin.Config{})
	rd, _ := e.stream(t, "/stream/watch?filter=w/%2B")
	if name, m := rd.next(t); name != "messages" || m["filter"] != "w/+" {
		t.Fatalf("first event %s %v", name, m)
	}
	pub := connect(t, e.mqtt, "pub", packet.V311)
	pub.Publish(&packet.Publish{Topic: "w/1", Payload: []byte("one"), QoS: 1, PacketID: 1})
	pub.Publish(&packet.Publish{Topic: "other", Payload: []byte("no"), QoS: 1, PacketID: 2})
	pub.Publish(&packet.Publish{Topic: "w/2", Payload: []byte{0xff, 0}, PacketID: 0})
	var got []map[string]any
	for len(got) < 2 {
		_, m := rd.next(t)
		for _, x := range m["messages"].([]any) {
			got = append(got, x.(map[string]any))
		}
	}
	if got[0]["topic"] != "w/1" || got[0]["payload"] != "one" || got[1]["topic"] != "w/2" || got[1]["payload_base64"] != true {
		t.Fatalf("watched %v", got)
	}
	req, _ := http.NewRequest("GET", e.base+"/stream/watch?filter=a/%23/b", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("bad filter: %d", res.StatusCode)
	}
}

func TestStreamTopicsLive(t *testing.T) {
	e := start(t, admin.Config{})
	rd, stop := e.stream(t, "/stream/topics?prefix=live")
	if name, m := rd.next(t); name != "topics" || m["full"] != true {
		t.Fatalf("first event %s %v", name, m)
	}
	pub := connect(t, e.mqtt, "pub", packet.V311)
	for i := range 5 {
		pub.Publish(&packet.Publish{Topic: fmt.Sprintf("live/s%d/t", i%2), Payload: []byte(fmt.Sprint(i))})
	}
	counts := map[string]float64{}
	for counts["s0"]+counts["s1"] < 5 {
		_, m := rd.next(t)
		for _, x := range m["topics"].([]any) {
			tp := x.(map[string]any)
			counts[tp["level"].(string)] = tp["messages"].(float64)
		}
	}
	if counts["s0"] != 3 || counts["s1"] != 2 {
		t.Fatalf("counts %v", counts)
	}
	_, m := e.do(t, "GET", "/topics?prefix=live/s0", nil)
	it := items(t, m)
	if m["live"] != true || len(it) != 1 || it[0]["last_value"] != "4" || it[0]["messages"] != 3.0 {
		t.Fatalf("topics %v", m)
	}
	stop()
	// The last stream gone, the inline subscription is removed.
	brokertest.Eventually(t, 5*time.Second, func() bool {
		_, m := e.do(t, "GET", "/topics?prefix=live", nil)
		return m["live"] == false
	})
}

func TestSamples(t *testing.T) {
	e := start(t, admin.Config{SampleInterval: 20 * time.Millisecond})
	connect(t, e.mqtt, "s", packet.V311)
	brokertest.Eventually(t, 5*time.Second, func() bool {
		_, m := e.do(t, "GET", "/samples", nil)
		ss := m["samples"].([]any)
		return len(ss) >= 3 && ss[len(ss)-1].(map[string]any)["connected"] == 1.0
	})
	_, m := e.do(t, "GET", "/samples", nil)
	ss := m["samples"].([]any)
	last := ss[len(ss)-2].(map[string]any)["time"].(string)
	_, m = e.do(t, "GET", "/samples?since="+last, nil)
	if n := len(m["samples"].([]any)); n < 1 || n >= len(ss) {
		t.Fatalf("since: %d samples of %d", n, len(ss))
	}
	if st, _ := e.do(t, "GET", "/samples?since=yesterday", nil); st != 400 {
		t.Fatalf("bad since: %d", st)
	}
}

func TestAuthRefusal(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if rc := auth.Passwd([]string{"-c", "-b", pw, "admin", "s3cret"}, nil, io.Discard, io.Discard); rc != 0 {
		t.Fatalf("passwd: %d", rc)
	}
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("tok-123\n"), 0o600)
	delay := 150 * time.Millisecond
	e := start(t, admin.Config{PasswordFile: pw, TokenFile: tok, AuthDelay: delay})

	for _, c := range []struct{ user, pass, token string }{{}, {"admin", "wrong", ""}, {"nobody", "s3cret", ""}, {"", "", "tok-12"}} {
		e.user, e.pass, e.token = c.user, c.pass, c.token
		t0 := time.Now()
		st, m := e.do(t, "GET", "/broker", nil)
		if st != 401 || m["error"] == nil {
			t.Fatalf("%+v: %d %v", c, st, m)
		}
		if d := time.Since(t0); d < delay {
			t.Fatalf("%+v: refused after %v, want >= %v", c, d, delay)
		}
	}
	e.user, e.pass, e.token = "admin", "s3cret", ""
	if st, m := e.do(t, "GET", "/broker", nil); st != 200 || m["version"] == nil {
		t.Fatalf("basic: %d %v", st, m)
	}
	e.user, e.token = "", "tok-123"
	if st, _ := e.do(t, "GET", "/broker", nil); st != 200 {
		t.Fatalf("bearer: %d", st)
	}
	// The dashboard's files hold no data and need no credentials.
	res, err := http.Get(strings.TrimSuffix(e.base, "/api/v1") + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "mqttd dashboard") {
		t.Fatalf("index: %d", res.StatusCode)
	}
	res, err = http.Get(e.base + "/stream/watch?filter=%23")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("stream without credentials: %d", res.StatusCode)
	}
}

func TestNonLoopbackNeedsCredentials(t *testing.T) {
	b := broker.New(broker.Options{SysInterval: -1})
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:8080"} {
		if _, err := admin.New(b, admin.Config{Addr: addr}); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: %v", addr, err)
		}
	}
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("x"), 0o600)
	if _, err := admin.New(b, admin.Config{Addr: "0.0.0.0:0", TokenFile: tok}); err != nil {
		t.Errorf("with a token: %v", err)
	}
	if _, err := admin.New(b, admin.Config{Addr: "127.0.0.1:0", CertFile: "x.pem"}); err == nil {
		t.Error("certfile without keyfile accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := admin.New(b, admin.Config{TokenFile: empty}); err == nil {
		t.Error("empty token accepted")
	}
}

// TestOpenAPIWalk calls every operation of openapi.json against a running
// server and checks the status and the documented keys of the answer, and
// that every registered route is documented.
func TestOpenAPIWalk(t *testing.T) {
	e := start(t, admin.Config{})
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths      map[string]map[string]operation `json:"paths"`
		Components struct {
			Schemas map[string]schema `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	for _, r := range e.a.Routes() {
		key := strings.ReplaceAll(r, "...}", "}")
		if !documented[key] {
			t.Errorf("route %s is not in openapi.json", r)
		}
		delete(documented, key)
	}
	for k := range documented {
		t.Errorf("openapi.json documents %s, which is not a route", k)
	}

	// Fixtures the examples name.
	sub := connect(t, e.mqtt, "walker", packet.V5)
	sub.Subscribe(1, 0, "walk/#")
	if err := e.b.Publish(&broker.Message{Topic: "walk/retained", Payload: []byte("r"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	type call struct {
		method, path string
		op           operation
	}
	var calls []call
	for p, ops := range doc.Paths {
		for m, op := range ops {
			calls = append(calls, call{strings.ToUpper(m), p, op})
		}
	}
	order := map[string]int{"GET": 0, "POST": 1, "DELETE": 2}
	sort.Slice(calls, func(i, j int) bool {
		if order[calls[i].method] != order[calls[j].method] {
			return order[calls[i].method] < order[calls[j].method]
		}
		return calls[i].path < calls[j].path
	})
	for _, c := range calls {
		path := c.path
		var query []string
		for _, p := range c.op.Parameters {
			if p.Example == nil {
				if p.Required {
					t.Errorf("%s %s: required parameter %s has no example", c.method, c.path, p.Name)
				}
				continue
			}
			v := fmt.Sprint(p.Example)
			switch p.In {
			case "path":
				path = strings.ReplaceAll(path, "{"+p.Name+"}", v)
			case "query":
				query = append(query, p.Name+"="+v)
			}
		}
		if len(query) > 0 {
			path += "?" + strings.Join(query, "&")
		}
		kick := strings.Contains(c.path, "{id}") && c.method != "GET"
		if kick && !connectedIn(e, "walker") {
			connect(t, e.mqtt, "walker", packet.V5) // each kick needs the client connected
		}
		var body io.Reader
		if rb := c.op.RequestBody; rb != nil {
			b, _ := json.Marshal(rb.Content["application/json"].Example)
			body = strings.NewReader(string(b))
		}
		req, _ := http.NewRequest(c.method, e.base+path, body)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			cancel()
			t.Fatalf("%s %s: %v", c.method, path, err)
		}
		resp, ok := c.op.Responses[fmt.Sprint(res.StatusCode)]
		if !ok || res.StatusCode >= 300 {
			t.Errorf("%s %s: status %d (documented: %v)", c.method, path, res.StatusCode, keys(c.op.Responses))
		}
		ct := res.Header.Get("Content-Type")
		media, documentedCT := resp.Content[strings.Split(ct, ";")[0]]
		if !documentedCT {
			t.Errorf("%s %s: content type %q not documented", c.method, path, ct)
		}
		if ct == "text/event-stream" {
			line, err := bufio.NewReader(res.Body).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "event: ") {
				t.Errorf("%s %s: stream starts %q, %v", c.method, path, line, err)
			}
		} else {
			var got map[string]any
			if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
				t.Errorf("%s %s: %v", c.method, path, err)
			}
			sc := media.Schema
			if sc.Ref != "" {
				sc = doc.Components.Schemas[strings.TrimPrefix(sc.Ref, "#/components/schemas/")]
			}
			for _, k := range sc.Required {
				if _, ok := got[k]; !ok {
					t.Errorf("%s %s: answer has no %q: %v", c.method, path, k, got)
				}
			}
		}
		cancel()
		res.Body.Close()
		if kick {
			brokertest.Eventually(t, 5*time.Second, func() bool { return !connectedIn(e, "walker") })
		}
	}
}

func connectedIn(e *env, id string) bool {
	d, ok := e.b.ClientDetail(id)
	return ok && d.Connected
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type schema struct {
	Ref      string   `json:"$ref"`
	Required []string `json:"required"`
}

type operation struct {
	Parameters []struct {
		Name     string `json:"name"`
		In       string `json:"in"`
		Required bool   `json:"required"`
		Example  any    `json:"example"`
	} `json:"parameters"`
	RequestBody *struct {
		Content map[string]struct {
			Example any `json:"example"`
		} `json:"content"`
	} `json:"requestBody"`
	Responses map[string]struct {
		Content map[string]struct {
			Schema schema `json:"schema"`
		} `json:"content"`
	} `json:"responses"`
}
