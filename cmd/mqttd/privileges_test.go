package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// syncBuffer is a bytes.Buffer that a running mqttd writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// launch starts mqttd -c conf and waits until it serves (its listeners
// accept before it switches user and opens the store), or until it exits
// (then the caller looks at its status and logs).
func launch(t *testing.T, conf string, port int) (*exec.Cmd, *syncBuffer, chan error) {
	t.Helper()
	cmd := exec.Command(binary, "-c", conf)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	brokertest.Eventually(t, 15*time.Second, func() bool {
		select {
		case err := <-exited:
			exited <- err
			return true
		default:
		}
		if !strings.Contains(logs.String(), "mqttd version "+version+" running") {
			return false
		}
		c, err := brokertest.TryDial(addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "mqttd serving on %s", addr)
	return cmd, logs, exited
}

// stop sends SIGTERM and wants exit status 0.
func stop(t *testing.T, cmd *exec.Cmd, exited chan error, logs *syncBuffer) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("mqttd exit: %v\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("mqttd did not stop")
	}
}

// searchableDir is a new directory that other users can search (t.TempDir
// is under a 0700 directory), removed at the end of the test.
func searchableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mqttd-priv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// procIDs returns the real, effective, saved and file-system uid (or gid)
// of pid from /proc.
func procIDs(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s line in /proc/%d/status", field, pid)
	}
	return strings.Join(strings.Fields(string(m[1])), " ")
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func lookupIDs(t *testing.T, name string) (int, int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("no user %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// TestDropPrivilegesBeforeStore (as root): with `user nobody`, mqttd binds
// as root, then switches to nobody before it opens the store: the process
// runs as nobody, a retained QoS 1 message is stored and acknowledged, the
// broker stays up, every store file and directory is nobody's and private
// (0600/0700), including those of a store first written by an mqttd that
// ran as root, and the store reopens as nobody. A store file nobody cannot
// write is refused at start with an error naming it, instead of a crash when
// Pebble later needs it.
func TestDropPrivilegesBeforeStore(t *testing.T) {
	needRoot(t)
	uid, gid := lookupIDs(t, "nobody")
	dir := searchableDir(t)
	storeLoc := filepath.Join(dir, "data")
	sdir := filepath.Join(storeLoc, storeDirName)
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	conf := filepath.Join(dir, "mqttd.conf")
	write := func(userLine string) {
		c := fmt.Sprintf("%slistener %d 127.0.0.1\nallow_anonymous true\npersistence_location %s\n", userLine, port, storeLoc)
		if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A store written as root, as the mqttd before this fix did.
	write("user root\n")
	cmd, logs, exited := launch(t, conf, port)
	pub := brokertest.Dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "p0", CleanStart: true})
	pub.Publish(&packet.Publish{Topic: "r/0", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("as root")})
	stop(t, cmd, exited, logs)

	write("user nobody\n")
	cmd, logs, exited = launch(t, conf, port)
	want := fmt.Sprintf("%d %d %d %d", uid, uid, uid, uid)
	if got := procIDs(t, cmd.Process.Pid, "Uid"); got != want {
		t.Fatalf("Uid %q, want %q\n%s", got, want, logs)
	}
	if got, w := procIDs(t, cmd.Process.Pid, "Gid"), fmt.Sprintf("%d %d %d %d", gid, gid, gid, gid); got != w {
		t.Fatalf("Gid %q, want %q", got, w)
	}
	pub = brokertest.Dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "p1", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "r/1", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("as nobody")}); rc.IsError() {
		t.Fatalf("PUBACK %v", rc)
	}
	sub := brokertest.Dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "s1", CleanStart: true})
	sub.Subscribe(1, 1, "r/#")
	got := map[string]string{}
	for _, p := range sub.RecvPublishes(2) {
		got[p.Topic] = string(p.Payload)
	}
	if got["r/0"] != "as root" || got["r/1"] != "as nobody" {
		t.Fatalf("retained: %v", got)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("mqttd died: %v\n%s", err, logs)
	}
	stop(t, cmd, exited, logs)

	files := 0
	err := filepath.WalkDir(sdir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
		}
		mode := fs.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		} else {
			files++
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
		return nil
	})
	if err != nil || files < 4 {
		t.Fatalf("store walk: %d files, %v", files, err)
	}

	// Restarted as nobody, the store is still its own.
	cmd, logs, exited = launch(t, conf, port)
	sub = brokertest.Dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "s2", CleanStart: true})
	sub.Subscribe(1, 1, "r/1")
	if p := sub.ExpectPublish(); string(p.Payload) != "as nobody" {
		t.Fatalf("got %v", p)
	}
	stop(t, cmd, exited, logs)

	// A store file of a third user (not root: left alone) that nobody
	// cannot write: refused at start, naming the file.
	ents, err := os.ReadDir(sdir)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "OPTIONS") {
			victim = filepath.Join(sdir, e.Name())
		}
	}
	if victim == "" {
		t.Fatalf("no OPTIONS file in %s", sdir)
	}
	if err := os.Chown(victim, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "-c", conf).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
		!strings.Contains(string(out), victim+" is not writable by uid "+strconv.Itoa(uid)) {
		t.Fatalf("unwritable store file: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "panic") {
		t.Fatalf("crashed:\n%s", out)
	}
}

// TestRootDefaultUser (as root): without a user option mqttd does not stay
// root silently. It switches to mosquitto when that user exists and can
// reach the store; otherwise it says loudly that it keeps running as root.
func TestRootDefaultUser(t *testing.T) {
	needRoot(t)
	mu, err := user.Lookup(defaultUser)
	run := func(t *testing.T, dir string) (string, string) {
		port := freePort(t)
		conf := filepath.Join(dir, "mqttd.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n", port)), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd, logs, exited := launch(t, conf, port)
		uid := procIDs(t, cmd.Process.Pid, "Uid")
		stop(t, cmd, exited, logs)
		return uid, logs.String()
	}
	if err != nil {
		uid, logs := run(t, searchableDir(t))
		if uid != "0 0 0 0" || !strings.Contains(logs, "user "+defaultUser+" does not exist: mqttd keeps running AS ROOT") {
			t.Fatalf("Uid %s, logs:\n%s", uid, logs)
		}
		return
	}
	t.Run("switches", func(t *testing.T) {
		uid, logs := run(t, searchableDir(t))
		if want := strings.Repeat(mu.Uid+" ", 3) + mu.Uid; uid != want || !strings.Contains(logs, "dropped privileges") {
			t.Fatalf("Uid %s, want %s; logs:\n%s", uid, want, logs)
		}
	})
	t.Run("store out of reach", func(t *testing.T) {
		uid, logs := run(t, t.TempDir()) // under a 0700 directory of root's
		if uid != "0 0 0 0" || !strings.Contains(logs, "keeps running AS ROOT, because the default user "+defaultUser+
			" cannot use the store") {
			t.Fatalf("Uid %s, logs:\n%s", uid, logs)
		}
	})
}

// TestRootUserOption (as root): `user root` keeps root with a warning; a
// user option naming no user is an error at start.
func TestRootUserOption(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "mqttd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\n", port)), 0o644)
	cmd, logs, exited := launch(t, conf, port)
	if uid := procIDs(t, cmd.Process.Pid, "Uid"); uid != "0 0 0 0" {
		t.Fatalf("Uid %s", uid)
	}
	stop(t, cmd, exited, logs)
	if !strings.Contains(logs.String(), "running as root (user root)") {
		t.Fatalf("no warning:\n%s", logs)
	}

	os.WriteFile(conf, []byte(fmt.Sprintf("user no-such-user-mqttd\nlistener %d 127.0.0.1\n", port)), 0o644)
	out, err := exec.Command(binary, "-c", conf).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
		!strings.Contains(string(out), "user no-such-user-mqttd: cannot drop privileges") {
		t.Fatalf("unknown user: %v\n%s", err, out)
	}
}

// TestPasswdCreatesPrivateFile: `mqttd passwd -c` writes the hashes 0600
// whatever the umask.
func TestPasswdCreatesPrivateFile(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	pw := filepath.Join(t.TempDir(), "pw")
	passwd(t, "-c", "-b", pw, "alice", "secret")
	fi, err := os.Stat(pw)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v, want 0600", fi.Mode(), err)
	}
}

// TestWorldReadablePasswordFileWarns: a password file every user can read
// is named in a warning at start.
func TestWorldReadablePasswordFileWarns(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	passwd(t, "-c", "-b", pw, "alice", "secret")
	if err := os.Chmod(pw, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := filepath.Join(dir, "mqttd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\npassword_file %s\n", port, pw)), 0o644)
	cmd, logs, exited := launch(t, conf, port)
	stop(t, cmd, exited, logs)
	if !strings.Contains(logs.String(), "password_file "+pw+" is readable by every user (mode 0644)") {
		t.Fatalf("no warning:\n%s", logs)
	}
}

// TestMetricsListenerLoopbackAndAuth: `metrics_listener PORT` without an
// address binds loopback only; with metrics_password_file and
// metrics_token_file a scrape needs basic auth or the bearer token.
func TestMetricsListenerLoopbackAndAuth(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "metrics.pw")
	passwd(t, "-c", "-b", pw, "prom", "scrape-pw")
	tok := filepath.Join(dir, "metrics.token")
	os.WriteFile(tok, []byte("tok-5f1e9a\n"), 0o600)
	port := freePort(t)
	conf := filepath.Join(dir, "mqttd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\n"+
		"metrics_listener 0\nmetrics_password_file %s\nmetrics_token_file %s\n", port, pw, tok)), 0o644)
	cmd, logs, exited := launch(t, conf, port)
	m := regexp.MustCompile(`Opening metrics listener on (\S+) \(authentication required\)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no metrics listener line:\n%s", logs)
	}
	host, _, err := net.SplitHostPort(m[1])
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("metrics listener on %q (%v), want 127.0.0.1", m[1], err)
	}
	url := "http://" + m[1] + "/metrics"
	get := func(set func(*http.Request)) int {
		req, _ := http.NewRequest("GET", url, nil)
		if set != nil {
			set(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		name string
		set  func(*http.Request)
		want int
	}{
		{"none", nil, 401},
		{"basic", func(r *http.Request) { r.SetBasicAuth("prom", "scrape-pw") }, 200},
		{"basic wrong", func(r *http.Request) { r.SetBasicAuth("prom", "nope") }, 401},
		{"token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-5f1e9a") }, 200},
		{"token wrong", func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-5f1e9b") }, 401},
	}
	for _, c := range cases {
		if got := get(c.set); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
	}
	stop(t, cmd, exited, logs)
}
