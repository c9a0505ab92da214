package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/auth/dynsec"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/listener"
	"github.com/mqttd/mqttd/packet"
)

// Auth is the running security of a broker: the password and ACL files of
// the configuration loaded into broker hooks (Authenticate, Authorize,
// CheckSubscribe), globally or per listener (per_listener_settings). Reload
// re-reads the files (SIGHUP); connections stay up and every check after the
// reload uses the new files.
type Auth struct {
	mu    sync.Mutex // guards cfg, names and reloads
	cfg   *Config
	names map[string]int // broker listener name -> index into cfg.Listeners
	state atomic.Pointer[authState]
	index atomic.Pointer[map[string]int] // copy of names for lock-free lookups
	// backends are the HTTP and JWT hooks (authbackend.go), made once:
	// Reload re-reads the JWT keys.
	backends authBackends
	// dynsec is the built-in dynamic-security plugin (dynsec.go), made
	// once; nil when not configured.
	dynsec *dynsec.Plugin
}

// authState is one loaded generation of the files.
type authState struct {
	global      *secState   // per_listener_settings false
	perListener []*secState // per_listener_settings true, by listener index
	prefixes    string      // clientid_prefixes
	checkSub    bool        // acl_check_subscribe
	badNotAuth  bool        // Config.BadCredentialsNotAuthorized
}

// secState is one set of security settings with its files loaded.
type secState struct {
	sec      Security
	pw       *auth.PasswordFile // nil: no password_file
	acl      *auth.ACL          // nil: no acl_file
	identity bool               // the listener takes user names from certificates
}

// NewAuth loads the password and ACL files cfg names.
func NewAuth(cfg *Config) (*Auth, error) {
	a := &Auth{cfg: cfg, names: make(map[string]int)}
	st, err := load(cfg)
	if err != nil {
		return nil, err
	}
	if a.backends, err = loadAuthBackends(cfg); err != nil {
		return nil, err
	}
	if a.dynsec, err = loadDynsec(cfg); err != nil {
		return nil, err
	}
	a.state.Store(st)
	empty := map[string]int{}
	a.index.Store(&empty)
	return a, nil
}

// Bind tells Auth that the broker calls listener cfg.Listeners[i] name
// (the address its net.Listener reports).
func (a *Auth) Bind(name string, i int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.names[name] = i
	cp := make(map[string]int, len(a.names))
	for k, v := range a.names {
		cp[k] = v
	}
	a.index.Store(&cp)
}

// Reload re-reads every password and ACL file. With next (the configuration
// file read again) its security options replace the current ones, provided
// its listeners are the same (same addresses, in the same order); a
// configuration whose listeners changed is refused, as those need a
// restart. The JWT keys (auth_jwt_ key files and the JWKS file) are read
// again too; the auth_http_ options, and adding or removing a backend, need a
// restart. On error the files and settings in force stay and the error is
// returned.
func (a *Auth) Reload(next *Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg := a.cfg
	if next != nil {
		if !sameListeners(cfg, next) {
			return fmt.Errorf("%w: the listeners changed; restart mqttd to apply them", ErrInvalid)
		}
		if cfg.DynSec.Plugin != next.DynSec.Plugin || cfg.DynSec.ConfigFile != next.DynSec.ConfigFile {
			return fmt.Errorf("%w: the dynamic-security plugin options changed; restart mqttd to apply them", ErrInvalid)
		}
		cfg = next
	}
	st, err := load(cfg)
	if err != nil {
		return err
	}
	if err := a.backends.reload(a.cfg, cfg); err != nil {
		return err
	}
	a.cfg = cfg
	a.state.Store(st)
	return nil
}

func sameListeners(a, b *Config) bool {
	if len(a.Listeners) != len(b.Listeners) {
		return false
	}
	for i := range a.Listeners {
		x, y := a.Listeners[i], b.Listeners[i]
		if x.Addr() != y.Addr() || x.UseIdentityAsUsername != y.UseIdentityAsUsername ||
			x.UseSubjectAsUsername != y.UseSubjectAsUsername {
			return false
		}
	}
	return true
}

func load(cfg *Config) (*authState, error) {
	st := &authState{prefixes: cfg.ClientIDPrefixes, checkSub: cfg.ACLCheckSubscribe,
		badNotAuth: cfg.BadCredentialsNotAuthorized}
	var err error
	if st.global, err = loadSec(cfg.Security); err != nil {
		return nil, err
	}
	for _, l := range cfg.Listeners {
		s, err := loadSec(cfg.ListenerSecurity(l))
		if err != nil {
			return nil, err
		}
		s.identity = l.UseIdentityAsUsername || l.UseSubjectAsUsername
		st.perListener = append(st.perListener, s)
	}
	return st, nil
}

func loadSec(sec Security) (*secState, error) {
	s := &secState{sec: sec}
	var err error
	if sec.PasswordFile != "" {
		if s.pw, err = auth.LoadPasswordFile(sec.PasswordFile); err != nil {
			return nil, fmt.Errorf("config: password_file: %w", err)
		}
	}
	if sec.ACLFile != "" {
		if s.acl, err = auth.LoadACLFile(sec.ACLFile); err != nil {
			return nil, fmt.Errorf("config: acl_file: %w", err)
		}
	}
	return s, nil
}

// forClient returns the security settings of the listener a client came in on.
func (a *Auth) forClient(ci *broker.ClientInfo) (*authState, *secState) {
	st := a.state.Load()
	i, ok := (*a.index.Load())[ci.Listener]
	if !ok || i >= len(st.perListener) {
		// Not a configured listener (a test's own): the global settings.
		return st, st.global
	}
	return st, st.perListener[i]
}

// Errors for refusals Auth decides itself.
var (
	errAnonymous      = errors.New("config: anonymous clients are not allowed")
	errClientIDPrefix = errors.New("config: client id lacks the clientid_prefixes prefix")
	errNoPasswordFile = errors.New("config: no password_file and allow_anonymous false")
)

// Authenticate is the broker's Authenticate hook with Mosquitto 2.0's rules:
// a client id outside clientid_prefixes is not authorized; on a listener
// that takes user names from client certificates the certificate is the
// credential; a client without a user name needs allow_anonymous; one with
// a user name must match the password file (when there is none, it is let in
// only with allow_anonymous). The error wraps the reason code the CONNACK
// carries: not authorized (3.x 5, 5.0 0x87) or bad user name or password
// (4 / 0x86; Mosquitto 2.0 says not authorized for both, the default here:
// see Config.BadCredentialsNotAuthorized).
func (a *Auth) Authenticate(ci *broker.ClientInfo) error {
	st, s := a.forClient(ci)
	if p := st.prefixes; p != "" && !strings.HasPrefix(ci.ClientID, p) {
		return fmt.Errorf("%w: %w", packet.NotAuthorized, errClientIDPrefix)
	}
	if s.identity {
		return nil // the broker set the user name from the verified certificate
	}
	if !ci.HasUsername {
		if s.sec.AllowAnonymous {
			return nil
		}
		return fmt.Errorf("%w: %w", packet.NotAuthorized, errAnonymous)
	}
	if s.pw == nil {
		if s.sec.AllowAnonymous {
			return nil
		}
		return fmt.Errorf("%w: %w", packet.NotAuthorized, errNoPasswordFile)
	}
	err := s.pw.Authenticate(context.Background(), authClient(ci))
	return codeFor(err, st.badNotAuth)
}

// codeFor wraps an auth error with the reason code the CONNACK carries.
func codeFor(err error, badNotAuth bool) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrNotAuthorized):
		return fmt.Errorf("%w: %w", packet.NotAuthorized, err)
	case errors.Is(err, auth.ErrBadCredentials) && badNotAuth:
		return fmt.Errorf("%w: %w", packet.NotAuthorized, err)
	case errors.Is(err, auth.ErrBadCredentials):
		return fmt.Errorf("%w: %w", packet.BadUserNameOrPassword, err)
	}
	return fmt.Errorf("%w: %w", packet.NotAuthorized, err)
}

// Authorize is the broker's Authorize hook: with an acl_file, Mosquitto's
// ACL rules (a PUBLISH needs write, a delivery read); without one,
// everything is allowed.
func (a *Auth) Authorize(ci *broker.ClientInfo, topicName string, write bool) bool {
	_, s := a.forClient(ci)
	if s.acl == nil {
		return true
	}
	access := auth.Read
	if write {
		access = auth.Write
	}
	return s.acl.Authorize(context.Background(), authClient(ci), topicName, access)
}

// CheckSubscribe is the broker's CheckSubscribe hook. Mosquitto 2.0 grants
// every SUBSCRIBE and checks each message at delivery; with
// acl_check_subscribe true a filter the ACL would never deliver anything
// for is refused (SUBACK 0x80, 5.0 0x87).
func (a *Auth) CheckSubscribe(ci *broker.ClientInfo, filter string) bool {
	st, s := a.forClient(ci)
	if !st.checkSub || s.acl == nil {
		return true
	}
	return s.acl.CanEverRead(authClient(ci), filter)
}

func authClient(ci *broker.ClientInfo) *auth.Client {
	return &auth.Client{ClientID: ci.ClientID, Username: ci.Username, HasUsername: ci.HasUsername,
		Password: ci.Password, HasPassword: ci.HasPassword}
}

// Apply installs the hooks in o.
func (a *Auth) Apply(o *broker.Options) {
	// Anonymous clients are decided per listener by Authenticate.
	o.AllowAnonymous = true
	o.Authenticate = a.Authenticate
	o.Authorize = a.Authorize
	o.CheckSubscribe = a.CheckSubscribe
	o.ListenerSecurity = a.cfg.PerListenerSettings
	// The HTTP and JWT backends run first (broker hooks are asked before
	// the Authenticate and Authorize functions above).
	if a.backends.http != nil && o.Logger != nil {
		a.backends.http.SetLogger(o.Logger)
	}
	if a.backends.jwt != nil && o.Logger != nil {
		a.backends.jwt.SetLogger(o.Logger)
	}
	o.Hooks = append(o.Hooks, a.backends.hooks()...)
	if a.dynsec != nil {
		// Mosquitto's dynamic-security plugin: its own clients, roles and
		// control topic, asked after the backends above and before the files.
		if o.Logger != nil {
			a.dynsec.SetLogger(o.Logger)
		}
		o.Hooks = append(o.Hooks, a.dynsec)
	}
}

// ListenerOptions returns the broker settings of listener l.
func (c *Config) ListenerOptions(l *Listener) broker.ListenerOptions {
	sec := c.ListenerSecurity(l)
	lo := broker.ListenerOptions{MountPoint: l.MountPoint, MaxConnections: l.MaxConnections,
		RefuseEmptyClientID: !sec.AllowZeroLengthClientID, AutoIDPrefix: sec.AutoIDPrefix}
	lo.MaxConnectionRate = l.MaxConnectionRate // max_connection_rate (mqttd)
	if !l.Unix {
		lo.Port = l.Port
	}
	switch {
	case l.UseSubjectAsUsername:
		lo.Identity = func(nc net.Conn) (string, bool) {
			_, subject, ok := listener.PeerIdentity(nc)
			return subject, ok && subject != ""
		}
	case l.UseIdentityAsUsername:
		lo.Identity = func(nc net.Conn) (string, bool) {
			cn, _, ok := listener.PeerIdentity(nc)
			return cn, ok && cn != ""
		}
	}
	return lo
}

// ListenerConfig returns the transport settings of listener l. The TLS
// settings are built once per call: keep the result to Reload it.
func (c *Config) ListenerConfig(l *Listener) listener.Config {
	lc := listener.Config{Address: l.Addr(), Protocol: l.Protocol, SocketDomain: l.SocketDomain,
		BindInterface: l.BindInterface, HandshakeTimeout: l.HandshakeTimeout,
		MaxPendingPerAddress: l.MaxPendingPerAddress, AllowedOrigins: l.WebSocketsOrigins}
	// A WebSocket message may carry at most one largest packet (and slack).
	lc.MaxMessageSize = broker.DefaultMaxPacketSize
	if c.Broker.MaxPacketSize > 0 {
		lc.MaxMessageSize = int64(c.Broker.MaxPacketSize)
	}
	if l.Unix {
		lc.Network = "unix"
		lc.SocketDomain = ""
	} else if c.SetTCPNoDelay != nil && !*c.SetTCPNoDelay {
		lc.Nagle = true // set_tcp_nodelay false given explicitly: Mosquitto's Nagle
	}
	if l.TLS() {
		lc.TLS = &listener.TLSConfig{CAFile: l.CAFile, CAPath: l.CAPath, CertFile: l.CertFile, KeyFile: l.KeyFile,
			CRLFile: l.CRLFile, RequireCertificate: l.RequireCertificate, MinVersion: l.TLSVersion, Ciphers: l.Ciphers}
	}
	return lc
}

// PermissionWarnings names the secret files cfg reads (password_file,
// acl_file, metrics_password_file, metrics_token_file) that every user of
// the machine can read, as Mosquitto 2.0 warns about world-readable
// password and ACL files. A file that cannot be examined gives no warning:
// loading it reports the error.
func PermissionWarnings(cfg *Config) []string {
	type file struct{ key, path string }
	var files []file
	add := func(sec Security) {
		files = append(files, file{"password_file", sec.PasswordFile}, file{"acl_file", sec.ACLFile})
	}
	add(cfg.Security)
	for _, l := range cfg.Listeners {
		add(cfg.ListenerSecurity(l))
	}
	files = append(files, file{"metrics_password_file", cfg.MetricsPasswordFile},
		file{"metrics_token_file", cfg.MetricsTokenFile})
	for _, f := range cfg.JWTAuth.HS256SecretFiles {
		files = append(files, file{"auth_jwt_hs256_secret_file", f})
	}
	var out []string
	seen := make(map[string]bool)
	for _, f := range files {
		if f.path == "" || seen[f.path] {
			continue
		}
		seen[f.path] = true
		fi, err := os.Stat(f.path)
		if err != nil || fi.Mode().Perm()&0o004 == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s is readable by every user (mode %04o): chmod o-rwx %s "+
			"(Mosquitto 2.0 warns that it will refuse such files)", f.key, f.path, fi.Mode().Perm(), f.path))
	}
	return out
}
