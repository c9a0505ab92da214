package broker_test

// Failed-login limits (authlimit.go) over real sockets: refusals after
// failed logins are delayed per source address, logins piling up from such
// an address are refused unchecked, and a password check that could not
// start is "server unavailable".

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// passwordFileAuth returns an Authenticate hook that checks a password file
// holding alice with password "secret", as config.Auth does.
func passwordFileAuth(t *testing.T) func(*broker.ClientInfo) error {
	t.Helper()
	h, err := auth.HashPassword("secret")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(path, []byte("alice:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pf, err := auth.LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return func(ci *broker.ClientInfo) error {
		err := pf.Authenticate(context.Background(), &auth.Client{ClientID: ci.ClientID, Username: ci.Username,
			HasUsername: ci.HasUsername, Password: ci.Password, HasPassword: ci.HasPassword})
		if errors.Is(err, auth.ErrBadCredentials) {
			return fmt.Errorf("%w: %w", packet.BadUserNameOrPassword, err)
		}
		return err
	}
}

// dialFrom connects to addr from the local IP from.
func dialFrom(t *testing.T, addr, from string, v packet.Version) *brokertest.Conn {
	t.Helper()
	d := net.Dialer{Timeout: fiveSec, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	return brokertest.NewConn(t, nc, v)
}

// login sends a CONNECT for alice with password from the local IP from and
// returns the CONNACK's code and how long it took to come.
func login(t *testing.T, addr, from, password string) (packet.ReasonCode, time.Duration) {
	t.Helper()
	c := dialFrom(t, addr, from, packet.V5)
	start := time.Now()
	c.Send(&packet.Connect{Version: packet.V5, ClientID: "c-" + from, CleanStart: true,
		Username: "alice", HasUsername: true, Password: []byte(password), HasPassword: true})
	p := c.Recv()
	took := time.Since(start)
	ack, ok := p.(*packet.Connack)
	if !ok {
		t.Fatalf("got %s, want CONNACK", brokertest.Describe(p))
	}
	c.NC.Close()
	return ack.ReasonCode, took
}

// TestAuthFailureDelay: wrong passwords from one address get refusals
// delayed 100 ms, 200 ms, 400 ms, ... up to auth_failure_delay; a correct
// login, from that address or another, is not delayed, and another
// address's first wrong password gets only the base delay.
func TestAuthFailureDelay(t *testing.T) {
	const maxDelay = time.Second
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Authenticate = passwordFileAuth(t)
		o.AuthFailureDelay = maxDelay
	})
	want := 100 * time.Millisecond
	for i := 1; i <= 5; i++ {
		rc, took := login(t, srv.Addr, "127.0.0.1", "wrong")
		if rc != packet.BadUserNameOrPassword {
			t.Fatalf("attempt %d: CONNACK %v, want bad user name or password", i, rc)
		}
		if took < want {
			t.Fatalf("attempt %d refused after %v, want at least %v", i, took, want)
		}
		t.Logf("attempt %d refused after %v (at least %v)", i, took, want)
		want = min(2*want, maxDelay)
	}
	// Successful logins are not delayed: well under the delay the next
	// wrong password from 127.0.0.1 would wait.
	for _, from := range []string{"127.0.0.2", "127.0.0.1"} {
		if rc, took := login(t, srv.Addr, from, "secret"); rc != packet.Success || took >= maxDelay {
			t.Errorf("correct login from %s: CONNACK %v after %v, want success without the %v delay", from, rc, took, maxDelay)
		}
	}
	// Another address's record is its own: its first failure waits the base.
	if rc, took := login(t, srv.Addr, "127.0.0.2", "wrong"); rc != packet.BadUserNameOrPassword || took >= maxDelay {
		t.Errorf("first wrong password from 127.0.0.2: CONNACK %v after %v, want 0x86 before %v", rc, took, maxDelay)
	}
}

// TestAuthFailurePending: once an address has failed, at most 8 of its
// logins may be in progress at once; more are refused unchecked with
// "server unavailable", so parallel connections do not multiply guesses.
func TestAuthFailurePending(t *testing.T) {
	var inCheck, checks atomic.Int32
	gate := make(chan struct{})
	pw := passwordFileAuth(t)
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.AuthFailureDelay = 100 * time.Millisecond
		o.Authenticate = func(ci *broker.ClientInfo) error {
			checks.Add(1)
			if string(ci.Password) == "block" {
				inCheck.Add(1)
				<-gate
			}
			return pw(ci)
		}
	})
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	if rc, _ := login(t, srv.Addr, "127.0.0.1", "wrong"); rc != packet.BadUserNameOrPassword {
		t.Fatalf("CONNACK %v, want bad user name or password", rc)
	}
	var blocked []*brokertest.Conn
	for i := range 8 {
		c := dialFrom(t, srv.Addr, "127.0.0.1", packet.V311)
		c.Send(&packet.Connect{Version: packet.V311, ClientID: fmt.Sprint("b", i), CleanStart: true,
			Username: "alice", HasUsername: true, Password: []byte("block"), HasPassword: true})
		blocked = append(blocked, c)
	}
	brokertest.Eventually(t, fiveSec, func() bool { return inCheck.Load() == 8 }, "%d logins in the check, want 8", inCheck.Load())
	before := checks.Load()
	c := dialFrom(t, srv.Addr, "127.0.0.1", packet.V311)
	c.Send(&packet.Connect{Version: packet.V311, ClientID: "ninth", CleanStart: true,
		Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true})
	c.ExpectClosedWith(&packet.Connack{ReasonCode: packet.ServerUnavailable})
	if n := checks.Load(); n != before {
		t.Errorf("the ninth login was checked (%d checks, was %d)", n, before)
	}
	// Another address is not held up by 127.0.0.1's pile.
	if rc, _ := login(t, srv.Addr, "127.0.0.2", "secret"); rc != packet.Success {
		t.Errorf("login from 127.0.0.2: CONNACK %v, want success", rc)
	}
	close(gate)
	for _, b := range blocked {
		b.ExpectClosedWith(&packet.Connack{ReasonCode: packet.BadUserNameOrPassword})
	}
}

// TestAuthBusyIsServerUnavailable: a password check that could not start
// (auth.ErrBusy, wrapped as config.Auth wraps every other error) is
// answered "server unavailable", not a verdict on the credentials.
func TestAuthBusyIsServerUnavailable(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Authenticate = func(*broker.ClientInfo) error {
			return fmt.Errorf("%w: %w", packet.NotAuthorized, fmt.Errorf("auth: password check: %w", auth.ErrBusy))
		}
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := brokertest.Dial(t, srv.Addr, v)
		c.Send(&packet.Connect{Version: v, ClientID: "busy", CleanStart: true,
			Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true})
		p, _ := stripReason(c.Recv())
		if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != packet.ServerUnavailable {
			t.Errorf("got %s, want CONNACK server unavailable", brokertest.Describe(p))
		}
	})
}
