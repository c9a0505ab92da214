package packet_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the import direction honest: packet uses the standard
// library only, and packettest adds only packet.
func TestImports(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		allowed map[string]bool
	}{
		{".", nil},
		{"../internal/packettest", map[string]bool{"github.com/mqttd/mqttd/packet": true}},
	} {
		files, err := filepath.Glob(filepath.Join(tc.dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", tc.dir, err)
		}
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				stdlib := !strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
				if !stdlib && !tc.allowed[path] {
					t.Errorf("%s imports %s", name, path)
				}
			}
		}
	}
}
