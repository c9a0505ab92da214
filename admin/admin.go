// Package admin is mqttd's administration interface: a JSON API under
// /api/v1 (described by openapi.json) and a dashboard (embedded static
// files, usable offline) served over HTTP or HTTPS on a listener of its own
// (admin_listener). It reads the broker through its read-only views
// (broker/introspect.go) and acts through the embedding API (Publish,
// Subscribe, Disconnect).
//
// Access: HTTP Basic with a user of a mosquitto_passwd-format file, or a
// bearer token; both are compared in constant time and a refused request
// is answered only after a delay. A listener on a non-loopback address
// needs credentials.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
)

//go:embed ui openapi.json
var files embed.FS

// Config configures the administration server.
type Config struct {
	Addr         string // host:port to listen on (admin_listener)
	PasswordFile string // admin_password_file: users allowed with HTTP Basic
	TokenFile    string // admin_token_file: a bearer token
	CertFile     string // admin_certfile: serve HTTPS with this certificate
	KeyFile      string // admin_keyfile

	// Credentials, if not nil, were loaded with LoadCredentials (before
	// the process dropped its privileges); nil: New loads the files.
	Credentials *Credentials

	Version  string // the broker's version line
	StoreDir string // the store's directory, whose size is shown; "" without persistence
	Logger   *slog.Logger

	// SampleInterval is the period of the overview's samples (default 5 s);
	// an hour of them is kept.
	SampleInterval time.Duration
	// AuthDelay is how long a refused request waits for its answer
	// (default 1 s).
	AuthDelay time.Duration
}

// Server is a running administration interface.
type Server struct {
	cfg     Config
	b       *broker.Server
	log     *slog.Logger
	creds   atomic.Pointer[Credentials] // swapped by Reload
	tlsConf *tls.Config                 // the listener's; its certificate is the current creds'

	routes []string // method + " " + pattern of every API route (the OpenAPI test walks them)
	mux    *http.ServeMux

	since   sinceTracker
	samples *sampler
	live    *liveTree
	watch   watchLimiter

	http    *http.Server
	ln      net.Listener
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// New prepares the administration server of b: it loads the credentials
// and certificate and registers the hook that records when clients
// connected, so it must be called before b serves. It refuses a listener
// on a non-loopback address without credentials.
func New(b *broker.Server, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = 5 * time.Second
	}
	if cfg.AuthDelay <= 0 {
		cfg.AuthDelay = time.Second
	}
	s := &Server{cfg: cfg, b: b, log: cfg.Logger, stop: make(chan struct{})}
	cr := cfg.Credentials
	if cr == nil {
		var err error
		if cr, err = LoadCredentials(cfg); err != nil {
			return nil, err
		}
	}
	s.creds.Store(cr)
	if cr.cert != nil {
		s.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.creds.Load().cert, nil }}
	}
	if err := b.AddHook(&s.since); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s.samples = newSampler(s, 3600*time.Second/cfg.SampleInterval)
	s.live = newLiveTree(b)
	s.routesInit()
	return s, nil
}

// Credentials are the loaded admin_password_file, admin_token_file and
// admin_certfile/admin_keyfile.
type Credentials struct {
	checkPw func(user, password string) bool
	token   [sha256.Size]byte
	hasTok  bool
	cert    *tls.Certificate
}

// Reload puts credentials read again (SIGHUP) in place for the requests
// that follow. The listener's scheme stays as it started: credentials
// with a certificate for a plain HTTP listener, or without one for an
// HTTPS listener, are refused and the current ones kept.
func (s *Server) Reload(cr *Credentials) error {
	if (cr.cert != nil) != (s.tlsConf != nil) {
		return errors.New("admin_certfile/admin_keyfile added or removed: restart mqttd to change the admin listener's scheme")
	}
	s.creds.Store(cr)
	return nil
}

// LoadCredentials reads the files cfg names and checks that a listener on
// a non-loopback address has credentials. Call it before dropping
// privileges when the files are readable only by root.
func LoadCredentials(cfg Config) (*Credentials, error) {
	cr := &Credentials{}
	if cfg.PasswordFile != "" {
		pw, err := auth.LoadPasswordFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("admin_password_file: %w", err)
		}
		cr.checkPw = pw.Check
	}
	if cfg.TokenFile != "" {
		raw, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin_token_file: %w", err)
		}
		tok := strings.TrimSpace(string(raw))
		if tok == "" {
			return nil, fmt.Errorf("admin_token_file %s: empty token", cfg.TokenFile)
		}
		cr.token, cr.hasTok = sha256.Sum256([]byte(tok)), true
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("admin_certfile and admin_keyfile go together")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin_certfile: %w", err)
		}
		cr.cert = &cert
	}
	if cfg.Addr != "" && !isLoopback(cfg.Addr) && cr.checkPw == nil && !cr.hasTok {
		return nil, fmt.Errorf("admin_listener %s is not a loopback address: set admin_password_file or admin_token_file", cfg.Addr)
	}
	return cr, nil
}

// isLoopback reports whether addr (host:port) names only the loopback
// interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// open reports whether no credentials are configured.
func (s *Server) open() bool {
	cr := s.creds.Load()
	return cr.checkPw == nil && !cr.hasTok
}

// Start listens on Config.Addr and serves until Shutdown.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin_listener: %w", err)
	}
	return s.Serve(ln)
}

// Serve serves on ln (in the background) until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.tlsConf != nil {
		ln = tls.NewListener(ln, s.tlsConf)
	}
	s.ln = ln
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.samples.run(s.stop)
	}()
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", "listener", ln.Addr().String(), "err", err)
		}
	}()
	mode := "credentials required"
	if s.open() {
		mode = "loopback only, no credentials"
	}
	scheme := "http"
	if s.tlsConf != nil {
		scheme = "https"
	}
	s.log.Info("Opening admin listener on "+scheme+"://"+ln.Addr().String()+"/ ("+mode+").", "listener", ln.Addr().String())
	return nil
}

// Addr returns the listening address (after Start or Serve).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops the server: streams end, requests in progress get until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopped.Do(func() {
		close(s.stop)
		if s.http != nil {
			err = s.http.Shutdown(ctx)
		}
		s.wg.Wait()
		s.live.close()
	})
	return err
}

// Handler returns the whole interface: the API (authenticated) and the
// dashboard's static files (public: they hold no data).
func (s *Server) Handler() http.Handler {
	ui, err := fs.Sub(files, "ui")
	if err != nil {
		panic(err) // the embedded tree is built in
	}
	root := http.NewServeMux()
	root.Handle("/api/", s.protect(s.mux))
	root.Handle("/", securityHeaders(http.FileServerFS(ui)))
	return root
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

// allows reports whether r carries accepted credentials.
func (s *Server) allows(r *http.Request) bool {
	cr := s.creds.Load()
	if cr.checkPw == nil && !cr.hasTok {
		return true
	}
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	switch {
	case cr.hasTok && strings.EqualFold(scheme, "Bearer"):
		got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
		return subtle.ConstantTimeCompare(got[:], cr.token[:]) == 1
	case cr.checkPw != nil && strings.EqualFold(scheme, "Basic"):
		user, pw, ok := r.BasicAuth()
		return ok && cr.checkPw(user, pw) // the password file compares in constant time
	}
	return false
}

// protect answers requests without accepted credentials 401, after
// Config.AuthDelay.
func (s *Server) protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if s.allows(r) {
			h.ServeHTTP(w, r)
			return
		}
		s.log.Warn("admin: request refused: bad or missing credentials", "remote", r.RemoteAddr, "path", r.URL.Path)
		t := time.NewTimer(s.cfg.AuthDelay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		cr := s.creds.Load()
		if cr.checkPw != nil {
			w.Header().Add("WWW-Authenticate", `Basic realm="mqttd admin", charset="UTF-8"`)
		}
		if cr.hasTok {
			w.Header().Add("WWW-Authenticate", `Bearer realm="mqttd admin"`)
		}
		writeError(w, http.StatusUnauthorized, "credentials needed (admin_password_file, admin_token_file)")
	})
}

// sinceTracker records when each connected client connected, for the
// client detail (a SessionHook and a DisconnectHook).
type sinceTracker struct {
	mu sync.Mutex
	m  map[string]connStamp
}

type connStamp struct {
	at     time.Time
	remote string
}

func (t *sinceTracker) OnSession(c *broker.ClientInfo, e broker.SessionEvent) {
	if e != broker.SessionCreated && e != broker.SessionResumed {
		return
	}
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[string]connStamp)
	}
	t.m[c.ClientID] = connStamp{time.Now(), c.Remote}
	t.mu.Unlock()
}

func (t *sinceTracker) OnDisconnect(c *broker.ClientInfo, _ broker.Cause, _ error) {
	t.mu.Lock()
	// A taken-over connection ends after its successor connected.
	if st, ok := t.m[c.ClientID]; ok && st.remote == c.Remote {
		delete(t.m, c.ClientID)
	}
	t.mu.Unlock()
}

func (t *sinceTracker) get(id, remote string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.m[id]
	if !ok || st.remote != remote {
		return time.Time{}, false
	}
	return st.at, true
}
