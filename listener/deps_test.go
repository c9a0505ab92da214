package listener

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImports keeps the design's import rule: listener depends on the
// standard library and the WebSocket library only.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{"github.com/mqttd/mqttd/listener", "github.com/gorilla/websocket"}
	for _, dep := range strings.Fields(string(out)) {
		if !slices.Contains(allowed, dep) {
			t.Errorf("listener depends on %s", dep)
		}
	}
}
