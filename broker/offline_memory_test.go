package broker_test

// The memory one offline persistent session costs: what a broker with many
// devices that come and go keeps for each of them between visits.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// offlineSessionBudget is the most heap (HeapInuse growth) one offline
// persistent session with one subscription may keep. Measured on Go 1.26,
// linux/amd64: about 1,050-1,300 bytes (10,000 sessions; 1,280-1,500 under
// -race with 2,000-10,000): the session struct (224 bytes), its ClientInfo copy
// (104, without the password), its subEntry (40) and filter string, the
// client id, user name and remote address strings, the session map's entry,
// and the topic index's nodes for the filter's new levels. The bound is
// about 1.5 x that; keeping a connection (its conn, read buffer or stack)
// would pass it several times over.
const offlineSessionBudget = 2048

// offlineVisit connects a persistent session id (3.1.1: clean session 0;
// 5.0: a session expiry of an hour) with a user name and password,
// subscribes to one filter at QoS 1 and disconnects, waiting for the server
// to close the socket.
func offlineVisit(addr string, v packet.Version, id string) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	cp := &packet.Connect{Version: v, ProtocolName: "MQTT", ClientID: id, KeepAlive: 60,
		Username: "user", HasUsername: true, Password: []byte("secret-" + id), HasPassword: true}
	if v == packet.V5 {
		cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}
	}
	buf, err := cp.Encode(nil, v)
	if err != nil {
		return err
	}
	sp := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "dev/" + id + "/cmd/#", QoS: 1}}}
	if buf, err = sp.Encode(buf, v); err != nil {
		return err
	}
	if _, err := nc.Write(buf); err != nil {
		return err
	}
	r := bufio.NewReader(nc)
	for _, want := range []packet.Type{packet.CONNACK, packet.SUBACK} {
		p, err := packet.Read(r, v, 0)
		if err != nil {
			return fmt.Errorf("%s: %v: %w", id, want, err)
		}
		if p.Type() != want {
			return fmt.Errorf("%s: got %v, want %v", id, p, want)
		}
	}
	if err := packet.Write(nc, &packet.Disconnect{}, v); err != nil {
		return err
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%s: after DISCONNECT: %v, want the server to close", id, err)
	}
	return nil
}

// heapInuse is HeapInuse after two collections (the second empties the
// sync.Pools' victim caches).
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// 10,000 persistent clients (2,000 under -race), half 3.1.1 and half 5.0,
// connect with a password, subscribe and go away; the heap the broker keeps
// for each offline session (session, client info without the password, the
// subscription in the topic index, the session-map entry) stays under
// offlineSessionBudget. No connection, reader or write buffer is kept.
func TestOfflineSession_Memory(t *testing.T) {
	n := 10000
	if raceEnabled {
		n = 2000
	}
	const batch = 200
	srv := brokertest.Start(t)
	// Warm up: the first connections make the pools, the poller and the
	// index's root; they are not what an offline session costs.
	for i := range batch {
		if err := offlineVisit(srv.Addr, packet.V311, fmt.Sprintf("warm%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitOffline(t, srv, batch)
	before := heapInuse()
	start := time.Now()
	for b := 0; b < n; b += batch {
		var wg sync.WaitGroup
		errs := make(chan error, batch)
		for i := b; i < b+batch && i < n; i++ {
			v := packet.V311
			if i%2 == 1 {
				v = packet.V5
			}
			wg.Go(func() {
				if err := offlineVisit(srv.Addr, v, fmt.Sprintf("device-%06d", i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	brokertest.Eventually(t, 20*time.Second, func() bool {
		st := srv.Stats()
		return st.ClientsDisconnected == int64(n+batch) && st.ClientsConnected == 0
	}, "offline %d (want %d), connected %d", srv.Stats().ClientsDisconnected, n+batch, srv.Stats().ClientsConnected)
	took := time.Since(start)
	after := heapInuse()
	per := (int64(after) - int64(before)) / int64(n)
	t.Logf("%d offline sessions (connected in %v): HeapInuse %d -> %d bytes, %d bytes per offline session (budget %d)",
		n, took, before, after, per, offlineSessionBudget)
	if per > offlineSessionBudget {
		t.Fatalf("%d bytes of heap per offline session, want at most %d", per, offlineSessionBudget)
	}
	if s := srv.Stats().Subscriptions; s != int64(n+batch) {
		t.Fatalf("%d subscriptions, want %d", s, n+batch)
	}
}
