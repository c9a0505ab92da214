package broker_test

import (
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// mosquittoSysTopics are $SYS topics Mosquitto publishes that tools read.
var mosquittoSysTopics = []string{
	"$SYS/broker/version", "$SYS/broker/uptime",
	"$SYS/broker/clients/connected", "$SYS/broker/clients/disconnected", "$SYS/broker/clients/total",
	"$SYS/broker/clients/maximum", "$SYS/broker/clients/expired", "$SYS/broker/clients/active", "$SYS/broker/clients/inactive",
	"$SYS/broker/messages/received", "$SYS/broker/messages/sent", "$SYS/broker/messages/stored",
	"$SYS/broker/bytes/received", "$SYS/broker/bytes/sent",
	"$SYS/broker/publish/messages/received", "$SYS/broker/publish/messages/sent", "$SYS/broker/publish/messages/dropped",
	"$SYS/broker/publish/bytes/received", "$SYS/broker/publish/bytes/sent",
	"$SYS/broker/subscriptions/count", "$SYS/broker/retained messages/count", "$SYS/broker/store/messages/count",
	"$SYS/broker/load/messages/received/1min", "$SYS/broker/load/connections/5min", "$SYS/broker/load/bytes/sent/15min",
}

// $SYS topics are published every SysInterval under Mosquitto's names,
// retained; filters beginning with a wildcard do not match them
// [MQTT-4.7.2-1]; clients cannot publish to them.
func TestSys_PublishedRetainedAndHidden_MQTT_4_7_2_1(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.SysInterval = 100 * time.Millisecond
		o.Version = "mqttd test"
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		wild := client(t, srv, v, "wild")
		subscribe(t, wild, 1, 0, "#", "+/broker/#", "+/broker/uptime")

		sys := client(t, srv, v, "sys")
		subscribe(t, sys, 1, 0, "$SYS/#")
		seen := map[string]string{}
		deadline := time.Now().Add(fiveSec)
		for !isKnown(seen) && time.Now().Before(deadline) {
			m := sys.ExpectPublish()
			seen[m.Topic] = string(m.Payload)
		}
		for _, want := range mosquittoSysTopics {
			if _, ok := seen[want]; !ok {
				t.Errorf("%s not published (saw %d topics)", want, len(seen))
			}
		}
		if seen["$SYS/broker/version"] != "mqttd test" {
			t.Errorf("$SYS/broker/version = %q", seen["$SYS/broker/version"])
		}
		// Retained: a new subscriber gets the value at once, RETAIN 1.
		late := client(t, srv, v, "late")
		subscribe(t, late, 1, 0, "$SYS/broker/version")
		expectPub(t, late, retainedPub("$SYS/broker/version", "mqttd test", 0, 0))

		// A client cannot publish to $SYS (5.0 says not authorized).
		want := packet.Success
		if v == packet.V5 {
			want = packet.NotAuthorized
		}
		if rc := late.Publish(retainedPub("$SYS/broker/version", "fake", 1, 5)); rc != want {
			t.Fatalf("PUBACK for $SYS publish: %v, want %v", rc, want)
		}
		late.ExpectNothing(quiet)
		subscribe(t, late, 2, 0, "$SYS/broker/version")
		expectPub(t, late, retainedPub("$SYS/broker/version", "mqttd test", 0, 0))

		// After all that $SYS traffic the wildcard subscriber saw none of it.
		wild.ExpectNothing(quiet)
	})
}

// isKnown reports whether every expected topic was seen.
func isKnown(seen map[string]string) bool {
	for _, want := range mosquittoSysTopics {
		if _, ok := seen[want]; !ok {
			return false
		}
	}
	return true
}

// $SYS/broker/clients/connected follows the number of connected clients.
func TestSys_ClientsConnectedUpdates(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.SysInterval = 100 * time.Millisecond })
	sys := client(t, srv, packet.V311, "sysclients")
	subscribe(t, sys, 1, 0, "$SYS/broker/clients/connected")
	for _, want := range []string{"1", "2"} {
		for {
			m := sys.ExpectPublish()
			if string(m.Payload) == want {
				break
			}
		}
		if want == "1" {
			client(t, srv, packet.V5, "second")
		}
	}
}
