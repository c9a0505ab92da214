package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth/httpauth"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

func TestAuthBackendOptions(t *testing.T) {
	cfg := parse(t, `auth_http_url http://127.0.0.1:8080/auth
auth_http_acl_url https://auth.example/acl?x=1
auth_http_timeout 500ms
auth_http_cache_ttl 2m
auth_http_cache_size 500
auth_http_failure allow
auth_http_header Authorization: Bearer abc def
auth_http_header X-Tenant:t1
auth_http_cafile /etc/ca.pem
auth_jwt_hs256_secret_file /s1
auth_jwt_hs256_secret_file /s2
auth_jwt_rs256_key_file /rsa.pem
auth_jwt_es256_key_file /ec.pem
auth_jwt_jwks_file /jwks.json
auth_jwt_username_claim preferred_username
auth_jwt_publish_claim mqtt_pub
auth_jwt_subscribe_claim mqtt_sub
auth_jwt_audience mqttd
auth_jwt_issuer https://issuer.example
auth_jwt_leeway 30
`)
	h, j := cfg.HTTPAuth, cfg.JWTAuth
	wantH := httpauth.Config{URL: "http://127.0.0.1:8080/auth", ACLURL: "https://auth.example/acl?x=1",
		Timeout: 500 * time.Millisecond, CacheTTL: 2 * time.Minute, CacheSize: 500, FailureAllow: true,
		Headers: []httpauth.Header{{Name: "Authorization", Value: "Bearer abc def"}, {Name: "X-Tenant", Value: "t1"}}, CAFile: "/etc/ca.pem"}
	if fmt.Sprint(h) != fmt.Sprint(wantH) {
		t.Errorf("HTTPAuth = %+v\nwant       %+v", h, wantH)
	}
	if strings.Join(j.HS256SecretFiles, ",") != "/s1,/s2" || strings.Join(j.RS256KeyFiles, ",") != "/rsa.pem" ||
		strings.Join(j.ES256KeyFiles, ",") != "/ec.pem" || j.JWKSFile != "/jwks.json" ||
		j.UsernameClaim != "preferred_username" || j.PublishClaim != "mqtt_pub" || j.SubscribeClaim != "mqtt_sub" ||
		j.Audience != "mqttd" || j.Issuer != "https://issuer.example" || j.Leeway != 30*time.Second {
		t.Errorf("JWTAuth = %+v", j)
	}
	if c := parse(t, "auth_http_url http://a/x\nauth_http_cache_ttl 0\nauth_http_failure refuse\n"); c.HTTPAuth.CacheTTL >= 0 || c.HTTPAuth.FailureAllow {
		t.Errorf("auth_http_cache_ttl 0 / failure refuse: %+v", c.HTTPAuth)
	}
	if c := parse(t, "listener 1883\n"); c.httpLine != "" || c.jwtLine != "" {
		t.Errorf("no backend options, yet lines %q %q", c.httpLine, c.jwtLine)
	}
}

func TestAuthBackendErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"listener 1883\nauth_http_url ftp://x/auth\n", `f.conf:2: auth_http_url: "ftp://x/auth" is not an http:// or https:// URL`},
		{"auth_http_acl_url /acl\n", `f.conf:1: auth_http_acl_url: "/acl" is not an http://`},
		{"auth_http_url\n", `f.conf:1: auth_http_url takes one value`},
		{"auth_http_url http://a/x\nauth_http_timeout 0\n", `f.conf:2: auth_http_timeout: "0" is not a duration from 1ms to 1m0s`},
		{"auth_http_url http://a/x\nauth_http_timeout 2h\n", `f.conf:2: auth_http_timeout: "2h" is not a duration`},
		{"auth_http_url http://a/x\nauth_http_timeout soon\n", `f.conf:2: auth_http_timeout: "soon" is not a duration (seconds, or like 500ms, 3s)`},
		{"auth_http_url http://a/x\nauth_http_cache_ttl -1s\n", `f.conf:2: auth_http_cache_ttl: "-1s" is not a duration`},
		{"auth_http_url http://a/x\nauth_http_cache_size 0\n", `f.conf:2: auth_http_cache_size: "0" is not a number from 1`},
		{"auth_http_url http://a/x\nauth_http_failure maybe\n", `f.conf:2: auth_http_failure: "maybe" is not one of allow, refuse`},
		{"auth_http_url http://a/x\nauth_http_header NoColon\n", `f.conf:2: auth_http_header takes "Name: value"`},
		{"auth_http_url http://a/x\nauth_http_header Bad Name: v\n", `f.conf:2: auth_http_header takes "Name: value"`},
		{"auth_http_cafile /ca.pem\n", `f.conf:1: auth_http_ options need auth_http_url or auth_http_acl_url`},
		{"auth_http_bogus 1\n", `f.conf:1: unknown option "auth_http_bogus"`},
		{"auth_jwt_username_claim sub\n", `f.conf:1: auth_jwt_ options need a key`},
		{"auth_jwt_jwks_file\n", `f.conf:1: auth_jwt_jwks_file takes one value`},
		{"auth_jwt_jwks_file /j\nauth_jwt_leeway -5\n", `f.conf:2: auth_jwt_leeway: "-5" is not a duration`},
		{"auth_jwt_jwks_file /j\nauth_jwt_leeway 2h\n", `f.conf:2: auth_jwt_leeway: "2h" is not a duration from 0s to 1h0m0s`},
		{"auth_jwt_jwks_file /j\nauth_jwt_audience a b\n", `f.conf:2: auth_jwt_audience takes one value`},
		{"auth_jwt_hs256_secret_file\n", `f.conf:1: auth_jwt_hs256_secret_file takes one value`},
		{"auth_jwt_nonsense x\n", `f.conf:1: unknown option "auth_jwt_nonsense"`},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			_, err := Parse(strings.NewReader(c.in), "f.conf")
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: got %v, want %q", c.in, err, c.want)
			}
		})
	}
}

// TestAuthBackendFiles: key and CA files are read by NewAuth, and their
// errors name the line of the first option of the backend.
func TestAuthBackendFiles(t *testing.T) {
	dir := t.TempDir()
	short := writeFile(t, dir, "short", "tooshort\n")
	notPEM := writeFile(t, dir, "x.pem", "hello\n")
	cases := []struct{ in, want string }{
		{"listener 1883\nauth_jwt_hs256_secret_file " + short + "\n", "f.conf:2: jwtauth: " + short + ": an HS256 secret needs at least 32 bytes"},
		{"auth_jwt_issuer x\nauth_jwt_rs256_key_file " + notPEM + "\n", "f.conf:1: jwtauth: " + notPEM + " holds no PEM public key"},
		{"auth_jwt_jwks_file " + dir + "/missing.json\n", "f.conf:1: jwtauth: open " + dir + "/missing.json"},
		{"auth_http_url http://a/x\nauth_http_cafile " + notPEM + "\n", "f.conf:1: httpauth: CA file " + notPEM + " holds no PEM certificate"},
	}
	for _, c := range cases {
		cfg, err := Parse(strings.NewReader(c.in), "f.conf")
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		_, err = NewAuth(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: NewAuth: %v, want %q", c.in, err, c.want)
		}
	}
}

// TestHTTPAuthWired: auth_http_url and auth_http_acl_url on a served
// configuration, with an HTTP service started by the test.
func TestHTTPAuthWired(t *testing.T) {
	var n atomic.Int64
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		var req httpauth.Request
		json.NewDecoder(r.Body).Decode(&req)
		ok := false
		switch r.URL.Path {
		case "/auth":
			ok = req.Username == "alice" && req.Password == "secret" && r.Header.Get("X-Key") == "k1"
		case "/acl":
			ok = strings.HasPrefix(req.Topic, req.Username+"/")
		}
		if !ok {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer svc.Close()
	s := serveConfig(t, fmt.Sprintf(`listener {PORT0} 127.0.0.1
allow_anonymous false
auth_http_url %s/auth
auth_http_acl_url %s/acl
auth_http_header X-Key: k1
auth_http_timeout 2s
`, svc.URL, svc.URL))
	alice := func(pw string) *packet.Connect {
		return &packet.Connect{Version: packet.V5, ClientID: "a", CleanStart: true, Username: "alice", HasUsername: true,
			Password: []byte(pw), HasPassword: true}
	}
	if got := connackCode(t, s.addrs[0], alice("wrong")); got != packet.NotAuthorized {
		t.Errorf("403: %v", got)
	}
	c, _ := brokertest.DialConnect(t, s.addrs[0], alice("secret"))
	if rc := c.Publish(&packet.Publish{Topic: "bob/x", QoS: 1, PacketID: 1}); rc != packet.NotAuthorized {
		t.Errorf("publish bob/x: %v", rc)
	}
	if rc := c.Publish(&packet.Publish{Topic: "alice/x", QoS: 1, PacketID: 2}); rc.IsError() {
		t.Errorf("publish alice/x: %v", rc)
	}
	if n.Load() != 4 {
		t.Errorf("%d requests, want 4", n.Load())
	}
	// The HTTP settings are fixed while running.
	next := parse(t, fmt.Sprintf("listener %s 127.0.0.1\nauth_http_url %s/other\n", strings.Split(s.addrs[0], ":")[1], svc.URL))
	if err := s.auth.Reload(next); err == nil || !strings.Contains(err.Error(), "auth_http_ options changed") {
		t.Errorf("reload with another auth_http_url: %v", err)
	}
}

// es256 signs claims with k, kid in the header.
func es256(t *testing.T, k *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	hb, _ := json.Marshal(map[string]any{"alg": "ES256", "kid": kid})
	cb, _ := json.Marshal(claims)
	signed := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig)
}

func jwksOf(keys map[string]*ecdsa.PrivateKey) string {
	enc := base64.RawURLEncoding
	var set []map[string]string
	for kid, k := range keys {
		x, y := make([]byte, 32), make([]byte, 32)
		k.X.FillBytes(x)
		k.Y.FillBytes(y)
		set = append(set, map[string]string{"kty": "EC", "crv": "P-256", "kid": kid, "x": enc.EncodeToString(x),
			"y": enc.EncodeToString(y)})
	}
	b, _ := json.Marshal(map[string]any{"keys": set})
	return string(b)
}

// TestJWTWiredAndReload: auth_jwt_jwks_file on a served configuration; the
// JWKS file is re-read by Auth.Reload (SIGHUP), with or without the
// configuration file read again; a password that is not a token goes on to
// the password file.
func TestJWTWiredAndReload(t *testing.T) {
	dir, pw, _ := securityFiles(t)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks := writeFile(t, dir, "jwks.json", jwksOf(map[string]*ecdsa.PrivateKey{"k1": k1}))
	text := fmt.Sprintf(`listener {PORT0} 127.0.0.1
allow_anonymous false
password_file %s
auth_jwt_jwks_file %s
auth_jwt_username_claim sub
auth_jwt_audience mqttd
`, pw, jwks)
	s := serveConfig(t, text)
	claims := map[string]any{"sub": "dev", "aud": "mqttd", "exp": time.Now().Add(time.Hour).Unix()}
	conn := func(user, pass string) packet.ReasonCode {
		return connackCode(t, s.addrs[0], &packet.Connect{Version: packet.V5, ClientID: "j", CleanStart: true,
			Username: user, HasUsername: true, Password: []byte(pass), HasPassword: true})
	}
	if got := conn("dev", es256(t, k1, "k1", claims)); got != packet.Success {
		t.Errorf("token of k1: %v", got)
	}
	tok2 := es256(t, k2, "k2", claims)
	if got := conn("dev", tok2); got != packet.BadUserNameOrPassword {
		t.Errorf("token of k2 before reload: %v", got)
	}
	if got := conn("alice", "secret"); got != packet.Success {
		t.Errorf("password file after the JWT hook: %v", got)
	}
	noAud := map[string]any{"sub": "dev", "exp": time.Now().Add(time.Hour).Unix()}
	if got := conn("dev", es256(t, k1, "k1", noAud)); got != packet.NotAuthorized {
		t.Errorf("token without aud: %v", got)
	}
	writeFile(t, dir, "jwks.json", jwksOf(map[string]*ecdsa.PrivateKey{"k1": k1, "k2": k2}))
	if err := s.auth.Reload(nil); err != nil {
		t.Fatal(err)
	}
	if got := conn("dev", tok2); got != packet.Success {
		t.Errorf("token of k2 after reload: %v", got)
	}
	// A broken JWKS file is refused and keeps the keys in force.
	writeFile(t, dir, "jwks.json", "{")
	if err := s.auth.Reload(nil); err == nil || !strings.Contains(err.Error(), "test.conf:4") {
		t.Errorf("reload of a broken JWKS: %v", err)
	}
	if got := conn("dev", tok2); got != packet.Success {
		t.Errorf("token of k2 after a failed reload: %v", got)
	}
	// The configuration read again: its JWT settings apply (no aud check
	// now), and the JWKS file it names is read.
	writeFile(t, dir, "jwks.json", jwksOf(map[string]*ecdsa.PrivateKey{"k1": k1}))
	next := parse(t, strings.Replace(text, "{PORT0}", strings.Split(s.addrs[0], ":")[1], 1))
	next.JWTAuth.Audience = ""
	if err := s.auth.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := conn("dev", es256(t, k1, "k1", noAud)); got != packet.Success {
		t.Errorf("token without aud after the audience was dropped: %v", got)
	}
	if got := conn("dev", tok2); got != packet.BadUserNameOrPassword {
		t.Errorf("token of k2 after k2 left the JWKS: %v", got)
	}
	// Removing the JWT options needs a restart.
	bare := parse(t, fmt.Sprintf("listener %s 127.0.0.1\npassword_file %s\n", strings.Split(s.addrs[0], ":")[1], pw))
	if err := s.auth.Reload(bare); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("reload without the auth_jwt_ options: %v", err)
	}
}

func TestSecretFilePermissionWarning(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "secret", strings.Repeat("s", 40))
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, "auth_jwt_hs256_secret_file "+p+"\n")
	w := PermissionWarnings(cfg)
	if len(w) != 1 || !strings.Contains(w[0], "auth_jwt_hs256_secret_file "+p) {
		t.Errorf("warnings %q", w)
	}
}
