package jwtauth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth/jwtauth"
)

func TestVerify(t *testing.T) {
	testKeys(t)
	rsaPEM := writeFile(t, "rsa.pem", pemPublic(t, &rsaKey.PublicKey))
	ecPEM := writeFile(t, "ec.pem", pemPublic(t, &ecKey.PublicKey))
	secretFile := writeFile(t, "secret", append(append([]byte{}, secret...), '\n'))
	hsKey, err := jwtauth.LoadSecret(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	rsKeys, err := jwtauth.LoadPEM(rsaPEM, jwtauth.RS256)
	if err != nil {
		t.Fatal(err)
	}
	esKeys, err := jwtauth.LoadPEM(ecPEM, jwtauth.ES256)
	if err != nil {
		t.Fatal(err)
	}
	all := append(append([]jwtauth.Key{hsKey}, rsKeys...), esKeys...)
	good := valid(time.Hour, map[string]any{"sub": "alice"})
	past := valid(-time.Minute, nil)

	// HS256 "signed" with the RSA public key's PEM as the secret: the
	// classic algorithm confusion attack.
	confusion := sign(t, map[string]any{"alg": "HS256"}, good, pemPublic(t, &rsaKey.PublicKey))
	tampered := hs(t, good)
	parts := strings.Split(tampered, ".")
	parts[1] = b64.EncodeToString([]byte(`{"exp":99999999999,"sub":"root"}`))
	tampered = strings.Join(parts, ".")
	shortES := sign(t, map[string]any{"alg": "ES256"}, good, ecKey)
	shortES = shortES[:len(shortES)-4]

	tests := []struct {
		name  string
		token string
		keys  []jwtauth.Key
		want  error
	}{
		{"HS256 good", hs(t, good), all, nil},
		{"RS256 good", sign(t, map[string]any{"alg": "RS256"}, good, rsaKey), all, nil},
		{"ES256 good", sign(t, map[string]any{"alg": "ES256"}, good, ecKey), all, nil},
		{"HS256 bad signature", sign(t, map[string]any{"alg": "HS256"}, good, otherSecret), all, jwtauth.ErrSignature},
		{"RS256 bad signature", sign(t, map[string]any{"alg": "RS256"}, good, rsaKey2), all, jwtauth.ErrSignature},
		{"ES256 bad signature", sign(t, map[string]any{"alg": "ES256"}, good, ecKey2), all, jwtauth.ErrSignature},
		{"ES256 truncated signature", shortES, all, jwtauth.ErrSignature},
		{"payload changed", tampered, all, jwtauth.ErrSignature},
		{"expired", hs(t, past), all, jwtauth.ErrExpired},
		{"not yet valid", hs(t, valid(time.Hour, map[string]any{"nbf": time.Now().Add(time.Hour).Unix()})), all, jwtauth.ErrNotYetValid},
		{"no exp", hs(t, map[string]any{"sub": "alice"}), all, jwtauth.ErrClaims},
		{"exp not a number", hs(t, map[string]any{"exp": "tomorrow"}), all, jwtauth.ErrClaims},
		{"alg none", sign(t, map[string]any{"alg": "none"}, good, nil), all, jwtauth.ErrAlgorithm},
		{"alg none with a signature", sign(t, map[string]any{"alg": "none"}, good, secret), all, jwtauth.ErrAlgorithm},
		{"alg HS512", sign(t, map[string]any{"alg": "HS512"}, good, secret), all, jwtauth.ErrAlgorithm},
		{"HS256 with only an RSA key (confusion)", confusion, rsKeys, jwtauth.ErrAlgorithm},
		{"HS256 with the RSA PEM as secret (confusion)", confusion, all, jwtauth.ErrSignature},
		{"RS256 with only an HMAC key", sign(t, map[string]any{"alg": "RS256"}, good, rsaKey), []jwtauth.Key{hsKey}, jwtauth.ErrAlgorithm},
		{"ES256 with only an RSA key", sign(t, map[string]any{"alg": "ES256"}, good, ecKey), rsKeys, jwtauth.ErrAlgorithm},
		{"crit header", sign(t, map[string]any{"alg": "HS256", "crit": []string{"exp"}}, good, secret), all, jwtauth.ErrAlgorithm},
		{"payload not JSON", strings.Join([]string{b64.EncodeToString([]byte(`{"alg":"HS256"}`)), "bm90IGpzb24", "x"}, "."), []jwtauth.Key{hsKey}, jwtauth.ErrMalformed},
		{"signature not base64url", strings.Join([]string{b64.EncodeToString([]byte(`{"alg":"HS256"}`)), "e30", "!!"}, "."), all, jwtauth.ErrMalformed},
		{"plain password", "hunter2", all, jwtauth.ErrNotJWT},
		{"dots but not a JWT", "a.b.c", all, jwtauth.ErrNotJWT},
		{"header without alg", b64.EncodeToString([]byte(`{"typ":"JWT"}`)) + ".e30.", all, jwtauth.ErrNotJWT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := jwtauth.Verify(tc.token, tc.keys, time.Now(), 0)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if sub, _ := c.String("sub"); sub != "alice" {
					t.Errorf("sub %q", sub)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestVerifyHMACMessage: a valid HMAC over a payload that is not JSON is
// malformed (the signature is checked first, then the payload).
func TestVerifyHMACMessage(t *testing.T) {
	tok := sign(t, map[string]any{"alg": "HS256"}, nil, secret)
	// The payload "null" is not an object.
	_, err := jwtauth.Verify(tok, []jwtauth.Key{{Alg: jwtauth.HS256, Secret: secret}}, time.Now(), 0)
	if !errors.Is(err, jwtauth.ErrMalformed) {
		t.Errorf("null payload: %v", err)
	}
}

func TestLeeway(t *testing.T) {
	keys := []jwtauth.Key{{Alg: jwtauth.HS256, Secret: secret}}
	tok := hs(t, valid(-10*time.Second, nil))
	if _, err := jwtauth.Verify(tok, keys, time.Now(), 30*time.Second); err != nil {
		t.Errorf("10 s past exp with 30 s leeway: %v", err)
	}
	if _, err := jwtauth.Verify(tok, keys, time.Now(), 5*time.Second); !errors.Is(err, jwtauth.ErrExpired) {
		t.Errorf("10 s past exp with 5 s leeway: %v", err)
	}
}

func TestKid(t *testing.T) {
	testKeys(t)
	keys, err := jwtauth.ParseJWKS(jwks(t, &rsaKey.PublicKey, &rsaKey2.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	good := valid(time.Hour, nil)
	if _, err := jwtauth.Verify(sign(t, map[string]any{"alg": "RS256", "kid": "k1"}, good, rsaKey2), keys, time.Now(), 0); err != nil {
		t.Errorf("kid k1: %v", err)
	}
	if _, err := jwtauth.Verify(sign(t, map[string]any{"alg": "RS256", "kid": "k0"}, good, rsaKey2), keys, time.Now(), 0); !errors.Is(err, jwtauth.ErrSignature) {
		t.Errorf("kid k0 with k1's signature: %v", err)
	}
	if _, err := jwtauth.Verify(sign(t, map[string]any{"alg": "RS256", "kid": "k9"}, good, rsaKey), keys, time.Now(), 0); !errors.Is(err, jwtauth.ErrAlgorithm) {
		t.Errorf("unknown kid: %v", err)
	}
	if _, err := jwtauth.Verify(sign(t, map[string]any{"alg": "RS256"}, good, rsaKey2), keys, time.Now(), 0); err != nil {
		t.Errorf("no kid: %v", err)
	}
}

func TestLoadKeysErrors(t *testing.T) {
	testKeys(t)
	small, err := rsaSmall()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		load func() error
		want string
	}{
		{"short secret", func() error {
			_, err := jwtauth.LoadSecret(writeFile(t, "s", []byte("short\n")))
			return err
		}, "at least 32 bytes"},
		{"missing file", func() error { _, err := jwtauth.LoadSecret("/nonexistent/secret"); return err }, "no such file"},
		{"EC key as RS256", func() error {
			_, err := jwtauth.LoadPEM(writeFile(t, "k.pem", pemPublic(t, &ecKey.PublicKey)), jwtauth.RS256)
			return err
		}, "not an RSA public key"},
		{"RSA key as ES256", func() error {
			_, err := jwtauth.LoadPEM(writeFile(t, "k.pem", pemPublic(t, &rsaKey.PublicKey)), jwtauth.ES256)
			return err
		}, "not a P-256 public key"},
		{"RSA 1024", func() error {
			_, err := jwtauth.LoadPEM(writeFile(t, "k.pem", pemPublic(t, &small.PublicKey)), jwtauth.RS256)
			return err
		}, "at least 2048"},
		{"no PEM", func() error {
			_, err := jwtauth.LoadPEM(writeFile(t, "k.pem", []byte("hello")), jwtauth.RS256)
			return err
		}, "no PEM public key"},
		{"private key PEM", func() error {
			_, err := jwtauth.LoadPEM(writeFile(t, "k.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")), jwtauth.RS256)
			return err
		}, "a public key or certificate is expected"},
		{"JWKS not JSON", func() error { _, err := jwtauth.LoadJWKS(writeFile(t, "j", []byte("{"))); return err }, "not a JWK Set"},
		{"JWKS empty", func() error { _, err := jwtauth.LoadJWKS(writeFile(t, "j", []byte(`{"keys":[]}`))); return err }, "no RS256, ES256 or HS256"},
		{"JWKS private RSA", func() error {
			_, err := jwtauth.ParseJWKS([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"}]}`))
			return err
		}, "private key"},
		{"JWKS EC off curve", func() error {
			x := b64.EncodeToString(make([]byte, 32))
			_, err := jwtauth.ParseJWKS([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + x + `"}]}`))
			return err
		}, "not a point of P-256"},
		{"JWKS P-384", func() error {
			_, err := jwtauth.ParseJWKS([]byte(`{"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]}`))
			return err
		}, "not P-256"},
	}
	for _, tc := range cases {
		err := tc.load()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to say %q", tc.name, err, tc.want)
		}
	}
	// Keys for other algorithms or for encryption are skipped, not errors.
	keys, err := jwtauth.ParseJWKS([]byte(`{"keys":[{"kty":"RSA","alg":"PS256","n":"AQAB","e":"AQAB"},` +
		`{"kty":"oct","use":"enc","k":"AQAB"},{"kty":"oct","k":"` + b64.EncodeToString(secret) + `"}]}`))
	if err != nil || len(keys) != 1 || keys[0].Alg != jwtauth.HS256 {
		t.Errorf("JWKS with skipped keys: %v, %+v", err, keys)
	}
}
