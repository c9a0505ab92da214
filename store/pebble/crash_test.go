package pebble

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/storetest"
)

// crashEnv names the store directory of the crash test's child process.
const crashEnv = "MQTTD_STORE_CRASH_CHILD_DIR"

const crashWriters = 4

// TestCrashChild is the child process of TestCrash; it skips unless the
// crash test started it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("the child process of TestCrash")
	}
	if err := crashChild(dir, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
}

// crashChild appends to the queues of crashWriters sessions from as many
// goroutines under SyncAlways, printing "client seq" once Apply returns:
// from then on the entry must survive anything.
func crashChild(dir string, out io.Writer) error {
	s, err := Open(dir, Options{Sync: store.SyncAlways})
	if err != nil {
		return err
	}
	st, err := s.Load(time.Now())
	if err != nil {
		return err
	}
	next := make(map[string]uint64)
	for _, ss := range st.Sessions {
		if n := len(ss.Queue); n > 0 {
			next[ss.Session.ClientID] = ss.Queue[n-1].Seq + 1
		}
	}
	var ids atomic.Uint64
	ids.Store(st.NextMessageID)
	var (
		mu   sync.Mutex // one line per write
		wg   sync.WaitGroup
		errs = make(chan error, crashWriters)
	)
	for w := range crashWriters {
		client := fmt.Sprint("w", w)
		seq := max(next[client], 1)
		wg.Go(func() {
			for range 100000 { // bounded, should the parent never kill us
				var b store.Batch
				if seq == 1 {
					b.PutSession(storetest.Sess(client))
				}
				id := ids.Add(1)
				b.PutMessage(storetest.Msg(id, "crash/"+client, strings.Repeat("x", 100)))
				b.PutQueueEntry(storetest.Entry(client, seq, id))
				if err := s.Apply(&b); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				_, err := fmt.Fprintf(out, "%s %d\n", client, seq)
				mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
				seq++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return s.Close()
}

// TestCrash kills a writer process at random moments and checks that every
// entry it acknowledged is in the store afterwards.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	acked := make(map[string]uint64) // client -> highest acknowledged seq
	const runs = 4
	for run := range runs {
		killAfter := 1 + rng.IntN(200) // acknowledgements before the kill
		cmd := exec.Command(exe, "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		n, killed := 0, false
		for sc.Scan() {
			client, seqStr, ok := strings.Cut(sc.Text(), " ")
			if !ok || !strings.HasPrefix(client, "w") {
				continue // test framework output
			}
			seq, err := strconv.ParseUint(seqStr, 10, 64)
			if err != nil {
				t.Fatalf("child printed %q", sc.Text())
			}
			acked[client] = max(acked[client], seq)
			if n++; n == killAfter && !killed {
				if err := cmd.Process.Kill(); err != nil { // SIGKILL
					t.Fatal(err)
				}
				killed = true
			}
			// Lines printed before the kill landed are acknowledged too:
			// read until EOF.
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("run %d: child exited (%v) after %d acknowledgements, before the kill:\n%s", run, err, n,
				stderr.String())
		}
		t.Logf("run %d: killed after %d acknowledgements (%d read)", run, killAfter, n)

		s := open(t, dir, store.SyncAlways)
		st := storetest.Load(t, s, time.Now())
		have := make(map[string]map[uint64]bool)
		for _, ss := range st.Sessions {
			seqs := make(map[uint64]bool)
			for _, e := range ss.Queue {
				seqs[e.Seq] = true
				if st.Messages[e.MessageID] == nil {
					t.Fatalf("run %d: entry %s/%d without its message", run, ss.Session.ClientID, e.Seq)
				}
			}
			have[ss.Session.ClientID] = seqs
		}
		for client, last := range acked {
			for seq := uint64(1); seq <= last; seq++ {
				if !have[client][seq] {
					t.Fatalf("run %d: acknowledged entry %s/%d lost", run, client, seq)
				}
			}
		}
		closeStore(t, s)
	}
}
