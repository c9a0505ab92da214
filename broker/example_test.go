package broker_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/mqttd/mqttd/broker"
)

// A broker inside a Go program: an inline subscription sees what is
// published, from Go code or from clients over the network.
func ExampleServer_Subscribe() {
	srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1})
	got := make(chan string, 1)
	cancel, err := srv.Subscribe("sensors/+/temp", 1, func(m *broker.Message) {
		got <- m.Topic + " " + string(m.Payload)
	})
	if err != nil {
		panic(err)
	}
	defer cancel()
	if err := srv.Publish(&broker.Message{Topic: "sensors/kitchen/temp", Payload: []byte("21.5"), QoS: 1}); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output: sensors/kitchen/temp 21.5
}

// Serving clients and publishing to them from Go code; Shutdown stops it.
func ExampleServer_Publish() {
	srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	// Retained: a client that subscribes later still gets it.
	err = srv.Publish(&broker.Message{Topic: "config/mode", Payload: []byte("eco"), Retain: true})
	fmt.Println("published:", err == nil)
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	fmt.Println(srv.Shutdown(ctx))
	// Output:
	// published: true
	// <nil>
}
