package client

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/mqttd/mqttd/packet"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		in     string
		scheme string
		addr   string
		ws     string
		bad    bool
	}{
		{in: "mqtt://example.com", scheme: "tcp", addr: "example.com:1883"},
		{in: "tcp://10.0.0.1:1999", scheme: "tcp", addr: "10.0.0.1:1999"},
		{in: "localhost:1884", scheme: "tcp", addr: "localhost:1884"},
		{in: "mqtts://example.com", scheme: "tls", addr: "example.com:8883"},
		{in: "ssl://example.com:9999", scheme: "tls", addr: "example.com:9999"},
		{in: "tls://[::1]", scheme: "tls", addr: "[::1]:8883"},
		{in: "ws://example.com", scheme: "ws", addr: "example.com:80", ws: "ws://example.com:80/mqtt"},
		{in: "ws://example.com:8080/custom?x=1", scheme: "ws", addr: "example.com:8080", ws: "ws://example.com:8080/custom?x=1"},
		{in: "wss://example.com", scheme: "wss", addr: "example.com:443", ws: "wss://example.com:443/mqtt"},
		{in: "unix:///run/mqtt.sock", scheme: "unix", addr: "/run/mqtt.sock"},
		{in: "http://example.com", bad: true},
		{in: "mqtt://", bad: true},
		{in: "unix://", bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseURL(tc.in)
			if tc.bad {
				if !errors.Is(err, ErrBadURL) {
					t.Fatalf("err = %v, want ErrBadURL", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.scheme != tc.scheme || got.addr != tc.addr || got.wsURL != tc.ws {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

// roundTripVia checks that a client dialled at url can publish to and
// receive from the broker srvURL.
func roundTripVia(t *testing.T, url string, o Options, srvURL string) {
	t.Helper()
	var col collector
	c := dial(t, url, o)
	subscribe(t, c, "via", 1, col.handle)
	pub := dial(t, srvURL, Options{})
	if err := pub.Publish(testCtx(t), "via", []byte("hello"), PublishOptions{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(testCtx(t), "via", []byte("back"), PublishOptions{QoS: 2}); err != nil {
		t.Fatal(err)
	}
	msgs := col.wait(t, 2)
	if string(msgs[0].Payload) != "hello" || string(msgs[1].Payload) != "back" {
		t.Fatalf("got %q %q", msgs[0].Payload, msgs[1].Payload)
	}
}

func TestTLS(t *testing.T) {
	srv := startBroker(t)
	pki := newTestPKI(t)
	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientCAs:    pki.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	px := startProxy(t, tl, srv.Addr)
	addr := px.l.Addr().String()

	withCA, err := NewTLSConfig(pki.caFile, pki.clientCert, pki.clientKey, false)
	if err != nil {
		t.Fatal(err)
	}
	insecure, err := NewTLSConfig("", pki.clientCert, pki.clientKey, true)
	if err != nil {
		t.Fatal(err)
	}
	noCert, err := NewTLSConfig(pki.caFile, "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	systemRoots, err := NewTLSConfig("", pki.clientCert, pki.clientKey, false)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		url  string
		conf *tls.Config
		ok   bool
	}{
		{"CA and client certificate", "mqtts://" + addr, withCA, true},
		{"ssl scheme", "ssl://" + addr, withCA, true},
		{"insecure skip verify", "tls://" + addr, insecure, true},
		{"unknown CA", "mqtts://" + addr, systemRoots, false},
		{"no client certificate", "mqtts://" + addr, noCert, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ok {
				roundTripVia(t, tc.url, Options{TLSConfig: tc.conf}, srv.URL())
				return
			}
			c, err := Dial(testCtx(t), tc.url, Options{TLSConfig: tc.conf})
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
		})
	}
	if _, err := NewTLSConfig(filepath.Join(t.TempDir(), "missing.pem"), "", "", false); err == nil {
		t.Fatal("NewTLSConfig with a missing CA file succeeded")
	}
	if _, err := NewTLSConfig("", pki.clientCert, "", false); err == nil {
		t.Fatal("NewTLSConfig with a certificate but no key succeeded")
	}
}

// wsBridge serves WebSocket connections at /mqtt and forwards their binary
// messages to the broker over TCP.
func wsBridge(t *testing.T, target string, sawSubprotocol *atomic.Bool) http.Handler {
	up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mqtt" {
			http.NotFound(w, r)
			return
		}
		for _, p := range websocket.Subprotocols(r) {
			if p == "mqtt" {
				sawSubprotocol.Store(true)
			}
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		tc, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer tc.Close()
		go func() {
			defer ws.Close()
			buf := make([]byte, 16<<10)
			for {
				n, err := tc.Read(buf)
				if n > 0 {
					if werr := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		for {
			typ, rd, err := ws.NextReader()
			if err != nil {
				return
			}
			if typ != websocket.BinaryMessage {
				t.Errorf("client sent a websocket message of type %d, want binary [MQTT-6.0.0-1]", typ)
				return
			}
			if _, err := io.Copy(tc, rd); err != nil {
				return
			}
		}
	})
}

func TestWebSocket(t *testing.T) {
	srv := startBroker(t)
	var sub atomic.Bool
	h := wsBridge(t, srv.Addr, &sub)
	plain := httptest.NewServer(h)
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(h)
	t.Cleanup(secure.Close)
	pool := secure.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs

	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run("ws/"+v.String(), func(t *testing.T) {
			roundTripVia(t, strings.Replace(plain.URL, "http://", "ws://", 1), Options{Version: v}, srv.URL())
		})
		t.Run("wss/"+v.String(), func(t *testing.T) {
			url := strings.Replace(secure.URL, "https://", "wss://", 1)
			roundTripVia(t, url, Options{Version: v, TLSConfig: &tls.Config{RootCAs: pool}}, srv.URL())
		})
	}
	if !sub.Load() {
		t.Fatal("the client did not ask for the \"mqtt\" subprotocol")
	}
}

func TestUnixSocket(t *testing.T) {
	srv := startBroker(t)
	path := filepath.Join(t.TempDir(), "mqtt.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	startProxy(t, l, srv.Addr)
	roundTripVia(t, "unix://"+path, Options{}, srv.URL())
}
