package listener

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first Accepts with EMFILE, as a process out of
// file descriptors sees.
type flakyListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// TestTLSAcceptErrorsBackOff checks that failed accepts on the socket are
// retried with back-off and never stop the listener.
func TestTLSAcceptErrorsBackOff(t *testing.T) {
	p := newPKI(t, "flaky")
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyListener{Listener: inner}
	flaky.failures.Store(3)
	conf, err := p.serverTLS(t).Build()
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := quietConfig(Config{Address: inner.Addr().String()})
	l := newTLSListener(flaky, conf, &cfg)
	serveEcho(t, l)
	start := time.Now()
	if _, err := tlsExchange(l, p.clientTLS()); err != nil {
		t.Fatal(err)
	}
	// 5 + 10 + 20 ms of back-off went by before the socket was tried again.
	if el := time.Since(start); el < 35*time.Millisecond {
		t.Fatalf("served after %v: no back-off", el)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

func TestAcceptBackoff(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 5 * time.Millisecond},
		{1, 10 * time.Millisecond},
		{4, 80 * time.Millisecond},
		{7, 640 * time.Millisecond},
		{8, time.Second},
		{1000, time.Second},
	} {
		if got := acceptBackoff(tc.n); got != tc.want {
			t.Errorf("acceptBackoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}
