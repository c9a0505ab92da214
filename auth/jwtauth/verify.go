// Package jwtauth authenticates MQTT clients whose password is a JSON Web
// Token (RFC 7519) signed with HS256, RS256 or ES256 (RFC 7518), and
// authorizes them from the token's claims.
//
// The verification is strict: the header's alg must be one of the three and
// a key of that kind must be configured (an HMAC secret for HS256, an RSA
// public key for RS256, a P-256 public key for ES256), so that "none" and
// algorithm confusion (an RS256 public key used as an HS256 secret) are
// refused; exp is required; nbf, iss and aud are checked when present or
// configured; a crit header is refused (no extension is understood).
package jwtauth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

// Errors of Verify. The broker hook maps them to CONNACK reason codes
// (see Auth.Authenticate).
var (
	// ErrNotJWT: the password is not shaped as a JWT (three base64url parts,
	// a JSON header with alg); the hook defers to the next authenticator.
	ErrNotJWT = errors.New("jwtauth: not a JWT")
	// ErrMalformed: a JWT whose parts do not decode.
	ErrMalformed = errors.New("jwtauth: malformed token")
	// ErrAlgorithm: alg none, an unsupported alg, a crit header, or an alg
	// no configured key is for.
	ErrAlgorithm = errors.New("jwtauth: algorithm refused")
	// ErrSignature: no configured key verifies the signature.
	ErrSignature = errors.New("jwtauth: bad signature")
	// ErrExpired: exp has passed.
	ErrExpired = errors.New("jwtauth: token expired")
	// ErrNotYetValid: nbf is in the future.
	ErrNotYetValid = errors.New("jwtauth: token not valid yet")
	// ErrClaims: a required claim is missing or wrong (exp, iss, aud, the
	// user name claim, an ACL claim that is not a list of topic filters).
	ErrClaims = errors.New("jwtauth: claims refused")
)

// Supported algorithms.
const (
	HS256 = "HS256"
	RS256 = "RS256"
	ES256 = "ES256"
)

// Key is one verification key.
type Key struct {
	ID     string // kid; "" matches any token kid
	Alg    string // HS256, RS256 or ES256: the only alg this key verifies
	Secret []byte
	RSA    *rsa.PublicKey
	EC     *ecdsa.PublicKey
}

// Claims are a verified token's claims.
type Claims struct {
	Expires time.Time
	Raw     map[string]any // every claim, numbers as json.Number
}

// header is the JOSE header fields looked at.
type header struct {
	Alg  *string         `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

var b64 = base64.RawURLEncoding

// looksLikeJWT cuts a compact JWS and decodes its header; ErrNotJWT when
// token has not that shape.
func looksLikeJWT(token string) (parts [3]string, h header, err error) {
	p := strings.Split(token, ".")
	if len(p) != 3 || p[0] == "" || p[1] == "" {
		return parts, h, ErrNotJWT
	}
	hb, err := b64.DecodeString(p[0])
	if err != nil || len(hb) == 0 || hb[0] != '{' {
		return parts, h, ErrNotJWT
	}
	d := json.NewDecoder(bytes.NewReader(hb))
	if err := d.Decode(&h); err != nil || h.Alg == nil {
		return parts, h, ErrNotJWT
	}
	copy(parts[:], p)
	return parts, h, nil
}

// Verify checks token with keys at now, allowing leeway of clock skew for
// exp and nbf, and returns its claims.
func Verify(token string, keys []Key, now time.Time, leeway time.Duration) (*Claims, error) {
	parts, h, err := looksLikeJWT(token)
	if err != nil {
		return nil, err
	}
	alg := *h.Alg
	switch alg {
	case HS256, RS256, ES256:
	case "none", "None", "NONE", "":
		return nil, fmt.Errorf("%w: alg %q (unsigned tokens are never accepted)", ErrAlgorithm, alg)
	default:
		return nil, fmt.Errorf("%w: alg %q is not HS256, RS256 or ES256", ErrAlgorithm, alg)
	}
	if len(h.Crit) > 0 && string(h.Crit) != "null" {
		return nil, fmt.Errorf("%w: crit header extensions are not understood", ErrAlgorithm)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	signed := []byte(parts[0] + "." + parts[1])
	// Only keys made for alg are tried: a key is never used with another
	// algorithm (no RSA public key as an HMAC secret).
	tried := 0
	ok := false
	for i := range keys {
		k := &keys[i]
		if k.Alg != alg || (h.Kid != "" && k.ID != "" && k.ID != h.Kid) {
			continue
		}
		tried++
		if verifySig(k, signed, sig) {
			ok = true
			break
		}
	}
	if tried == 0 {
		return nil, fmt.Errorf("%w: no %s key configured (kid %q)", ErrAlgorithm, alg, h.Kid)
	}
	if !ok {
		return nil, ErrSignature
	}
	pb, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	var raw map[string]any
	d := json.NewDecoder(bytes.NewReader(pb))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil || raw == nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	c := &Claims{Raw: raw}
	exp, present, err := numericDate(raw, "exp")
	if err != nil {
		return nil, err
	}
	if !present {
		return nil, fmt.Errorf("%w: no exp claim", ErrClaims)
	}
	c.Expires = exp
	if !now.Before(exp.Add(leeway)) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	nbf, present, err := numericDate(raw, "nbf")
	if err != nil {
		return nil, err
	}
	if present && now.Add(leeway).Before(nbf) {
		return nil, fmt.Errorf("%w: nbf %s", ErrNotYetValid, nbf.UTC().Format(time.RFC3339))
	}
	return c, nil
}

func verifySig(k *Key, signed, sig []byte) bool {
	sum := sha256.Sum256(signed)
	switch k.Alg {
	case HS256:
		m := hmac.New(sha256.New, k.Secret)
		m.Write(signed)
		return hmac.Equal(m.Sum(nil), sig)
	case RS256:
		return k.RSA != nil && rsa.VerifyPKCS1v15(k.RSA, crypto.SHA256, sum[:], sig) == nil
	case ES256:
		// RFC 7518 section 3.4: R and S, 32 bytes each, big-endian.
		if k.EC == nil || len(sig) != 64 {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k.EC, sum[:], r, s)
	}
	return false
}

// numericDate reads a NumericDate claim (seconds since the epoch, maybe
// fractional).
func numericDate(raw map[string]any, name string) (time.Time, bool, error) {
	v, ok := raw[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, true, fmt.Errorf("%w: %s is not a number", ErrClaims, name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
		return time.Time{}, true, fmt.Errorf("%w: %s %s is not a date", ErrClaims, name, n)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// String returns a string claim.
func (c *Claims) String(name string) (string, bool) {
	s, ok := c.Raw[name].(string)
	return s, ok
}

// Audience reports whether the aud claim (a string or a list of strings)
// names aud.
func (c *Claims) Audience(aud string) bool {
	switch v := c.Raw["aud"].(type) {
	case string:
		return v == aud
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok && s == aud {
				return true
			}
		}
	}
	return false
}

// List returns a claim that is a list of strings (a single string is a list
// of one); present reports whether the claim exists; an error when it has
// another type.
func (c *Claims) List(name string) (list []string, present bool, err error) {
	v, ok := c.Raw[name]
	if !ok {
		return nil, false, nil
	}
	switch v := v.(type) {
	case string:
		return []string{v}, true, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, true, fmt.Errorf("%w: %s holds a non-string", ErrClaims, name)
			}
			out = append(out, s)
		}
		return out, true, nil
	}
	return nil, true, fmt.Errorf("%w: %s is not a list of strings", ErrClaims, name)
}
