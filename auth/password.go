package auth

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
)

// The parameters Mosquitto 2.0's mosquitto_passwd uses for "$7$" hashes.
const (
	defaultIterations = 101 // PW_DEFAULT_ITERATIONS
	saltLen           = 12  // bytes of random salt
	sha512Len         = 64  // bytes of SHA-512 / PBKDF2-SHA512 output
	maxUsernameLen    = 65535
)

// The largest costs a password file may ask for. A hash is checked before
// the client is known, so its cost is what anyone who can open a socket can
// make the broker spend: a hash above these caps is refused at load. They
// accept mosquitto_passwd's and `mqttd passwd`'s hashes ("$7$" with 101
// iterations, or any -I up to the cap), libargon2's defaults (m=4096, t=3,
// p=1) and RFC 9106's second recommendation (m=64 MiB, t=3, p=4).
const (
	maxPBKDF2Iterations = 1_000_000 // ~1/2 s of SHA-512 on one core; OWASP asks for 210,000
	maxArgon2Memory     = 64 << 10  // KiB (64 MiB) held by one check
	maxArgon2Time       = 10        // passes over the memory
	maxArgon2Threads    = 16        // lanes, each a goroutine
)

// maxCheckWait bounds how long a password check waits for a slot when its
// context has no deadline (the broker's connect timeout is 10 s by default).
const maxCheckWait = 5 * time.Second

// checkSlots bounds the password checks that run at once in the process,
// whatever PasswordFile they use, so that memory (at most maxArgon2Memory a
// check) and CPU stay bounded however many clients try to log in: 2 to 4
// slots, GOMAXPROCS within that range. A check that finds every slot taken
// waits for one (see acquireCheck).
var checkSlots = make(chan struct{}, min(max(runtime.GOMAXPROCS(0), 2), 4))

// checkHook, when set (by tests), runs inside every password check, while
// it holds its slot.
var checkHook func()

// acquireCheck takes a slot of checkSlots, waiting until ctx is done (at most
// maxCheckWait when ctx has no deadline). It returns an error wrapping
// ErrBusy when no slot came free in time.
func acquireCheck(ctx context.Context) error {
	select {
	case checkSlots <- struct{}{}:
		return nil
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxCheckWait)
		defer cancel()
	}
	select {
	case checkSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
	}
}

func releaseCheck() { <-checkSlots }

// hashKind is the scheme of one password hash.
type hashKind int

const (
	kindSHA512   hashKind = iota + 1 // "$6$salt$hash": SHA-512(password || salt)
	kindPBKDF2                       // "$7$iterations$salt$hash": PBKDF2-HMAC-SHA512
	kindArgon2id                     // "$argon2id$v=19$m=..,t=..,p=..$salt$hash" (PHC string)
)

// credential is one decoded password hash.
type credential struct {
	kind hashKind
	// iterations is the PBKDF2 iteration count, or the Argon2 time cost.
	iterations int
	memory     uint32 // Argon2 memory in KiB
	threads    uint8  // Argon2 parallelism
	salt       []byte
	hash       []byte
}

// verify reports whether password hashes to c.hash. The comparison takes the
// same time wherever the hashes differ.
func (c *credential) verify(password []byte) bool {
	got, err := c.derive(password)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got, c.hash) == 1
}

// derive hashes password with c's scheme, salt and parameters, producing as
// many bytes as c.hash holds.
func (c *credential) derive(password []byte) ([]byte, error) {
	switch c.kind {
	case kindSHA512:
		h := sha512.New()
		h.Write(password)
		h.Write(c.salt)
		return h.Sum(nil), nil
	case kindPBKDF2:
		return pbkdf2.Key(sha512.New, string(password), c.salt, c.iterations, len(c.hash))
	case kindArgon2id:
		return argon2.IDKey(password, c.salt, uint32(c.iterations), c.memory, c.threads, uint32(len(c.hash))), nil
	}
	return nil, fmt.Errorf("auth: unknown hash kind %d", c.kind)
}

// String encodes c the way mosquitto_passwd (or, for Argon2id, libargon2)
// writes it: standard base64 with padding for "$6$" and "$7$", unpadded
// base64 for the PHC string.
func (c *credential) String() string {
	b64 := base64.StdEncoding.EncodeToString
	switch c.kind {
	case kindSHA512:
		return "$6$" + b64(c.salt) + "$" + b64(c.hash)
	case kindPBKDF2:
		return "$7$" + strconv.Itoa(c.iterations) + "$" + b64(c.salt) + "$" + b64(c.hash)
	case kindArgon2id:
		raw := base64.RawStdEncoding.EncodeToString
		return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
			argon2.Version, c.memory, c.iterations, c.threads, raw(c.salt), raw(c.hash))
	}
	return ""
}

// newCredential hashes password with a fresh random salt.
func newCredential(kind hashKind, password string, iterations int) (*credential, error) {
	if kind == kindPBKDF2 {
		if err := checkIterations(iterations); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
	}
	c := &credential{kind: kind, iterations: iterations, salt: make([]byte, saltLen)}
	if _, err := rand.Read(c.salt); err != nil {
		return nil, fmt.Errorf("auth: reading random salt: %w", err)
	}
	c.hash = make([]byte, sha512Len)
	h, err := c.derive([]byte(password))
	if err != nil {
		return nil, fmt.Errorf("auth: hashing password: %w", err)
	}
	c.hash = h
	return c, nil
}

// HashPassword hashes password the way Mosquitto 2.0's mosquitto_passwd
// does: "$7$101$<salt>$<hash>", PBKDF2-HMAC-SHA512 with 101 iterations, a
// 12-byte random salt and a 64-byte hash, both in standard base64 with
// padding. The result is what follows "user:" in a password file.
func HashPassword(password string) (string, error) {
	c, err := newCredential(kindPBKDF2, password, defaultIterations)
	if err != nil {
		return "", err
	}
	return c.String(), nil
}

// decodeBase64 decodes standard base64 with or without '=' padding.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// parseHash decodes the password field of a password file line.
func parseHash(s string) (*credential, error) {
	switch {
	case strings.HasPrefix(s, "$6$"):
		parts := strings.Split(s[len("$6$"):], "$")
		if len(parts) != 2 {
			return nil, errors.New(`"$6$" hash is not "$6$<salt>$<hash>"`)
		}
		c := &credential{kind: kindSHA512}
		if err := decodeSaltHash(c, parts[0], parts[1]); err != nil {
			return nil, err
		}
		if len(c.hash) != sha512Len {
			return nil, fmt.Errorf(`"$6$" hash is %d bytes, not %d`, len(c.hash), sha512Len)
		}
		return c, nil

	case strings.HasPrefix(s, "$7$"):
		parts := strings.Split(s[len("$7$"):], "$")
		if len(parts) != 3 {
			return nil, errors.New(`"$7$" hash is not "$7$<iterations>$<salt>$<hash>"`)
		}
		n, err := strconv.ParseInt(parts[0], 10, 32)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("iteration count %q is not a positive integer", parts[0])
		}
		if err := checkIterations(n); err != nil {
			return nil, err
		}
		c := &credential{kind: kindPBKDF2, iterations: int(n)}
		if err := decodeSaltHash(c, parts[1], parts[2]); err != nil {
			return nil, err
		}
		return c, nil

	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)

	case strings.HasPrefix(s, "$"):
		scheme, _, _ := strings.Cut(s[1:], "$")
		return nil, fmt.Errorf("unsupported hash type %q (want $6$, $7$ or $argon2id$)", scheme)
	}
	return nil, errors.New("password is not hashed (convert plain-text files with `mqttd passwd -U`)")
}

// decodeSaltHash fills c.salt and c.hash from their base64 forms.
func decodeSaltHash(c *credential, salt, hash string) error {
	var err error
	if c.salt, err = decodeBase64(salt); err != nil || len(c.salt) == 0 {
		return fmt.Errorf("salt %q is not base64", salt)
	}
	if c.hash, err = decodeBase64(hash); err != nil || len(c.hash) == 0 {
		return fmt.Errorf("hash %q is not base64", hash)
	}
	return nil
}

// checkIterations refuses a PBKDF2 iteration count above maxPBKDF2Iterations.
func checkIterations[T int | int64](n T) error {
	if n > maxPBKDF2Iterations {
		return fmt.Errorf("PBKDF2 iteration count %d is above mqttd's limit of %d", n, maxPBKDF2Iterations)
	}
	return nil
}

// parseArgon2id decodes "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>".
func parseArgon2id(s string) (*credential, error) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 {
		return nil, errors.New(`"$argon2id$" hash is not "$argon2id$v=19$m=<m>,t=<t>,p=<p>$<salt>$<hash>"`)
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("unsupported argon2id version %q (want v=%d)", parts[2], argon2.Version)
	}
	var m, t, p uint64
	seen := map[string]bool{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || seen[k] {
			return nil, fmt.Errorf("bad argon2id parameter %q", kv)
		}
		seen[k] = true
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			p = n
		default:
			return nil, fmt.Errorf("unknown argon2id parameter %q", kv)
		}
	}
	switch {
	case !seen["m"] || !seen["t"] || !seen["p"]:
		return nil, fmt.Errorf("argon2id parameters %q lack one of m, t, p", parts[3])
	case t < 1:
		return nil, errors.New("argon2id time cost t must be at least 1")
	case p < 1 || p > 255:
		return nil, fmt.Errorf("argon2id parallelism p=%d is not in 1..255", p)
	case m < 8*p:
		return nil, fmt.Errorf("argon2id memory m=%d is less than 8*p", m)
	case m > maxArgon2Memory:
		return nil, fmt.Errorf("argon2id memory m=%d KiB is above mqttd's limit of %d KiB (%d MiB): every login would hold that much memory",
			m, maxArgon2Memory, maxArgon2Memory>>10)
	case t > maxArgon2Time:
		return nil, fmt.Errorf("argon2id time cost t=%d is above mqttd's limit of %d", t, maxArgon2Time)
	case p > maxArgon2Threads:
		return nil, fmt.Errorf("argon2id parallelism p=%d is above mqttd's limit of %d", p, maxArgon2Threads)
	}
	c := &credential{kind: kindArgon2id, iterations: int(t), memory: uint32(m), threads: uint8(p)}
	if err := decodeSaltHash(c, parts[4], parts[5]); err != nil {
		return nil, err
	}
	if len(c.hash) < 4 {
		return nil, errors.New("argon2id hash is shorter than 4 bytes")
	}
	return c, nil
}

// PasswordFile is a loaded Mosquitto password file. It implements
// Authenticator and is safe for concurrent use; reload by loading again.
type PasswordFile struct {
	users map[string]*credential
	// dummy is checked for unknown users so that a wrong user name costs
	// as much time as a wrong password.
	dummy *credential
}

// LoadPasswordFile reads a password file: one "user:hash" a line, where hash
// is "$7$..." (PBKDF2-SHA512, any iteration count and salt length), "$6$..."
// (salted SHA-512, Mosquitto 1.x) or "$argon2id$...". Blanks around the user
// name and the hash are ignored, as are blank lines and lines starting with
// '#'. Unlike Mosquitto, which logs and skips bad lines, any line that cannot
// be used (no ':', empty user name, unhashed or malformed password, a user
// listed twice, a hash costlier than mqttd's caps: PBKDF2 above 1,000,000
// iterations, Argon2id above m=65536 KiB, t=10 or p=16) is an error: a
// *ParseError naming the file, line and user.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: password file: %w", err)
	}
	return parsePasswordFile(path, data)
}

// parsePasswordFile parses the contents of a password file; name is used in
// errors.
func parsePasswordFile(name string, data []byte) (*PasswordFile, error) {
	f := &PasswordFile{
		users: make(map[string]*credential),
		dummy: &credential{
			kind:       kindPBKDF2,
			iterations: defaultIterations,
			salt:       make([]byte, saltLen),
			hash:       make([]byte, sha512Len),
		},
	}
	firstLine := make(map[string]int)
	for i, line := range splitLines(data) {
		lineNo := i + 1
		fail := func(format string, args ...any) error {
			return &ParseError{File: name, Line: lineNo, Err: fmt.Errorf(format, args...)}
		}
		if t := trimBlanks(line); t == "" || t[0] == '#' {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fail(`no ':' between user name and password hash`)
		}
		user, hash = trimBlanks(user), trimBlanks(hash)
		switch {
		case user == "":
			return nil, fail("empty user name")
		case len(user) > maxUsernameLen:
			return nil, fail("user name longer than %d bytes", maxUsernameLen)
		case hash == "":
			return nil, fail("user %q has no password hash", user)
		}
		if first, dup := firstLine[user]; dup {
			return nil, fail("user %q is listed again (first on line %d)", user, first)
		}
		c, err := parseHash(hash)
		if err != nil {
			return nil, fail("user %q: %w", user, err)
		}
		firstLine[user] = lineNo
		f.users[user] = c
	}
	return f, nil
}

// Len returns the number of users in the file.
func (f *PasswordFile) Len() int { return len(f.users) }

// Check reports whether user is in the file and password is theirs. Like
// Authenticate it waits for a check slot, and reports false when none came
// free in time.
func (f *PasswordFile) Check(user, password string) bool {
	ok, err := f.check(context.Background(), user, []byte(password))
	return ok && err == nil
}

// check verifies password within one of checkSlots; the error (wrapping
// ErrBusy) says no slot came free before ctx was done.
func (f *PasswordFile) check(ctx context.Context, user string, password []byte) (bool, error) {
	if err := acquireCheck(ctx); err != nil {
		return false, err
	}
	defer releaseCheck()
	if checkHook != nil {
		checkHook()
	}
	c, ok := f.users[user]
	if !ok {
		f.dummy.verify(password)
		return false, nil
	}
	return c.verify(password), nil
}

// Authenticate implements Authenticator as Mosquitto's password_file does: a
// client whose user name is in the file and whose password matches its hash
// may connect; a wrong password, an unknown user or a missing password is
// ErrBadCredentials. A client without a user name is not the file's to
// vouch for: it gets ErrNotAuthorized, and the broker lets it in only when
// allow_anonymous is true, without calling Authenticate.
//
// At most a few checks run at once in the process (checkSlots); the others
// wait for a slot until ctx is done (at most 5 s without a deadline) and
// then get an error wrapping ErrBusy: the password was not checked.
func (f *PasswordFile) Authenticate(ctx context.Context, c *Client) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auth: password check: %w", err)
	}
	if !c.HasUsername {
		return ErrNotAuthorized
	}
	if !c.HasPassword {
		return ErrBadCredentials
	}
	ok, err := f.check(ctx, c.Username, c.Password)
	switch {
	case err != nil:
		return fmt.Errorf("auth: password check: %w", err)
	case !ok:
		return ErrBadCredentials
	}
	return nil
}

// splitLines splits data into lines, dropping the "\n" or "\r\n" ends. A
// final line without an end is kept; a final empty line is not.
func splitLines(data []byte) []string {
	if len(data) == 0 {
		return nil
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// trimBlanks removes leading and trailing ASCII white space, as Mosquitto's
// trimblanks (isspace) does.
func trimBlanks(s string) string {
	return strings.Trim(s, " \t\n\v\f\r")
}
