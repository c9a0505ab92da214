package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
)

var tlsVersions = map[string]uint16{"tlsv1.3": tls.VersionTLS13, "tlsv1.2": tls.VersionTLS12, "tlsv1.1": tls.VersionTLS11}

// tlsConfig builds the TLS settings of --cafile, --capath, --cert, --key,
// --insecure, --tls-version and --tls-alpn. --insecure, as in mosquitto,
// skips only the check of the server's host name; the chain is verified.
func (c *config) tlsConfig() (*tls.Config, error) {
	if !c.useTLS() {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.tlsVersion != "" {
		v := tlsVersions[c.tlsVersion]
		tc.MinVersion, tc.MaxVersion = v, v
	}
	if c.tlsAlpn != "" {
		tc.NextProtos = []string{c.tlsAlpn}
	}
	if c.cafile != "" || c.capath != "" {
		pool := x509.NewCertPool()
		if c.tlsOSCerts {
			if sys, err := x509.SystemCertPool(); err == nil {
				pool = sys
			}
		}
		if c.cafile != "" {
			pem, err := os.ReadFile(c.cafile)
			if err != nil {
				return nil, fmt.Errorf("mqtt: --cafile: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("mqtt: --cafile %s: no PEM certificate found", c.cafile)
			}
		}
		if c.capath != "" {
			files, err := filepath.Glob(filepath.Join(c.capath, "*"))
			if err != nil {
				return nil, fmt.Errorf("mqtt: --capath: %w", err)
			}
			for _, f := range files {
				if pem, err := os.ReadFile(f); err == nil {
					pool.AppendCertsFromPEM(pem)
				}
			}
		}
		tc.RootCAs = pool
	}
	if c.cert != "" {
		cert, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("mqtt: --cert/--key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if c.insecure {
		roots := tc.RootCAs
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("mqtt: server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return tc, nil
}

// clientOptions turns the command line into client.Options.
func (c *config) clientOptions() (client.Options, error) {
	o := client.Options{
		ClientID:          c.clientIDFor(),
		Version:           c.version,
		Username:          c.username,
		PersistentSession: !c.clean,
		KeepAlive:         time.Duration(c.keepAlive) * time.Second,
		MaxInflight:       c.maxInflight,
	}
	if c.keepAlive == 0 {
		o.KeepAlive = -1
	}
	if c.passwordSet {
		o.Password = []byte(c.password)
	}
	if c.sessionExpiry != nil {
		o.SessionExpiry = *c.sessionExpiry
	}
	if c.version == packet.V5 && c.propsUsed {
		p := c.connectProps
		o.ConnectProps = &p
	}
	if c.willTopic != "" {
		w := &packet.Will{Topic: c.willTopic, Payload: c.willPayload, QoS: c.willQoS, Retain: c.willRetain}
		if c.version == packet.V5 && !reflect.ValueOf(c.willProps).IsZero() {
			p := c.willProps
			w.Props = &p
		}
		o.Will = w
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return o, err
	}
	o.TLSConfig = tc
	return o, nil
}

// debugLog prints the -d lines on stdout, where mosquitto's clients print
// theirs: "Client ID sending CONNECT". As a slog.Handler it receives the
// client library's packet trace, so the lines are the packets really sent
// and received.
type debugLog struct {
	on  bool
	w   io.Writer
	err io.Writer // warnings

	mu sync.Mutex
	id string
}

func (d *debugLog) errOut() io.Writer {
	if d.err == nil {
		return io.Discard
	}
	return d.err
}

func (d *debugLog) setID(id string) {
	d.mu.Lock()
	d.id = id
	d.mu.Unlock()
}

func (d *debugLog) printf(format string, args ...any) {
	if !d.on {
		return
	}
	d.mu.Lock()
	id := d.id
	d.mu.Unlock()
	d.line(id, fmt.Sprintf(format, args...))
}

func (d *debugLog) line(id, text string) {
	if id == "" {
		id = "(null)"
	}
	fmt.Fprintf(d.w, "Client %s %s\n", id, text)
}

// Enabled takes the packet trace (debug) and warnings.
func (d *debugLog) Enabled(_ context.Context, l slog.Level) bool { return d.on || l >= slog.LevelWarn }

// Handle prints a packet trace record as a -d line and anything else (a
// warning of the client library) on stderr.
func (d *debugLog) Handle(_ context.Context, r slog.Record) error {
	var dir, id string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "dir":
			dir = a.Value.String()
		case "client_id":
			id = a.Value.String()
		}
		return true
	})
	if dir != "" {
		if d.on {
			d.line(id, r.Message)
		}
		return nil
	}
	if r.Level >= slog.LevelWarn {
		fmt.Fprintf(d.errOut(), "Warning: %s\n", r.Message)
	}
	return nil
}

func (d *debugLog) WithAttrs([]slog.Attr) slog.Handler { return d }
func (d *debugLog) WithGroup(string) slog.Handler      { return d }

// exitError carries the exit status a failure maps to.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// dial connects as the command line says, printing the CONNECT/CONNACK
// debug lines. A refused CONNACK gives an exitError whose code is the
// CONNACK return code (3.x) or reason code (v5), as mosquitto's clients exit.
func dial(ctx context.Context, c *config, o client.Options, dbg *debugLog) (*client.Client, error) {
	timeout := 10 * time.Second
	o.ConnectTimeout = timeout
	if o.Logger == nil {
		o.Logger = slog.New(dbg)
	}
	dbg.setID(o.ClientID)
	cl, err := client.Dial(ctx, c.serverURL(), o)
	if err != nil {
		var ce *client.ConnectError
		if errors.As(err, &ce) {
			code := int(ce.Connack.ReasonCode)
			if c.version != packet.V5 {
				code = int(ce.Connack.ReasonCode.V3Connack())
			}
			return nil, &exitError{code: code, msg: "Connection error: " + strings.TrimPrefix(err.Error(), "client: ")}
		}
		return nil, &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	dbg.setID(cl.ClientID())
	return cl, nil
}
