package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/mqttd/mqttd/"

// allowed lists, for each package, the project packages it may depend on
// (directly or not) and whether it may use modules outside the standard
// library. Test-only packages are not checked.
var allowed = map[string]struct {
	project  []string
	external bool
}{
	"packet": {nil, false},
	"topic":  {nil, false},
	"auth":   {[]string{"topic"}, true},
	// The SCRAM exchange is shared by the broker and the client: it must
	// stay free of everything else in the project.
	"auth/scram": {nil, true},
	"listener":   {nil, true},
	"store":      {[]string{"packet"}, false},
	"broker":     {[]string{"packet", "topic", "auth", "store", "metrics"}, true},
	"client":     {[]string{"packet", "topic", "auth/scram"}, true},
	"cmd/mqtt":   {[]string{"client", "packet", "topic", "auth/scram", "internal/strftime"}, true},
	// Process-wide memory policy, run by cmd/mqttd.
	"internal/memtrim": {nil, false},

	// The HTTP and JWT backends are broker hooks: the broker (and what it
	// brings in, store and metrics) and auth, nothing of config.
	"auth/httpauth": {[]string{"broker", "packet", "topic", "auth", "store", "metrics"}, true},
	"auth/jwtauth":  {[]string{"broker", "packet", "topic", "auth", "store", "metrics"}, true},
	// Mosquitto's dynamic-security plugin, built in: a broker hook too.
	"auth/dynsec": {[]string{"broker", "packet", "topic", "auth", "store", "metrics"}, true},

	// Bridges: a client of the remote broker and of the local one (over
	// broker.Server.DialLocal).
	"bridge": {[]string{"broker", "client", "packet", "topic", "store", "auth", "auth/scram", "metrics"}, true},
	// The cluster (embedded nats-server): a broker hook and the embedding
	// API, nothing of config.
	"cluster": {[]string{"broker", "packet", "topic", "store", "auth", "metrics"}, true},

	// The admin API and dashboard: the broker's read-only views and
	// embedding API, and auth's password files.
	"admin": {[]string{"broker", "metrics", "packet", "topic", "auth", "store"}, true},
}

func TestImportDirection(t *testing.T) {
	for pkg, rule := range allowed {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "../../"+pkg).CombinedOutput()
			if err != nil {
				if strings.Contains(string(out), "no Go files") || strings.Contains(string(out), "cannot find") {
					t.Skipf("%s does not exist yet", pkg)
				}
				t.Fatalf("go list %s: %v\n%s", pkg, err, out)
			}
			ok := map[string]bool{pkg: true}
			for _, p := range rule.project {
				ok[p] = true
			}
			for _, dep := range strings.Fields(string(out)) {
				if rest, isProject := strings.CutPrefix(dep, mod); isProject {
					top := rest
					if !strings.HasPrefix(rest, "cmd/") {
						top, _, _ = strings.Cut(rest, "/")
					}
					if !ok[top] && !ok[rest] {
						t.Errorf("%s depends on %s (allowed: %v)", pkg, rest, rule.project)
					}
					continue
				}
				if !rule.external {
					t.Errorf("%s depends on %s outside the standard library", pkg, dep)
				}
			}
		})
	}
}
