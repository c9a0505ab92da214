package metrics

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
)

// serve runs h on a real socket on loopback and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

func status(t *testing.T, url string, set func(*http.Request)) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func basic(user, pw string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pw) }
}

// With a token or a password check configured, a scrape without the right
// credentials gets 401 and the challenge; with them, the metrics.
func TestProtect(t *testing.T) {
	read := func() Snapshot { return Snapshot{ClientsConnected: 1} }
	check := func(user, pw string) bool { return user == "prom" && pw == "s3cret" }
	cases := []struct {
		name   string
		access Access
		set    func(*http.Request)
		want   int
	}{
		{"open", Access{}, nil, 200},
		{"token missing", Access{Token: "tok-123"}, nil, 401},
		{"token right", Access{Token: "tok-123"}, bearer("tok-123"), 200},
		{"token wrong", Access{Token: "tok-123"}, bearer("tok-124"), 401},
		{"token prefix", Access{Token: "tok-123"}, bearer("tok-12"), 401},
		{"token longer", Access{Token: "tok-123"}, bearer("tok-1234"), 401},
		{"token as basic password", Access{Token: "tok-123"}, basic("x", "tok-123"), 401},
		{"basic missing", Access{CheckPassword: check}, nil, 401},
		{"basic right", Access{CheckPassword: check}, basic("prom", "s3cret"), 200},
		{"basic wrong password", Access{CheckPassword: check}, basic("prom", "nope"), 401},
		{"basic wrong user", Access{CheckPassword: check}, basic("other", "s3cret"), 401},
		{"bearer without token configured", Access{CheckPassword: check}, bearer("s3cret"), 401},
		{"both, basic", Access{Token: "tok-123", CheckPassword: check}, basic("prom", "s3cret"), 200},
		{"both, token", Access{Token: "tok-123", CheckPassword: check}, bearer("tok-123"), 200},
		{"both, none", Access{Token: "tok-123", CheckPassword: check}, nil, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := serve(t, Protect(Handler(read), c.access))
			code, h := status(t, url, c.set)
			if code != c.want {
				t.Fatalf("status %d, want %d", code, c.want)
			}
			if code == 401 {
				ch := strings.Join(h.Values("WWW-Authenticate"), ", ")
				if (c.access.Token != "") != strings.Contains(ch, "Bearer") ||
					(c.access.CheckPassword != nil) != strings.Contains(ch, "Basic") {
					t.Errorf("WWW-Authenticate %q for %+v", ch, c.access)
				}
			}
		})
	}
}

func TestTokenEqual(t *testing.T) {
	for _, c := range []struct {
		got, want string
		eq        bool
	}{
		{"abc", "abc", true}, {"abd", "abc", false}, {"ab", "abc", false}, {"abcd", "abc", false}, {"", "abc", false},
	} {
		if tokenEqual(c.got, c.want) != c.eq {
			t.Errorf("tokenEqual(%q, %q) = %v", c.got, c.want, !c.eq)
		}
	}
}
