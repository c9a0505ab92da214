package broker_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// Bridges and the cluster report under $SYS through AddSysSource: published
// (retained) every sys_interval, only when the value changed.
func TestAddSysSource(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.SysInterval = 50 * time.Millisecond })
	var n atomic.Int64
	// The source reports only once the client has subscribed: a value
	// first published while the SUBSCRIBE was being handled could reach
	// the client twice, as the retained copy the subscription found and
	// as the live message routed to it, which says nothing of the source.
	var subscribed atomic.Bool
	srv.AddSysSource(func(put func(topic, value string)) {
		if !subscribed.Load() {
			return
		}
		put("$SYS/broker/bridges/b1/state", "1")
		if n.Add(1) >= 3 {
			put("$SYS/broker/bridges/b1/reconnects", "2")
		}
	})
	c, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "w", CleanStart: true})
	c.Subscribe(1, 0, "$SYS/broker/bridges/#")
	subscribed.Store(true)
	got := map[string]string{}
	for len(got) < 2 {
		p := c.ExpectPublish()
		if old, seen := got[p.Topic]; seen && old == string(p.Payload) && !p.Retain {
			t.Fatalf("%s published again unchanged", p.Topic)
		}
		got[p.Topic] = string(p.Payload)
	}
	if got["$SYS/broker/bridges/b1/state"] != "1" || got["$SYS/broker/bridges/b1/reconnects"] != "2" {
		t.Fatalf("got %v", got)
	}
}
