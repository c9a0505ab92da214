// Package httpauth authenticates and authorizes MQTT clients by asking an
// HTTP service, as mosquitto-go-auth's and EMQX's HTTP backends do.
//
// Each question is a POST of a JSON object (Request) to a configured URL:
// one URL for CONNECT (authentication) and one for access checks
// (authorization). A 2xx answer allows, a 4xx answer refuses; anything else
// (5xx, a redirect, a transport error, the timeout) is a failure, which the
// failure policy turns into an answer (refuse by default). Definite answers
// (2xx and 4xx) are cached for a while, keyed on a SHA-256 hash of the
// request: the password is never kept in clear. The response body is
// ignored.
package httpauth

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
)

// Defaults and bounds of Config.
const (
	DefaultTimeout   = 3 * time.Second
	MaxTimeout       = 60 * time.Second
	DefaultCacheTTL  = 30 * time.Second
	DefaultCacheSize = 10000
)

// Header is an HTTP header added to every request (auth_http_header).
type Header struct{ Name, Value string }

// Config are the settings of a Backend.
type Config struct {
	URL    string // authentication (CONNECT); "" defers every CONNECT to the next hook
	ACLURL string // authorization; "" defers every access check
	// Timeout bounds each request (and so how long a CONNECT or an access
	// check may wait); 0 = DefaultTimeout.
	Timeout time.Duration
	// CacheTTL is how long a 2xx or 4xx answer is reused; 0 =
	// DefaultCacheTTL, negative = no cache.
	CacheTTL time.Duration
	// CacheSize bounds the cached answers (least recently used go first);
	// 0 = DefaultCacheSize.
	CacheSize int
	// FailureAllow lets in (or allows) when the service fails (5xx, timeout,
	// unreachable); false refuses: a CONNECT with "server unavailable"
	// (0x88, 3.x return code 3), which tells the client to retry.
	FailureAllow bool
	Headers      []Header
	CAFile       string // PEM CA certificates trusted for https URLs instead of the system's
	Logger       *slog.Logger
}

// Check validates c without contacting anything but the CA file.
func (c *Config) Check() error {
	for _, u := range []string{c.URL, c.ACLURL} {
		if u == "" {
			continue
		}
		if err := CheckURL(u); err != nil {
			return err
		}
	}
	if c.Timeout < 0 || c.Timeout > MaxTimeout {
		return fmt.Errorf("httpauth: timeout %v is not from 1ms to %v", c.Timeout, MaxTimeout)
	}
	if c.CacheSize < 0 {
		return fmt.Errorf("httpauth: cache size %d is negative", c.CacheSize)
	}
	if c.CAFile != "" {
		if _, err := loadCA(c.CAFile); err != nil {
			return err
		}
	}
	return nil
}

// CheckURL accepts an absolute http or https URL with a host.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("httpauth: %q is not an http:// or https:// URL with a host", s)
	}
	return nil
}

func loadCA(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("httpauth: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("httpauth: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Request is the JSON body of every POST. Access is "connect" for
// authentication, else the broker.Access asked ("publish", "subscribe",
// "receive", "unsubscribe"); Topic is empty for "connect". A password that
// is not valid UTF-8 is sent base64-encoded in PasswordBase64 instead of
// Password. Remote is the client's host:port, Listener the address of the
// listener it came in on.
type Request struct {
	ClientID       string `json:"clientid"`
	Username       string `json:"username"`
	Password       string `json:"password,omitempty"`
	PasswordBase64 string `json:"password_base64,omitempty"`
	Remote         string `json:"remote"`
	Listener       string `json:"listener"`
	Topic          string `json:"topic,omitempty"`
	Access         string `json:"access"`
}

// Errors behind the refusals.
var (
	// ErrRefused: the service answered 4xx.
	ErrRefused = errors.New("httpauth: refused by the HTTP service")
	// ErrFailed: the service failed (5xx, other status, timeout, unreachable).
	ErrFailed = errors.New("httpauth: the HTTP service failed")
)

// Backend is a broker hook (broker.Authenticator and broker.Authorizer).
// It is safe for concurrent use.
type Backend struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger

	cache  *cache // nil: no cache
	mu     sync.Mutex
	flight map[[32]byte]*call // requests in progress, shared by identical questions

	requests atomic.Int64
}

// answer is the outcome of one question: allowed, refused by the service
// (status kept), or failed.
type answer struct {
	allowed bool
	status  int   // HTTP status of a definite answer
	err     error // a failure (nil for definite answers)
}

type call struct {
	done chan struct{}
	ans  answer
}

// New makes a Backend. It reads the CA file; it sends nothing.
func New(cfg Config) (*Backend, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	tr.ResponseHeaderTimeout = cfg.Timeout
	tr.DialContext = (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext
	if cfg.CAFile != "" {
		pool, err := loadCA(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	b := &Backend{cfg: cfg, log: log, flight: make(map[[32]byte]*call)}
	b.client = &http.Client{Transport: tr, Timeout: cfg.Timeout,
		// A redirect is not an answer: it is a failure (the policy decides).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cfg.CacheTTL > 0 {
		b.cache = newCache(cfg.CacheSize, cfg.CacheTTL)
	}
	return b, nil
}

// Requests returns how many HTTP requests were sent.
func (b *Backend) Requests() int64 { return b.requests.Load() }

// Close releases idle connections to the service.
func (b *Backend) Close() { b.client.CloseIdleConnections() }

// Authenticate asks the authentication URL (broker.Authenticator). A 4xx
// refuses: 403 with "not authorized" (0x87, 3.x 5), any other 4xx with "bad
// user name or password" (0x86, 3.x 4) and the failed-login delay. A failure
// lets the client in with FailureAllow, else refuses it with "server
// unavailable" (0x88, 3.x 3).
func (b *Backend) Authenticate(c *broker.ClientInfo) error {
	if b.cfg.URL == "" {
		return broker.ErrDefer
	}
	r := Request{ClientID: c.ClientID, Username: c.Username, Remote: c.Remote, Listener: c.Listener, Access: "connect"}
	if c.HasPassword {
		if utf8.Valid(c.Password) {
			r.Password = string(c.Password)
		} else {
			r.PasswordBase64 = base64.StdEncoding.EncodeToString(c.Password)
		}
	}
	ans := b.ask(b.cfg.URL, &r, c.Password)
	switch {
	case ans.err != nil:
		if b.cfg.FailureAllow {
			b.log.Warn("HTTP authentication failed; client let in (auth_http_failure allow)",
				"client", c.ClientID, "remote", c.Remote, "listener", c.Listener, "err", ans.err)
			return nil
		}
		b.log.Warn("HTTP authentication failed; client refused", "client", c.ClientID, "remote", c.Remote,
			"listener", c.Listener, "err", ans.err)
		// The details (the service's address) go to the log, not to the
		// client's CONNACK reason string.
		return fmt.Errorf("%w: %w", packet.ServerUnavailable, ErrFailed)
	case ans.allowed:
		return nil
	case ans.status == http.StatusForbidden:
		return fmt.Errorf("%w: %w (%d): %w", packet.NotAuthorized, ErrRefused, ans.status, auth.ErrNotAuthorized)
	}
	return fmt.Errorf("%w: %w (%d): %w", packet.BadUserNameOrPassword, ErrRefused, ans.status, auth.ErrBadCredentials)
}

// Authorize asks the ACL URL (broker.Authorizer): 2xx allows, 4xx refuses,
// a failure allows with FailureAllow and refuses otherwise.
func (b *Backend) Authorize(c *broker.ClientInfo, a broker.Access, topic string) error {
	if b.cfg.ACLURL == "" {
		return broker.ErrDefer
	}
	r := Request{ClientID: c.ClientID, Username: c.Username, Remote: c.Remote, Listener: c.Listener,
		Topic: topic, Access: a.String()}
	ans := b.ask(b.cfg.ACLURL, &r, nil)
	switch {
	case ans.err != nil:
		b.log.Warn("HTTP authorization failed", "client", c.ClientID, "remote", c.Remote, "listener", c.Listener,
			"topic", topic, "access", a.String(), "allowed", b.cfg.FailureAllow, "err", ans.err)
		if b.cfg.FailureAllow {
			return nil
		}
		return ErrFailed
	case ans.allowed:
		return nil
	}
	return fmt.Errorf("%w (%d)", ErrRefused, ans.status)
}

// key hashes what identifies a question. The remote address's port is left
// out (a client reconnecting from another port asks the same question);
// each field is length-prefixed so that no two questions share a key.
func key(url string, r *Request, password []byte) [32]byte {
	h := sha256.New()
	host := r.Remote
	if hst, _, err := net.SplitHostPort(r.Remote); err == nil {
		host = hst
	}
	var n [8]byte
	for _, f := range [][]byte{[]byte(url), []byte(r.Access), []byte(r.ClientID), []byte(r.Username),
		[]byte(host), []byte(r.Listener), []byte(r.Topic), password} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// ask answers r from the cache, from an identical request in progress, or
// by POSTing it to url.
func (b *Backend) ask(url string, r *Request, password []byte) answer {
	k := key(url, r, password)
	if b.cache != nil {
		if ans, ok := b.cache.get(k, time.Now()); ok {
			return ans
		}
	}
	b.mu.Lock()
	if cl := b.flight[k]; cl != nil {
		b.mu.Unlock()
		<-cl.done // bounded: the request in progress has the timeout
		return cl.ans
	}
	cl := &call{done: make(chan struct{})}
	b.flight[k] = cl
	b.mu.Unlock()

	cl.ans = b.post(url, r)
	if cl.ans.err == nil && b.cache != nil {
		b.cache.put(k, cl.ans, time.Now())
	}
	b.mu.Lock()
	delete(b.flight, k)
	b.mu.Unlock()
	close(cl.done)
	return cl.ans
}

// post sends one request, bounded by the timeout.
func (b *Backend) post(url string, r *Request) answer {
	body, err := json.Marshal(r)
	if err != nil {
		return answer{err: fmt.Errorf("%w: %w", ErrFailed, err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return answer{err: fmt.Errorf("%w: %w", ErrFailed, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mqttd")
	for _, h := range b.cfg.Headers {
		if http.CanonicalHeaderKey(h.Name) == "Host" {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	b.requests.Add(1)
	resp, err := b.client.Do(req)
	if err != nil {
		// The error text holds the URL, never the body (the password).
		return answer{err: fmt.Errorf("%w: %w", ErrFailed, err)}
	}
	// Drain a little so the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return answer{allowed: true, status: resp.StatusCode}
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return answer{status: resp.StatusCode}
	}
	return answer{err: fmt.Errorf("%w: HTTP status %d from %s", ErrFailed, resp.StatusCode, req.URL.Redacted())}
}

// cache is a bounded LRU of answers with a time to live.
type cache struct {
	mu   sync.Mutex
	max  int
	ttl  time.Duration
	lru  *list.List // of *entry, most recent first
	byID map[[32]byte]*list.Element
}

type entry struct {
	k       [32]byte
	ans     answer
	expires time.Time
}

func newCache(max int, ttl time.Duration) *cache {
	return &cache{max: max, ttl: ttl, lru: list.New(), byID: make(map[[32]byte]*list.Element)}
}

func (c *cache) get(k [32]byte, now time.Time) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.byID[k]
	if el == nil {
		return answer{}, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.byID, k)
		return answer{}, false
	}
	c.lru.MoveToFront(el)
	return e.ans, true
}

func (c *cache) put(k [32]byte, ans answer, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.byID[k]; el != nil {
		e := el.Value.(*entry)
		e.ans, e.expires = ans, now.Add(c.ttl)
		c.lru.MoveToFront(el)
		return
	}
	c.byID[k] = c.lru.PushFront(&entry{k: k, ans: ans, expires: now.Add(c.ttl)})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.byID, old.Value.(*entry).k)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// SetLogger sets where failures are logged; call it before the server
// serves.
func (b *Backend) SetLogger(l *slog.Logger) { b.log = l }
