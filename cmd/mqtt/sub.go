package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// receiver applies mosquitto_sub's message handling: -T, -R,
// --retained-only, --remove-retained, printing and the -C count.
type receiver struct {
	c   *config
	cl  *client.Client
	p   *printer
	out io.Writer
	dbg *debugLog

	mu       sync.Mutex
	count    int
	finished bool
	done     chan struct{}
	buf      bytes.Buffer
}

func newReceiver(c *config, p *printer, out io.Writer, dbg *debugLog) *receiver {
	return &receiver{c: c, p: p, out: out, dbg: dbg, done: make(chan struct{})}
}

func (r *receiver) finishLocked() {
	if !r.finished {
		r.finished = true
		close(r.done)
	}
}

// handle runs on the client's delivery goroutine, one message at a time.
func (r *receiver) handle(m *client.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	if r.c.retainedOnly && !m.Retain {
		// The first fresh message ends a --retained-only run.
		r.finishLocked()
		return
	}
	for _, f := range r.c.filterOut {
		if topicMatch(f, m.Topic) {
			return
		}
	}
	if r.c.removeRet && m.Retain && r.cl != nil {
		// A zero-length retained message clears the retained one [MQTT-3.3.1-10].
		_ = r.cl.PublishAsync(context.Background(), m.Topic, nil, client.PublishOptions{Retain: true}, nil)
	}
	if r.c.noRetained && m.Retain {
		return
	}
	r.buf.Reset()
	r.p.print(&r.buf, m)
	if _, err := r.out.Write(r.buf.Bytes()); err != nil {
		r.finishLocked() // stdout closed (e.g. a pipe to head): stop
		return
	}
	r.count++
	if r.c.count > 0 && r.count >= r.c.count {
		r.finishLocked()
	}
}

// topicMatch reports whether topic matches filter; wildcards at the first
// level do not match topics beginning with '$' [MQTT-4.7.2-1].
func topicMatch(filter, name string) bool { return topic.Match(filter, name) }

func (c *config) subscriptions() []packet.Subscription {
	subs := make([]packet.Subscription, len(c.topics))
	for i, t := range c.topics {
		subs[i] = packet.Subscription{Filter: t, QoS: c.qos, RetainAsPublished: c.retainAsPub}
	}
	return subs
}

func (c *config) propsOrNil(p packet.Properties) *packet.Properties {
	if c.version != packet.V5 || reflect.ValueOf(p).IsZero() {
		return nil
	}
	return &p
}

// subscribe sends one SUBSCRIBE for all -t filters and prints the -d lines.
func subscribe(ctx context.Context, cl *client.Client, c *config, subs []packet.Subscription, h client.Handler, dbg *debugLog) error {
	ack, err := cl.SubscribeWith(ctx, subs, c.propsOrNil(c.subscribeProps), h)
	if ack != nil {
		if dbg.on {
			codes := make([]string, len(ack.ReasonCodes))
			for i, rc := range ack.ReasonCodes {
				codes[i] = fmt.Sprint(byte(rc))
			}
			fmt.Fprintf(dbg.w, "Subscribed (mid: %d): %s\n", ack.PacketID, strings.Join(codes, ", "))
		}
	}
	if err == nil {
		return nil
	}
	if ack != nil {
		granted := 0
		for _, rc := range ack.ReasonCodes {
			if !rc.IsError() {
				granted++
			}
		}
		if granted > 0 {
			if !c.quiet {
				fmt.Fprintf(dbg.errOut(), "Warning: %s\n", strings.TrimPrefix(err.Error(), "client: "))
			}
			return nil
		}
		return &exitError{code: 1, msg: "Error: All subscription requests were denied: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	return &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
}

// waitResult waits for the receiver to finish, the -W timeout, a signal or
// the loss of the connection.
func waitResult(ctx context.Context, c *config, cl *client.Client, r *receiver, timeout <-chan time.Time, stderr io.Writer) error {
	select {
	case <-r.done:
		return nil
	case <-timeout:
		if !c.quiet {
			fmt.Fprintln(stderr, "Timed out")
		}
		return &exitError{code: exitTimeout}
	case <-ctx.Done():
		return nil
	case <-cl.Done():
		err := cl.Err()
		if err == nil {
			err = errors.New("connection closed")
		}
		return &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
}

// runSub is mqtt sub: mosquitto_sub's behaviour.
func runSub(ctx context.Context, c *config, stdout, stderr io.Writer) error {
	p, err := newPrinter(c, stderr)
	if err != nil {
		return err
	}
	o, err := c.clientOptions()
	if err != nil {
		return err
	}
	out := &syncWriter{w: stdout}
	dbg := &debugLog{on: c.debug, w: out, err: stderr}
	r := newReceiver(c, p, out, dbg)
	o.DefaultHandler = r.handle // messages of a resumed session (-c)
	o.AutoReconnect = true      // mosquitto_sub reconnects after a lost connection
	var timeout <-chan time.Time
	if c.timeout > 0 {
		t := time.NewTimer(time.Duration(c.timeout) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	cl, err := dial(ctx, c, o, dbg)
	if err != nil {
		return err
	}
	defer cl.Close()
	r.mu.Lock()
	r.cl = cl
	r.mu.Unlock()
	if len(c.topics) > 0 {
		if err := subscribe(ctx, cl, c, c.subscriptions(), r.handle, dbg); err != nil {
			return err
		}
	}
	if len(c.unsubs) > 0 {
		if _, err := cl.Unsubscribe(ctx, c.unsubs...); err != nil {
			return &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
		}
	}
	if c.exitOnSubAck {
		return disconnect(cl, c, dbg)
	}
	werr := waitResult(ctx, c, cl, r, timeout, stderr)
	r.mu.Lock()
	r.finished = true
	r.mu.Unlock()
	if derr := disconnect(cl, c, dbg); derr != nil && werr == nil && !errors.Is(derr, client.ErrClosed) {
		werr = &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(derr.Error(), "client: ")}
	}
	return werr
}

// runRR is mqtt rr: subscribe to the response topic (-e), publish the
// request to -t with a Response Topic property (v5), print the first
// response, as mosquitto_rr.
func runRR(ctx context.Context, c *config, stdin io.Reader, stdout, stderr io.Writer) error {
	payload, err := readPayload(c, stdin)
	if err != nil {
		return err
	}
	p, err := newPrinter(c, stderr)
	if err != nil {
		return err
	}
	o, err := c.clientOptions()
	if err != nil {
		return err
	}
	out := &syncWriter{w: stdout}
	dbg := &debugLog{on: c.debug, w: out, err: stderr}
	rc := *c
	rc.count = 1
	r := newReceiver(&rc, p, out, dbg)
	var timeout <-chan time.Time
	if c.timeout > 0 {
		t := time.NewTimer(time.Duration(c.timeout) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	cl, err := dial(ctx, c, o, dbg)
	if err != nil {
		return err
	}
	defer cl.Close()
	sub := []packet.Subscription{{Filter: c.respTopic, QoS: c.qos}}
	if _, err := cl.SubscribeWith(ctx, sub, c.propsOrNil(c.subscribeProps), r.handle); err != nil {
		return &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	po := client.PublishOptions{QoS: c.qos, Props: c.publishPropsOrNil()}
	if c.version == packet.V5 {
		props := packet.Properties{}
		if po.Props != nil {
			props = *po.Props
		}
		props.ResponseTopic = c.respTopic // the MQTT v5 request/response pattern (4.10)
		po.Props = &props
	}
	if err := cl.Publish(ctx, c.topics[0], payload, po); err != nil {
		return &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	werr := waitResult(ctx, c, cl, r, timeout, stderr)
	r.mu.Lock()
	r.finished = true
	r.mu.Unlock()
	if derr := disconnect(cl, c, dbg); derr != nil && werr == nil && !errors.Is(derr, client.ErrClosed) {
		werr = &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(derr.Error(), "client: ")}
	}
	return werr
}
