package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Connection ends are served as mqttd_disconnects_total with a reason label,
// one series per reason the snapshot names.
func TestDisconnectsByReason(t *testing.T) {
	read := func() Snapshot {
		return Snapshot{DisconnectsByReason: map[string]int64{"shutdown": 2, "taken_over": 1, "keepalive_timeout": 0}}
	}
	srv := httptest.NewServer(Handler(read))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	for _, want := range []string{
		"# TYPE mqttd_disconnects_total counter\n",
		`mqttd_disconnects_total{reason="shutdown"} 2` + "\n",
		`mqttd_disconnects_total{reason="taken_over"} 1` + "\n",
		`mqttd_disconnects_total{reason="keepalive_timeout"} 0` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
