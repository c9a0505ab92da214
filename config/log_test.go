package config

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateWriter records its writes; while held, a write waits for release.
type gateWriter struct {
	mu      sync.Mutex
	writes  []string
	held    bool
	entered chan struct{} // a write is waiting on the gate
	release chan struct{}
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	held := w.held
	w.held = false
	w.mu.Unlock()
	if held {
		w.entered <- struct{}{}
		<-w.release
	}
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
	return len(p), nil
}

func (w *gateWriter) text() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.writes, ""), len(w.writes)
}

// heldLogging returns a Logging to stderr w whose first write, of line,
// is held by w: when it returns, the logging goroutine is in that write.
func heldLogging(t *testing.T, at time.Time, line string) (*Logging, *gateWriter) {
	t.Helper()
	cfg := parse(t, "log_timestamp false\n")
	w := &gateWriter{held: true, entered: make(chan struct{}), release: make(chan struct{})}
	lg, err := newLoggingTo(cfg.Log, false, &bytes.Buffer{}, w)
	if err != nil {
		t.Fatal(err)
	}
	lg.write(at, LevelNotice, line)
	<-w.entered
	return lg, w
}

// TestLogLinesWrittenTogether: lines logged while the logging goroutine
// writes earlier ones wait, and are written together, in order, in one write;
// after Close a line is written before the call returns.
func TestLogLinesWrittenTogether(t *testing.T) {
	at := time.Unix(1700000000, 0)
	lg, w := heldLogging(t, at, "line 0") // the logging goroutine writes line 0, held
	var want strings.Builder
	want.WriteString("line 0\n")
	for i := 1; i <= 100; i++ {
		lg.write(at, LevelNotice, fmt.Sprintf("line %d", i))
		fmt.Fprintf(&want, "line %d\n", i)
	}
	close(w.release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, n := w.text()
		if got == want.String() {
			if n != 2 {
				t.Errorf("101 lines in %d writes, want 2 (the first, then the 100 that came meanwhile)", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("written in %d writes:\n%s\nwant:\n%s", n, got, want.String())
		}
		time.Sleep(time.Millisecond)
	}
	lg.Close()
	lg.write(at, LevelNotice, "after close")
	if got, _ := w.text(); !strings.HasSuffix(got, "line 100\nafter close\n") {
		t.Errorf("a line logged after Close is not written at once: %q", got[max(0, len(got)-40):])
	}
}

// TestLogBoundedWhileWriterStalls: a destination that stops taking lines
// (a full pipe) holds at most maxPendingLog bytes of waiting lines: past
// that, the goroutine that logs writes them itself, and so waits.
func TestLogBoundedWhileWriterStalls(t *testing.T) {
	at := time.Unix(1700000000, 0)
	lg, w := heldLogging(t, at, "first")
	defer lg.Close()
	line := strings.Repeat("x", 1000)
	logged := make(chan int)
	go func() {
		n := 0
		for range 2 * maxPendingLog / len(line) {
			lg.write(at, LevelNotice, line)
			n++
		}
		logged <- n
	}()
	// The logger fills pending to the bound, then blocks in its own write.
	deadline := time.Now().Add(10 * time.Second)
	for {
		lg.pmu.Lock()
		n := len(lg.pending)
		lg.pmu.Unlock()
		if n >= maxPendingLog {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending reached %d bytes, not the bound %d", n, maxPendingLog)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case n := <-logged:
		t.Fatalf("all %d lines logged while the destination took none", n)
	case <-time.After(50 * time.Millisecond):
	}
	lg.pmu.Lock()
	if n := len(lg.pending); n > maxPendingLog+len(line)+1 {
		t.Errorf("%d bytes waiting, past the bound %d", n, maxPendingLog)
	}
	lg.pmu.Unlock()
	close(w.release)
	if n := <-logged; n != 2*maxPendingLog/len(line) {
		t.Errorf("logged %d lines", n)
	}
}
