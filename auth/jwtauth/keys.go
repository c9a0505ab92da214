package jwtauth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
)

// Bounds on keys.
const (
	MinSecretLen = 32   // RFC 7518 section 3.2: an HS256 key at least as long as the hash
	MinRSABits   = 2048 // RFC 7518 section 3.3
)

// LoadSecret reads an HS256 secret: the file's bytes without a trailing
// newline (\n or \r\n), at least MinSecretLen bytes.
func LoadSecret(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("jwtauth: %w", err)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) < MinSecretLen {
		return Key{}, fmt.Errorf("jwtauth: %s: an HS256 secret needs at least %d bytes, it has %d", path, MinSecretLen, len(data))
	}
	return Key{Alg: HS256, Secret: data}, nil
}

// LoadPEM reads the public keys of alg (RS256 or ES256) from a PEM file:
// "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY" (PKCS #1) or "CERTIFICATE" blocks.
// A key of another kind, or a private key, is an error.
func LoadPEM(path, alg string) ([]Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwtauth: %w", err)
	}
	var keys []Key
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var pub any
		switch b.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			return nil, fmt.Errorf("jwtauth: %s: PEM block %d is %q; a public key or certificate is expected", path, n, b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("jwtauth: %s: PEM block %d: %w", path, n, err)
		}
		k, err := keyFor(pub, alg)
		if err != nil {
			return nil, fmt.Errorf("jwtauth: %s: PEM block %d: %w", path, n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwtauth: %s holds no PEM public key", path)
	}
	return keys, nil
}

func keyFor(pub any, alg string) (Key, error) {
	switch alg {
	case RS256:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return Key{}, fmt.Errorf("%T is not an RSA public key (RS256)", pub)
		}
		if k.N.BitLen() < MinRSABits {
			return Key{}, fmt.Errorf("RSA key of %d bits; RS256 needs at least %d", k.N.BitLen(), MinRSABits)
		}
		return Key{Alg: RS256, RSA: k}, nil
	case ES256:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("%T is not a P-256 public key (ES256)", pub)
		}
		return Key{Alg: ES256, EC: k}, nil
	}
	return Key{}, fmt.Errorf("algorithm %q", alg)
}

// jwk is one JSON Web Key (RFC 7517) as far as it is used.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	K   string `json:"k"`
	D   string `json:"d"`
}

// LoadJWKS reads a JWK Set file ({"keys": [...]}): RSA keys (RS256), EC P-256
// keys (ES256) and oct keys (HS256). Keys for encryption (use "enc") or for
// another alg are skipped; a key that is malformed, or a private key, is an
// error, and so is a file without a usable key.
func LoadJWKS(path string) ([]Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwtauth: %w", err)
	}
	keys, err := ParseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("jwtauth: %s: %w", path, err)
	}
	return keys, nil
}

// ParseJWKS reads a JWK Set (see LoadJWKS).
func ParseJWKS(data []byte) ([]Key, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	var keys []Key
	for i, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		var want string
		switch j.Kty {
		case "RSA":
			want = RS256
		case "EC":
			want = ES256
		case "oct":
			want = HS256
		default:
			continue
		}
		if j.Alg != "" && j.Alg != want {
			continue // for an algorithm not supported (RS512, PS256, ...)
		}
		k, err := j.key(want)
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, j.Kid, err)
		}
		k.ID = j.Kid
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no RS256, ES256 or HS256 signing key")
	}
	return keys, nil
}

func (j *jwk) key(alg string) (Key, error) {
	if j.D != "" && alg != HS256 {
		return Key{}, errors.New("a private key: publish only the public key")
	}
	dec := func(name, s string) ([]byte, error) {
		b, err := b64.DecodeString(s)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%s is not base64url", name)
		}
		return b, nil
	}
	switch alg {
	case RS256:
		n, err := dec("n", j.N)
		if err != nil {
			return Key{}, err
		}
		e, err := dec("e", j.E)
		if err != nil {
			return Key{}, err
		}
		eb := new(big.Int).SetBytes(e)
		if !eb.IsInt64() || eb.Int64() < 3 || eb.Int64() > 1<<31-1 || eb.Int64()%2 == 0 {
			return Key{}, errors.New("RSA exponent out of range")
		}
		return keyFor(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(eb.Int64())}, RS256)
	case ES256:
		if j.Crv != "P-256" {
			return Key{}, fmt.Errorf("curve %q is not P-256", j.Crv)
		}
		x, err := dec("x", j.X)
		if err != nil {
			return Key{}, err
		}
		y, err := dec("y", j.Y)
		if err != nil {
			return Key{}, err
		}
		if len(x) != 32 || len(y) != 32 {
			return Key{}, errors.New("x and y must be 32 bytes")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return Key{}, fmt.Errorf("not a point of P-256: %w", err)
		}
		return Key{Alg: ES256, EC: pub}, nil
	case HS256:
		k, err := dec("k", j.K)
		if err != nil {
			return Key{}, err
		}
		if len(k) < MinSecretLen {
			return Key{}, fmt.Errorf("an HS256 key needs at least %d bytes", MinSecretLen)
		}
		return Key{Alg: HS256, Secret: k}, nil
	}
	return Key{}, fmt.Errorf("algorithm %q", alg)
}
