package broker

import (
	"container/list"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/packet"
)

// Failed logins slow down their source (Options.AuthFailureDelay). A failed
// login is one the Authenticate hook refuses with an error wrapping
// auth.ErrBadCredentials: credentials checked and found wrong, as
// auth.PasswordFile reports a wrong password or an unknown user (refusals
// by policy, such as anonymous clients, are no guesses and do not count).
// Each failed login from an address delays that refusal: 100 ms after
// the first failure, doubling with each further one up to the maximum, so a
// client guessing passwords one after another gets at most one guess per
// maximum delay. While an address has failures on record, at most
// authMaxPending of its logins may be checked or waiting to be refused at
// once; more are refused at once with "server unavailable", unchecked, so
// that opening connections in parallel does not multiply the guesses. A
// successful login is never delayed (users sharing an address with a
// guesser are not punished for it) but does not wipe the address's record
// either (a guesser who knows one password could wipe it between guesses):
// the record is forgotten after authFailureQuiet without failures. Records
// are kept for at most authMaxAddrs addresses, the least recently failing
// dropped first, so a scan from many addresses cannot grow the table
// without bound. IPv6 addresses are counted by /64, what one host usually
// has to pick from.
const (
	authBaseDelay    = 100 * time.Millisecond
	authFailureQuiet = time.Minute
	authMaxPending   = 8
	authMaxAddrs     = 10000
)

// errAuthPending refuses a login from an address with too many logins in
// progress.
var errAuthPending = errors.New("too many logins in progress from this address after failed ones")

// authLimiter keeps the failed-login record of source addresses. A nil
// *authLimiter limits nothing.
type authLimiter struct {
	max time.Duration // longest delay of a refusal

	mu    sync.Mutex // guards addrs, lru and every authRecord
	addrs map[netip.Prefix]*list.Element
	lru   list.List // of *authRecord, most recent failure first
}

// authRecord is one source address's failures.
type authRecord struct {
	key     netip.Prefix
	fails   int       // failures since the last quiet period
	last    time.Time // time of the last failure
	pending int       // logins from here being checked or refused
}

func newAuthLimiter(maxDelay time.Duration) *authLimiter {
	return &authLimiter{max: maxDelay, addrs: make(map[netip.Prefix]*list.Element)}
}

// sourceKey is the key of a remote address: the IPv4 address, or the /64 of
// an IPv6 one. Non-IP addresses (unix sockets) report false.
func sourceKey(a net.Addr) (netip.Prefix, bool) {
	var ip netip.Addr
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	default:
		if a == nil {
			return netip.Prefix{}, false
		}
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Prefix{}, false
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32), true
	case ip.Is6():
		p, _ := ip.Prefix(64)
		return p, true
	}
	return netip.Prefix{}, false
}

// recordLocked returns key's record when it has failures within the quiet
// period, dropping an expired one.
func (l *authLimiter) recordLocked(key netip.Prefix, now time.Time) *authRecord {
	e := l.addrs[key]
	if e == nil {
		return nil
	}
	r := e.Value.(*authRecord)
	if now.Sub(r.last) > authFailureQuiet && r.pending == 0 {
		l.lru.Remove(e)
		delete(l.addrs, key)
		return nil
	}
	return r
}

// begin notes a login from key about to be checked. It reports false when
// key has failures on record and authMaxPending logins in progress already;
// otherwise the caller must call end when the login is answered.
func (l *authLimiter) begin(key netip.Prefix, now time.Time) (*authRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.recordLocked(key, now)
	if r == nil {
		return nil, true
	}
	if r.pending >= authMaxPending {
		return nil, false
	}
	r.pending++
	return r, true
}

// end undoes begin; r is what begin returned (nil is allowed).
func (l *authLimiter) end(r *authRecord) {
	if r == nil {
		return
	}
	l.mu.Lock()
	r.pending--
	l.mu.Unlock()
}

// failed records a failed login from key and returns the record to pass to
// end, the failures on record and how long the refusal waits. r is what
// begin returned; when it was nil a record is found or made here and counted
// as pending.
func (l *authLimiter) failed(key netip.Prefix, r *authRecord, now time.Time) (*authRecord, int, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r == nil {
		if r = l.recordLocked(key, now); r == nil {
			r = &authRecord{key: key}
			l.addrs[key] = l.lru.PushFront(r)
			for len(l.addrs) > authMaxAddrs {
				old := l.lru.Back()
				l.lru.Remove(old)
				delete(l.addrs, old.Value.(*authRecord).key)
			}
		}
		r.pending++
	}
	if e := l.addrs[key]; e != nil && e.Value.(*authRecord) == r {
		l.lru.MoveToFront(e)
	} // else r was dropped from the table meanwhile; it still counts for this login
	if now.Sub(r.last) > authFailureQuiet {
		r.fails = 0 // forgotten after a quiet period
	}
	r.fails++
	r.last = now
	d := l.max
	if r.fails <= 16 {
		d = min(authBaseDelay<<(r.fails-1), l.max)
	}
	return r, r.fails, d
}

// authenticate runs the Authenticators (hooks.go) for c's CONNECT with the failed
// login limits (authLimiter): a failed login is refused after a delay,
// bounded by the connect timeout and by the server shutting down; no lock
// is held while it waits. A check the password backend could not start
// (auth.ErrBusy) and a login refused unchecked are "server unavailable".
func (c *conn) authenticate() error {
	opts := &c.srv.opts
	l := opts.authLimit
	key, ok := sourceKey(c.nc.RemoteAddr())
	if l == nil || !ok || !(c.info.HasUsername || c.info.HasPassword) {
		// Nothing guessed, or nothing to key a record on.
		return unavailableIfBusy(c.srv.runAuthenticators(&c.info))
	}
	r, ok := l.begin(key, time.Now())
	if !ok {
		return fmt.Errorf("%w: %w", packet.ServerUnavailable, errAuthPending)
	}
	err := c.srv.runAuthenticators(&c.info)
	if !errors.Is(err, auth.ErrBadCredentials) {
		// Let in, or refused for another reason than a wrong password
		// (policy, a check that could not run): no guess to slow down.
		l.end(r)
		return unavailableIfBusy(err)
	}
	r, fails, d := l.failed(key, r, time.Now())
	defer l.end(r)
	d = min(d, opts.ConnectTimeout)
	c.srv.log.Debug("login failed, refusal delayed", "client", c.info.ClientID, "remote", c.info.Remote,
		"listener", c.info.Listener, "failures", fails, "delay", d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.srv.done:
	}
	return err
}

// unavailableIfBusy makes a check that could not start "server unavailable":
// the credentials were not checked, so "bad user name or password" or "not
// authorized" would be false and would make a client give up rather than
// retry.
func unavailableIfBusy(err error) error {
	if err != nil && errors.Is(err, auth.ErrBusy) {
		return fmt.Errorf("%w: %w", packet.ServerUnavailable, err)
	}
	return err
}
