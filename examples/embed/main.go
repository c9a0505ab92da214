// Command embed runs mqttd inside a Go program: a listener for devices, an
// access-control hook written in Go (each device may publish only under
// devices/<its client id>/), an inline subscription that sees every reading
// without a socket, and commands published from Go code.
//
//	go run ./examples/embed -addr 127.0.0.1:1883
//	mosquitto_pub -i pump1 -t devices/pump1/temp -m 40   # seen by the program
//	mosquitto_pub -i pump1 -t devices/pump2/temp -m 40   # refused by the hook
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mqttd/mqttd/broker"
)

// ownTopics is an Authorizer: a device publishes only under its own prefix;
// everything else is left to the next hook (none here: allowed).
type ownTopics struct{}

func (ownTopics) Authorize(c *broker.ClientInfo, a broker.Access, topic string) error {
	if a != broker.AccessPublish {
		return broker.ErrDefer
	}
	if strings.HasPrefix(topic, "devices/"+c.ClientID+"/") {
		return nil
	}
	return errors.New("devices publish under devices/<client id>/ only")
}

// run serves l until ctx ends, printing each reading it sees.
func run(ctx context.Context, l net.Listener, readings chan<- string) error {
	srv := broker.New(broker.Options{AllowAnonymous: true, Hooks: []any{ownTopics{}}})
	cancel, err := srv.Subscribe("devices/+/temp", 1, func(m *broker.Message) {
		readings <- fmt.Sprintf("%s = %s", m.Topic, m.Payload)
		if t, err := strconv.ParseFloat(string(m.Payload), 64); err == nil && t > 80 {
			// Too hot: tell that device to stop, from Go code.
			id := strings.Split(m.Topic, "/")[1]
			go srv.Publish(&broker.Message{Topic: "commands/" + id, Payload: []byte("stop"), QoS: 1})
		}
	})
	if err != nil {
		return err
	}
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	return srv.Shutdown(sctx)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "address to listen on")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	readings := make(chan string, 64)
	go func() {
		for r := range readings {
			fmt.Println(r)
		}
	}()
	log.Printf("listening on %s", l.Addr())
	if err := run(ctx, l, readings); err != nil {
		log.Fatal(err)
	}
}
