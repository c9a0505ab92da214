package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mqttd/mqttd/auth/scram"
	"github.com/mqttd/mqttd/packet"
)

// Authenticator is the client side of an MQTT 5 enhanced authentication
// method (MQTT 5.0 section 4.12), set in Options.Auth. The client calls it
// from one goroutine at a time: Start for the CONNECT (and for each
// re-authentication), Continue for every AUTH 0x18 the server sends, and
// Finish with the Authentication Data of the CONNACK (or of the final AUTH
// 0x00 of a re-authentication).
type Authenticator interface {
	// Method is the Authentication Method, e.g. "SCRAM-SHA-256".
	Method() string
	// Start begins an exchange and returns the first Authentication Data.
	Start() ([]byte, error)
	// Continue answers the server's data with the next data.
	Continue(serverData []byte) ([]byte, error)
	// Finish checks the server's last data; an error drops the connection.
	Finish(serverData []byte) error
}

// NewSCRAMSHA256 returns an Authenticator for SCRAM-SHA-256 (RFC 5802,
// RFC 7677), the method mqttd has built in: the CONNECT carries the
// client-first-message, the AUTH 0x18 exchange the proofs, and Finish checks
// that the server knows the user's keys.
func NewSCRAMSHA256(user, password string) Authenticator {
	return &scramAuth{user: user, password: password}
}

type scramAuth struct {
	user, password string
	cl             *scram.Client
}

func (a *scramAuth) Method() string { return scram.Method }

func (a *scramAuth) Start() ([]byte, error) {
	a.cl = scram.NewClient(a.user, a.password)
	return a.cl.First(), nil
}

func (a *scramAuth) Continue(serverFirst []byte) ([]byte, error) {
	if a.cl == nil {
		return nil, errors.New("client: SCRAM: Continue before Start")
	}
	return a.cl.Final(serverFirst)
}

func (a *scramAuth) Finish(serverFinal []byte) error {
	if a.cl == nil {
		return errors.New("client: SCRAM: Finish before Start")
	}
	err := a.cl.Verify(serverFinal)
	a.cl = nil
	return err
}

// ErrAuth wraps a failure of the Authenticator (including a server that
// could not prove itself).
var ErrAuth = errors.New("client: enhanced authentication failed")

// authProps returns the CONNECT's Authentication Method and Data.
func (c *Client) startAuth(p *packet.Properties) error {
	a := c.opts.Auth
	data, err := c.authCall(func() ([]byte, error) { return a.Start() })
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAuth, err)
	}
	p.AuthMethod, p.AuthData = a.Method(), data
	return nil
}

// continueAuth answers an AUTH 0x18 during the CONNECT; it returns the AUTH
// to send.
func (c *Client) continueAuth(p *packet.Auth) (*packet.Auth, error) {
	a := c.opts.Auth
	// [MQTT-4.12.0-3] The server's AUTH keeps the CONNECT's method.
	if p.ReasonCode != packet.ContinueAuthentication || p.Props == nil || p.Props.AuthMethod != a.Method() {
		return nil, fmt.Errorf("%w: AUTH %v for another method or step", ErrProtocol, p.ReasonCode)
	}
	data, err := c.authCall(func() ([]byte, error) { return a.Continue(p.Props.AuthData) })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuth, err)
	}
	return &packet.Auth{ReasonCode: packet.ContinueAuthentication, Props: &packet.Properties{AuthMethod: a.Method(), AuthData: data}}, nil
}

// authCall runs one Authenticator method: never two at once, although the
// handshake of a new connection may overlap a re-authentication that the
// old one ends.
func (c *Client) authCall(f func() ([]byte, error)) ([]byte, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return f()
}

// reauth is a re-authentication in progress.
type reauth struct {
	mu  sync.Mutex
	res chan error // nil when none is in progress
}

// Reauthenticate runs the AUTH exchange again on the current connection
// (MQTT 5.0 section 4.12.1), e.g. before a token expires: AUTH 0x19 with
// Options.Auth's Start data, then the server's AUTH 0x18 steps, until its
// AUTH 0x00. A server that refuses disconnects the client (reason 0x87),
// and Reauthenticate returns that error. It needs MQTT 5 and Options.Auth.
func (c *Client) Reauthenticate(ctx context.Context) error {
	a := c.opts.Auth
	if a == nil || c.version != packet.V5 {
		return errors.New("client: re-authentication needs MQTT 5 and Options.Auth")
	}
	cn, err := c.waitConnected(ctx)
	if err != nil {
		return fmt.Errorf("client: reauthenticate: %w", err)
	}
	c.reauth.mu.Lock()
	if c.reauth.res != nil {
		c.reauth.mu.Unlock()
		return errors.New("client: re-authentication already in progress")
	}
	res := make(chan error, 1)
	c.reauth.res = res
	c.reauth.mu.Unlock()
	defer func() {
		c.reauth.mu.Lock()
		if c.reauth.res == res {
			c.reauth.res = nil
		}
		c.reauth.mu.Unlock()
	}()
	data, err := c.authCall(func() ([]byte, error) { return a.Start() })
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAuth, err)
	}
	// [MQTT-4.12.1-1] Re-authentication uses the CONNECT's method.
	p := &packet.Auth{ReasonCode: packet.ReAuthenticate, Props: &packet.Properties{AuthMethod: a.Method(), AuthData: data}}
	select {
	case c.out <- outItem{p: p, gen: cn.gen}:
	case <-ctx.Done():
		return fmt.Errorf("client: reauthenticate: %w", ctx.Err())
	case <-cn.dead:
		return fmt.Errorf("client: reauthenticate: %w", errLost(cn))
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("client: reauthenticate: %w", ctx.Err())
	case <-cn.dead:
		return fmt.Errorf("client: reauthenticate: %w", errLost(cn))
	}
}

// handleAuth takes an AUTH after CONNACK: a step or the end of a
// re-authentication. An AUTH nobody asked for is a protocol error.
func (c *Client) handleAuth(cn *connState, p *packet.Auth) error {
	c.reauth.mu.Lock()
	res := c.reauth.res
	c.reauth.mu.Unlock()
	a := c.opts.Auth
	if res == nil || a == nil {
		return fmt.Errorf("unexpected AUTH: %w", packet.ProtocolError)
	}
	if p.Props == nil || p.Props.AuthMethod != a.Method() {
		return fmt.Errorf("AUTH for another method: %w", packet.ProtocolError)
	}
	finish := func(err error) {
		select {
		case res <- err:
		default:
		}
	}
	switch p.ReasonCode {
	case packet.Success:
		if _, err := c.authCall(func() ([]byte, error) { return nil, a.Finish(p.Props.AuthData) }); err != nil {
			err = fmt.Errorf("%w: %w", ErrAuth, err)
			finish(err)
			cn.fail(err)
			return nil
		}
		finish(nil)
	case packet.ContinueAuthentication:
		data, err := c.authCall(func() ([]byte, error) { return a.Continue(p.Props.AuthData) })
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrAuth, err)
			finish(err)
			cn.fail(err)
			return nil
		}
		c.send(cn, &packet.Auth{ReasonCode: packet.ContinueAuthentication, Props: &packet.Properties{AuthMethod: a.Method(), AuthData: data}})
	default:
		return fmt.Errorf("AUTH reason %v from the server: %w", p.ReasonCode, packet.ProtocolError)
	}
	return nil
}
