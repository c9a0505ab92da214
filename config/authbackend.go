package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/mqttd/mqttd/auth/httpauth"
	"github.com/mqttd/mqttd/auth/jwtauth"
)

// The auth_http_* and auth_jwt_* options (mqttd's own, global scope): the
// HTTP and JWT authentication backends, installed as broker hooks before
// the password and ACL files (security.go).

// authBackendOption applies one auth_http_ or auth_jwt_ option.
func (c *Config) authBackendOption(key, rest string, a *argReader, where string) error {
	h, j := &c.HTTPAuth, &c.JWTAuth
	if strings.HasPrefix(key, "auth_http_") {
		if c.httpLine == "" {
			c.httpLine = where
		}
	} else if c.jwtLine == "" {
		c.jwtLine = where
	}
	var err error
	switch key {
	case "auth_http_url", "auth_http_acl_url":
		var u string
		if u, err = a.one(); err != nil {
			return err
		}
		if err := httpauth.CheckURL(u); err != nil {
			return fmt.Errorf("%s: %q is not an http:// or https:// URL with a host", key, u)
		}
		if key == "auth_http_url" {
			h.URL = u
		} else {
			h.ACLURL = u
		}
	case "auth_http_timeout":
		h.Timeout, err = a.duration(time.Millisecond, httpauth.MaxTimeout)
	case "auth_http_cache_ttl":
		h.CacheTTL, err = a.duration(0, 24*time.Hour)
		if err == nil && h.CacheTTL == 0 {
			h.CacheTTL = -1 // 0: no cache
		}
	case "auth_http_cache_size":
		var n int64
		n, err = a.integer(1, 10_000_000)
		h.CacheSize = int(n)
	case "auth_http_failure":
		var s string
		s, err = a.oneOf("allow", "refuse")
		h.FailureAllow = s == "allow"
	case "auth_http_header":
		name, value, ok := strings.Cut(rest, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" || strings.ContainsAny(name, " \t") || strings.ContainsAny(value, "\r\n") {
			return fmt.Errorf("auth_http_header takes \"Name: value\", got %q", rest)
		}
		h.Headers = append(h.Headers, httpauth.Header{Name: name, Value: value})
	case "auth_http_cafile":
		h.CAFile, err = a.one()
	case "auth_jwt_hs256_secret_file":
		var f string
		f, err = a.one()
		j.HS256SecretFiles = append(j.HS256SecretFiles, f)
	case "auth_jwt_rs256_key_file":
		var f string
		f, err = a.one()
		j.RS256KeyFiles = append(j.RS256KeyFiles, f)
	case "auth_jwt_es256_key_file":
		var f string
		f, err = a.one()
		j.ES256KeyFiles = append(j.ES256KeyFiles, f)
	case "auth_jwt_jwks_file":
		j.JWKSFile, err = a.one()
	case "auth_jwt_username_claim":
		j.UsernameClaim, err = a.one()
	case "auth_jwt_publish_claim":
		j.PublishClaim, err = a.one()
	case "auth_jwt_subscribe_claim":
		j.SubscribeClaim, err = a.one()
	case "auth_jwt_audience":
		j.Audience, err = a.one()
	case "auth_jwt_issuer":
		j.Issuer, err = a.one()
	case "auth_jwt_leeway":
		j.Leeway, err = a.duration(0, time.Hour)
	default:
		return fmt.Errorf("unknown option %q", key)
	}
	return err
}

// duration reads a duration: a number of seconds, or a Go duration with a
// unit ("500ms", "3s", "2m"), from lo to hi.
func (a *argReader) duration(lo, hi time.Duration) (time.Duration, error) {
	s, err := a.one()
	if err != nil {
		return 0, err
	}
	var d time.Duration
	if n, perr := strconv.ParseInt(s, 10, 64); perr == nil {
		if n < 0 || n > int64(hi/time.Second)+1 {
			return 0, fmt.Errorf("%s: %q is not a duration from %v to %v", a.key, s, lo, hi)
		}
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration (seconds, or like 500ms, 3s)", a.key, s)
	}
	if d < lo || d > hi {
		return 0, fmt.Errorf("%s: %q is not a duration from %v to %v", a.key, s, lo, hi)
	}
	return d, nil
}

// finishAuthBackends checks what the auth_http_ and auth_jwt_ lines say
// together.
func (c *Config) finishAuthBackends() error {
	if c.httpLine != "" && c.HTTPAuth.URL == "" && c.HTTPAuth.ACLURL == "" {
		return fmt.Errorf("%w: %s: auth_http_ options need auth_http_url or auth_http_acl_url", ErrInvalid, c.httpLine)
	}
	j := &c.JWTAuth
	if c.jwtLine != "" && len(j.HS256SecretFiles)+len(j.RS256KeyFiles)+len(j.ES256KeyFiles) == 0 && j.JWKSFile == "" {
		return fmt.Errorf("%w: %s: auth_jwt_ options need a key: auth_jwt_hs256_secret_file, auth_jwt_rs256_key_file, "+
			"auth_jwt_es256_key_file or auth_jwt_jwks_file", ErrInvalid, c.jwtLine)
	}
	return nil
}

// authBackends are the HTTP and JWT hooks of a configuration; nil when not
// configured.
type authBackends struct {
	http *httpauth.Backend
	jwt  *jwtauth.Auth
}

// loadAuthBackends makes the hooks cfg configures, reading their key and
// CA files.
func loadAuthBackends(cfg *Config) (authBackends, error) {
	var b authBackends
	var err error
	if cfg.httpLine != "" {
		if b.http, err = httpauth.New(cfg.HTTPAuth); err != nil {
			return b, fmt.Errorf("%w: %s: %w", ErrInvalid, cfg.httpLine, err)
		}
	}
	if cfg.jwtLine != "" {
		if b.jwt, err = jwtauth.New(cfg.JWTAuth); err != nil {
			return b, fmt.Errorf("%w: %s: %w", ErrInvalid, cfg.jwtLine, err)
		}
	}
	return b, nil
}

// reloadAuthBackends checks that next configures the same backends as cur
// (they are hooks of the running server: adding or removing one, or
// changing the HTTP settings, needs a restart) and re-reads the JWT keys
// (the JWKS file) with next's JWT settings. Nothing changes on error.
func (b authBackends) reload(cur, next *Config) error {
	if (cur.httpLine == "") != (next.httpLine == "") || !reflect.DeepEqual(cur.HTTPAuth, next.HTTPAuth) {
		return fmt.Errorf("%w: the auth_http_ options changed; restart mqttd to apply them", ErrInvalid)
	}
	if (cur.jwtLine == "") != (next.jwtLine == "") {
		return fmt.Errorf("%w: auth_jwt_ options added or removed; restart mqttd to apply them", ErrInvalid)
	}
	if b.jwt == nil {
		return nil
	}
	if err := b.jwt.Reload(next.JWTAuth); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, next.jwtLine, err)
	}
	return nil
}

// hooks returns the hooks in the order they are asked: JWT (it defers for
// passwords that are not tokens) before HTTP.
func (b authBackends) hooks() []any {
	var out []any
	if b.jwt != nil {
		out = append(out, b.jwt)
	}
	if b.http != nil {
		out = append(out, b.http)
	}
	return out
}
