package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
)

func TestEmbedExample(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	readings := make(chan string, 8)
	done := make(chan error, 1)
	go func() { done <- run(ctx, l, readings) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, "mqtt://"+l.Addr().String(), client.Options{ClientID: "pump1", Version: packet.V5})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmds := make(chan string, 1)
	if _, err := c.Subscribe(dctx, []packet.Subscription{{Filter: "commands/pump1", QoS: 1}}, func(m *client.Message) {
		cmds <- string(m.Payload)
	}); err != nil {
		t.Fatal(err)
	}
	// Another device's topic: refused by the hook (PUBACK 0x87).
	if err := c.Publish(dctx, "devices/pump2/temp", []byte("1"), client.PublishOptions{QoS: 1}); err == nil {
		t.Error("publishing under another device's prefix was accepted")
	}
	if err := c.Publish(dctx, "devices/pump1/temp", []byte("95"), client.PublishOptions{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-readings:
		if r != "devices/pump1/temp = 95" {
			t.Errorf("reading %q", r)
		}
	case <-dctx.Done():
		t.Fatal("no reading")
	}
	select {
	case cmd := <-cmds:
		if cmd != "stop" {
			t.Errorf("command %q", cmd)
		}
	case <-dctx.Done():
		t.Fatal("no command")
	}
}
