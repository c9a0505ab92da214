// Package auth decides who may connect and what a connected client may do.
//
// It defines the two questions the broker asks, Authenticator (may this
// client connect?) and Authorizer (may this client read or write this
// topic?), so that other backends (HTTP, JWT, ...) can plug in later, and it
// implements them the way Eclipse Mosquitto's built-in security does:
//
//   - PasswordFile reads password files as mosquitto_passwd writes them
//     ("user:$7$..." PBKDF2-SHA512, "user:$6$..." salted SHA-512 from
//     Mosquitto 1.x, and "user:$argon2id$..."); HashPassword and Passwd
//     (the `mqttd passwd` command) write files that Mosquitto 2.0 accepts.
//   - ACL reads Mosquitto ACL files (acl_file) with Mosquitto 2.0's
//     semantics: anonymous entries, `user` sections, `topic` and `pattern`
//     lines with read, write, readwrite or deny access, %c and %u
//     substitution, deny before grant, user entries before patterns, and
//     '$' topics matched only by entries that start with '$'.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Errors an Authenticator returns to refuse a connection. The broker answers
// ErrBadCredentials with "bad user name or password" (v5 0x86, v3 return code
// 4) and ErrNotAuthorized with "not authorized" (v5 0x87, v3 return code 5).
// Any other error means the check itself failed and the connection is refused
// too.
var (
	ErrBadCredentials = errors.New("auth: bad user name or password")
	ErrNotAuthorized  = errors.New("auth: not authorized")
)

// ErrBusy says a credential check could not start in time because too many
// ran at once: the credentials were not checked, so this is no verdict on
// them. The broker answers it with "server unavailable" (v5 0x88, v3 return
// code 3), which tells the client to try again later.
var ErrBusy = errors.New("auth: too many credential checks at once")

// Access is what a client wants to do with a topic. The values are bits, as
// in Mosquitto (MOSQ_ACL_READ, MOSQ_ACL_WRITE, MOSQ_ACL_SUBSCRIBE).
type Access int

const (
	// Read is receiving a message published on a topic name. The broker
	// asks for it when it delivers a message, including retained messages.
	Read Access = 1 << iota
	// Write is publishing to a topic name, including a Will message.
	Write
	// Subscribe is subscribing to a topic filter.
	Subscribe

	// ReadWrite is the access of an ACL file line without an access word,
	// or with "readwrite".
	ReadWrite = Read | Write
)

// String returns the ACL file word for a, such as "read" or "readwrite".
func (a Access) String() string {
	switch a {
	case 0:
		return "deny"
	case Read:
		return "read"
	case Write:
		return "write"
	case ReadWrite:
		return "readwrite"
	case Subscribe:
		return "subscribe"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// Client is what the broker knows about a connecting or connected client.
// HasUsername and HasPassword tell an empty value from an absent one, as the
// CONNECT flags do.
type Client struct {
	ClientID    string
	Username    string
	HasUsername bool
	Password    []byte
	HasPassword bool
	// Remote is the client's network address; nil when unknown.
	Remote net.Addr
	// CommonName is the subject common name of a verified TLS client
	// certificate (use_identity_as_username); empty without one.
	CommonName string
}

// Authenticator decides whether a client may connect. It returns nil to
// allow it, ErrBadCredentials or ErrNotAuthorized (possibly wrapped) to
// refuse it, or another error when it could not decide. It must be safe for
// concurrent use.
type Authenticator interface {
	Authenticate(ctx context.Context, c *Client) error
}

// Authorizer decides whether a connected client may read, write or subscribe
// to a topic. For Read and Write topic is a topic name; for Subscribe it is a
// topic filter without any "$share/group/" prefix. It must be safe for
// concurrent use.
type Authorizer interface {
	Authorize(ctx context.Context, c *Client, topic string, a Access) bool
}
