package broker_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// BenchmarkFaninQoS1 is issue 11's QoS 1 fan-in over real sockets: 50
// publishers send QoS 1 PUBLISHes (64-byte payloads) to topics of their
// own, one subscriber of "bench/#" acknowledges each message as it reads
// it, and the subscriber's in-flight window is the server's default
// (max_inflight_messages 20), so the rate is bound by the round trip from
// a PUBACK to the next PUBLISH. As mqtt bench does, publishers pause while
// 500 messages are published but not yet received. One operation is one
// message delivered; the clients are raw sockets that allocate nothing per
// message, so allocs/op is the server's (the message, its body: nothing
// per delivery). The load runs in the same process: compare runs.
//
//	go test -run '^$' -bench FaninQoS1 -benchtime 200000x -benchmem -cpuprofile /tmp/f.prof ./broker/
func BenchmarkFaninQoS1(b *testing.B) { benchFanin(b, false) }

// BenchmarkFaninQoS1Persistent is BenchmarkFaninQoS1 to a persistent
// session in a Pebble store that syncs every write before its
// acknowledgement (persistence_sync always): allocs/op adds the store's.
//
//	go test -run '^$' -bench FaninQoS1Persistent -benchtime 100000x -benchmem ./broker/
func BenchmarkFaninQoS1Persistent(b *testing.B) { benchFanin(b, true) }

func benchFanin(b *testing.B, persistent bool) {
	const (
		publishers  = 50
		pubWindow   = 64  // in flight per publisher (mqtt bench --window)
		outstanding = 500 // published, not yet received (mqtt bench --max-outstanding)
	)
	srv := brokertest.Start(b, func(o *broker.Options) {
		o.MaxQueuedMessages = 100000
		if persistent {
			st, err := pebble.Open(b.TempDir(), pebble.Options{Sync: store.SyncAlways})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			o.Store = st
		}
	})
	sub, _ := brokertest.DialConnect(b, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "fanin-sub",
		CleanStart: !persistent})
	sub.Subscribe(1, 1, "bench/#")
	pubs := make([]net.Conn, publishers)
	for i := range pubs {
		c, _ := brokertest.DialConnect(b, srv.Addr, &packet.Connect{Version: packet.V311,
			ClientID: fmt.Sprintf("fanin-pub-%d", i), CleanStart: true})
		pubs[i] = c.NC
	}
	tokens := make(chan struct{}, outstanding)
	for range outstanding {
		tokens <- struct{}{}
	}
	var received atomic.Int64
	subErr := make(chan error, 1)
	b.ReportAllocs()
	b.SetBytes(64)
	b.ResetTimer()
	start := time.Now()
	go func() { subErr <- faninSubscriber(sub.NC, b.N, tokens, &received) }()
	var wg sync.WaitGroup
	var pubErr atomic.Value
	per := b.N / publishers
	for i, nc := range pubs {
		n := per
		if i == 0 {
			n += b.N % publishers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := faninPublisher(nc, fmt.Sprintf("bench/%d", i), n, pubWindow, tokens); err != nil {
				pubErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if err, _ := pubErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-subErr:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		b.Fatalf("subscriber received %d of %d", received.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// faninPublisher sends n QoS 1 PUBLISHes to topic, at most window
// unacknowledged, each after taking a token (given back by the subscriber
// when the message arrives).
func faninPublisher(nc net.Conn, topic string, n, window int, tokens chan struct{}) error {
	frame, err := (&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: make([]byte, 64)}).Encode(nil, packet.V311)
	if err != nil {
		return err
	}
	idAt := len(frame) - 64 - 2
	acks := make(chan struct{}, window)
	readErr := make(chan error, 1)
	go func() {
		var ack [4]byte
		for range n {
			if _, err := io.ReadFull(nc, ack[:]); err != nil || ack[0] != 0x40 {
				readErr <- fmt.Errorf("publisher %s: PUBACK: % x %v", topic, ack, err)
				return
			}
			<-acks
		}
		readErr <- nil
	}()
	w := bufio.NewWriterSize(nc, 16<<10)
	for i := range n {
		<-tokens
		select {
		case acks <- struct{}{}:
		default:
			// The window is full: what is buffered goes out before waiting.
			if err := w.Flush(); err != nil {
				return err
			}
			acks <- struct{}{}
		}
		binary.BigEndian.PutUint16(frame[idAt:], uint16(i%65535+1))
		w.Write(frame)
		if len(tokens) == 0 || w.Available() < len(frame) {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return <-readErr
}

// faninSubscriber reads n QoS 1 PUBLISHes and acknowledges each, the
// acknowledgements written when nothing more is buffered to read.
func faninSubscriber(nc net.Conn, n int, tokens chan struct{}, received *atomic.Int64) error {
	r := bufio.NewReaderSize(nc, 64<<10)
	w := bufio.NewWriterSize(nc, 16<<10)
	body := make([]byte, 0, 256)
	ack := []byte{0x40, 2, 0, 0}
	for i := 0; i < n; i++ {
		typ, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("subscriber: after %d: %w", i, err)
		}
		size, shift := 0, 0
		for {
			c, err := r.ReadByte()
			if err != nil {
				return err
			}
			size |= int(c&0x7f) << shift
			if c&0x80 == 0 {
				break
			}
			shift += 7
		}
		if typ>>4 != byte(packet.PUBLISH) || (typ>>1)&3 != 1 {
			return fmt.Errorf("subscriber: packet %#x, want a QoS 1 PUBLISH", typ)
		}
		body = body[:size]
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		tl := int(binary.BigEndian.Uint16(body))
		copy(ack[2:], body[2+tl:4+tl])
		w.Write(ack)
		received.Add(1)
		tokens <- struct{}{}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
	return w.Flush()
}
