package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/config"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// closeWatch records a server's connection events and log lines.
type closeWatch struct {
	mu     sync.Mutex
	events []broker.Event
	logs   bytes.Buffer
}

func (w *closeWatch) options(o *broker.Options) {
	o.OnEvent = func(ev broker.Event) {
		w.mu.Lock()
		w.events = append(w.events, ev)
		w.mu.Unlock()
	}
	o.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (w *closeWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs.Write(p)
}

// ended returns the EventDisconnected of client id, if there is one yet.
func (w *closeWatch) ended(id string) (broker.Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range w.events {
		if ev.Kind == broker.EventDisconnected && ev.ClientID == id {
			return ev, true
		}
	}
	return broker.Event{}, false
}

// count is how many connection ends were reported with cause.
func (w *closeWatch) count(cause broker.Cause) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, ev := range w.events {
		if ev.Kind == broker.EventDisconnected && ev.Cause == cause {
			n++
		}
	}
	return n
}

// logLine returns the broker's "client disconnected" line of client id.
func (w *closeWatch) logLine(id string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for line := range strings.SplitSeq(w.logs.String(), "\n") {
		if strings.Contains(line, `msg="client disconnected"`) && strings.Contains(line, " client="+id+" ") {
			return line
		}
	}
	return ""
}

// expect asserts that client id's connection ended for cause: in the
// event, in the log line (its reason key) and in the per-reason counter;
// and that the Mosquitto-style connection message is want ("" for none).
func (w *closeWatch) expect(t *testing.T, srv *broker.Server, id string, cause broker.Cause, want string) {
	t.Helper()
	var ev broker.Event
	brokertest.Eventually(t, 5*time.Second, func() bool {
		var ok bool
		ev, ok = w.ended(id)
		return ok
	}, "no disconnect event for %s", id)
	if ev.Cause != cause {
		t.Errorf("%s: event cause %v (err %v), want %v", id, ev.Cause, ev.Err, cause)
	}
	brokertest.Eventually(t, 5*time.Second, func() bool { return w.logLine(id) != "" }, "no log line for %s", id)
	if line := w.logLine(id); !strings.Contains(line, " reason="+cause.String()) {
		t.Errorf("%s: log line %q, want reason=%s", id, line, cause)
	}
	if got, n := srv.DisconnectsByReason()[cause.String()], w.count(cause); got != n || n == 0 {
		t.Errorf("%s: DisconnectsByReason[%s] = %d, want %d", id, cause, got, n)
	}
	lines := config.EventLines(ev)
	if want == "" && len(lines) != 0 || want != "" && (len(lines) != 1 || lines[0] != want) {
		t.Errorf("%s: connection messages %q, want %q", id, lines, want)
	}
}

// Every way a connection ends is reported with its own reason, decided
// where the close is decided: the event, the log line, the counter, the
// Mosquitto-style message and, for a v5 client, the DISCONNECT all agree.
func TestCloseReason_EachReasonReported(t *testing.T) {
	var w closeWatch
	srv := brokertest.Start(t, w.options, func(o *broker.Options) { o.WriteTimeout = 300 * time.Millisecond })

	t.Run("client DISCONNECT", func(t *testing.T) {
		c := client(t, srv, packet.V311, "cr-disc")
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
		w.expect(t, srv.Server, "cr-disc", broker.CauseDisconnect, "Client cr-disc disconnected.")
	})
	t.Run("client closed", func(t *testing.T) {
		c := client(t, srv, packet.V5, "cr-closed")
		c.NC.Close()
		w.expect(t, srv.Server, "cr-closed", broker.CauseClosed, "Client cr-closed closed its connection.")
	})
	t.Run("keep alive MQTT-3.1.2-22", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V5)
		cp := connectPkt(packet.V5, "cr-ka", false)
		cp.KeepAlive = 1
		c.Send(cp)
		c.ExpectPacket(okConnack(packet.V5, false))
		c.ExpectClosedWith(&packet.Disconnect{ReasonCode: packet.KeepAliveTimeout})
		w.expect(t, srv.Server, "cr-ka", broker.CauseKeepAlive, "Client cr-ka has exceeded timeout, disconnecting.")
	})
	t.Run("taken over MQTT-3.1.4-3", func(t *testing.T) {
		old := client(t, srv, packet.V5, "cr-take")
		client(t, srv, packet.V5, "cr-take")
		old.ExpectClosedWith(&packet.Disconnect{ReasonCode: packet.SessionTakenOver})
		w.expect(t, srv.Server, "cr-take", broker.CauseTakenOver, "")
	})
	t.Run("protocol error MQTT-3.1.0-2", func(t *testing.T) {
		c := client(t, srv, packet.V5, "cr-proto")
		c.Send(connectPkt(packet.V5, "cr-proto", false))
		expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.ProtocolError})
		w.expect(t, srv.Server, "cr-proto", broker.CauseProtocol, "Client cr-proto disconnected due to protocol error.")
	})
	t.Run("malformed packet", func(t *testing.T) {
		c := client(t, srv, packet.V311, "cr-malformed")
		c.SendRaw([]byte{0xC1, 0}) // PINGREQ with reserved flags set
		c.ExpectClosed()
		w.expect(t, srv.Server, "cr-malformed", broker.CauseMalformed, "Client cr-malformed disconnected due to malformed packet.")
	})
	t.Run("redirect", func(t *testing.T) {
		c := client(t, srv, packet.V5, "cr-redirect")
		srv.Redirect("other:1883", false)
		c.ExpectClosedWith(&packet.Disconnect{ReasonCode: packet.UseAnotherServer,
			Props: &packet.Properties{ServerReference: "other:1883"}})
		w.expect(t, srv.Server, "cr-redirect", broker.CauseRedirect, "Client cr-redirect disconnected: use another server.")
	})
	t.Run("slow consumer", func(t *testing.T) {
		stuck := dialSmallWindow(t, srv.Addr, packet.V311)
		stuck.Send(connectPkt(packet.V311, "cr-stuck", false))
		stuck.ExpectPacket(okConnack(packet.V311, false))
		subscribe(t, stuck, 1, 0, "cr/big")
		p := client(t, srv, packet.V311, "cr-stuck-pub")
		payload := strings.Repeat("y", 64<<10)
		// Publish until the writer's deadline (300 ms without progress)
		// cuts the stuck client; messages past the backlog bound are
		// dropped cheaply, so this is bounded by time, not by count.
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; ; i++ {
			if _, ok := w.ended("cr-stuck"); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the stuck client was not disconnected within 10s")
			}
			p.Publish(pub("cr/big", payload, 1, uint16(i%1000+1)))
		}
		w.expect(t, srv.Server, "cr-stuck", broker.CauseSlowConsumer,
			"Client cr-stuck disconnected: slow consumer, write timed out.")
	})
}

// Shutdown's clients are reported as disconnected by the shutdown (v5 ones
// are told 0x8B), not as having closed their connection.
func TestCloseReason_Shutdown(t *testing.T) {
	var w closeWatch
	srv := brokertest.Start(t, w.options)
	c5 := client(t, srv, packet.V5, "cr-shut5")
	c3 := client(t, srv, packet.V311, "cr-shut3")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c5.ExpectClosedWith(&packet.Disconnect{ReasonCode: packet.ServerShuttingDown})
	c3.ExpectClosed()
	for _, id := range []string{"cr-shut5", "cr-shut3"} {
		w.expect(t, srv.Server, id, broker.CauseShutdown, fmt.Sprintf("Client %s disconnected: server shutting down.", id))
	}
}

// blockingCloseConn is a server-side connection whose Close blocks until
// release is closed, as closing a TLS or WebSocket connection can while it
// writes its close_notify or close frame to a client that does not read.
type blockingCloseConn struct {
	net.Conn
	closing chan struct{} // closed when Close is first called
	release chan struct{}
	once    sync.Once
}

func (c *blockingCloseConn) Close() error {
	c.once.Do(func() { close(c.closing) })
	<-c.release
	return c.Conn.Close()
}

// No lock is held across a socket close: while a connection's Close
// blocks, a publisher routing to that connection's subscription goes on,
// and the other subscribers get the message.
func TestCloseReason_CloseDoesNotBlockPublishers(t *testing.T) {
	srv := brokertest.Start(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cnc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	snc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	bc := &blockingCloseConn{Conn: snc, closing: make(chan struct{}), release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(bc.release)
		}
	}
	defer release()
	served := make(chan struct{})
	go func() {
		srv.ServeConn(bc, "blocking")
		close(served)
	}()
	x := brokertest.NewConn(t, cnc, packet.V311)
	x.Send(connectPkt(packet.V311, "blocked-close", false))
	x.ExpectPacket(okConnack(packet.V311, false))
	subscribe(t, x, 1, 0, "bc/t")
	y := client(t, srv, packet.V311, "bc-other")
	subscribe(t, y, 1, 1, "bc/t")

	x.SendRaw([]byte{0xC1, 0}) // malformed: the server closes x's connection
	select {
	case <-bc.closing:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not close the connection")
	}
	// x's Close is blocked now; its session still holds the subscription.
	p := client(t, srv, packet.V311, "bc-pub")
	p.Send(pub("bc/t", "through", 1, 1))
	ack, err := p.RecvTimeout(5 * time.Second)
	if err != nil {
		release()
		t.Fatalf("no PUBACK: the publisher is held up by a connection's blocked Close (%v)", err)
	}
	if _, ok := ack.(*packet.Puback); !ok {
		t.Fatalf("got %s, want PUBACK", brokertest.Describe(ack))
	}
	expectPub(t, y, pub("bc/t", "through", 1, 0))
	release()
	<-served
}
