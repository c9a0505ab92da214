package admin_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mqttd/mqttd/admin"
	"github.com/mqttd/mqttd/broker"
)

// TestScale100kTopics: 100,000 retained topics (100 levels of 1,000) and
// the live tree fed with a message on each: a page of the topic tree, of
// retained messages and a live level stay quick.
func TestScale100kTopics(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	e := start(t, admin.Config{})
	rd, _ := e.stream(t, "/stream/topics?prefix=s/b7")
	rd.next(t)
	t0 := time.Now()
	for i := range 100_000 {
		m := &broker.Message{Topic: fmt.Sprintf("s/b%d/t%d", i/1000, i%1000), Payload: []byte("x"), Retain: true}
		if err := e.b.Publish(m); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("published 100k retained in %v", time.Since(t0))
	for _, path := range []string{"/topics?prefix=s&limit=100", "/topics?prefix=s/b7&limit=1000", "/retained?limit=1000",
		"/retained?prefix=s/b99&limit=100"} {
		t0 := time.Now()
		st, m := e.do(t, "GET", path, nil)
		d := time.Since(t0)
		n := len(items(t, m))
		t.Logf("GET %s: %d items in %v", path, n, d)
		if st != 200 || n == 0 {
			t.Fatalf("%s: %d %v", path, st, m)
		}
	}
	// The stream reports the 1,000 levels below s/b7, at most 500 an event.
	_, m := rd.next(t)
	if n := len(m["topics"].([]any)); n != 500 || m["more"] != true {
		t.Fatalf("stream event: %d topics, more %v", n, m["more"])
	}
}
