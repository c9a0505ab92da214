package broker

// White-box half of offline_memory_test.go: an offline session keeps no
// connection and no password.

import (
	"fmt"
	"log/slog"
	"testing"
	"time"
	"unsafe"

	"github.com/mqttd/mqttd/packet"
)

// 300 persistent clients (3.1.1 and 5.0) log in with a password, subscribe
// and disconnect, cleanly or not: every session left has no connection and
// its ClientInfo holds no password bytes.
func TestOfflineSession_KeepsNoConnOrPassword(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	addr := wbServe(t, srv)
	const n = 300
	for i := range n {
		v := packet.V311
		if i%2 == 1 {
			v = packet.V5
		}
		c := wbDial(t, addr, v)
		id := fmt.Sprintf("dev%d", i)
		cp := &packet.Connect{Version: v, ProtocolName: "MQTT", ClientID: id, KeepAlive: 60,
			Username: "u", HasUsername: true, Password: []byte("pw-" + id), HasPassword: true}
		if v == packet.V5 {
			cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}
		}
		c.send(cp)
		c.expect(packet.CONNACK)
		c.subscribe(1, "dev/"+id+"/#")
		if i%3 == 0 {
			c.nc.Close() // gone without DISCONNECT
		} else {
			c.send(&packet.Disconnect{})
		}
	}
	wbEventually(t, 10*time.Second, func() bool { return srv.Stats().ClientsDisconnected == n },
		"%d offline sessions, want %d", srv.Stats().ClientsDisconnected, n)
	srv.sessMu.Lock()
	sessions := make([]*session, 0, len(srv.sessions))
	for _, s := range srv.sessions {
		sessions = append(sessions, s)
	}
	srv.sessMu.Unlock()
	if len(sessions) != n {
		t.Fatalf("%d sessions, want %d", len(sessions), n)
	}
	for _, s := range sessions {
		s.mu.Lock()
		hasConn, info := s.conn != nil, s.info
		s.mu.Unlock()
		if hasConn {
			t.Fatalf("offline session %s keeps its connection", s.id)
		}
		if info == nil || info.ClientID != s.id || info.Username != "u" {
			t.Fatalf("session %s: info %+v", s.id, info)
		}
		if info.Password != nil { // (HasPassword, a flag, stays: the hooks may ask whether one was given)
			t.Fatalf("offline session %s keeps the password %q", s.id, info.Password)
		}
	}
	t.Logf("sizes: session %d, ClientInfo %d, subEntry %d bytes", unsafe.Sizeof(session{}), unsafe.Sizeof(ClientInfo{}),
		unsafe.Sizeof(subEntry{}))
}
