package main

import (
	"runtime/debug"
)

// version is the version mqttd reports (--version, -h, the log's first
// lines, $SYS/broker/version). A release build stamps it:
//
//	go build -ldflags "-X main.version=1.2.3" ./cmd/mqttd
//
// Left empty, it is read from the build information the Go toolchain
// records in the binary (see resolveVersion).
var version string

func init() {
	bi, _ := debug.ReadBuildInfo()
	version = resolveVersion(version, bi)
}

// resolveVersion returns stamped when a build stamped it. Otherwise it
// uses the module version recorded by `go install module@version` (or by
// `go build` in a tagged checkout), then the VCS revision `go build`
// records in a checkout ("devel+1a2b3c4d5e6f", "-dirty" with uncommitted
// changes), and "devel" when the binary says nothing (go build
// -buildvcs=false, go run, go test).
func resolveVersion(stamped string, bi *debug.BuildInfo) string {
	if stamped != "" {
		return stamped
	}
	if bi == nil {
		return "devel"
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel+" + rev
	if dirty {
		v += "-dirty"
	}
	return v
}

// versionLine is the first line of -h and the whole of --version, as
// mosquitto prints "mosquitto version 2.0.18".
func versionLine() string {
	return "mqttd version " + version
}
