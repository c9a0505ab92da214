package jwtauth_test

import (
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth/jwtauth"
)

// BenchmarkVerify is the cost of checking one token at CONNECT.
func BenchmarkVerify(b *testing.B) {
	testKeys(b)
	claims := map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "sub": "alice"}
	keys := []jwtauth.Key{{Alg: jwtauth.HS256, Secret: secret}, {Alg: jwtauth.RS256, RSA: &rsaKey.PublicKey},
		{Alg: jwtauth.ES256, EC: &ecKey.PublicKey}}
	for _, tc := range []struct {
		name string
		key  any
	}{{"HS256", secret}, {"RS256", rsaKey}, {"ES256", ecKey}} {
		tok := sign(b, map[string]any{"alg": tc.name}, claims, tc.key)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jwtauth.Verify(tok, keys, time.Now(), 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
