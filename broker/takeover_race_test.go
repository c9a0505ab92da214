package broker_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// goroutinesBack polls until the process is back to at most base+slack
// goroutines, failing the test after the deadline with a dump.
func goroutinesBack(t *testing.T, base, slack int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+slack {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines: %d, baseline %d (+%d allowed)\n%s", runtime.NumGoroutine(), base, slack, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawConn is a raw connection usable from any goroutine (no testing.T).
type rawConn struct {
	nc net.Conn
	r  *bufio.Reader
	v  packet.Version
}

func raceConnect(addr string, cp *packet.Connect) (*rawConn, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c := &rawConn{nc: nc, r: bufio.NewReader(nc), v: cp.Version}
	if cp.ProtocolName == "" {
		cp.ProtocolName = "MQTT"
	}
	if err := packet.Write(nc, cp, cp.Version); err != nil {
		nc.Close()
		return nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := packet.Read(c.r, cp.Version, 0)
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		// Taken over before the CONNACK was read: the server may close a
		// connection it has already acknowledged.
		return c, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		nc.Close()
		return nil, nil, fmt.Errorf("got %v, want CONNACK", p)
	}
	return c, ack, nil
}

// stillOpen sends PINGREQ and reports whether a PINGRESP comes back (true)
// or the server closed the connection (false), skipping a v5 DISCONNECT.
func (c *rawConn) stillOpen() (bool, error) {
	packet.Write(c.nc, &packet.Pingreq{}, c.v) // a write to a closed socket may succeed; the read decides
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		p, err := packet.Read(c.r, c.v, 0)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, fmt.Errorf("neither PINGRESP nor close within 5s")
			}
			return false, nil // EOF or reset: closed
		}
		switch p := p.(type) {
		case *packet.Pingresp:
			return true, nil
		case *packet.Disconnect:
			if p.ReasonCode != packet.SessionTakenOver {
				return false, fmt.Errorf("DISCONNECT %v, want 0x8E", p.ReasonCode)
			}
		default:
			return false, fmt.Errorf("unexpected %v", p)
		}
	}
}

// TestTakeoverRace_OneOwner_MQTT_3_1_4_2: 100 connections race to CONNECT
// with one client id and a persistent session; each new one closes the
// previous owner [MQTT-3.1.4-2] (5.0: DISCONNECT 0x8E first [MQTT-3.1.4-3]).
// When the dust settles exactly one connection answers PINGREQ, every other
// is closed, the server holds one session and one connection, and its
// goroutines return to the baseline when the owner leaves.
func TestTakeoverRace_OneOwner_MQTT_3_1_4_2(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			srv := brokertest.Start(t, func(o *broker.Options) { o.ConnectTimeout = 5 * time.Second })
			base := runtime.NumGoroutine()
			const n = 100
			conns := make([]*rawConn, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					cp := &packet.Connect{Version: v, ClientID: "racer", CleanStart: false, KeepAlive: 60}
					if v == packet.V5 {
						cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](600)}
					}
					c, _, err := raceConnect(srv.Addr, cp)
					conns[i] = c
					if c == nil {
						errs[i] = err
					}
				}()
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
			}
			defer func() {
				for _, c := range conns {
					c.nc.Close()
				}
			}()
			brokertest.Eventually(t, 10*time.Second, func() bool {
				st := srv.Stats()
				return st.ClientsConnected == 1 && st.ClientsDisconnected == 0
			}, "one connection and one session: %+v", srv.Stats())

			open := make([]bool, n)
			var cwg sync.WaitGroup
			for i, c := range conns {
				cwg.Add(1)
				go func() {
					defer cwg.Done()
					open[i], errs[i] = c.stillOpen()
				}()
			}
			cwg.Wait()
			owners := 0
			owner := -1
			for i := range n {
				if errs[i] != nil {
					t.Errorf("connection %d: %v", i, errs[i])
				}
				if open[i] {
					owners++
					owner = i
				}
			}
			if owners != 1 {
				t.Fatalf("%d connections still open, want exactly 1", owners)
			}
			st := srv.Stats()
			if st.ClientsConnected != 1 || st.ClientsDisconnected != 0 {
				t.Fatalf("after the race: %d connected, %d sessions offline; want 1 and 0", st.ClientsConnected, st.ClientsDisconnected)
			}
			// With its owner gone the session stays (persistent) and nothing else.
			packet.Write(conns[owner].nc, &packet.Disconnect{}, v)
			io.Copy(io.Discard, conns[owner].r)
			brokertest.Eventually(t, 5*time.Second, func() bool {
				st := srv.Stats()
				return st.ClientsConnected == 0 && st.ClientsDisconnected == 1
			}, "owner gone, session kept: %+v", srv.Stats())
			goroutinesBack(t, base, 5)
		})
	}
}
