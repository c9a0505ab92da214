// Package config reads mosquitto.conf-compatible configuration files and
// turns them into broker options and listeners. It is the only package that
// wires the others together.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mqttd/mqttd/broker"
)

// Listener is one configured network listener.
type Listener struct {
	Port    int
	Address string // "" = all interfaces
}

// Addr is the host:port to listen on.
func (l Listener) Addr() string { return net.JoinHostPort(l.Address, strconv.Itoa(l.Port)) }

// Config is a parsed configuration.
type Config struct {
	Broker              broker.Options
	Listeners           []Listener
	Persistence         bool
	PersistenceLocation string
	File                string // the file it was read from, "" for defaults

	anonymousSet bool
}

// Default is the configuration of a broker started without a file:
// Mosquitto 2.0's local-only mode, loopback port 1883 with anonymous access.
func Default() *Config {
	c := &Config{}
	c.finish()
	return c
}

// ErrInvalid is wrapped by every configuration error.
var ErrInvalid = errors.New("config: invalid configuration")

// Load reads the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a configuration in mosquitto.conf syntax: one "key value..."
// per line, '#' comments, blank lines ignored. name labels errors.
func Parse(r io.Reader, name string) (*Config, error) {
	c := &Config{File: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if err := c.apply(fields[0], fields[1:]); err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %s", ErrInvalid, name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	c.finish()
	return c, nil
}

// finish applies Mosquitto 2.0's defaults: with no listener, loopback port
// 1883 and anonymous access; with listeners, anonymous access only if asked.
func (c *Config) finish() {
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Port: 1883, Address: "127.0.0.1"}}
		if !c.anonymousSet {
			c.Broker.AllowAnonymous = true
		}
	}
}

// AddPort adds a listener as mqttd's -p flag does: on loopback when no file
// was given (local-only mode), else on every interface.
func (c *Config) AddPort(port int) {
	addr := ""
	if c.File == "" {
		addr = "127.0.0.1"
		// -p replaces the default listener of local-only mode.
		if len(c.Listeners) == 1 && c.Listeners[0] == (Listener{Port: 1883, Address: "127.0.0.1"}) {
			c.Listeners = nil
		}
	}
	c.Listeners = append(c.Listeners, Listener{Port: port, Address: addr})
}

func (c *Config) apply(key string, args []string) error {
	o := &c.Broker
	one := func() (string, error) {
		if len(args) != 1 {
			return "", fmt.Errorf("%s takes one value", key)
		}
		return args[0], nil
	}
	integer := func(lo, hi int64) (int64, error) {
		s, err := one()
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%s: %q is not a number from %d to %d", key, s, lo, hi)
		}
		return n, nil
	}
	boolean := func() (bool, error) {
		s, err := one()
		if err != nil {
			return false, err
		}
		switch s {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return false, fmt.Errorf("%s: %q is not true or false", key, s)
	}
	var err error
	var n int64
	switch key {
	case "listener":
		if len(args) < 1 || len(args) > 2 {
			return fmt.Errorf("listener takes a port and an optional address")
		}
		p, perr := strconv.Atoi(args[0])
		if perr != nil || p < 0 || p > 65535 {
			return fmt.Errorf("listener: invalid port %q", args[0])
		}
		l := Listener{Port: p}
		if len(args) == 2 {
			l.Address = args[1]
		}
		c.Listeners = append(c.Listeners, l)
	case "port":
		n, err = integer(1, 65535)
		c.Listeners = append(c.Listeners, Listener{Port: int(n)})
	case "allow_anonymous":
		o.AllowAnonymous, err = boolean()
		c.anonymousSet = true
	case "max_inflight_messages":
		n, err = integer(0, 65535)
		o.MaxInflight = int(n)
		if n == 0 {
			o.MaxInflight = -1 // 0 means no limit in mosquitto.conf
		}
	case "max_queued_messages":
		n, err = integer(0, 1<<31-1)
		o.MaxQueuedMessages = int(n)
		if n == 0 {
			o.MaxQueuedMessages = -1
		}
	case "max_queued_bytes":
		n, err = integer(0, 1<<62)
		o.MaxQueuedBytes = n
	case "queue_qos0_messages":
		o.QueueQoS0, err = boolean()
	case "message_size_limit":
		n, err = integer(0, 268435455)
		o.MessageSizeLimit = int(n)
	case "max_packet_size":
		n, err = integer(0, 268435460)
		if err == nil && n > 0 && n < 20 {
			err = fmt.Errorf("max_packet_size: %d is too small (at least 20)", n)
		}
		o.MaxPacketSize = int(n)
	case "max_keepalive":
		n, err = integer(0, 65535)
		o.MaxKeepAlive = uint16(n)
		if n == 0 {
			o.MaxKeepAlive = 65535
		}
	case "persistence":
		c.Persistence, err = boolean()
	case "persistence_location":
		c.PersistenceLocation, err = one()
	case "sys_interval":
		n, err = integer(0, 65535)
		o.SysInterval = time.Duration(n) * time.Second
		if n == 0 {
			o.SysInterval = -1 // 0 disables $SYS
		}
	case "persistent_client_expiration":
		var s string
		if s, err = one(); err == nil {
			o.PersistentClientExpiration, err = parseExpiration(s)
		}
	default:
		return fmt.Errorf("unknown option %q", key)
	}
	return err
}

// parseExpiration reads Mosquitto's duration syntax: a number followed by h
// (hours), d (days), w (weeks), m (months of 30 days) or y (years of 365 days).
func parseExpiration(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("persistent_client_expiration: invalid duration %q", s)
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("persistent_client_expiration: invalid duration %q", s)
	}
	unit := map[byte]time.Duration{'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour,
		'm': 30 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}[s[len(s)-1]]
	if unit == 0 {
		return 0, fmt.Errorf("persistent_client_expiration: unit of %q must be h, d, w, m or y", s)
	}
	return time.Duration(n) * unit, nil
}
