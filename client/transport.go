package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// target is a parsed server address.
type target struct {
	scheme string // tcp, tls, ws, wss, unix
	addr   string // host:port, or the socket path for unix
	host   string // host name for TLS verification
	wsURL  string // ws and wss: the URL to dial
	url    string // as given, for logs

	user    string // from user[:password]@ in the URL
	pass    []byte
	hasUser bool
}

// parseURL understands mqtt:// tcp:// (port 1883), mqtts:// ssl:// tls://
// (8883), ws:// (80, path /mqtt), wss:// (443), unix:///path, and a bare
// host:port (TCP).
func parseURL(raw string) (target, error) {
	if !strings.Contains(raw, "://") {
		raw = "mqtt://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	var t target
	var port string
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
		t.scheme, port = "tcp", "1883"
	case "mqtts", "ssl", "tls", "tcps":
		t.scheme, port = "tls", "8883"
	case "ws":
		t.scheme, port = "ws", "80"
	case "wss":
		t.scheme, port = "wss", "443"
	case "unix":
		p := u.Path
		if p == "" {
			p = u.Opaque
		}
		if p == "" {
			return target{}, fmt.Errorf("%w: %q has no socket path", ErrBadURL, raw)
		}
		return target{scheme: "unix", addr: p, url: raw}, nil
	default:
		return target{}, fmt.Errorf("%w: unknown scheme %q", ErrBadURL, u.Scheme)
	}
	t.url = u.Redacted()
	if u.User != nil {
		t.user, t.hasUser = u.User.Username(), true
		if pw, ok := u.User.Password(); ok {
			t.pass = []byte(pw)
		}
	}
	t.host = u.Hostname()
	if t.host == "" {
		return target{}, fmt.Errorf("%w: %q has no host", ErrBadURL, raw)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	t.addr = net.JoinHostPort(t.host, port)
	if t.scheme == "ws" || t.scheme == "wss" {
		path := u.EscapedPath()
		if path == "" {
			path = "/mqtt"
		}
		t.wsURL = t.scheme + "://" + t.addr + path
		if u.RawQuery != "" {
			t.wsURL += "?" + u.RawQuery
		}
	}
	return t, nil
}

// dial opens the network connection described by t, through o.Dialer if
// set.
func (t target) dial(ctx context.Context, o *Options) (net.Conn, error) {
	dialFn := o.Dialer
	if dialFn == nil {
		var d net.Dialer
		dialFn = d.DialContext
	}
	switch t.scheme {
	case "tcp":
		return dialFn(ctx, "tcp", t.addr)
	case "unix":
		return dialFn(ctx, "unix", t.addr)
	case "tls":
		raw, err := dialFn(ctx, "tcp", t.addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(raw, t.tlsConfig(o.TLSConfig))
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		return tc, nil
	case "ws", "wss":
		wd := websocket.Dialer{
			NetDialContext:  dialFn,
			Proxy:           o.WebSocketProxy,
			Subprotocols:    []string{"mqtt"},
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
		}
		if t.scheme == "wss" {
			wd.TLSClientConfig = t.tlsConfig(o.TLSConfig)
		}
		if dl, ok := ctx.Deadline(); ok {
			wd.HandshakeTimeout = time.Until(dl)
		}
		ws, resp, err := wd.DialContext(ctx, t.wsURL, o.WebSocketHeader)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("client: websocket: %w", err)
		}
		return &wsConn{ws: ws}, nil
	}
	return nil, fmt.Errorf("%w: scheme %q", ErrBadURL, t.scheme)
}

func (t target) tlsConfig(c *tls.Config) *tls.Config {
	if c == nil {
		c = &tls.Config{}
	} else {
		c = c.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = t.host
	}
	return c
}

// wsConn adapts a WebSocket connection to net.Conn: MQTT bytes travel in
// binary messages, and a message boundary means nothing to the reader.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader // current message, nil between messages

	wmu sync.Mutex // one Write at a time: each Write is one frame
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				// [MQTT-6.0.0-1] MQTT travels in binary frames only.
				return 0, fmt.Errorf("%w: websocket text frame", ErrProtocol)
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.ws.SetReadDeadline(t); err != nil {
		return err
	}
	return c.ws.SetWriteDeadline(t)
}

// NewTLSConfig builds a TLS configuration the way mosquitto_pub's --cafile,
// --cert, --key and --insecure do: caFile (PEM, may be "") replaces the
// system roots, certFile and keyFile (PEM, both or neither) are the client
// certificate, and insecure skips verification of the server's certificate
// (for testing only).
func NewTLSConfig(caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	c := &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("client: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA file %s: no PEM certificate", caFile)
		}
		c.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("client: a client certificate needs both a certificate and a key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client: client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
