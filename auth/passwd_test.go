package auth

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// runPasswd runs Passwd with stdin and returns its exit status and output.
func runPasswd(t *testing.T, stdin string, args ...string) (rc int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	rc = Passwd(args, strings.NewReader(stdin), &out, &errOut)
	return rc, out.String(), errOut.String()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkUsers loads path and checks each user's password.
func checkUsers(t *testing.T, path string, users map[string]string) {
	t.Helper()
	f, err := LoadPasswordFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, readFile(t, path))
	}
	if f.Len() != len(users) {
		t.Errorf("file has %d users, want %d:\n%s", f.Len(), len(users), readFile(t, path))
	}
	for u, pw := range users {
		if !f.Check(u, pw) {
			t.Errorf("Check(%q, %q) = false in:\n%s", u, pw, readFile(t, path))
		}
	}
}

// noBackups fails if a backup file was left next to path.
func noBackups(t *testing.T, path string) {
	t.Helper()
	left, err := filepath.Glob(path + ".backup.*")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("backup files left behind: %v", left)
	}
}

var pbkdf2Line = regexp.MustCompile(`^[^:]+:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$`)

func TestPasswdCreateBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	rc, out, errOut := runPasswd(t, "", "-c", "-b", path, "alice", "secret")
	if rc != 0 || out != "" || errOut != "" {
		t.Fatalf("rc %d, stdout %q, stderr %q", rc, out, errOut)
	}
	content := readFile(t, path)
	if !pbkdf2Line.MatchString(strings.TrimSuffix(content, "\n")) || !strings.HasSuffix(content, "\n") || strings.Count(content, "\n") != 1 {
		t.Errorf("file = %q, want one alice:$7$101$... line", content)
	}
	checkUsers(t, path, map[string]string{"alice": "secret"})
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&^0o644 != 0 {
		t.Errorf("mode %v is wider than 0644", st.Mode().Perm())
	}
	// -c overwrites.
	if rc, _, errOut := runPasswd(t, "", "-c", "-b", path, "bob", "pw2"); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errOut)
	}
	checkUsers(t, path, map[string]string{"bob": "pw2"})
}

func TestPasswdEditExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	initial := "# users\nalice:" + knownAnswers[0].hash + "\n\nbob:" + knownAnswers[6].hash // no final newline
	if err := os.WriteFile(path, []byte(initial), 0o640); err != nil {
		t.Fatal(err)
	}

	// Add a user: other lines are kept byte for byte, the new line is
	// appended after a newline.
	if rc, _, errOut := runPasswd(t, "", "-b", path, "carol", "c pw"); rc != 0 {
		t.Fatalf("add: rc %d: %s", rc, errOut)
	}
	content := readFile(t, path)
	if !strings.HasPrefix(content, initial+"\ncarol:$7$101$") {
		t.Errorf("after add:\n%s", content)
	}
	checkUsers(t, path, map[string]string{"alice": "secret", "bob": "hunter2", "carol": "c pw"})

	// Update a password in place.
	if rc, _, errOut := runPasswd(t, "", "-b", path, "alice", "new secret"); rc != 0 {
		t.Fatalf("update: rc %d: %s", rc, errOut)
	}
	lines := strings.Split(readFile(t, path), "\n")
	if len(lines) != 6 || lines[0] != "# users" || !strings.HasPrefix(lines[1], "alice:$7$") || lines[2] != "" || !strings.HasPrefix(lines[3], "bob:$6$") {
		t.Errorf("after update: %q", lines)
	}
	checkUsers(t, path, map[string]string{"alice": "new secret", "bob": "hunter2", "carol": "c pw"})

	// -H sha512 writes a Mosquitto 1.x hash; -I sets the iterations.
	if rc, _, errOut := runPasswd(t, "", "-H", "sha512", "-b", path, "old", "o"); rc != 0 {
		t.Fatalf("-H sha512: rc %d: %s", rc, errOut)
	}
	if rc, _, errOut := runPasswd(t, "", "-I", "1000", "-b", path, "slow", "s"); rc != 0 {
		t.Fatalf("-I: rc %d: %s", rc, errOut)
	}
	content = readFile(t, path)
	if !regexp.MustCompile(`(?m)^old:\$6\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$`).MatchString(content) ||
		!regexp.MustCompile(`(?m)^slow:\$7\$1000\$`).MatchString(content) {
		t.Errorf("after -H sha512 and -I 1000:\n%s", content)
	}

	// Delete.
	if rc, _, errOut := runPasswd(t, "", "-D", path, "bob"); rc != 0 {
		t.Fatalf("delete: rc %d: %s", rc, errOut)
	}
	checkUsers(t, path, map[string]string{"alice": "new secret", "carol": "c pw", "old": "o", "slow": "s"})

	// Deleting a missing user fails and leaves the file alone.
	before := readFile(t, path)
	rc, _, errOut := runPasswd(t, "", "-D", path, "bob")
	if rc != 1 || errOut != "Warning: User bob not found in password file.\n" {
		t.Errorf("delete missing: rc %d, stderr %q", rc, errOut)
	}
	if readFile(t, path) != before {
		t.Error("file changed by a failed delete")
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v, want 0640 kept", st.Mode().Perm())
	}
	noBackups(t, path)
}

func TestPasswdPrompt(t *testing.T) {
	tests := []struct {
		name, stdin      string
		rc               int
		stdout, stderr   string
		password         string
		fileMustNotExist bool
	}{
		{"same twice", "pw one\npw one\n", 0, "Password: \nReenter password: \n", "", "pw one", false},
		{"CRLF input", "pw\r\npw\r\n", 0, "Password: \nReenter password: \n", "", "pw", false},
		{"no final newline", "pw\npw", 0, "Password: \nReenter password: \n", "", "pw", false},
		{"trailing blank is kept", "pw \npw \n", 0, "Password: \nReenter password: \n", "", "pw ", false},
		{"mismatch", "one\ntwo\n", 2, "Password: \nReenter password: \n", "Error: Passwords do not match.\n", "", true},
		{"empty", "\n\n", 1, "Password: ", "Error: Empty password.\n", "", true},
		{"end of input", "", 1, "Password: ", "Error: Empty password.\n", "", true},
		{"second missing", "pw\n", 1, "Password: \nReenter password: ", "Error: Empty password.\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "passwd")
			rc, out, errOut := runPasswd(t, tt.stdin, "-c", path, "alice")
			if rc != tt.rc || out != tt.stdout || errOut != tt.stderr {
				t.Errorf("rc %d stdout %q stderr %q; want %d %q %q", rc, out, errOut, tt.rc, tt.stdout, tt.stderr)
			}
			if tt.fileMustNotExist {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Errorf("file created after a failed prompt: %v", err)
				}
				return
			}
			checkUsers(t, path, map[string]string{"alice": tt.password})
		})
	}
	t.Run("update existing with prompt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "passwd")
		if rc, _, errOut := runPasswd(t, "", "-c", "-b", path, "alice", "one"); rc != 0 {
			t.Fatal(errOut)
		}
		if rc, _, errOut := runPasswd(t, "two\ntwo\n", path, "alice"); rc != 0 {
			t.Fatal(errOut)
		}
		checkUsers(t, path, map[string]string{"alice": "two"})
		before := readFile(t, path)
		if rc, _, _ := runPasswd(t, "three\nfour\n", path, "alice"); rc != 2 {
			t.Errorf("mismatch rc = %d, want 2", rc)
		}
		if readFile(t, path) != before {
			t.Error("file changed after a mismatch")
		}
		noBackups(t, path)
	})
}

func TestPasswdConvertPlainText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	plain := "# converted\nalice:secret\n  bob :  two words  \nhashed:" + knownAnswers[1].hash + "\n"
	if err := os.WriteFile(path, []byte(plain), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, out, errOut := runPasswd(t, "", "-U", path)
	if rc != 0 || out != "" || errOut != "" {
		t.Fatalf("rc %d stdout %q stderr %q", rc, out, errOut)
	}
	content := readFile(t, path)
	lines := strings.Split(strings.TrimSuffix(content, "\n"), "\n")
	if len(lines) != 4 || lines[0] != "# converted" || !pbkdf2Line.MatchString(lines[1]) || !pbkdf2Line.MatchString(lines[2]) ||
		lines[3] != "hashed:"+knownAnswers[1].hash {
		t.Errorf("after -U:\n%s", content)
	}
	// Blanks around the plain password are not part of it, as in
	// mosquitto_passwd; an already hashed line is kept.
	checkUsers(t, path, map[string]string{"alice": "secret", "bob": "two words", "hashed": "x"})
	noBackups(t, path)
}

func TestPasswdErrors(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("alice:"+knownAnswers[0].hash+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt")
	if err := os.WriteFile(corrupt, []byte("alice:"+knownAnswers[0].hash+"\nbob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name   string
		args   []string
		stdout string // prefix
		stderr string
	}{
		{"no arguments", nil, "mqttd passwd manages password files", ""},
		{"wrong count", []string{existing}, "mqttd passwd manages password files", ""},
		{"batch wrong count", []string{"-b", existing, "u"}, "mqttd passwd manages password files", ""},
		{"-c and -D", []string{"-c", "-D", existing, "u"}, "", "Error: -c and -D cannot be used together.\n"},
		{"-c and -U", []string{"-c", "-U", existing}, "", "Error: -c and -U cannot be used together.\n"},
		{"-D and -U", []string{"-D", "-U", existing}, "", "Error: -D and -U cannot be used together.\n"},
		{"-b and -D", []string{"-b", "-D", existing, "u"}, "", "Error: -b and -D cannot be used together.\n"},
		{"-c missing user", []string{"-c", existing}, "", "Error: -c argument given but password file or username missing.\n"},
		{"-c -b missing password", []string{"-c", "-b", existing, "u"}, "", "Error: -c argument given but password file, username, or password missing.\n"},
		{"-D missing user", []string{"-D", existing}, "", "Error: -D argument given but password file or username missing.\n"},
		{"-U extra argument", []string{"-U", existing, "u"}, "", "Error: -U argument given but password file missing.\n"},
		{"-H missing", []string{"-H"}, "", "Error: -H argument given but not enough other arguments.\n"},
		{"-H unknown", []string{"-H", "md5", "-b", existing, "u", "p"}, "", "Error: Unknown hash type 'md5'\n"},
		{"-I zero", []string{"-I", "0", "-b", existing, "u", "p"}, "", "Error: Number of iterations must be > 0.\n"},
		{"-I missing", []string{"-I"}, "", "Error: -I argument given but not enough other arguments.\n"},
		{"colon in user name", []string{"-b", existing, "a:b", "p"}, "", "Error: Username must not contain the ':' character.\n"},
		{"control character", []string{"-b", existing, "a\tb", "p"}, "", "Error: Username must not contain control characters.\n"},
		{"empty user name", []string{"-b", existing, "", "p"}, "", "Error: Username must not be empty.\n"},
		{"long user name", []string{"-b", existing, strings.Repeat("u", 65536), "p"}, "", "Error: Username must be less than 65536 characters long.\n"},
		{"long password", []string{"-b", existing, "u", strings.Repeat("p", 65536)}, "", "Error: Password must be less than 65536 characters long.\n"},
		{"missing file", []string{"-b", missing, "u", "p"}, "", "Error: Unable to open password file " + missing + ". no such file or directory.\n"},
		{"missing file -D", []string{"-D", missing, "u"}, "", "Error: Unable to open password file " + missing + ". no such file or directory.\n"},
		{"corrupt file", []string{"-b", corrupt, "u", "p"}, "", "Error: Corrupt password file at line 2.\n"},
		{"corrupt file -U", []string{"-U", corrupt}, "", "Error: Corrupt password file at line 2.\n"},
		{"create in missing directory", []string{"-c", "-b", filepath.Join(missing, "x"), "u", "p"}, "", "Error: Unable to open file " + filepath.Join(missing, "x") + " for writing. no such file or directory.\n"},
	}
	before := readFile(t, existing) + readFile(t, corrupt)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, out, errOut := runPasswd(t, "", tt.args...)
			if rc != 1 {
				t.Errorf("rc = %d, want 1", rc)
			}
			if !strings.HasPrefix(out, tt.stdout) || (tt.stdout == "" && out != "") || errOut != tt.stderr {
				t.Errorf("stdout %q, stderr %q; want stdout prefix %q, stderr %q", out, errOut, tt.stdout, tt.stderr)
			}
		})
	}
	if readFile(t, existing)+readFile(t, corrupt) != before {
		t.Error("a failed command changed a file")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a failed command created %s", missing)
	}
	noBackups(t, existing)
	noBackups(t, corrupt)
}

func TestPasswdReadOnlyDirectoryKeepsFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if rc, _, errOut := runPasswd(t, "", "-c", "-b", path, "alice", "secret"); rc != 0 {
		t.Fatal(errOut)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Error(err)
		}
	})
	rc, _, errOut := runPasswd(t, "", "-b", path, "bob", "x")
	if rc != 1 || !strings.Contains(errOut, "backup") || !strings.Contains(errOut, syscall.EACCES.Error()) {
		t.Errorf("rc %d, stderr %q", rc, errOut)
	}
	checkUsers(t, path, map[string]string{"alice": "secret"})
}

// TestPasswdInteropWithMosquittoPasswd edits one file with both tools: each
// must parse what the other wrote.
func TestPasswdInteropWithMosquittoPasswd(t *testing.T) {
	bin := mosquittoPasswd(t)
	path := filepath.Join(t.TempDir(), "passwd")
	if rc, _, errOut := runPasswd(t, "", "-c", "-b", path, "ours", "our pw"); rc != 0 {
		t.Fatal(errOut)
	}
	if rc, _, errOut := runPasswd(t, "", "-H", "sha512", "-b", path, "ours6", "six"); rc != 0 {
		t.Fatal(errOut)
	}
	if rc, _, errOut := runPasswd(t, "", "-b", path, "gone", "soon"); rc != 0 {
		t.Fatal(errOut)
	}
	// mosquitto_passwd refuses a file it cannot parse ("Corrupt password
	// file"), so these succeed only if it reads our lines.
	runMosquittoPasswd(t, bin, "-b", path, "theirs", "their pw")
	runMosquittoPasswd(t, bin, "-D", path, "gone")
	if rc, _, errOut := runPasswd(t, "", "-b", path, "ours2", "x"); rc != 0 {
		t.Fatal(errOut)
	}
	checkUsers(t, path, map[string]string{"ours": "our pw", "ours6": "six", "theirs": "their pw", "ours2": "x"})
}

func TestPasswdFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	if rc, _, errOut := runPasswd(t, "", "-c", "-b", real, "alice", "secret"); rc != 0 {
		t.Fatal(errOut)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Skipf("no symbolic links: %v", err)
	}
	if rc, _, errOut := runPasswd(t, "", "-b", link, "bob", "pw"); rc != 0 {
		t.Fatal(errOut)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link replaced: %v %v", st.Mode(), err)
	}
	checkUsers(t, real, map[string]string{"alice": "secret", "bob": "pw"})
	noBackups(t, real)
}
