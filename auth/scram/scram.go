// Package scram implements SCRAM-SHA-256 (RFC 5802, RFC 7677) for MQTT 5
// enhanced authentication: the server side that checks a client's proof
// against stored keys (never the password), and a client for tests and
// tools. Channel binding is not supported (gs2 flags "n" and "y" only); user
// names and passwords are used as given (no SASLprep).
package scram

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Method is the MQTT Authentication Method name of this mechanism.
const Method = "SCRAM-SHA-256"

// MinIterations is the smallest iteration count NewCredentials accepts
// (RFC 7677 section 4).
const MinIterations = 4096

var (
	// ErrMalformed is a message that is not SCRAM syntax.
	ErrMalformed = errors.New("scram: malformed message")
	// ErrAuthFailed is an unknown user or a wrong proof; they are not told
	// apart, so user names cannot be probed.
	ErrAuthFailed = errors.New("scram: authentication failed")
	// ErrChannelBinding is a client that requires channel binding.
	ErrChannelBinding = errors.New("scram: channel binding not supported")
	// ErrServerSignature is a server whose final message does not prove it
	// knows the user's keys (client side).
	ErrServerSignature = errors.New("scram: server signature mismatch")
)

// Credentials are what a server stores for one user.
type Credentials struct {
	Salt       []byte
	Iterations int
	StoredKey  []byte // H(ClientKey)
	ServerKey  []byte // HMAC(SaltedPassword, "Server Key")
}

// NewCredentials derives a user's stored keys from a password; a nil salt
// is replaced by 16 random bytes.
func NewCredentials(password string, salt []byte, iterations int) (Credentials, error) {
	if iterations < MinIterations {
		return Credentials{}, fmt.Errorf("scram: %d iterations, want at least %d", iterations, MinIterations)
	}
	if salt == nil {
		salt = make([]byte, 16)
		rand.Read(salt)
	}
	salted, err := saltPassword(password, salt, iterations)
	if err != nil {
		return Credentials{}, err
	}
	ck := hmacSum(salted, "Client Key")
	sk := sha256.Sum256(ck)
	return Credentials{Salt: salt, Iterations: iterations, StoredKey: sk[:], ServerKey: hmacSum(salted, "Server Key")}, nil
}

func saltPassword(password string, salt []byte, iterations int) ([]byte, error) {
	k, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("scram: %w", err)
	}
	return k, nil
}

func hmacSum(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// Lookup finds a user's credentials.
type Lookup func(user string) (Credentials, bool)

// FromMap is a Lookup over a fixed map of users.
func FromMap(m map[string]Credentials) Lookup {
	return func(user string) (Credentials, bool) {
		c, ok := m[user]
		return c, ok
	}
}

// Server checks SCRAM-SHA-256 exchanges against a Lookup.
type Server struct {
	lookup Lookup
}

// NewServer returns a Server that finds users with lookup.
func NewServer(lookup Lookup) *Server { return &Server{lookup: lookup} }

// Conversation is one exchange in progress on the server.
type Conversation struct {
	user        string
	creds       Credentials
	known       bool
	gs2         string // gs2 header as the client sent it
	nonce       string // client nonce + server nonce
	firstBare   string // client-first-message-bare
	serverFirst string
	done        bool
}

// User is the user name the client authenticates as.
func (c *Conversation) User() string { return c.user }

// Start takes the client-first-message and returns the conversation and
// the server-first-message. An unknown user gets a made-up salt and fails
// only at Finish.
func (s *Server) Start(clientFirst []byte) (*Conversation, []byte, error) {
	msg := string(clientFirst)
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return nil, nil, ErrMalformed
	}
	switch {
	case flag == "n", flag == "y":
	case strings.HasPrefix(flag, "p="):
		return nil, nil, ErrChannelBinding
	default:
		return nil, nil, ErrMalformed
	}
	authz, bare, ok := strings.Cut(rest, ",")
	if !ok || (authz != "" && !strings.HasPrefix(authz, "a=")) {
		return nil, nil, ErrMalformed
	}
	attrs, err := parseAttrs(bare)
	if err != nil {
		return nil, nil, err
	}
	if len(attrs) < 2 || attrs[0].k != 'n' || attrs[1].k != 'r' || attrs[1].v == "" {
		return nil, nil, ErrMalformed
	}
	for _, a := range attrs[2:] {
		if a.k == 'm' {
			return nil, nil, ErrMalformed // a mandatory extension we do not know
		}
	}
	user, err := decodeName(attrs[0].v)
	if err != nil {
		return nil, nil, err
	}
	c := &Conversation{user: user, gs2: flag + "," + authz + ",", firstBare: bare}
	c.creds, c.known = s.lookup(user)
	if !c.known {
		salt := make([]byte, 16)
		rand.Read(salt)
		c.creds = Credentials{Salt: salt, Iterations: MinIterations}
	}
	c.nonce = attrs[1].v + randomNonce()
	c.serverFirst = "r=" + c.nonce + ",s=" + base64.StdEncoding.EncodeToString(c.creds.Salt) +
		",i=" + strconv.Itoa(c.creds.Iterations)
	return c, []byte(c.serverFirst), nil
}

// Finish takes the client-final-message, checks the proof and returns the
// server-final-message.
func (c *Conversation) Finish(clientFinal []byte) ([]byte, error) {
	if c.done {
		return nil, ErrMalformed
	}
	c.done = true
	msg := string(clientFinal)
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, ErrMalformed
	}
	withoutProof, proofB64 := msg[:i], msg[i+3:]
	attrs, err := parseAttrs(withoutProof)
	if err != nil {
		return nil, err
	}
	if len(attrs) < 2 || attrs[0].k != 'c' || attrs[1].k != 'r' {
		return nil, ErrMalformed
	}
	if attrs[0].v != base64.StdEncoding.EncodeToString([]byte(c.gs2)) || attrs[1].v != c.nonce {
		return nil, ErrAuthFailed
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != sha256.Size {
		return nil, ErrMalformed
	}
	authMsg := c.firstBare + "," + c.serverFirst + "," + withoutProof
	sig := hmacSum(c.creds.StoredKey, authMsg)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	stored := sha256.Sum256(clientKey)
	if !c.known || !hmac.Equal(stored[:], c.creds.StoredKey) {
		return nil, ErrAuthFailed
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(hmacSum(c.creds.ServerKey, authMsg))), nil
}

// Client is the client side of one exchange.
type Client struct {
	user, password string
	nonce          string
	firstBare      string
	authMsg        string
	serverKey      []byte
}

// NewClient starts a client exchange for user and password.
func NewClient(user, password string) *Client {
	return &Client{user: user, password: password, nonce: randomNonce()}
}

// First is the client-first-message.
func (c *Client) First() []byte {
	c.firstBare = "n=" + encodeName(c.user) + ",r=" + c.nonce
	return []byte("n,," + c.firstBare)
}

// Final takes the server-first-message and returns the client-final-message.
func (c *Client) Final(serverFirst []byte) ([]byte, error) {
	attrs, err := parseAttrs(string(serverFirst))
	if err != nil {
		return nil, err
	}
	if len(attrs) < 3 || attrs[0].k != 'r' || attrs[1].k != 's' || attrs[2].k != 'i' ||
		!strings.HasPrefix(attrs[0].v, c.nonce) || len(attrs[0].v) == len(c.nonce) {
		return nil, ErrMalformed
	}
	salt, err := base64.StdEncoding.DecodeString(attrs[1].v)
	if err != nil {
		return nil, ErrMalformed
	}
	iter, err := strconv.Atoi(attrs[2].v)
	if err != nil || iter < 1 {
		return nil, ErrMalformed
	}
	salted, err := saltPassword(c.password, salt, iter)
	if err != nil {
		return nil, err
	}
	clientKey := hmacSum(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	c.serverKey = hmacSum(salted, "Server Key")
	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte("n,,")) + ",r=" + attrs[0].v
	c.authMsg = c.firstBare + "," + string(serverFirst) + "," + withoutProof
	sig := hmacSum(stored[:], c.authMsg)
	for i := range clientKey {
		clientKey[i] ^= sig[i]
	}
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(clientKey)), nil
}

// Verify checks the server-final-message.
func (c *Client) Verify(serverFinal []byte) error {
	v, ok := strings.CutPrefix(string(serverFinal), "v=")
	if !ok || c.serverKey == nil {
		return ErrMalformed
	}
	got, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return ErrMalformed
	}
	if !hmac.Equal(got, hmacSum(c.serverKey, c.authMsg)) {
		return ErrServerSignature
	}
	return nil
}

type attr struct {
	k byte
	v string
}

// parseAttrs splits "k=v,k=v" into attributes.
func parseAttrs(s string) ([]attr, error) {
	var out []attr
	for part := range strings.SplitSeq(s, ",") {
		if len(part) < 2 || part[1] != '=' || part[0] < 'A' || part[0] > 'z' {
			return nil, ErrMalformed
		}
		out = append(out, attr{part[0], part[2:]})
	}
	return out, nil
}

// decodeName undoes the "=2C" / "=3D" escapes of a saslname.
func decodeName(s string) (string, error) {
	if !strings.Contains(s, "=") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", ErrMalformed
		}
		i += 2
	}
	return b.String(), nil
}

func encodeName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// randomNonce is 18 random bytes in base64 (printable, no commas).
func randomNonce() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}
