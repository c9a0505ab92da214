package config

import (
	"strings"
	"testing"
)

// TestMaxBacklogBytes: max_backlog_bytes reaches broker.Options.MaxBacklogBytes;
// a negative or non-numeric value is an error naming the key.
func TestMaxBacklogBytes(t *testing.T) {
	cfg, err := Parse(strings.NewReader("max_backlog_bytes 65536\n"), "b.conf")
	if err != nil || cfg.Broker.MaxBacklogBytes != 65536 {
		t.Fatalf("max_backlog_bytes: %v %d", err, cfg.Broker.MaxBacklogBytes)
	}
	for _, bad := range []string{"max_backlog_bytes -1\n", "max_backlog_bytes lots\n"} {
		if _, err := Parse(strings.NewReader(bad), "b.conf"); err == nil || !strings.Contains(err.Error(), "max_backlog_bytes") {
			t.Errorf("%q: err %v, want an error naming the key", bad, err)
		}
	}
}
