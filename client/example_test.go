package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

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

// A refused connection carries the server's reason code.
func ExampleDial_refused() {
	_, err := client.Dial(context.Background(), "mqtt://localhost:1883", client.Options{
		Username: "alice", Password: []byte("wrong"),
	})
	var rc packet.ReasonCode
	if errors.As(err, &rc) && rc == packet.BadUserNameOrPassword {
		fmt.Println("check the password:", err) // client: connection refused: bad user name or password
	}
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
