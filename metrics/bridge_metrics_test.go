package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBridgeMetrics(t *testing.T) {
	h := Handler(func() Snapshot {
		return Snapshot{Bridges: []BridgeSnapshot{
			{Name: "edge", Connected: true, MessagesSent: 7, BytesSent: 448, Queued: 2, Reconnects: 1},
			{Name: "backup", Dropped: 3},
		}}
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`mqttd_bridge_up{bridge="edge"} 1`, `mqttd_bridge_up{bridge="backup"} 0`,
		`mqttd_bridge_messages_sent_total{bridge="edge"} 7`, `mqttd_bridge_bytes_sent_total{bridge="edge"} 448`,
		`mqttd_bridge_queued_messages{bridge="edge"} 2`, `mqttd_bridge_reconnects_total{bridge="edge"} 1`,
		`mqttd_bridge_dropped_total{bridge="backup"} 3`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("missing %s", want)
		}
	}
}
