package jwtauth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var b64 = base64.RawURLEncoding

// Test keys, made once.
var (
	keysOnce        sync.Once
	rsaKey, rsaKey2 *rsa.PrivateKey
	ecKey, ecKey2   *ecdsa.PrivateKey
	secret          = []byte("0123456789abcdef0123456789abcdef-hs256")
	otherSecret     = []byte("fedcba9876543210fedcba9876543210-other")
	errKeys         error
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		if rsaKey, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
			return
		}
		if rsaKey2, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
			return
		}
		if ecKey, errKeys = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); errKeys != nil {
			return
		}
		ecKey2, errKeys = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	if errKeys != nil {
		t.Fatal(errKeys)
	}
}

// sign makes a compact JWS of claims with header hdr (alg, kid, ...),
// signed with key: []byte (HMAC), *rsa.PrivateKey or *ecdsa.PrivateKey;
// nil leaves the signature empty.
func sign(t testing.TB, hdr map[string]any, claims map[string]any, key any) string {
	t.Helper()
	hb, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signed := b64.EncodeToString(hb) + "." + b64.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case nil:
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(signed))
		sig = m.Sum(nil)
	case *rsa.PrivateKey:
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	default:
		t.Fatalf("sign: key %T", key)
	}
	return signed + "." + b64.EncodeToString(sig)
}

func hs(t *testing.T, claims map[string]any) string {
	return sign(t, map[string]any{"alg": "HS256", "typ": "JWT"}, claims, secret)
}

// valid returns claims expiring in d plus extra.
func valid(d time.Duration, extra map[string]any) map[string]any {
	c := map[string]any{"exp": float64(time.Now().Add(d).UnixMilli()) / 1000}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPublic(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// jwks makes a JWK Set of public keys ([]byte secrets become oct keys),
// with kids "k0", "k1", ...
func jwks(t *testing.T, keys ...any) []byte {
	t.Helper()
	var set []map[string]any
	for i, k := range keys {
		kid := "k" + string(rune('0'+i))
		switch k := k.(type) {
		case *rsa.PublicKey:
			e := []byte{byte(k.E >> 16), byte(k.E >> 8), byte(k.E)}
			set = append(set, map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": b64.EncodeToString(k.N.Bytes()), "e": b64.EncodeToString(e)})
		case *ecdsa.PublicKey:
			x, y := make([]byte, 32), make([]byte, 32)
			k.X.FillBytes(x)
			k.Y.FillBytes(y)
			set = append(set, map[string]any{"kty": "EC", "kid": kid, "crv": "P-256",
				"x": b64.EncodeToString(x), "y": b64.EncodeToString(y)})
		case []byte:
			set = append(set, map[string]any{"kty": "oct", "kid": kid, "k": b64.EncodeToString(k)})
		default:
			t.Fatalf("jwks: %T", k)
		}
	}
	b, err := json.Marshal(map[string]any{"keys": set})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rsaSmall() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 1024) }
