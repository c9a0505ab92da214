package broker_test

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// freezeProxy forwards TCP between clients and a server on 127.0.0.1 until
// freeze is called; then it stops forwarding in both directions and keeps
// every socket open, as a client that vanished without a FIN (a cable
// pulled, a NAT entry dropped) looks to the server.
type freezeProxy struct {
	l       net.Listener
	target  string
	frozen  atomic.Bool
	release chan struct{}
	mu      sync.Mutex
	socks   []net.Conn
	wg      sync.WaitGroup
	// serverClosed is closed when the server side of a proxied
	// connection is found closed (only noticed once the proxy is frozen).
	serverClosed chan struct{}
	once         sync.Once
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{l: l, target: target, release: make(chan struct{}), serverClosed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *freezeProxy) addr() string { return p.l.Addr().String() }
func (p *freezeProxy) freeze()      { p.frozen.Store(true) }

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.socks = append(p.socks, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c, false)
		go p.pipe(c, s, true)
	}
}

// pipe copies from src to dst until frozen; frozen, it holds what it read
// and, for the server side, watches for the server's close.
func (p *freezeProxy) pipe(dst, src net.Conn, fromServer bool) {
	defer p.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if err != nil {
			if fromServer && p.frozen.Load() {
				p.once.Do(func() { close(p.serverClosed) })
			}
			if !p.frozen.Load() {
				dst.Close()
			}
			return
		}
		if p.frozen.Load() {
			if !fromServer {
				<-p.release // the client side: stall, socket open
				return
			}
			continue // the server side: swallow, keep reading to see the close
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *freezeProxy) close() {
	p.l.Close()
	select {
	case <-p.release:
	default:
		close(p.release)
	}
	p.mu.Lock()
	for _, c := range p.socks {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// faultServer is a broker with a 1 s connect timeout and the goroutine count
// once it runs.
func faultServer(t *testing.T) (*brokertest.Server, int) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.ConnectTimeout = time.Second })
	return srv, runtime.NumGoroutine()
}

// connectBytes is the encoded CONNECT of a 3.1.1 client.
func connectBytes(t *testing.T, id string, keepAlive uint16) []byte {
	var b bytes.Buffer
	if err := packet.Write(&b, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: id, CleanStart: true, KeepAlive: keepAlive}, packet.V311); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func publishBytes(t *testing.T, topic string, payload []byte) []byte {
	var b bytes.Buffer
	if err := packet.Write(&b, &packet.Publish{Topic: topic, Payload: payload}, packet.V311); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// expectCut waits until the server has closed nc: a read returns EOF or a
// reset (not a timeout) within d.
func expectCut(t *testing.T, nc net.Conn, d time.Duration) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, nc)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", d)
	}
}

// nothingLeft asserts the fault cost nothing: no client connected, no
// session, goroutines back at the baseline.
func nothingLeft(t *testing.T, srv *brokertest.Server, base int) {
	t.Helper()
	brokertest.Eventually(t, 5*time.Second, func() bool {
		st := srv.Stats()
		return st.ClientsConnected == 0 && st.ClientsDisconnected == 0
	}, "connections and sessions back to 0: %+v", srv.Stats())
	goroutinesBack(t, base, 3)
}

// TestFaultVanishedClient_KeepAlive_MQTT_3_1_2_24: a subscribed client whose
// packets stop arriving without a FIN (the proxy stalls, both sockets stay
// open) is cut after 1.5 x its keep-alive [MQTT-3.1.2-24], even while
// messages for it pile up, and costs nothing afterwards.
func TestFaultVanishedClient_KeepAlive_MQTT_3_1_2_24(t *testing.T) {
	srv, base := faultServer(t)
	px := newFreezeProxy(t, srv.Addr)
	c := brokertest.Dial(t, px.addr(), packet.V311)
	c.Connect(&packet.Connect{ClientID: "ghost", CleanStart: true, KeepAlive: 1})
	c.Subscribe(1, 1, "ghost/#")
	px.freeze()
	pub := brokertest.Dial(t, srv.Addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "feeder", CleanStart: true})
	for i := range 200 {
		pub.Send(&packet.Publish{Topic: "ghost/x", QoS: 1, PacketID: uint16(i + 1), Payload: bytes.Repeat([]byte("x"), 1000)})
		pub.Recv()
	}
	select {
	case <-px.serverClosed:
	case <-time.After(10 * time.Second):
		t.Fatalf("server still holds the vanished client after 10 s (keep-alive 1 s): %+v", srv.Stats())
	}
	pub.Send(&packet.Disconnect{})
	pub.ExpectClosed()
	px.close()
	nothingLeft(t, srv, base)
}

// TestFaultStopMidPacket: a client stops in the middle of a packet. Before
// CONNECT the connect timeout (1 s) cuts it; after CONNECT its keep-alive
// (1 s) does [MQTT-3.1.2-24]: a partial packet is not a packet.
func TestFaultStopMidPacket_MQTT_3_1_2_24(t *testing.T) {
	t.Run("connect", func(t *testing.T) {
		srv, base := faultServer(t)
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		b := connectBytes(t, "half", 60)
		c.SendRaw(b[:len(b)/2])
		expectCut(t, c.NC, 5*time.Second)
		nothingLeft(t, srv, base)
	})
	t.Run("publish", func(t *testing.T) {
		srv, base := faultServer(t)
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		c.Connect(&packet.Connect{ClientID: "half", CleanStart: true, KeepAlive: 1})
		b := publishBytes(t, "half/x", bytes.Repeat([]byte("y"), 100))
		c.SendRaw(b[:len(b)/2])
		expectCut(t, c.NC, 5*time.Second)
		nothingLeft(t, srv, base)
	})
}

// trickle writes b one byte per second until done or a write fails.
func trickle(nc net.Conn, b []byte, done <-chan struct{}) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for i := range b {
		if _, err := nc.Write(b[i : i+1]); err != nil {
			return
		}
		select {
		case <-done:
			return
		case <-tk.C:
		}
	}
}

// TestFaultOneBytePerSecond: a client that sends one byte per second never
// completes a packet in time. Before CONNECT the connect timeout (1 s,
// counted from the accept, not from the last byte) cuts it; after CONNECT
// with keep-alive 2 s, a PUBLISH trickled over 60 s is cut within 1.5 x the
// keep-alive of the last complete packet [MQTT-3.1.2-24], not kept alive by
// every byte.
func TestFaultOneBytePerSecond_MQTT_3_1_2_24(t *testing.T) {
	t.Run("connect", func(t *testing.T) {
		srv, base := faultServer(t)
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		done := make(chan struct{})
		defer close(done)
		go trickle(c.NC, connectBytes(t, "slowloris-with-a-long-id-to-trickle", 60), done)
		expectCut(t, c.NC, 5*time.Second)
		nothingLeft(t, srv, base)
	})
	t.Run("publish", func(t *testing.T) {
		srv, base := faultServer(t)
		c := brokertest.Dial(t, srv.Addr, packet.V311)
		c.Connect(&packet.Connect{ClientID: "slowloris", CleanStart: true, KeepAlive: 2})
		done := make(chan struct{})
		defer close(done)
		go trickle(c.NC, publishBytes(t, "slow/x", bytes.Repeat([]byte("z"), 60)), done)
		expectCut(t, c.NC, 8*time.Second)
		nothingLeft(t, srv, base)
	})
}
