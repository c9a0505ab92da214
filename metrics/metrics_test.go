package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The endpoint serves every broker metric in the Prometheus text format,
// read fresh at each scrape.
func TestHandlerScrape(t *testing.T) {
	var scrapes atomic.Int64
	read := func() Snapshot {
		n := scrapes.Add(1)
		return Snapshot{ClientsConnected: 3, ClientsDisconnected: 2, ClientsMaximum: 7, ClientsExpired: 1,
			SocketsAccepted: 11, Subscriptions: 5, Retained: 4, PacketsReceived: 100 * n, PacketsSent: 90,
			BytesReceived: 1000, BytesSent: 900, PublishReceived: [3]int64{40, 2, 1}, PublishSent: [3]int64{30, 0, 0}, PublishBytesRecv: 400,
			PublishBytesSent: 300, DroppedQueueFull: 6, DroppedBacklog: 13, DroppedTooLarge: 14, StoreWrites: 15, StoreWriteSeconds: 0.5, RefusedMaxConns: 8, RefusedConnRate: 16, PublishRateWaits: 17, Inflight: 9, Queued: 10,
			AuthFailures: 12, PollSpins: 18, PollSpinHits: 19, Uptime: 90 * time.Second}
	}
	srv := httptest.NewServer(Handler(read))
	defer srv.Close()
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	body := scrape()
	for _, want := range []string{
		"mqttd_clients_connected 3\n",
		"mqttd_clients_disconnected 2\n",
		"mqttd_sessions 5\n",
		"mqttd_clients_maximum 7\n",
		"mqttd_clients_expired_total 1\n",
		"mqttd_connections_accepted_total 11\n",
		`mqttd_connections_refused_total{reason="max_connections"} 8` + "\n",
		`mqttd_connections_refused_total{reason="max_connection_rate"} 16` + "\n",
		"mqttd_publish_rate_waits_total 17\n",
		"mqttd_subscriptions 5\n",
		"mqttd_retained_messages 4\n",
		"mqttd_packets_received_total 100\n",
		"mqttd_packets_sent_total 90\n",
		"mqttd_bytes_received_total 1000\n",
		"mqttd_bytes_sent_total 900\n",
		`mqttd_messages_received_total{qos="0"} 40` + "\n",
		`mqttd_messages_received_total{qos="1"} 2` + "\n",
		`mqttd_messages_received_total{qos="2"} 1` + "\n",
		`mqttd_messages_sent_total{qos="0"} 30` + "\n",
		`mqttd_messages_dropped_total{reason="backlog"} 13` + "\n",
		`mqttd_messages_dropped_total{reason="too_large"} 14` + "\n",
		"mqttd_store_writes_total 15\n",
		"mqttd_store_write_seconds_total 0.5\n",
		"mqttd_message_bytes_received_total 400\n",
		"mqttd_message_bytes_sent_total 300\n",
		`mqttd_messages_dropped_total{reason="queue_full"} 6` + "\n",
		"mqttd_messages_inflight 9\n",
		"mqttd_messages_queued 10\n",
		"mqttd_auth_failures_total 12\n",
		"mqttd_poll_spins_total 18\n",
		"mqttd_poll_spin_hits_total 19\n",
		"mqttd_uptime_seconds 90\n",
		"# TYPE mqttd_clients_connected gauge\n",
		"# TYPE mqttd_auth_failures_total counter\n",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if body := scrape(); !strings.Contains(body, "mqttd_packets_received_total 200\n") {
		t.Errorf("second scrape did not read a new snapshot")
	}
}
