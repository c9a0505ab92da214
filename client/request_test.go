package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Many requests in flight at once each get their own response; a request
// nobody answers times out and leaves nothing behind.
func TestRequestResponse(t *testing.T) {
	srv := startBroker(t)
	server := dial(t, srv.URL(), Options{Version: packet.V5})
	subscribe(t, server, "svc/upper", 1, func(m *Message) {
		go func() {
			if err := server.Respond(context.Background(), m, bytes.ToUpper(m.Payload), PublishOptions{QoS: 1}); err != nil {
				t.Errorf("Respond: %v", err)
			}
		}()
	})
	c := dial(t, srv.URL(), Options{Version: packet.V5})
	r, err := c.NewRequester(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m, err := r.Request(ctx, "svc/upper", fmt.Appendf(nil, "req %d", i), PublishOptions{QoS: 1})
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			if want := fmt.Sprintf("REQ %d", i); string(m.Payload) != want {
				t.Errorf("request %d got %q", i, m.Payload)
			}
		}()
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := r.Request(ctx, "svc/nobody", nil, PublishOptions{QoS: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered request: %v", err)
	}
	r.mu.Lock()
	n := len(r.pending)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d requests still pending", n)
	}
	if err := r.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Respond(testCtx(t), &Message{Topic: "x"}, nil, PublishOptions{}); err == nil {
		t.Fatal("Respond to a message without Response Topic succeeded")
	}
}
