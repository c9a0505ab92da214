package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mqttd/mqttd/packet"
)

// Requester sends MQTT 5 requests and matches their responses (MQTT 5.0
// section 4.10): each request carries a Response Topic and a unique
// Correlation Data, and the response to it is the message on that topic
// with the same Correlation Data. Any number of requests may be in flight
// at once. Create one with NewRequester; it is safe for concurrent use.
type Requester struct {
	c     *Client
	topic string
	base  string // correlation data prefix, unique per Requester

	seq     atomic.Uint64
	mu      sync.Mutex
	pending map[string]chan *Message
}

// NewRequester subscribes to responseTopic (QoS 1) and returns a Requester
// that asks for responses there. An empty responseTopic is replaced by a
// unique one under "responses/". The subscription is restored on
// reconnection like any other; Close removes it.
func (c *Client) NewRequester(ctx context.Context, responseTopic string) (*Requester, error) {
	if c.version != packet.V5 {
		return nil, errors.New("client: request/response needs MQTT 5")
	}
	var b [8]byte
	_, _ = crand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if responseTopic == "" {
		responseTopic = "responses/" + id
	}
	if !validTopicName(responseTopic) {
		return nil, fmt.Errorf("%w: response topic %q", ErrInvalidTopic, responseTopic)
	}
	r := &Requester{c: c, topic: responseTopic, base: id, pending: make(map[string]chan *Message)}
	if _, err := c.Subscribe(ctx, []packet.Subscription{{Filter: responseTopic, QoS: 1}}, r.handle); err != nil {
		return nil, err
	}
	return r, nil
}

// ResponseTopic is the topic the responses come to.
func (r *Requester) ResponseTopic() string { return r.topic }

func (r *Requester) handle(m *Message) {
	if m.Props == nil || m.Props.CorrelationData == nil {
		return
	}
	r.mu.Lock()
	ch := r.pending[string(m.Props.CorrelationData)]
	delete(r.pending, string(m.Props.CorrelationData))
	r.mu.Unlock()
	if ch != nil {
		ch <- m // buffered: never blocks
	}
}

// Request publishes payload to topic as a request (o.Props, if any, is
// copied and gets the Response Topic and Correlation Data) and waits for
// the response until ctx ends. A late response is dropped.
func (r *Requester) Request(ctx context.Context, topic string, payload []byte, o PublishOptions) (*Message, error) {
	corr := fmt.Appendf(nil, "%s-%d", r.base, r.seq.Add(1))
	var props packet.Properties
	if o.Props != nil {
		props = *o.Props
	}
	props.ResponseTopic, props.CorrelationData = r.topic, corr
	o.Props = &props
	ch := make(chan *Message, 1)
	r.mu.Lock()
	r.pending[string(corr)] = ch
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		delete(r.pending, string(corr))
		r.mu.Unlock()
	}
	if err := r.c.Publish(ctx, topic, payload, o); err != nil {
		forget()
		return nil, fmt.Errorf("client: request: %w", err)
	}
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("client: request to %s: no response: %w", topic, ctx.Err())
	case <-r.c.done:
		forget()
		return nil, r.c.err
	}
}

// Close unsubscribes from the response topic; requests still waiting get
// no response.
func (r *Requester) Close(ctx context.Context) error {
	_, err := r.c.Unsubscribe(ctx, r.topic)
	return err
}

// Respond publishes payload as the response to the request req: to its
// Response Topic, with its Correlation Data (MQTT 5.0 section 4.10). It
// fails if req has no Response Topic.
func (c *Client) Respond(ctx context.Context, req *Message, payload []byte, o PublishOptions) error {
	if req.Props == nil || req.Props.ResponseTopic == "" {
		return errors.New("client: respond: the request has no Response Topic")
	}
	var props packet.Properties
	if o.Props != nil {
		props = *o.Props
	}
	props.CorrelationData = req.Props.CorrelationData
	o.Props = &props
	return c.Publish(ctx, req.Props.ResponseTopic, payload, o)
}
