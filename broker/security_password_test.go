package broker

// Security finding 10 of issue 16: the password of a CONNECT is not kept
// once the client is authenticated, and nothing the connection or its
// session keeps aliases the CONNECT body (which holds the password).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

func TestSecurityPasswordNotKept(t *testing.T) {
	srv := New(Options{SysInterval: -1, Logger: slog.New(slog.DiscardHandler),
		Authenticate: func(ci *ClientInfo) error {
			if string(ci.Password) != "s3cret" {
				return errors.New("bad password")
			}
			return nil
		}})
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			id := "cid-" + v.String()
			cp := &packet.Connect{Version: v, ProtocolName: "MQTT", ClientID: id, CleanStart: false,
				Username: "user", HasUsername: true, Password: []byte("s3cret"), HasPassword: true,
				Will: &packet.Will{Topic: "will/topic", Payload: []byte("will payload"), QoS: 1}}
			if v == packet.V5 {
				cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](60)}
				cp.Will.Props = &packet.Properties{ContentType: "text/plain", ResponseTopic: "resp",
					CorrelationData: []byte("corr"), User: []packet.UserProperty{{Key: "k", Value: "v"}}}
			}
			raw, err := cp.Encode(nil, v)
			if err != nil {
				t.Fatal(err)
			}
			r := bytes.NewReader(raw)
			fh, err := packet.ReadFixedHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			body := make([]byte, fh.Remaining) // its own allocation, watched below
			copy(body, raw[len(raw)-r.Len():])

			nc, peer := net.Pipe()
			t.Cleanup(func() { peer.Close(); nc.Close() })
			acks := make(chan packet.Packet, 1)
			go func() {
				p, _ := packet.Read(bufio.NewReader(peer), v, 0)
				acks <- p
			}()
			c := newConn(srv, nc, "pipe")
			if err := c.handleConnect(fh, body); err != nil {
				t.Fatalf("handleConnect: %v", err)
			}
			select {
			case p := <-acks:
				if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
					t.Fatalf("got %v, want a successful CONNACK", p)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no CONNACK")
			}

			if c.info.Password != nil {
				t.Errorf("connection keeps the password %q after CONNACK", c.info.Password)
			}
			srv.sessMu.Lock()
			sess := srv.sessions[id]
			srv.sessMu.Unlock()
			sess.mu.Lock()
			info := sess.info
			sess.mu.Unlock()
			if info != &c.info {
				t.Error("the connected session has a ClientInfo of its own: two per client")
			}
			// Once the connection ends the session has its own copy (it
			// outlives the connection and keeps no part of it).
			c.releaseInfo()
			sess.mu.Lock()
			info = sess.info
			sess.mu.Unlock()
			if info == &c.info {
				t.Error("the session still shares the ended connection's ClientInfo")
			}
			if info.Password != nil {
				t.Errorf("session keeps the password %q", info.Password)
			}
			if info.Username != "user" || info.ClientID != id || c.will == nil || string(c.will.Payload) != "will payload" {
				t.Fatalf("identity or will lost: %+v, %+v", info, c.will)
			}

			// The CONNECT body becomes garbage: nothing kept aliases it.
			freed := make(chan struct{})
			runtime.AddCleanup(&body[0], func(ch chan struct{}) { close(ch) }, freed)
			body = nil
			deadline := time.Now().Add(5 * time.Second)
			for {
				runtime.GC()
				select {
				case <-freed:
					return
				default:
				}
				if time.Now().After(deadline) {
					t.Fatal("the CONNECT body (with the password) is still referenced after CONNACK")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
