package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/mqttd/mqttd/config"
)

// packagingDir is the repository's packaging/ directory, seen from this
// package's directory (where go test runs).
var packagingDir = filepath.Join("..", "..", "packaging")

// exitCode runs bin with args and returns its exit status and output.
func exitCode(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return 0, "", ""
}

// goBuild builds this package into dir with extra go build flags.
func goBuild(t *testing.T, dir string, env []string, flags ...string) string {
	t.Helper()
	out := filepath.Join(dir, "mqttd")
	args := append(append([]string{"build"}, flags...), "-o", out, ".")
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, b)
	}
	return out
}

func TestResolveVersion(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, c := range []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		want    string
	}{
		{"stamped wins", "1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}}, "1.2.3"},
		{"no build info", "", nil, "devel"},
		{"go install module@version", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"},
			Settings: settings("vcs.revision", rev)}, "v1.4.0"},
		{"checkout, clean", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: settings("vcs.revision", rev, "vcs.modified", "false")}, "devel+0123456789ab"},
		{"checkout, modified", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: settings("vcs.revision", rev, "vcs.modified", "true")}, "devel+0123456789ab-dirty"},
		{"short revision", "", &debug.BuildInfo{Settings: settings("vcs.revision", "abc")}, "devel+abc"},
		{"nothing recorded", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
	} {
		if got := resolveVersion(c.stamped, c.bi); got != c.want {
			t.Errorf("%s: resolveVersion = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestVersionFlag builds the binary stamped as a release build is and
// checks --version and -h (version first, as mosquitto -h).
func TestVersionFlag(t *testing.T) {
	bin := goBuild(t, t.TempDir(), nil, "-ldflags", "-X main.version=1.2.3-test")
	code, out, errOut := exitCode(t, bin, "--version")
	if code != 0 || out != "mqttd version 1.2.3-test\n" || errOut != "" {
		t.Fatalf("--version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = exitCode(t, bin, "-h")
	first, rest, _ := strings.Cut(out, "\n")
	if code != 0 || first != "mqttd version 1.2.3-test" || !strings.Contains(rest, "Usage: mqttd") ||
		!strings.Contains(rest, "--version") {
		t.Fatalf("-h: exit %d, output:\n%s", code, out)
	}
	// --version ends the command line, as -h does.
	code, _, errOut = exitCode(t, bin, "--version", "--no-such-option")
	if code != 0 {
		t.Fatalf("--version first: exit %d (%s)", code, errOut)
	}
}

// TestVersionFromBuildInfo builds without a stamp in a git checkout: the
// binary reports the revision the Go toolchain recorded (a build that
// records nothing says "devel": TestResolveVersion).
func TestVersionFromBuildInfo(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	if err := exec.Command(git, "rev-parse", "HEAD").Run(); err != nil {
		t.Skip("not a git checkout")
	}
	bin := goBuild(t, t.TempDir(), []string{"GOFLAGS=-buildvcs=true"})
	// What the toolchain recorded: it records nothing in some checkouts
	// (a git worktree, for one), and then there is nothing to report.
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	_, after, found := strings.Cut(string(info), "vcs.revision=")
	if !found || len(after) < 12 {
		t.Skip("the Go toolchain recorded no VCS revision in this checkout")
	}
	rev := after[:12]
	_, out, _ := exitCode(t, bin, "--version")
	if !strings.HasPrefix(out, "mqttd version ") || !strings.Contains(out, rev) {
		t.Fatalf("--version of an unstamped build in a checkout at %s: %q", rev, out)
	}
}

// unit is a parsed systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, "\\") {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the single value of section.key.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s: want one value, have %q", section, key, v)
	}
	return v[0]
}

// TestPackagedConfig: the default configuration passes --test-config and
// says what the unit and the container expect of it.
func TestPackagedConfig(t *testing.T) {
	conf := filepath.Join(packagingDir, "mqttd.conf")
	code, out, errOut := exitCode(t, binary, "--test-config", "-c", conf)
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("mqttd --test-config -c %s: exit %d\n%s%s", conf, code, out, errOut)
	}
	cfg, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Persistence || cfg.PersistenceLocation != "/var/lib/mqttd" {
		t.Errorf("persistence %v in %q, want true in /var/lib/mqttd", cfg.Persistence, cfg.PersistenceLocation)
	}
	if len(cfg.Listeners) != 1 || cfg.Listeners[0].Port != 1883 || cfg.Listeners[0].Address != "" {
		t.Errorf("listeners: want one on port 1883, all addresses")
	}
	if len(cfg.Log.Dests) != 1 || cfg.Log.Dests[0].Kind != "stderr" {
		t.Errorf("log_dest: want stderr only (the journal, the container log), have %+v", cfg.Log.Dests)
	}
}

// TestSystemdUnit checks packaging/mqttd.service against mqttd: its command
// line, the directories it gives and the configuration it names, its
// hardening, and `systemd-analyze verify` where systemd is installed.
func TestSystemdUnit(t *testing.T) {
	path := filepath.Join(packagingDir, "mqttd.service")
	u := parseUnit(t, path)
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("no [%s] section", s)
		}
	}

	argv := strings.Fields(u.one(t, "Service", "ExecStart"))
	if len(argv) < 1 || !filepath.IsAbs(argv[0]) || filepath.Base(argv[0]) != "mqttd" {
		t.Fatalf("ExecStart %q: want an absolute path to mqttd", argv)
	}
	o, _, ok := parseArgs(argv[1:], io.Discard, io.Discard)
	if !ok || o.file == "" || o.testConfig || o.verbose {
		t.Fatalf("ExecStart options %q: want -c FILE and no option that changes behaviour", argv[1:])
	}
	confDir := "/etc/" + u.one(t, "Service", "ConfigurationDirectory")
	if filepath.Dir(o.file) != confDir || filepath.Base(o.file) != "mqttd.conf" {
		t.Errorf("ExecStart reads %s, want mqttd.conf in ConfigurationDirectory %s", o.file, confDir)
	}
	// The default configuration with the unit's own options.
	args := append([]string{"--test-config"}, argv[1:]...)
	for i := range args {
		if args[i] == o.file {
			args[i] = filepath.Join(packagingDir, "mqttd.conf")
		}
	}
	if code, out, errOut := exitCode(t, binary, args...); code != 0 {
		t.Fatalf("mqttd %q: exit %d\n%s%s", args, code, out, errOut)
	}
	cfg, err := config.Load(filepath.Join(packagingDir, "mqttd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if state := "/var/lib/" + u.one(t, "Service", "StateDirectory"); cfg.PersistenceLocation != state {
		t.Errorf("persistence_location %s is not the unit's StateDirectory %s: ProtectSystem=strict would make it read-only",
			cfg.PersistenceLocation, state)
	}

	// A configuration error exits 3, and the unit does not restart on it.
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte("no_such_option 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, _ := exitCode(t, binary, "-c", bad)
	if want := u.one(t, "Service", "RestartPreventExitStatus"); want != "3" || code != 3 {
		t.Errorf("bad configuration exits %d, RestartPreventExitStatus=%s: want both 3", code, want)
	}

	// mqttd is started unprivileged as the user it would switch to itself.
	if user := u.one(t, "Service", "User"); user != defaultUser {
		t.Errorf("User=%s, want %s", user, defaultUser)
	}
	sysusers, err := os.ReadFile(filepath.Join(packagingDir, "mqttd.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sysusers), "\nu "+defaultUser+" ") {
		t.Errorf("mqttd.sysusers does not create user %s", defaultUser)
	}
	want := map[string]string{
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"RestrictSUIDSGID":        "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
	}
	for k, v := range want {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("%s=%s, want %s", k, got, v)
		}
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%s", got)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: verify skipped")
		return
	}
	// verify checks that ExecStart's binary exists: point it at the one
	// built for these tests.
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := filepath.Abs(binary)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "mqttd.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(text), argv[0]+" ", bin+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestContainerfile checks packaging/Containerfile against the default
// configuration: the config it installs and runs, the volume, the port and
// a user that is not root.
func TestContainerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(packagingDir, "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var from, users []string
	var entry, cmd, volume, expose, copyConf string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), f[0]))
		switch f[0] {
		case "FROM":
			from = append(from, f[1])
		case "USER":
			users = append(users, f[1])
		case "ENTRYPOINT":
			entry = rest
		case "CMD":
			cmd = rest
		case "VOLUME":
			volume = rest
		case "EXPOSE":
			expose = rest
		case "COPY":
			if f[1] == "packaging/mqttd.conf" {
				copyConf = f[len(f)-1]
			}
		}
	}
	if len(from) < 2 {
		t.Errorf("FROM %q: want a build stage and a runtime stage", from)
	}
	if len(users) == 0 {
		t.Error("no USER: the runtime stage would run as root")
	}
	for _, u := range users {
		if u == "root" || u == "0" || strings.HasPrefix(u, "0:") {
			t.Errorf("USER %s", u)
		}
	}
	if entry != `["/usr/local/bin/mqttd"]` || cmd != `["-c", "`+copyConf+`"]` || copyConf == "" {
		t.Errorf("ENTRYPOINT %s CMD %s, config copied to %q: want mqttd -c the copied packaging/mqttd.conf",
			entry, cmd, copyConf)
	}
	cfg, err := config.Load(filepath.Join(packagingDir, "mqttd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if volume != `["`+cfg.PersistenceLocation+`"]` {
		t.Errorf("VOLUME %s, want persistence_location %s", volume, cfg.PersistenceLocation)
	}
	if expose != "1883" {
		t.Errorf("EXPOSE %s", expose)
	}
}
