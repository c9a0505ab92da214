package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
)

// Connect, subscribe, publish and disconnect.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "mqtt://localhost:1883", client.Options{ClientID: "example", Version: packet.V5})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)

	_, err = c.Subscribe(ctx, []packet.Subscription{{Filter: "sensors/+/temperature", QoS: 1}}, func(m *client.Message) {
		fmt.Printf("%s: %s\n", m.Topic, m.Payload)
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, "sensors/kitchen/temperature", []byte("21.5"), client.PublishOptions{QoS: 1}); err != nil {
		log.Fatal(err)
	}
}

// A refused connection carries the server's reason code. For a wrong
// password mqttd answers "bad user name or password" and Mosquitto "not
// authorized": check for both.
func ExampleDial_refused() {
	url, stop := exampleBroker(func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Authenticate = func(c *broker.ClientInfo) error {
			if c.Username == "alice" && string(c.Password) == "secret" {
				return nil
			}
			return errors.New("wrong password")
		}
	})
	defer stop()
	_, err := client.Dial(context.Background(), url, client.Options{
		Username: "alice", Password: []byte("wrong"),
	})
	var rc packet.ReasonCode
	if errors.As(err, &rc) && (rc == packet.BadUserNameOrPassword || rc == packet.NotAuthorized) {
		fmt.Println("refused: check the user name and password")
	}
	// Output: refused: check the user name and password
}

// TLS with a private CA and a client certificate, as mosquitto_pub's
// --cafile, --cert and --key.
func ExampleNewTLSConfig() {
	conf, err := client.NewTLSConfig("ca.crt", "client.crt", "client.key", false)
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.Dial(context.Background(), "mqtts://broker.example.com", client.Options{TLSConfig: conf})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// A client that survives network failures and restarts: a persistent
// session, automatic reconnection and a file store for unsent messages.
func ExampleNewFileStore() {
	store, err := client.NewFileStore("/var/lib/myapp/mqtt")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.Dial(context.Background(), "mqtt://broker.example.com", client.Options{
		ClientID:          "meter-42",
		PersistentSession: true,
		AutoReconnect:     true,
		Store:             store,
		OnConnectionLost:  func(_ *client.Client, err error) { log.Println("connection lost:", err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	// Accepted messages are in the store: if the process stops now, the next
	// client with the same store sends them.
	if err := c.PublishAsync(context.Background(), "meters/42", []byte("1234.5"), client.PublishOptions{QoS: 2}, nil); err != nil {
		log.Fatal(err)
	}
}

// Publish many messages without waiting for each acknowledgement.
func ExampleClient_PublishAsync() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "ws://localhost:8080/mqtt", client.Options{Version: packet.V5, MaxInflight: 100})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	results := make(chan error, 1000)
	for i := range 1000 {
		payload := fmt.Appendf(nil, "reading %d", i)
		if err := c.PublishAsync(ctx, "readings", payload, client.PublishOptions{QoS: 1}, func(err error) { results <- err }); err != nil {
			log.Fatal(err)
		}
	}
	for range 1000 {
		if err := <-results; err != nil {
			log.Println(err)
		}
	}
}

// v5: a last will with properties, published 30 s after an unexpected
// disconnection unless the client comes back.
func ExampleOptions_will() {
	opts := client.Options{
		Version: packet.V5,
		Will: &packet.Will{
			Topic:   "status/meter-42",
			Payload: []byte("offline"),
			QoS:     1,
			Retain:  true,
			Props:   &packet.Properties{WillDelay: packet.Ptr(uint32(30))},
		},
	}
	c, err := client.Dial(context.Background(), "mqtt://localhost", opts)
	if err != nil {
		log.Fatal(err)
	}
	// Disconnect normally discards the will; DisconnectWith 0x04 sends it.
	_ = c.DisconnectWith(context.Background(), &packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
}

// exampleBroker runs an mqttd broker on 127.0.0.1 for the examples.
func exampleBroker(opts ...func(*broker.Options)) (url string, stop func()) {
	o := broker.Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	srv := broker.New(o)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	return "mqtt://" + l.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}

// Automatic reconnection: OnConnect runs on every connection and
// OnConnectionLost when one ends. Here another client takes the session
// over, and the first one comes back.
func Example_reconnect() {
	url, stop := exampleBroker()
	defer stop()
	events := make(chan string, 10)
	c, err := client.Dial(context.Background(), url, client.Options{
		ClientID:         "sensor-1",
		AutoReconnect:    true,
		MinBackoff:       50 * time.Millisecond,
		OnConnect:        func(*client.Client, *packet.Connack) { events <- "connected" },
		OnConnectionLost: func(*client.Client, error) { events <- "connection lost" },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(<-events)

	// A second client with the same identifier takes the session over.
	intruder, err := client.Dial(context.Background(), url, client.Options{ClientID: "sensor-1"})
	if err != nil {
		log.Fatal(err)
	}
	_ = intruder.Close()
	fmt.Println(<-events)
	fmt.Println(<-events)
	// Output:
	// connected
	// connection lost
	// connected
}

// Request/response with MQTT 5: a Requester matches each response to its
// request by Correlation Data; the responder answers with Respond.
func ExampleRequester() {
	url, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	service, err := client.Dial(ctx, url, client.Options{Version: packet.V5})
	if err != nil {
		log.Fatal(err)
	}
	defer service.Disconnect(ctx)
	_, err = service.Subscribe(ctx, []packet.Subscription{{Filter: "svc/upper", QoS: 1}}, func(m *client.Message) {
		// Handlers run one at a time: answer from another goroutine.
		go func() {
			_ = service.Respond(ctx, m, []byte(strings.ToUpper(string(m.Payload))), client.PublishOptions{QoS: 1})
		}()
	})
	if err != nil {
		log.Fatal(err)
	}

	c, err := client.Dial(ctx, url, client.Options{Version: packet.V5})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	r, err := c.NewRequester(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := r.Request(rctx, "svc/upper", []byte("hello"), client.PublishOptions{QoS: 1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("response: %s\n", resp.Payload)
	// Output: response: HELLO
}

// Unsubscribe removes the filters and their handler routes.
func ExampleClient_Unsubscribe() {
	url, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	got := make(chan string, 10)
	subs := []packet.Subscription{{Filter: "a", QoS: 1}, {Filter: "b", QoS: 1}}
	if _, err := c.Subscribe(ctx, subs, func(m *client.Message) { got <- m.Topic + " " + string(m.Payload) }); err != nil {
		log.Fatal(err)
	}
	_ = c.Publish(ctx, "a", []byte("1"), client.PublishOptions{QoS: 1})
	fmt.Println(<-got)
	if _, err := c.Unsubscribe(ctx, "a"); err != nil {
		log.Fatal(err)
	}
	_ = c.Publish(ctx, "a", []byte("2"), client.PublishOptions{QoS: 1}) // nobody subscribed
	_ = c.Publish(ctx, "b", []byte("3"), client.PublishOptions{QoS: 1})
	fmt.Println(<-got)
	// Output:
	// a 1
	// b 3
}

// A PUBLISH the server refuses (MQTT 5) fails with an *AckError that
// carries its reason code.
func ExampleAckError() {
	url, stop := exampleBroker(func(o *broker.Options) {
		o.Authorize = func(_ *broker.ClientInfo, topic string, write bool) bool {
			return !write || !strings.HasPrefix(topic, "admin/")
		}
	})
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, url, client.Options{Version: packet.V5})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	err = c.Publish(ctx, "admin/reboot", []byte("now"), client.PublishOptions{QoS: 1})
	var ae *client.AckError
	if errors.As(err, &ae) {
		fmt.Printf("%s refused: %v\n", ae.Type, ae.ReasonCode)
	}
	if errors.Is(err, packet.NotAuthorized) {
		fmt.Println("not authorized")
	}
	// Output:
	// PUBACK refused: not authorized
	// not authorized
}
