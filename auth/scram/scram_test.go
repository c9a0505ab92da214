package scram

import (
	"encoding/base64"
	"errors"
	"testing"
)

// RFC 7677 section 3: the SCRAM-SHA-256 example exchange.
func TestClientRFC7677Vector(t *testing.T) {
	c := NewClient("user", "pencil")
	c.nonce = "rOprNGfwEbeRWgbNEkqO"
	if got := string(c.First()); got != "n,,n=user,r=rOprNGfwEbeRWgbNEkqO" {
		t.Fatalf("client-first = %q", got)
	}
	final, err := c.Final([]byte("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
	if err != nil {
		t.Fatal(err)
	}
	want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	if string(final) != want {
		t.Fatalf("client-final = %q\nwant          %q", final, want)
	}
	if err := c.Verify([]byte("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := c.Verify([]byte("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); !errors.Is(err, ErrServerSignature) {
		t.Fatalf("verify of a wrong signature: %v", err)
	}
}

func TestServerExchange(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	creds, err := NewCredentials("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(FromMap(map[string]Credentials{"user": creds, "a,b=c": creds}))
	tests := []struct {
		name, user, password string
		want                 error
	}{
		{"right password", "user", "pencil", nil},
		{"escaped user name", "a,b=c", "pencil", nil},
		{"wrong password", "user", "pen", ErrAuthFailed},
		{"unknown user", "nobody", "pencil", ErrAuthFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := NewClient(tc.user, tc.password)
			conv, first, err := srv.Start(cl.First())
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			if conv.User() != tc.user {
				t.Fatalf("user %q, want %q", conv.User(), tc.user)
			}
			final, err := cl.Final(first)
			if err != nil {
				t.Fatalf("client final: %v", err)
			}
			sf, err := conv.Finish(final)
			if !errors.Is(err, tc.want) {
				t.Fatalf("finish: %v, want %v", err, tc.want)
			}
			if err == nil {
				if err := cl.Verify(sf); err != nil {
					t.Fatalf("client verify: %v", err)
				}
				if _, err := conv.Finish(final); err == nil {
					t.Fatal("a conversation finished twice")
				}
			}
		})
	}
}

func TestServerRejects(t *testing.T) {
	creds, err := NewCredentials("pw", nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(FromMap(map[string]Credentials{"u": creds}))
	for _, tc := range []struct {
		name  string
		first string
		want  error
	}{
		{"no gs2 header", "n=u,r=abc", ErrMalformed},
		{"channel binding", "p=tls-unique,,n=u,r=abc", ErrChannelBinding},
		{"no nonce", "n,,n=u", ErrMalformed},
		{"bad escape", "n,,n=u=41,r=abc", ErrMalformed},
		{"mandatory extension", "n,,n=u,r=abc,m=x", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := srv.Start([]byte(tc.first)); !errors.Is(err, tc.want) {
				t.Fatalf("Start(%q) = %v, want %v", tc.first, err, tc.want)
			}
		})
	}
	t.Run("nonce changed in final", func(t *testing.T) {
		cl := NewClient("u", "pw")
		conv, first, err := srv.Start(cl.First())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Final(first); err != nil {
			t.Fatal(err)
		}
		if _, err := conv.Finish([]byte("c=biws,r=other,p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("finish = %v, want ErrAuthFailed", err)
		}
	})
	if _, err := NewCredentials("pw", nil, 10); err == nil {
		t.Fatal("10 iterations accepted")
	}
}
