package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// knownAnswers are password file lines with the password that made them.
// The "mosquitto_passwd" ones were made once with Debian's mosquitto_passwd
// 2.0.11, the "python" ones with Python's hashlib (for salt lengths and
// iteration counts mosquitto_passwd does not write), the "argon2" ones with
// the reference argon2 command-line tool (Debian package argon2).
var knownAnswers = []struct {
	source, user, password, hash string
}{
	{"mosquitto_passwd", "alice", "secret",
		"$7$101$EjyoLjjIhENAj/hS$drwa/xIF3Va+3Jd70OPLptrG2B3JpluOBzP3ImhfEfbuljpcI7ESLzATXBQDDfmAduEUX4L3m732QFbmUjh1Xg=="},
	{"mosquitto_passwd", "carol", "x",
		"$7$101$T+BBJHogSfhehFCa$sDBOv7+zIggbq34DUtRehxPnlSDq+dHuGMHLHSh99mKywcKaUKmYQKto0UHtjjaSs31Jcx+X7LckdAr5ircmcg=="},
	{"mosquitto_passwd", "eve", "a b ", // trailing space is part of the password
		"$7$101$0K2CMUHn7hL0SnvG$FqtvrhDNScOC/avcaFAzpYcq9hK22NU+VBd3P346It76p99YaDz/DhSZhq/PjYO6UyuR4dt93lmhlnANuvcLDQ=="},
	{"mosquitto_passwd -I 1000", "zed", "z",
		"$7$1000$7V5Wk9cnmIP8rwVq$kV9ofkEFIwAuBJg9sPadOmScQK4vHSQBE9noNpFzFQkziqmdUrNLKnHRBGxgW40oNfvvTgR9Q4HSnnofHicLvg=="},
	{"mosquitto_passwd", "dave smith", "p@ss:word with spaces",
		"$7$101$nZX1djRSVrR1NYJl$2ohx1UOdZJ2s5nvvPRvSkN0BeMmDwWeEHwO7ElSae+V6TcTj18UHULFRQoQU0S2dM/nzkeMn0v6vD3zWHsfReA=="},
	{"mosquitto_passwd", "ünï", "ключ",
		"$7$101$FzMzxJyi5ziYY49R$saC6S3aUaYmqCMlnjRhXncv7SaBxaoKdLdqYx5MQDmAAP67B8Bw1mtMqBUK7z2vWWi8X8TBsoU4esIpOYrH+og=="},
	{"mosquitto_passwd -H sha512", "bob", "hunter2",
		"$6$DGruKTU+Z2omNY4p$jTxLlHhhJbN7a415qDSYKdbJQGERMzSC02DQcRC5+QyN8+J50efzxhciZ7k/l/lxFWLcuraH+VpzeSf+Pq3l/Q=="},
	{"mosquitto_passwd -H sha512", "legacy", "old-style",
		"$6$eZbnWfqbBQwkhsRb$7NZZpJdYehqIAp/lkX4eT/JnuKvNR0tpVAfxpFaBjbW3LR7aI98VY729TSoBKjq1OQLcB4i8eGwp8U2hBb11sA=="},
	{"python pbkdf2 19-byte salt", "long", "long salt pw",
		"$7$1000$MDEyMzQ1Njc4OWFiY2RlZlhZWg==$5DL0u73kTzrKJUco87g8qMhYERFfpLso4ZH2GSCtmkxD9A6xleBHm3TcXMKtBJ0puPJl0NNxnWddl/ZkMxSPWw=="},
	{"python pbkdf2 1 iteration, 32-byte hash", "short", "p",
		"$7$1$YWJjZA==$Y5YIDS8WGhVD2HY92rhLtNQ49m6VV9lXN3MR05ondyo="},
	{"python sha512", "utf8", "pässwörd",
		"$6$c2FsdHNhbHRzYWx0$PMd/J/f40epyFZxCDh2x67wd6DFL5gWJhv2x7QM2Z8h2ttTQt4dyvXpn/K+rkDA1yqCIodsNWmSNY3jPfYtl8w=="},
	{"argon2 -id -t 3 -m 10 -p 2", "argon", "s3cret pass",
		"$argon2id$v=19$m=1024,t=3,p=2$bXF0dGRzYWx0c2FsdDE$yJcYe/DxWWhGgJlHEcrWCX4jT+/s8DwK2F84e5IWWTE"},
	{"argon2 -id -t 1 -m 8 -p 1 -l 16", "argon16", "hunter2",
		"$argon2id$v=19$m=256,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$Re/G9TrqDrw/CYCuO7OpRw"},
}

func knownAnswerFile() string {
	var b strings.Builder
	for _, ka := range knownAnswers {
		fmt.Fprintf(&b, "%s:%s\n", ka.user, ka.hash)
	}
	return b.String()
}

// writeFile writes content to a new file in a test directory and returns
// its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKnownAnswerVectors(t *testing.T) {
	f, err := LoadPasswordFile(writeFile(t, "pw", knownAnswerFile()))
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != len(knownAnswers) {
		t.Fatalf("Len() = %d, want %d", f.Len(), len(knownAnswers))
	}
	for _, ka := range knownAnswers {
		t.Run(ka.source+"/"+ka.user, func(t *testing.T) {
			if !f.Check(ka.user, ka.password) {
				t.Errorf("Check(%q, %q) = false, want true", ka.user, ka.password)
			}
			for _, wrong := range []string{"", ka.password + "x", strings.TrimSpace(ka.password) + "\n", strings.ToUpper(ka.password)} {
				if wrong != ka.password && f.Check(ka.user, wrong) {
					t.Errorf("Check(%q, %q) = true for a wrong password", ka.user, wrong)
				}
			}
			// The encoding round-trips to the same text.
			c, err := parseHash(ka.hash)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.String(); got != ka.hash {
				t.Errorf("String() = %q, want %q", got, ka.hash)
			}
		})
	}
	if f.Check("nobody", "secret") {
		t.Error("Check of an unknown user = true")
	}
}

var hashPattern = regexp.MustCompile(`^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$`)

func TestHashPasswordFormat(t *testing.T) {
	h1, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !hashPattern.MatchString(h1) {
		t.Fatalf("HashPassword = %q, want $7$101$<16 base64>$<88 base64 with padding>", h1)
	}
	parts := strings.Split(h1, "$")
	salt, _ := base64.StdEncoding.DecodeString(parts[3])
	hash, _ := base64.StdEncoding.DecodeString(parts[4])
	if len(salt) != 12 || len(hash) != 64 {
		t.Errorf("salt %d bytes, hash %d bytes; want 12 and 64", len(salt), len(hash))
	}
	h2, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if h1 == h2 {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
	f, err := LoadPasswordFile(writeFile(t, "pw", "u1:"+h1+"\nu2:"+h2+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u1", "u2"} {
		if !f.Check(u, "correct horse") || f.Check(u, "correct horse ") {
			t.Errorf("%s: our own hash does not check", u)
		}
	}
}

func TestLoadPasswordFileLayout(t *testing.T) {
	content := "# a comment\n\n" +
		"  alice  :  " + knownAnswers[0].hash + "  \r\n" + // blanks around fields, CRLF
		"\t\n" + // white space only
		"   # indented comment\n" +
		"bob:" + knownAnswers[6].hash // no final newline
	f, err := LoadPasswordFile(writeFile(t, "pw", content))
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != 2 || !f.Check("alice", "secret") || !f.Check("bob", "hunter2") {
		t.Errorf("Len() = %d; alice ok %v, bob ok %v", f.Len(), f.Check("alice", "secret"), f.Check("bob", "hunter2"))
	}
	empty, err := LoadPasswordFile(writeFile(t, "empty", ""))
	if err != nil || empty.Len() != 0 || empty.Check("", "") {
		t.Errorf("empty file: %v, Len %d", err, empty.Len())
	}
}

func TestLoadPasswordFileErrors(t *testing.T) {
	good := "alice:" + knownAnswers[0].hash + "\n"
	tests := []struct {
		name, content string
		line          int
		want          string
	}{
		{"no colon", good + "bob\n", 2, "no ':'"},
		{"empty user", good + " :" + knownAnswers[6].hash + "\n", 2, "empty user name"},
		{"no hash", "# c\nbob:\n", 2, "no password hash"},
		{"plain text", good + "\nbob:hunter2\n", 3, "not hashed"},
		{"unknown scheme", "bob:$5$abc$def\n", 1, `unsupported hash type "5"`},
		{"duplicate user", good + "alice:" + knownAnswers[1].hash + "\n", 2, "first on line 1"},
		{"6 missing part", "bob:$6$DGruKTU+Z2omNY4p\n", 1, "$6$<salt>$<hash>"},
		{"6 short hash", "bob:$6$DGruKTU+Z2omNY4p$YWJj\n", 1, "3 bytes, not 64"},
		{"6 bad salt", "bob:$6$!!!$" + strings.Split(knownAnswers[6].hash, "$")[3] + "\n", 1, "salt"},
		{"7 zero iterations", "bob:$7$0$YWJj$YWJj\n", 1, "iteration count"},
		{"7 negative iterations", "bob:$7$-5$YWJj$YWJj\n", 1, "iteration count"},
		{"7 huge iterations", "bob:$7$99999999999$YWJj$YWJj\n", 1, "iteration count"},
		{"7 empty salt", "bob:$7$101$$YWJj\n", 1, "salt"},
		{"7 bad hash", "bob:$7$101$YWJj$not*base64\n", 1, "hash"},
		{"7 extra field", "bob:$7$101$YWJj$YWJj$YWJj\n", 1, "$7$<iterations>"},
		{"argon2 version", "bob:$argon2id$v=16$m=256,t=1,p=1$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "version"},
		{"argon2 missing t", "bob:$argon2id$v=19$m=256,p=1$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "lack one of"},
		{"argon2 unknown param", "bob:$argon2id$v=19$m=256,t=1,p=1,x=2$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "unknown"},
		{"argon2 low memory", "bob:$argon2id$v=19$m=8,t=1,p=2$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "less than 8*p"},
		{"argon2 p too large", "bob:$argon2id$v=19$m=8192,t=1,p=256$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "1..255"},
		{"argon2 short hash", "bob:$argon2id$v=19$m=256,t=1,p=1$YWJjZGVmZ2g$YWI\n", 1, "shorter than 4"},
		{"argon2i", "bob:$argon2i$v=19$m=256,t=1,p=1$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "argon2i"},
		// Costs above mqttd's caps: every login would spend them.
		{"argon2 memory above cap", good + "bob:$argon2id$v=19$m=65537,t=1,p=1$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 2,
			`user "bob": argon2id memory m=65537 KiB is above mqttd's limit of 65536 KiB`},
		{"argon2 time above cap", "bob:$argon2id$v=19$m=256,t=11,p=1$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "t=11 is above"},
		{"argon2 lanes above cap", "bob:$argon2id$v=19$m=256,t=1,p=17$YWJjZGVmZ2g$YWJjZGVmZ2g\n", 1, "p=17 is above"},
		{"7 iterations above cap", "bob:$7$1000001$YWJj$YWJj\n", 1, "iteration count 1000001 is above"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "pw", tt.content)
			_, err := LoadPasswordFile(path)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *ParseError", err)
			}
			if pe.File != path || pe.Line != tt.line {
				t.Errorf("error at %s:%d, want %s:%d", pe.File, pe.Line, path, tt.line)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, fmt.Sprintf("%s:%d:", path, tt.line)) {
				t.Errorf("error %q does not contain %q and the file:line", msg, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadPasswordFile(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want os.ErrNotExist", err)
		}
	})
}

// TestCostCapsAcceptDefaults: the caps let through what the tools write by
// default or commonly: mosquitto_passwd's and `mqttd passwd`'s "$7$" (101
// iterations, and -I up to the cap), libargon2's m=4096,t=3,p=1 and RFC
// 9106's m=64 MiB,t=3,p=4. `mqttd passwd -I` above the cap is refused.
func TestCostCapsAcceptDefaults(t *testing.T) {
	content := "a:$7$101$YWJj$YWJj\nb:$7$1000000$YWJj$YWJj\n" +
		"c:$argon2id$v=19$m=4096,t=3,p=1$YWJjZGVmZ2g$YWJjZGVmZ2g\n" +
		"d:$argon2id$v=19$m=65536,t=3,p=4$YWJjZGVmZ2g$YWJjZGVmZ2g\n" +
		"e:$argon2id$v=19$m=65536,t=10,p=16$YWJjZGVmZ2g$YWJjZGVmZ2g\n"
	f, err := LoadPasswordFile(writeFile(t, "pw", content))
	if err != nil || f.Len() != 5 {
		t.Fatalf("LoadPasswordFile: %v", err)
	}
	if _, err := newCredential(kindPBKDF2, "pw", maxPBKDF2Iterations+1); err == nil {
		t.Error("newCredential hashed with more iterations than LoadPasswordFile accepts")
	}
}

// TestPasswordChecksBounded: however many clients log in at once, at most
// cap(checkSlots) password checks run together; the others wait for a slot
// and then run.
func TestPasswordChecksBounded(t *testing.T) {
	f, err := LoadPasswordFile(writeFile(t, "pw", knownAnswerFile()))
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	slots := cap(checkSlots)
	var running, peak, started atomic.Int32
	gate := make(chan struct{})
	openGate := sync.OnceFunc(func() { close(gate) })
	checkHook = func() {
		r := running.Add(1)
		for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
		}
		<-gate
		running.Add(-1)
	}
	errs := make(chan error, n)
	var wg sync.WaitGroup
	defer func() {
		openGate()
		wg.Wait()
		checkHook = nil
	}()
	for range n {
		wg.Go(func() {
			started.Add(1)
			// argon16 is a real Argon2id hash with small parameters.
			errs <- f.Authenticate(context.Background(), &Client{Username: "argon16", HasUsername: true,
				Password: []byte("hunter2"), HasPassword: true})
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for started.Load() < n || running.Load() < int32(slots) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d logins started, %d checks running; want %d running", started.Load(), n, running.Load(), slots)
		}
		time.Sleep(time.Millisecond)
	}
	// Every login has been asked for; none beyond the slots may start.
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if r := running.Load(); r > int32(slots) {
			t.Fatalf("%d password checks running at once, want at most %d", r, slots)
		}
	}
	openGate()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Authenticate = %v, want nil after waiting for a slot", err)
		}
	}
	if p := peak.Load(); p > int32(slots) {
		t.Errorf("peak of %d checks at once, want at most %d", p, slots)
	}
}

// TestPasswordCheckBusy: a check that finds every slot taken until its
// context ends is ErrBusy, not a verdict on the password; a freed slot lets
// the next check run.
func TestPasswordCheckBusy(t *testing.T) {
	f, err := LoadPasswordFile(writeFile(t, "pw", knownAnswerFile()))
	if err != nil {
		t.Fatal(err)
	}
	alice := &Client{Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true}
	for range cap(checkSlots) {
		checkSlots <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = f.Authenticate(ctx, alice)
	if !errors.Is(err, ErrBusy) || errors.Is(err, ErrBadCredentials) {
		t.Errorf("Authenticate with every slot taken = %v, want ErrBusy", err)
	}
	<-checkSlots
	if err := f.Authenticate(context.Background(), alice); err != nil {
		t.Errorf("Authenticate with a free slot = %v", err)
	}
	for range cap(checkSlots) - 1 {
		<-checkSlots
	}
}

func TestPasswordFileAuthenticate(t *testing.T) {
	f, err := LoadPasswordFile(writeFile(t, "pw", knownAnswerFile()))
	if err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		c    Client
		want error
	}{
		{"right password", context.Background(), Client{Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true}, nil},
		{"sha512 user", context.Background(), Client{Username: "bob", HasUsername: true, Password: []byte("hunter2"), HasPassword: true}, nil},
		{"wrong password", context.Background(), Client{Username: "alice", HasUsername: true, Password: []byte("Secret"), HasPassword: true}, ErrBadCredentials},
		{"no password", context.Background(), Client{Username: "alice", HasUsername: true}, ErrBadCredentials},
		{"empty password", context.Background(), Client{Username: "alice", HasUsername: true, Password: []byte{}, HasPassword: true}, ErrBadCredentials},
		{"unknown user", context.Background(), Client{Username: "mallory", HasUsername: true, Password: []byte("secret"), HasPassword: true}, ErrBadCredentials},
		{"empty user name", context.Background(), Client{Username: "", HasUsername: true, Password: []byte("secret"), HasPassword: true}, ErrBadCredentials},
		{"anonymous", context.Background(), Client{}, ErrNotAuthorized},
		{"v5 password without user name", context.Background(), Client{Password: []byte("secret"), HasPassword: true}, ErrNotAuthorized},
		{"canceled context", canceled, Client{Username: "alice", HasUsername: true, Password: []byte("secret"), HasPassword: true}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.Authenticate(tt.ctx, &tt.c)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Authenticate = %v, want %v", err, tt.want)
			}
		})
	}
	var _ Authenticator = f
}

// mosquittoPasswd returns the path of Mosquitto's mosquitto_passwd or skips
// the test.
func mosquittoPasswd(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd is not installed (Debian package mosquitto); skipping the interoperability check")
	}
	return path
}

func runMosquittoPasswd(t *testing.T, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_passwd %q: %v\n%s", args, err, out)
	}
}

func TestReadsMosquittoPasswdFiles(t *testing.T) {
	bin := mosquittoPasswd(t)
	path := filepath.Join(t.TempDir(), "passwd")
	users := []struct{ opts, user, password string }{
		{"-c", "first", "one"},
		{"", "second user", "two words"},
		{"-H sha512", "legacy", "sha512 style"},
		{"-H sha512-pbkdf2", "explicit", "pbkdf2!"},
		{"", "unicode-ü", "pässwörd ключ"},
	}
	for _, u := range users {
		args := append(strings.Fields(u.opts), "-b", path, u.user, u.password)
		runMosquittoPasswd(t, bin, args...)
	}
	// Updating a password replaces the line.
	runMosquittoPasswd(t, bin, "-b", path, "first", "uno")
	f, err := LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != len(users) {
		t.Errorf("Len() = %d, want %d", f.Len(), len(users))
	}
	for _, u := range users[1:] {
		if !f.Check(u.user, u.password) {
			t.Errorf("Check(%q, %q) = false", u.user, u.password)
		}
	}
	if !f.Check("first", "uno") || f.Check("first", "one") {
		t.Error("updated password for first does not check")
	}
}

func BenchmarkCheckPBKDF2(b *testing.B) {
	f, err := parsePasswordFile("bench", []byte(knownAnswerFile()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !f.Check("alice", "secret") {
			b.Fatal("Check failed")
		}
	}
}

func FuzzParsePasswordFile(f *testing.F) {
	f.Add([]byte(knownAnswerFile()))
	f.Add([]byte("# c\n\nu: $7$1$YWJj$YWJj\r\n"))
	f.Add([]byte("u:$argon2id$v=19$m=8,t=1,p=1$YWJjZGVmZ2g$YWJjZGVmZ2g"))
	f.Add([]byte("u:$6$$\nv:$7$$$\n:"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := parsePasswordFile("fuzz", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error %v is not a *ParseError with a line", err)
			}
			return
		}
		// Hashing costs come from the input, so do not hash here; check
		// that every entry encodes and parses back to the same text.
		for user, c := range pf.users {
			s := c.String()
			c2, err := parseHash(s)
			if err != nil {
				t.Fatalf("user %q: re-parsing %q: %v", user, s, err)
			}
			if c2.String() != s {
				t.Fatalf("user %q: %q re-encodes as %q", user, s, c2.String())
			}
		}
	})
}
