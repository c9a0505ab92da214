package auth

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// openPTY returns the two ends of a new pseudo-terminal, or skips the test.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlocking pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("pty number: %v", e)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening pty slave: %v", err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

func echoOn(t *testing.T, f *os.File) bool {
	t.Helper()
	on, err := echoState(f)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

func echoState(f *os.File) (bool, error) {
	var tio syscall.Termios
	if err := ioctlTermios(f.Fd(), syscall.TCGETS, &tio); err != nil {
		return false, err
	}
	return tio.Lflag&syscall.ECHO != 0, nil
}

func TestNoEchoRestores(t *testing.T) {
	_, slave := openPTY(t)
	if !echoOn(t, slave) {
		t.Fatal("a new pty should echo")
	}
	restore, err := noEcho(slave)
	if err != nil {
		t.Fatal(err)
	}
	if echoOn(t, slave) {
		t.Error("echo still on")
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if !echoOn(t, slave) {
		t.Error("echo not restored")
	}
}

func TestNoEchoRefusesNonTerminal(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := noEcho(f); err == nil {
		t.Error("noEcho on /dev/null succeeded")
	}
}

// TestPasswdPromptOnTerminal types the password only once echo is off, as a
// person at a terminal would, and checks echo is back afterwards.
func TestPasswdPromptOnTerminal(t *testing.T) {
	master, slave := openPTY(t)
	path := filepath.Join(t.TempDir(), "passwd")
	typed := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			on, err := echoState(slave)
			if err != nil {
				typed <- err
				return
			}
			if !on {
				break
			}
			if time.Now().After(deadline) {
				typed <- fmt.Errorf("echo never turned off")
				return
			}
			time.Sleep(time.Millisecond)
		}
		_, err := master.Write([]byte("tty pw\ntty pw\n"))
		typed <- err
	}()
	var out, errOut bytes.Buffer
	rc := Passwd([]string{"-c", path, "alice"}, slave, &out, &errOut)
	if err := <-typed; err != nil {
		t.Fatal(err)
	}
	if rc != 0 || out.String() != "Password: \nReenter password: \n" {
		t.Fatalf("rc %d, stdout %q, stderr %q", rc, out.String(), errOut.String())
	}
	if !echoOn(t, slave) {
		t.Error("echo not restored after the prompt")
	}
	checkUsers(t, path, map[string]string{"alice": "tty pw"})
}
