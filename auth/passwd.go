package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxPasswordLen is the longest password mosquitto_passwd accepts.
const maxPasswordLen = 65535

const passwdUsage = `mqttd passwd manages password files for mqttd and mosquitto.

Usage: mqttd passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username
       mqttd passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c] -b passwordfile username password
       mqttd passwd -U passwordfile
 -b : run in batch mode to allow passing passwords on the command line.
 -c : create a new password file. This will overwrite existing files.
 -D : delete the username rather than adding/updating its password.
 -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.
      Mosquitto 1.6 and earlier defaulted to sha512.
 -I : the number of PBKDF2 iterations (default 101).
 -U : update a plain text password file to use hashed passwords.

`

// passwdCmd is one run of Passwd.
type passwdCmd struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	kind       hashKind
	iterations int
}

// errorf prints a message to stderr and returns the exit status 1.
func (p *passwdCmd) errorf(format string, args ...any) int {
	fmt.Fprintf(p.stderr, format+"\n", args...)
	return 1
}

// Passwd implements `mqttd passwd`, with the behaviour and options of
// Mosquitto 2.0's mosquitto_passwd. args are the arguments after "passwd":
//
//	[-H sha512|sha512-pbkdf2] [-I iterations] [-c | -D] FILE USER
//	[-H ...] [-I ...] [-c] -b FILE USER PASSWORD
//	-U FILE
//
// -c creates (or overwrites) FILE with one user; -b takes the password from
// the command line; -D deletes USER; -U replaces the plain-text passwords of
// FILE with hashes. Without -b, Passwd prompts for the password twice on
// stdout and reads it from stdin, with echo turned off when stdin is a
// terminal. New hashes are "$7$" PBKDF2-SHA512 (101 iterations unless -I)
// or, with -H sha512, Mosquitto 1.x "$6$". It returns the exit status: 0 on
// success, 2 when the two passwords typed differ, 1 on any other error.
//
// Where mosquitto_passwd would corrupt a file, Passwd is more careful: it
// keeps comment and blank lines instead of refusing the file, leaves lines
// already hashed alone with -U instead of hashing their hashes, ends the
// file with a newline, and refuses an empty user name.
func Passwd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	p := &passwdCmd{stdin: stdin, stdout: stdout, stderr: stderr, kind: kindPBKDF2, iterations: defaultIterations}
	if len(args) == 0 {
		fmt.Fprint(stdout, passwdUsage)
		return 1
	}
	var batch, create, del, update bool
	idx := 0
options:
	for ; idx < len(args); idx++ {
		switch args[idx] {
		case "-H":
			if idx+1 == len(args) {
				return p.errorf("Error: -H argument given but not enough other arguments.")
			}
			idx++
			switch args[idx] {
			case "sha512":
				p.kind = kindSHA512
			case "sha512-pbkdf2":
				p.kind = kindPBKDF2
			default:
				return p.errorf("Error: Unknown hash type '%s'", args[idx])
			}
		case "-I":
			if idx+1 == len(args) {
				return p.errorf("Error: -I argument given but not enough other arguments.")
			}
			idx++
			n, err := strconv.Atoi(args[idx])
			if err != nil || n < 1 {
				return p.errorf("Error: Number of iterations must be > 0.")
			}
			p.iterations = n
		case "-b":
			batch = true
		case "-c":
			create = true
		case "-D":
			del = true
		case "-U":
			update = true
		default:
			break options
		}
	}
	switch {
	case create && del:
		return p.errorf("Error: -c and -D cannot be used together.")
	case create && update:
		return p.errorf("Error: -c and -U cannot be used together.")
	case del && update:
		return p.errorf("Error: -D and -U cannot be used together.")
	case del && batch:
		return p.errorf("Error: -b and -D cannot be used together.")
	}

	rest := args[idx:]
	var file, user, password string
	havePassword := false
	switch {
	case create && batch:
		if len(rest) < 3 {
			return p.errorf("Error: -c argument given but password file, username, or password missing.")
		}
		file, user, password, havePassword = rest[0], rest[1], rest[2], true
	case create:
		if len(rest) < 2 {
			return p.errorf("Error: -c argument given but password file or username missing.")
		}
		file, user = rest[0], rest[1]
	case del:
		if len(rest) < 2 {
			return p.errorf("Error: -D argument given but password file or username missing.")
		}
		file, user = rest[0], rest[1]
	case update:
		if len(rest) != 1 {
			return p.errorf("Error: -U argument given but password file missing.")
		}
		file = rest[0]
	case batch && len(rest) == 3:
		file, user, password, havePassword = rest[0], rest[1], rest[2], true
	case !batch && len(rest) == 2:
		file, user = rest[0], rest[1]
	default:
		fmt.Fprint(stdout, passwdUsage)
		return 1
	}
	if !update {
		if rc := p.checkUsername(user); rc != 0 {
			return rc
		}
	}
	if havePassword && len(password) > maxPasswordLen {
		return p.errorf("Error: Password must be less than %d characters long.", maxPasswordLen+1)
	}

	if create {
		if !havePassword {
			pw, rc := p.readPassword()
			if rc != 0 {
				return rc
			}
			password = pw
		}
		line, err := p.hashLine(user, password)
		if err != nil {
			return p.errorf("Error: Unable to hash password. %v.", err)
		}
		// 0600, as mosquitto_passwd 2.0 does: the hashes are for mqttd only.
		if err := os.WriteFile(file, []byte(line), 0o600); err != nil {
			return p.errorf("Error: Unable to open file %s for writing. %v.", file, unwrapPath(err))
		}
		return 0
	}

	// Edit the file a symbolic link points to, and keep the backup next
	// to it, as mosquitto_passwd does with realpath.
	if real, err := filepath.EvalSymlinks(file); err == nil {
		file = real
	}
	old, err := os.ReadFile(file)
	if err != nil {
		return p.errorf("Error: Unable to open password file %s. %v.", file, unwrapPath(err))
	}
	var out []byte
	var rc int
	switch {
	case del:
		out, rc = p.deleteUser(old, user)
	case update:
		out, rc = p.hashAll(old)
	default:
		if !havePassword {
			pw, rc := p.readPassword()
			if rc != 0 {
				return rc
			}
			password = pw
		}
		out, rc = p.setUser(old, user, password)
	}
	if rc != 0 {
		return rc
	}
	return p.rewrite(file, old, out)
}

// checkUsername applies mosquitto_passwd's rules for user names, and refuses
// an empty one.
func (p *passwdCmd) checkUsername(user string) int {
	if user == "" {
		return p.errorf("Error: Username must not be empty.")
	}
	if len(user) > maxUsernameLen {
		return p.errorf("Error: Username must be less than %d characters long.", maxUsernameLen+1)
	}
	for i := 0; i < len(user); i++ {
		if user[i] < 0x20 || user[i] == 0x7f {
			return p.errorf("Error: Username must not contain control characters.")
		}
	}
	if strings.Contains(user, ":") {
		return p.errorf("Error: Username must not contain the ':' character.")
	}
	return 0
}

// hashLine returns "user:hash\n" for a new password.
func (p *passwdCmd) hashLine(user, password string) (string, error) {
	c, err := newCredential(p.kind, password, p.iterations)
	if err != nil {
		return "", err
	}
	return user + ":" + c.String() + "\n", nil
}

// pwLine is one line of a password file being edited.
type pwLine struct {
	raw      string // the line as read, without its "\n"
	user, pw string // trimmed fields; user is "" for comment and blank lines
}

// readEntries splits a password file into lines, checking each entry as
// mosquitto_passwd does.
func (p *passwdCmd) readEntries(data []byte) ([]pwLine, int) {
	var lines []pwLine
	if len(data) == 0 {
		return nil, 0
	}
	for i, raw := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		l := pwLine{raw: raw}
		if t := trimBlanks(raw); t != "" && t[0] != '#' {
			u, pw, ok := strings.Cut(raw, ":")
			l.user, l.pw = trimBlanks(u), trimBlanks(pw)
			if !ok || l.user == "" || l.pw == "" {
				return nil, p.errorf("Error: Corrupt password file at line %d.", i+1)
			}
		}
		lines = append(lines, l)
	}
	return lines, 0
}

// deleteUser returns the file without user's lines.
func (p *passwdCmd) deleteUser(data []byte, user string) ([]byte, int) {
	lines, rc := p.readEntries(data)
	if rc != 0 {
		return nil, rc
	}
	var b strings.Builder
	found := false
	for _, l := range lines {
		if l.user == user {
			found = true
			continue
		}
		b.WriteString(l.raw + "\n")
	}
	if !found {
		return nil, p.errorf("Warning: User %s not found in password file.", user)
	}
	return []byte(b.String()), 0
}

// setUser returns the file with user's password replaced, or added at the
// end.
func (p *passwdCmd) setUser(data []byte, user, password string) ([]byte, int) {
	lines, rc := p.readEntries(data)
	if rc != 0 {
		return nil, rc
	}
	var b strings.Builder
	found := false
	for _, l := range lines {
		if l.user != user {
			b.WriteString(l.raw + "\n")
			continue
		}
		found = true
		line, err := p.hashLine(user, password)
		if err != nil {
			return nil, p.errorf("Error: Unable to hash password. %v.", err)
		}
		b.WriteString(line)
	}
	if !found {
		line, err := p.hashLine(user, password)
		if err != nil {
			return nil, p.errorf("Error: Unable to hash password. %v.", err)
		}
		b.WriteString(line)
	}
	return []byte(b.String()), 0
}

// hashAll returns the file with every plain-text password hashed. Entries
// that already hold a valid hash are kept as they are.
func (p *passwdCmd) hashAll(data []byte) ([]byte, int) {
	lines, rc := p.readEntries(data)
	if rc != 0 {
		return nil, rc
	}
	var b strings.Builder
	for _, l := range lines {
		if l.user == "" {
			b.WriteString(l.raw + "\n")
			continue
		}
		if _, err := parseHash(l.pw); err == nil {
			b.WriteString(l.raw + "\n")
			continue
		}
		line, err := p.hashLine(l.user, l.pw)
		if err != nil {
			return nil, p.errorf("Error: Unable to hash password. %v.", err)
		}
		b.WriteString(line)
	}
	return []byte(b.String()), 0
}

// rewrite replaces the contents of file with out, in place so that its
// owner and mode stay, after saving the old contents in a backup file next
// to it (removed once the new contents are written), as mosquitto_passwd
// does.
func (p *passwdCmd) rewrite(file string, old, out []byte) int {
	backup, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".backup.*")
	if err != nil {
		return p.errorf("Error creating backup password file for %q, not continuing: %v.", file, err)
	}
	backupName := backup.Name()
	_, werr := backup.Write(old)
	if cerr := backup.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		rmErr := os.Remove(backupName)
		return p.errorf("Error copying data to backup password file %q, not continuing: %v.", backupName, errors.Join(werr, rmErr))
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		_, err = f.Write(out)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		p.errorf("Error occurred updating password file: %v.", err)
		return p.errorf("Password file may be corrupt, check the backup file: %s.", backupName)
	}
	if err := os.Remove(backupName); err != nil {
		return p.errorf("Error: removing backup password file: %v.", err)
	}
	return 0
}

// readPassword prompts for the password twice, as mosquitto_passwd does.
// It returns 1 for an empty or missing password and 2 when the two differ.
func (p *passwdCmd) readPassword() (string, int) {
	in := p.stdin
	if f, ok := in.(*os.File); ok {
		if restore, err := noEcho(f); err == nil {
			defer func() {
				if err := restore(); err != nil {
					p.errorf("Warning: could not restore terminal echo: %v.", err)
				}
			}()
		}
	}
	r := bufio.NewReader(in)
	fmt.Fprint(p.stdout, "Password: ")
	pw1, ok := readLine(r)
	if !ok {
		return "", p.errorf("Error: Empty password.")
	}
	fmt.Fprintln(p.stdout)
	fmt.Fprint(p.stdout, "Reenter password: ")
	pw2, ok := readLine(r)
	if !ok {
		return "", p.errorf("Error: Empty password.")
	}
	fmt.Fprintln(p.stdout)
	if pw1 != pw2 {
		p.errorf("Error: Passwords do not match.")
		return "", 2
	}
	if len(pw1) > maxPasswordLen {
		return "", p.errorf("Error: Password must be less than %d characters long.", maxPasswordLen+1)
	}
	return pw1, 0
}

// readLine reads one line without its "\n" (or "\r\n"); ok is false at end
// of input or for an empty line.
func readLine(r *bufio.Reader) (string, bool) {
	line, err := r.ReadString('\n')
	if err != nil && line == "" {
		return "", false
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	return line, line != ""
}

// unwrapPath drops the operation and path of an *os.PathError, which the
// messages already name.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
