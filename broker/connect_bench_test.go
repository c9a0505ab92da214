package broker_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// BenchmarkConnect measures the connect rate as issue 11 does (CONNECT to
// CONNACK, 100 clients at a time, every connection kept open until the
// end), with raw sockets so that the client side costs little: one
// operation is one TCP connect, one CONNECT, one CONNACK. The load runs in
// the same process, so ns/op is the cost of both ends; compare runs, not
// brokers (scripts/bench.sh compares with Mosquitto).
//
//	go test -run '^$' -bench Connect -benchtime 5000x -cpuprofile /tmp/c.prof ./broker/
func BenchmarkConnect(b *testing.B) {
	srv := brokertest.Start(b)
	frames := make([][]byte, b.N)
	for i := range frames {
		f, err := (&packet.Connect{Version: packet.V311, ClientID: fmt.Sprintf("bench-conn-%d", i),
			CleanStart: true, KeepAlive: 60}).Encode(nil, packet.V311)
		if err != nil {
			b.Fatal(err)
		}
		frames[i] = f
	}
	conns := make([]net.Conn, b.N)
	b.Cleanup(func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	})
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range min(b.N, 100) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ack [4]byte
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				nc, err := net.Dial("tcp", srv.Addr)
				if err == nil {
					conns[i] = nc
					_, err = nc.Write(frames[i])
				}
				if err == nil {
					_, err = io.ReadFull(nc, ack[:])
				}
				if err == nil && (ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0) {
					err = fmt.Errorf("CONNACK % x", ack)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d connections failed; first: %v", n, b.N, firstErr.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "connects/s")
}
