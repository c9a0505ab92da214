package jwtauth

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// Config are the settings of an Auth.
type Config struct {
	HS256SecretFiles []string // each an HS256 secret (LoadSecret)
	RS256KeyFiles    []string // PEM RSA public keys or certificates
	ES256KeyFiles    []string // PEM P-256 public keys or certificates
	JWKSFile         string   // a JWK Set, re-read by Reload

	// UsernameClaim names the claim that is the client's user name ("" =
	// none). A client that sends a user name must send this one; one that
	// sends none gets it for its ACLs (%u). The claim is then required.
	UsernameClaim string
	// PublishClaim and SubscribeClaim name claims that hold the topic
	// filters the client may publish to, and subscribe to and receive from
	// (a list of strings, or one string; %c and %u are replaced by the
	// client id and user name). With neither set, access checks defer to
	// the next hook (the acl_file). A claim set but absent from a token
	// grants nothing.
	PublishClaim, SubscribeClaim string

	Audience string // required aud ("" = not checked)
	Issuer   string // required iss ("" = not checked)
	// Leeway is the clock skew allowed on exp and nbf.
	Leeway time.Duration

	Logger *slog.Logger
}

// Keys loads the keys cfg names.
func (cfg *Config) Keys() ([]Key, error) {
	var keys []Key
	for _, f := range cfg.HS256SecretFiles {
		k, err := LoadSecret(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	for _, f := range cfg.RS256KeyFiles {
		ks, err := LoadPEM(f, RS256)
		if err != nil {
			return nil, err
		}
		keys = append(keys, ks...)
	}
	for _, f := range cfg.ES256KeyFiles {
		ks, err := LoadPEM(f, ES256)
		if err != nil {
			return nil, err
		}
		keys = append(keys, ks...)
	}
	if cfg.JWKSFile != "" {
		ks, err := LoadJWKS(cfg.JWKSFile)
		if err != nil {
			return nil, err
		}
		keys = append(keys, ks...)
	}
	if len(keys) == 0 {
		return nil, errors.New("jwtauth: no key configured")
	}
	return keys, nil
}

// settings are one loaded generation of the configuration.
type settings struct {
	cfg  Config
	keys []Key
}

// grant is what a verified token allows one connection.
type grant struct {
	conn     string // connection key (connKey)
	clientID string
	expires  time.Time
	acl      bool     // the token's claims decide access
	pub, sub []string // expanded filters
	made     time.Time
	timer    *time.Timer
}

// Auth is the JWT broker hook: broker.Authenticator, broker.Authorizer,
// broker.AttachHook, broker.SessionHook and broker.DisconnectHook. It is
// safe for concurrent use.
type Auth struct {
	set atomic.Pointer[settings]
	log *slog.Logger
	srv atomic.Pointer[broker.Server]
	now func() time.Time

	mu        sync.RWMutex
	pending   map[string]*grant // by connection: authenticated, not yet connected
	active    map[string]*grant // by client id: connected
	lastSweep time.Time
}

// New loads the keys cfg names and makes the hook.
func New(cfg Config) (*Auth, error) {
	keys, err := cfg.Keys()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Auth{log: log, now: time.Now, pending: make(map[string]*grant), active: make(map[string]*grant)}
	a.set.Store(&settings{cfg: cfg, keys: keys})
	return a, nil
}

// Reload re-reads the key files and the JWKS file of cfg and uses them, and
// cfg's claim settings, for the tokens checked from now on. On error the
// keys in use stay. Connected clients keep what their token granted.
func (a *Auth) Reload(cfg Config) error {
	keys, err := cfg.Keys()
	if err != nil {
		return err
	}
	a.set.Store(&settings{cfg: cfg, keys: keys})
	return nil
}

// Attach keeps the server, to disconnect clients whose token expires.
func (a *Auth) Attach(s *broker.Server) error {
	a.srv.Store(s)
	return nil
}

// connKey names one connection: the client id, its remote address and its
// listener. Two connections open at once never share it (one remote
// address and port per TCP connection).
func connKey(c *broker.ClientInfo) string {
	return c.ClientID + "\x00" + c.Remote + "\x00" + c.Listener
}

// pendingMaxAge is how long an authenticated client may take to become
// connected before its grant is forgotten (the CONNECT failed later).
const pendingMaxAge = 2 * time.Minute

// Authenticate verifies the password as a JWT (broker.Authenticator). A
// password that is not shaped as a JWT (or none) defers to the next
// authenticator. Refusals, with what a client can do about them:
//
//   - malformed, bad signature, alg none or not configured: 0x86 bad user
//     name or password (3.x return code 4), with the failed-login delay;
//   - expired or not yet valid: 0x86 (get a fresh token and reconnect), no
//     delay;
//   - a required claim missing or wrong (exp, iss, aud, the user name claim,
//     a user name that differs from it, a malformed ACL claim): 0x87 not
//     authorized (3.x 5): a fresh token from the same issuer will not help.
func (a *Auth) Authenticate(c *broker.ClientInfo) error {
	k := connKey(c)
	a.mu.Lock()
	delete(a.pending, k) // a grant left by an earlier CONNECT that failed after authentication
	a.mu.Unlock()
	if !c.HasPassword {
		return broker.ErrDefer
	}
	st := a.set.Load()
	now := a.now()
	claims, err := Verify(string(c.Password), st.keys, now, st.cfg.Leeway)
	switch {
	case errors.Is(err, ErrNotJWT):
		return broker.ErrDefer
	case errors.Is(err, ErrExpired), errors.Is(err, ErrNotYetValid):
		return fmt.Errorf("%w: %w", packet.BadUserNameOrPassword, err)
	case errors.Is(err, ErrClaims):
		return fmt.Errorf("%w: %w: %w", packet.NotAuthorized, err, auth.ErrNotAuthorized)
	case err != nil:
		return fmt.Errorf("%w: %w: %w", packet.BadUserNameOrPassword, err, auth.ErrBadCredentials)
	}
	g, err := st.grant(c, claims)
	if err != nil {
		return fmt.Errorf("%w: %w: %w", packet.NotAuthorized, err, auth.ErrNotAuthorized)
	}
	g.conn, g.clientID, g.made = k, c.ClientID, now
	g.expires = g.expires.Add(st.cfg.Leeway) // the client goes when the token is no longer accepted
	a.mu.Lock()
	a.pending[g.conn] = g
	if now.Sub(a.lastSweep) > pendingMaxAge/2 {
		a.lastSweep = now
		for k, p := range a.pending {
			if now.Sub(p.made) > pendingMaxAge {
				delete(a.pending, k)
			}
		}
	}
	a.mu.Unlock()
	return nil
}

// grant checks the claims beyond the signature and builds the grant.
func (st *settings) grant(c *broker.ClientInfo, cl *Claims) (*grant, error) {
	cfg := &st.cfg
	if cfg.Issuer != "" {
		if iss, _ := cl.String("iss"); iss != cfg.Issuer {
			return nil, fmt.Errorf("%w: iss is not %q", ErrClaims, cfg.Issuer)
		}
	}
	if cfg.Audience != "" && !cl.Audience(cfg.Audience) {
		return nil, fmt.Errorf("%w: aud does not name %q", ErrClaims, cfg.Audience)
	}
	user, hasUser := c.Username, c.HasUsername
	if cfg.UsernameClaim != "" {
		u, ok := cl.String(cfg.UsernameClaim)
		if !ok || u == "" {
			return nil, fmt.Errorf("%w: no %s claim (user name)", ErrClaims, cfg.UsernameClaim)
		}
		if c.HasUsername && c.Username != u {
			return nil, fmt.Errorf("%w: the user name is not the token's %s claim", ErrClaims, cfg.UsernameClaim)
		}
		user, hasUser = u, true
	}
	g := &grant{expires: cl.Expires, acl: cfg.PublishClaim != "" || cfg.SubscribeClaim != ""}
	var err error
	if g.pub, err = aclClaim(cl, cfg.PublishClaim, c.ClientID, user, hasUser); err != nil {
		return nil, err
	}
	if g.sub, err = aclClaim(cl, cfg.SubscribeClaim, c.ClientID, user, hasUser); err != nil {
		return nil, err
	}
	return g, nil
}

// aclClaim reads an ACL claim: topic filters with %c and %u replaced, as in
// an acl_file pattern. A filter whose replacement is impossible (%u without
// a user name) or would bring wildcards in (a client id or user name with +
// or #) is left out, as Mosquitto does for patterns; an invalid filter is a
// claims error.
func aclClaim(cl *Claims, name, clientID, user string, hasUser bool) ([]string, error) {
	if name == "" {
		return nil, nil
	}
	list, _, err := cl.List(name)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(list))
	for _, f := range list {
		if strings.Contains(f, "%u") && (!hasUser || strings.ContainsAny(user, "+#")) {
			continue
		}
		if strings.Contains(f, "%c") && strings.ContainsAny(clientID, "+#") {
			continue
		}
		f = strings.ReplaceAll(strings.ReplaceAll(f, "%c", clientID), "%u", user)
		if err := topic.ValidateFilter(f); err != nil {
			return nil, fmt.Errorf("%w: %s: %q is not a topic filter", ErrClaims, name, f)
		}
		out = append(out, f)
	}
	return out, nil
}

// lookup returns the grant of the connection c (connected or connecting).
// Call with a.mu held.
func (a *Auth) lookup(c *broker.ClientInfo) *grant {
	k := connKey(c)
	if g := a.active[c.ClientID]; g != nil && g.conn == k {
		return g
	}
	return a.pending[k]
}

// errDenied refuses an access the token does not grant.
var errDenied = errors.New("jwtauth: the token grants no such access")

// Authorize decides from the token's ACL claims (broker.Authorizer) for
// clients authenticated by a token when PublishClaim or SubscribeClaim is
// set; it defers for every other client. Publish needs a publish filter
// matching the topic; subscribe a subscribe filter that covers the whole
// requested filter; receive a subscribe filter matching the topic;
// unsubscribe is always allowed. '$' topics are matched only by filters
// starting with '$' [MQTT-4.7.2-1].
func (a *Auth) Authorize(c *broker.ClientInfo, acc broker.Access, name string) error {
	a.mu.RLock()
	g := a.lookup(c)
	a.mu.RUnlock()
	if g == nil || !g.acl {
		return broker.ErrDefer
	}
	ok := false
	switch acc {
	case broker.AccessPublish:
		ok = matchesAny(g.pub, name)
	case broker.AccessReceive:
		ok = matchesAny(g.sub, name)
	case broker.AccessSubscribe:
		for _, f := range g.sub {
			if covers(f, name) {
				ok = true
				break
			}
		}
	case broker.AccessUnsubscribe:
		ok = true
	}
	if !ok {
		return errDenied
	}
	return nil
}

func matchesAny(filters []string, name string) bool {
	for _, f := range filters {
		if topic.IsSys(name) && !topic.IsSys(f) {
			continue // [MQTT-4.7.2-1]
		}
		if topic.Match(f, name) {
			return true
		}
	}
	return false
}

// covers reports whether every topic name that filter sub matches is also
// matched by acl.
func covers(acl, sub string) bool {
	if topic.IsSys(sub) != topic.IsSys(acl) {
		// A '$' subscription needs a '$' entry; a '$' entry covers no
		// other subscription, as wildcards never reach '$' topics
		// [MQTT-4.7.2-1].
		return false
	}
	al, sl := strings.Split(acl, "/"), strings.Split(sub, "/")
	for i, a := range al {
		if a == "#" {
			// "#" also matches the parent level: a/# covers a.
			return true
		}
		if i >= len(sl) {
			return false
		}
		s := sl[i]
		switch {
		case s == "#":
			return false // acl stops short of what "#" reaches
		case a == "+":
			// covers any literal level and "+"
		case a != s:
			return false
		}
	}
	return len(al) == len(sl)
}

// OnSession records that the client authenticated by a token is connected
// and starts the timer that disconnects it when the token expires
// (broker.SessionHook). A client that connects without a token drops the
// grant of the client id it replaces.
func (a *Auth) OnSession(c *broker.ClientInfo, e broker.SessionEvent) {
	if e != broker.SessionCreated && e != broker.SessionResumed {
		return
	}
	k := connKey(c)
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.active[c.ClientID]; old != nil && old.conn != k {
		stop(old)
		delete(a.active, c.ClientID)
	}
	g := a.pending[k]
	if g == nil {
		return
	}
	delete(a.pending, k)
	a.active[c.ClientID] = g
	g.timer = time.AfterFunc(g.expires.Sub(a.now()), func() { a.expire(g) })
}

func stop(g *grant) {
	if g.timer != nil {
		g.timer.Stop()
	}
}

// expire disconnects g's client when its token expires, unless it went or
// was replaced meanwhile.
func (a *Auth) expire(g *grant) {
	a.mu.Lock()
	current := a.active[g.clientID] == g
	if current {
		delete(a.active, g.clientID)
	}
	a.mu.Unlock()
	srv := a.srv.Load()
	if !current || srv == nil {
		return
	}
	if srv.Disconnect(g.clientID, packet.NotAuthorized) {
		a.log.Info("client disconnected: its token expired", "client", g.clientID,
			"expired", g.expires.UTC().Format(time.RFC3339))
	}
}

// OnDisconnect forgets the grant of a connection that ended and stops its
// expiry timer (broker.DisconnectHook).
func (a *Auth) OnDisconnect(c *broker.ClientInfo, _ broker.Cause, _ error) {
	k := connKey(c)
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pending, k)
	if g := a.active[c.ClientID]; g != nil && g.conn == k {
		stop(g)
		delete(a.active, c.ClientID)
	}
}

// Tracked returns how many connections' grants are kept (connected and
// connecting).
func (a *Auth) Tracked() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.active) + len(a.pending)
}

// SetLogger sets where expiry disconnections are logged; call it before the
// server serves.
func (a *Auth) SetLogger(l *slog.Logger) { a.log = l }
