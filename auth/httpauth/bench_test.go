package httpauth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth/httpauth"
	"github.com/mqttd/mqttd/broker"
)

// BenchmarkAuthorizeCached is the cost of an access check answered from the
// cache (what each delivery pays once the answer is known).
func BenchmarkAuthorizeCached(b *testing.B) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer svc.Close()
	be, err := httpauth.New(httpauth.Config{ACLURL: svc.URL, CacheTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	c := &broker.ClientInfo{ClientID: "c1", Username: "alice", HasUsername: true, Remote: "127.0.0.1:5000", Listener: "127.0.0.1:1883"}
	if err := be.Authorize(c, broker.AccessReceive, "sensors/room1/temp"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := be.Authorize(c, broker.AccessReceive, "sensors/room1/temp"); err != nil {
			b.Fatal(err)
		}
	}
	if be.Requests() != 1 {
		b.Fatalf("%d requests", be.Requests())
	}
}
