package dynsec_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth/dynsec"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/config"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// testdata/init.json is the unchanged output of Debian's
// `mosquitto_ctrl dynsec init init.json admin adminpw` (2.0.11).
const adminPW = "adminpw"

// newFile copies the init file into a temporary directory.
func newFile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/init.json")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dynamic-security.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

type env struct {
	t     *testing.T
	srv   *brokertest.Server
	p     *dynsec.Plugin
	file  string
	admin *client.Client
	resp  chan []byte
}

// start runs a broker with the plugin (its deferrals final, as in
// Mosquitto with no other plugin) and connects the admin.
func start(t *testing.T) *env {
	t.Helper()
	file := newFile(t)
	p, err := dynsec.New(dynsec.Options{ConfigFile: file, FinalAuthn: true, FinalAuthz: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = []any{p} })
	e := &env{t: t, srv: srv, p: p, file: file, resp: make(chan []byte, 16)}
	e.admin = e.dial("admin", adminPW, "admin-1", packet.V5)
	ctx := context.Background()
	if _, err := e.admin.Subscribe(ctx, []packet.Subscription{{Filter: dynsec.ResponseTopic, QoS: 1}}, func(m *client.Message) {
		e.resp <- append([]byte(nil), m.Payload...)
	}); err != nil {
		t.Fatalf("admin subscribe: %v", err)
	}
	return e
}

func (e *env) dialErr(user, pw, id string, v packet.Version) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o := client.Options{ClientID: id, Version: v, Username: user}
	if pw != "" {
		o.Password = []byte(pw)
	}
	c, err := client.Dial(ctx, e.srv.URL(), o)
	if err == nil {
		e.t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func (e *env) dial(user, pw, id string, v packet.Version) *client.Client {
	e.t.Helper()
	c, err := e.dialErr(user, pw, id, v)
	if err != nil {
		e.t.Fatalf("connect %s: %v", user, err)
	}
	return c
}

// cmd sends one batch as the admin and returns the responses.
func (e *env) cmd(payload string) []map[string]any {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.admin.Publish(ctx, dynsec.ControlTopic, []byte(payload), client.PublishOptions{QoS: 1}); err != nil {
		e.t.Fatalf("publish command: %v", err)
	}
	select {
	case b := <-e.resp:
		var r struct {
			Responses []map[string]any `json:"responses"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			e.t.Fatalf("response %s: %v", b, err)
		}
		return r.Responses
	case <-ctx.Done():
		e.t.Fatalf("no response to %s", payload)
	}
	return nil
}

// ok sends commands and fails on any error in the responses.
func (e *env) ok(cmds ...string) {
	e.t.Helper()
	for _, r := range e.cmd(`{"commands":[` + strings.Join(cmds, ",") + `]}`) {
		if r["error"] != nil {
			e.t.Fatalf("%v: %v", r["command"], r["error"])
		}
	}
}

func rcOf(err error) packet.ReasonCode {
	var rc packet.ReasonCode
	if errors.As(err, &rc) {
		return rc
	}
	return 0
}

func TestInitFileFromMosquittoCtrlLoads(t *testing.T) {
	file := newFile(t)
	p, err := dynsec.New(dynsec.Options{ConfigFile: file, FinalAuthn: true})
	if err != nil {
		t.Fatal(err)
	}
	// The PBKDF2-SHA512 hash mosquitto_ctrl wrote verifies here.
	if err := p.Authenticate(&broker.ClientInfo{ClientID: "x", Username: "admin", HasUsername: true,
		Password: []byte(adminPW), HasPassword: true}); err != nil {
		t.Fatalf("admin with the right password: %v", err)
	}
	err = p.Authenticate(&broker.ClientInfo{ClientID: "x", Username: "admin", HasUsername: true,
		Password: []byte("wrong"), HasPassword: true})
	if rcOf(err) != packet.NotAuthorized {
		t.Fatalf("wrong password: %v, want not authorized", err)
	}
	// Unknown user: Mosquitto refuses when every plugin deferred.
	err = p.Authenticate(&broker.ClientInfo{ClientID: "x", Username: "nobody", HasUsername: true,
		Password: []byte("x"), HasPassword: true})
	if rcOf(err) != packet.NotAuthorized {
		t.Fatalf("unknown user: %v", err)
	}
	// No user name: the plugin defers (allow_anonymous decides).
	if err := p.Authenticate(&broker.ClientInfo{ClientID: "x"}); !errors.Is(err, broker.ErrDefer) {
		t.Fatalf("anonymous: %v, want ErrDefer", err)
	}
	// Without FinalAuthn an unknown user defers to the next hook.
	q, _ := dynsec.New(dynsec.Options{ConfigFile: file})
	if err := q.Authenticate(&broker.ClientInfo{ClientID: "x", Username: "nobody", HasUsername: true,
		Password: []byte("x"), HasPassword: true}); !errors.Is(err, broker.ErrDefer) {
		t.Fatalf("unknown user without FinalAuthn: %v", err)
	}
}

func TestCreateClientConnectAndACLs(t *testing.T) {
	e := start(t)
	e.ok(`{"command":"createClient","username":"alice","password":"alicepw"}`,
		`{"command":"createRole","rolename":"writers"}`,
		`{"command":"addRoleACL","rolename":"writers","acltype":"publishClientSend","topic":"app/#","allow":true,"priority":5}`,
		`{"command":"addRoleACL","rolename":"writers","acltype":"publishClientSend","topic":"app/secret","allow":false,"priority":10}`,
		`{"command":"addRoleACL","rolename":"writers","acltype":"subscribePattern","topic":"app/#","allow":true}`,
		`{"command":"addRoleACL","rolename":"writers","acltype":"subscribeLiteral","topic":"app/+","allow":false}`,
		`{"command":"createGroup","groupname":"devs"}`,
		`{"command":"addGroupRole","groupname":"devs","rolename":"writers"}`,
		`{"command":"addGroupClient","groupname":"devs","username":"alice"}`)

	if _, err := e.dialErr("alice", "nope", "a1", packet.V5); rcOf(err) != packet.NotAuthorized {
		t.Fatalf("wrong password: %v, want 0x87", err)
	}
	if _, err := e.dialErr("mallory", "x", "m1", packet.V311); err == nil {
		t.Fatal("unknown user connected")
	}
	alice := e.dial("alice", "alicepw", "a1", packet.V5)
	ctx := context.Background()
	pub := func(topic string) error {
		return alice.Publish(ctx, topic, []byte("x"), client.PublishOptions{QoS: 1})
	}
	if err := pub("app/x"); err != nil {
		t.Errorf("publish app/x: %v", err)
	}
	// Higher priority deny wins over the allow on app/#.
	if err := pub("app/secret"); rcOf(err) != packet.NotAuthorized {
		t.Errorf("publish app/secret: %v, want 0x87", err)
	}
	// No ACL matches and publishClientSend defaults to deny.
	if err := pub("other/x"); rcOf(err) != packet.NotAuthorized {
		t.Errorf("publish other/x: %v, want 0x87", err)
	}
	// A non-admin may not use the control topic: nothing is created.
	if err := pub(dynsec.ControlTopic); rcOf(err) != packet.NotAuthorized {
		t.Errorf("alice publishing to the control topic: %v, want 0x87", err)
	}
	sub := func(f string) error {
		_, err := alice.Subscribe(ctx, []packet.Subscription{{Filter: f, QoS: 1}}, func(*client.Message) {})
		return err
	}
	if err := sub("app/#"); err != nil {
		t.Errorf("subscribe app/#: %v", err)
	}
	// The literal ACL is checked before the patterns.
	if err := sub("app/+"); rcOf(err) != packet.NotAuthorized {
		t.Errorf("subscribe app/+: %v, want 0x87", err)
	}
	if err := sub("other/#"); rcOf(err) != packet.NotAuthorized {
		t.Errorf("subscribe other/#: %v, want 0x87", err)
	}
	r := e.cmd(`{"commands":[{"command":"getClient","username":"alice","correlationData":"c1"}]}`)
	b, _ := json.Marshal(r)
	want := `[{"command":"getClient","correlationData":"c1","data":{"client":{"groups":[{"groupname":"devs"}],"roles":[],"username":"alice"}}}]`
	if string(b) != want {
		t.Errorf("getClient:\n got %s\nwant %s", b, want)
	}
}

func TestPriorityOrder(t *testing.T) {
	e := start(t)
	e.ok(`{"command":"createClient","username":"u","password":"pw"}`,
		`{"command":"createRole","rolename":"allowA"}`,
		`{"command":"addRoleACL","rolename":"allowA","acltype":"publishClientSend","topic":"a/#","allow":true}`,
		`{"command":"createRole","rolename":"denyA"}`,
		`{"command":"addRoleACL","rolename":"denyA","acltype":"publishClientSend","topic":"a/#","allow":false}`,
		`{"command":"createGroup","groupname":"g1"}`, `{"command":"createGroup","groupname":"g2"}`,
		`{"command":"addGroupRole","groupname":"g1","rolename":"allowA"}`,
		`{"command":"addGroupRole","groupname":"g2","rolename":"denyA"}`,
		`{"command":"addGroupClient","groupname":"g1","username":"u","priority":1}`,
		`{"command":"addGroupClient","groupname":"g2","username":"u","priority":2}`)
	ci := &broker.ClientInfo{ClientID: "u1", Username: "u", HasUsername: true}
	// g2 (priority 2, deny) is asked before g1.
	if err := e.p.Authorize(ci, broker.AccessPublish, "a/b"); err == nil {
		t.Fatal("group priority: allowed, want the higher-priority group's deny")
	}
	// The client's own roles come before any group's.
	e.ok(`{"command":"addClientRole","username":"u","rolename":"allowA"}`)
	if err := e.p.Authorize(ci, broker.AccessPublish, "a/b"); err != nil {
		t.Fatalf("client role before groups: %v", err)
	}
	// Among the client's roles, the higher priority first.
	e.ok(`{"command":"addClientRole","username":"u","rolename":"denyA","priority":9}`)
	if err := e.p.Authorize(ci, broker.AccessPublish, "a/b"); err == nil {
		t.Fatal("role priority: allowed, want denyA (priority 9) first")
	}
	// Receive falls to defaultACLAccess (publishClientReceive true in init).
	if err := e.p.Authorize(ci, broker.AccessReceive, "z"); err != nil {
		t.Fatalf("default receive: %v", err)
	}
	// ... but never for $CONTROL topics.
	if err := e.p.Authorize(ci, broker.AccessReceive, "$CONTROL/x"); err == nil {
		t.Fatal("$CONTROL granted by default")
	}
	e.ok(`{"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientReceive","allow":false}]}`)
	if err := e.p.Authorize(ci, broker.AccessReceive, "z"); err == nil {
		t.Fatal("receive allowed after setDefaultACLAccess deny")
	}
}

func TestAnonymousGroup(t *testing.T) {
	e := start(t)
	e.ok(`{"command":"createRole","rolename":"news"}`,
		`{"command":"addRoleACL","rolename":"news","acltype":"subscribeLiteral","topic":"news/today","allow":true}`,
		`{"command":"createGroup","groupname":"anon"}`,
		`{"command":"addGroupRole","groupname":"anon","rolename":"news"}`,
		`{"command":"setAnonymousGroup","groupname":"anon"}`)
	r := e.cmd(`{"commands":[{"command":"getAnonymousGroup"}]}`)
	if g := r[0]["data"].(map[string]any)["group"].(map[string]any)["groupname"]; g != "anon" {
		t.Fatalf("getAnonymousGroup: %v", r)
	}
	c := e.dial("", "", "anon1", packet.V5)
	ctx := context.Background()
	if _, err := c.Subscribe(ctx, []packet.Subscription{{Filter: "news/today"}}, func(*client.Message) {}); err != nil {
		t.Errorf("anonymous subscribe news/today: %v", err)
	}
	if _, err := c.Subscribe(ctx, []packet.Subscription{{Filter: "news/#"}}, func(*client.Message) {}); rcOf(err) != packet.NotAuthorized {
		t.Errorf("anonymous subscribe news/#: %v, want 0x87", err)
	}
}

func TestDisableKicksAndRefuses(t *testing.T) {
	e := start(t)
	e.ok(`{"command":"createClient","username":"bob","password":"bobpw","clientid":"bobid"}`)
	if _, err := e.dialErr("bob", "bobpw", "other", packet.V311); err == nil {
		t.Fatal("bob connected with a client id other than the bound one")
	}
	bob := e.dial("bob", "bobpw", "bobid", packet.V5)
	e.ok(`{"command":"disableClient","username":"bob"}`)
	select {
	case <-bob.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("bob still connected after disableClient")
	}
	if rcOf(bob.Err()) != packet.AdministrativeAction {
		t.Errorf("bob's disconnect: %v, want administrative action 0x98", bob.Err())
	}
	if _, err := e.dialErr("bob", "bobpw", "bobid", packet.V5); rcOf(err) != packet.NotAuthorized {
		t.Fatalf("disabled bob: %v, want 0x87", err)
	}
	e.ok(`{"command":"enableClient","username":"bob"}`)
	e.dial("bob", "bobpw", "bobid", packet.V5)
}

func TestSaveAndReload(t *testing.T) {
	e := start(t)
	e.ok(`{"command":"createClient","username":"carol","password":"c","clientid":"cid","textname":"Carol"}`,
		`{"command":"createRole","rolename":"r","acls":[{"acltype":"publishClientSend","topic":"x/#","priority":3,"allow":true}]}`,
		`{"command":"addClientRole","username":"carol","rolename":"r","priority":4}`,
		`{"command":"createGroup","groupname":"g"}`,
		`{"command":"addGroupClient","groupname":"g","username":"carol"}`,
		`{"command":"setAnonymousGroup","groupname":"g"}`,
		`{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":true}]}`)
	fi, err := os.Stat(e.file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("saved file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(e.file + ".new"); err == nil {
		t.Error("temporary file left behind")
	}
	q := `{"commands":[{"command":"getClient","username":"carol"},{"command":"listRoles","verbose":true},` +
		`{"command":"listGroups","verbose":true},{"command":"getDefaultACLAccess"},{"command":"getAnonymousGroup"}]}`
	before, _ := e.p.Handle("t", "admin", []byte(q))
	p2, err := dynsec.New(dynsec.Options{ConfigFile: e.file})
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	after, _ := p2.Handle("t", "admin", []byte(q))
	if string(before) != string(after) {
		t.Fatalf("state after reload differs:\n%s\n%s", before, after)
	}
	if err := p2.Authenticate(&broker.ClientInfo{ClientID: "cid", Username: "carol", HasUsername: true,
		Password: []byte("c"), HasPassword: true}); err != nil {
		t.Fatalf("carol after reload: %v", err)
	}
}

func TestMalformedCommands(t *testing.T) {
	e := start(t)
	cases := []struct{ in, want string }{
		{`not json`, `{"responses":[{"command":"Unknown command","error":"Payload not valid JSON"}]}`},
		{`{"cmds":[]}`, `{"responses":[{"command":"Unknown command","error":"Invalid/missing commands"}]}`},
		{`{"commands":[1]}`, `{"responses":[{"command":"Unknown command","error":"Command not an object"}]}`},
		{`{"commands":[{}]}`, `{"responses":[{"command":"Unknown command","error":"Missing command"}]}`},
		{`{"commands":[{"command":"frobnicate","correlationData":"7"}]}`, `{"responses":[{"command":"frobnicate","error":"Unknown command","correlationData":"7"}]}`},
		{`{"commands":[{"command":"getClient","correlationData":5},{"command":"listClients"}]}`, `{"responses":[{"command":"getClient","error":"Invalid correlationData data type."}]}`},
		{`{"commands":[{"command":"createClient"}]}`, `{"responses":[{"command":"createClient","error":"Invalid/missing username"}]}`},
		{`{"commands":[{"command":"createClient","username":"a\u0001"}]}`, `{"responses":[{"command":"createClient","error":"Username not valid UTF-8"}]}`},
		{`{"commands":[{"command":"createClient","username":"admin"}]}`, `{"responses":[{"command":"createClient","error":"Client already exists"}]}`},
		{`{"commands":[{"command":"addRoleACL","rolename":"admin","acltype":"publishClientSend","topic":"a/#/b"}]}`, `{"responses":[{"command":"addRoleACL","error":"Invalid ACL topic"}]}`},
		{`{"commands":[{"command":"addRoleACL","rolename":"admin","acltype":"nope","topic":"a"}]}`, `{"responses":[{"command":"addRoleACL","error":"Unknown acltype"}]}`},
		{`{"commands":[{"command":"modifyRole","rolename":"nope"}]}`, `{"responses":[{"command":"modifyRole","error":"Role does not exist"}]}`},
		{`{"commands":[{"command":"setClientPassword","username":"admin","password":""}]}`, `{"responses":[{"command":"setClientPassword","error":"Empty password is not allowed"}]}`},
		{`{"commands":[{"command":"createClient","username":"z","roles":[{"rolename":"nope"}]}]}`, `{"responses":[{"command":"createClient","error":"Role not found"}]}`},
		{`{"commands":[{"command":"GETCLIENT","username":"nobody"}]}`, `{"responses":[{"command":"getClient","error":"Client not found"}]}`},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := e.admin.Publish(ctx, dynsec.ControlTopic, []byte(c.in), client.PublishOptions{QoS: 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-e.resp:
			if string(got) != c.want {
				t.Errorf("%s:\n got %s\nwant %s", c.in, got, c.want)
			}
		case <-ctx.Done():
			t.Fatalf("%s: no response", c.in)
		}
		cancel()
	}
}

func TestSubscribePatternCheck(t *testing.T) {
	// subscribePattern ACL vs subscription filter (the plugin's sub_acl_check).
	cases := []struct {
		acl, sub string
		want     bool
	}{
		{"#", "a/b", true}, {"a/#", "a", true}, {"a/#", "a/b/c", true}, {"a/#", "a/#", true},
		{"a/+", "a/b", true}, {"a/+", "a/+", true}, {"a/+", "a/#", false}, {"a/b", "a/+", false},
		{"a/+/c", "a/b/c", true}, {"a/+/c", "a/b/d", false}, {"a/b", "a/b/c", false}, {"a/b/c", "a/b", false},
		{"+/#", "x/y/z", true}, {"a/#", "b", false}, {"a/#", "#", false},
	}
	for _, c := range cases {
		if got := dynsec.SubACLCheck(c.acl, c.sub); got != c.want {
			t.Errorf("acl %q sub %q: %v, want %v", c.acl, c.sub, got, c.want)
		}
	}
}

func TestConfigPluginLines(t *testing.T) {
	file := newFile(t)
	cfg, err := config.Parse(strings.NewReader("plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file "+file+"\n"), "f.conf")
	if err != nil {
		t.Fatalf("dynsec plugin refused: %v", err)
	}
	if cfg.DynSec.ConfigFile != file {
		t.Fatalf("config file %q", cfg.DynSec.ConfigFile)
	}
	if _, err := config.NewAuth(cfg); err != nil {
		t.Fatalf("NewAuth: %v", err)
	}
	for in, want := range map[string]string{
		"plugin /usr/lib/auth-plug.so\n": "f.conf:1: plugin: plugins are not supported: /usr/lib/auth-plug.so",
		"plugin_opt_config_file /x\n":    "f.conf:1: plugin_opt_config_file: plugins are not supported",
		"auth_plugin /x.so\n":            "f.conf:1: auth_plugin: plugins are not supported",
		"per_listener_settings true\nplugin /mosquitto_dynamic_security.so\n": "per_listener_settings true is not supported",
	} {
		_, err := config.Parse(strings.NewReader(in), "f.conf")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	cfg, err = config.Parse(strings.NewReader("plugin /p/mosquitto_dynamic_security.so\n"), "f.conf")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.NewAuth(cfg); err == nil || !strings.Contains(err.Error(), "needs plugin_opt_config_file") {
		t.Errorf("plugin without a file: %v", err)
	}
}

func FuzzHandle(f *testing.F) {
	for _, s := range []string{`{"commands":[{"command":"createClient","username":"a","password":"b","roles":[{"rolename":"admin"}],"groups":[{"groupname":"g"}]}]}`,
		`{"commands":[{"command":"listClients","verbose":true,"count":1,"offset":-3}]}`,
		`{"commands":[{"command":"modifyGroup","groupname":"g","clients":[{"username":"admin","priority":1e99}]}]}`,
		`{"commands":[{"command":"addRoleACL","rolename":"admin","acltype":"subscribeLiteral","topic":"+/#"}]}`,
		`{"commands":[{"command":"createGroup","groupname":"g"},{"command":"deleteRole","rolename":"admin"}]}`,
		`[]`, `null`, `{"commands":null}`, "\xff"} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	init, err := os.ReadFile("testdata/init.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		file := filepath.Join(dir, "f.json")
		os.WriteFile(file, init, 0o600)
		p, err := dynsec.New(dynsec.Options{ConfigFile: file})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := p.Handle("c", "admin", payload)
		var v struct {
			Responses []map[string]any `json:"responses"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("response %q: %v", out, err)
		}
		// Whatever was saved loads again.
		if _, err := dynsec.New(dynsec.Options{ConfigFile: file}); err != nil {
			t.Fatalf("saved file does not load: %v", err)
		}
	})
}

// TestDollarTopicsNeedDollarACL: an ACL starting with a wildcard does not
// match a topic starting with '$' [MQTT-4.7.2-1]; names are valid UTF-8
// without control characters [MQTT-1.5.4-1], [MQTT-1.5.4-2].
func TestDollarTopicsNeedDollarACL(t *testing.T) {
	e := start(t)
	e.ok(`{"command":"createClient","username":"u","password":"pw"}`,
		`{"command":"createRole","rolename":"all"}`,
		`{"command":"addRoleACL","rolename":"all","acltype":"publishClientReceive","topic":"#","allow":true}`,
		`{"command":"addRoleACL","rolename":"all","acltype":"publishClientSend","topic":"+/x","allow":true}`,
		`{"command":"addClientRole","username":"u","rolename":"all"}`,
		`{"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientReceive","allow":false}]}`)
	ci := &broker.ClientInfo{ClientID: "u1", Username: "u", HasUsername: true}
	if err := e.p.Authorize(ci, broker.AccessReceive, "a/b"); err != nil {
		t.Fatalf("# for a/b: %v", err)
	}
	if err := e.p.Authorize(ci, broker.AccessReceive, "$SYS/broker/uptime"); err == nil {
		t.Fatal("# matched $SYS/broker/uptime [MQTT-4.7.2-1]")
	}
	if err := e.p.Authorize(ci, broker.AccessPublish, "$CONTROL/x"); err == nil {
		t.Fatal("+/x matched $CONTROL/x [MQTT-4.7.2-1]")
	}
	// The admin role of init grants $CONTROL/dynamic-security/# explicitly.
	admin := &broker.ClientInfo{ClientID: "a", Username: "admin", HasUsername: true}
	if err := e.p.Authorize(admin, broker.AccessPublish, dynsec.ControlTopic); err != nil {
		t.Fatalf("admin publishing commands: %v", err)
	}
	r := e.cmd(`{"commands":[{"command":"createRole","rolename":"bad\ufffe"},{"command":"createGroup","groupname":"x\u0085"}]}`)
	if r[0]["error"] != "Role name not valid UTF-8" || r[1]["error"] != "Group name not valid UTF-8" {
		t.Fatalf("invalid names accepted: %v [MQTT-1.5.4-2]", r)
	}
}
