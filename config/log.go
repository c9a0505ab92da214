package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/strftime"
	"github.com/mqttd/mqttd/packet"
)

// LevelNotice is Mosquitto's "notice" log type (connection messages),
// between information and warning.
const LevelNotice = slog.Level(2)

// Logging writes logs as Mosquitto does: "TIMESTAMP: message" lines to the
// log_dest destinations, filtered by log_type. Reconfigure swaps the
// settings (SIGHUP) while loggers built on Handler keep working.
//
// Lines for stderr, stdout and files are written by a goroutine of the
// Logging's own, in order, all the lines that came while it wrote the last
// ones in one write per destination: a connection's goroutine only appends
// its line. One write system call per line, made by the goroutine of the
// connection that logged it, cost the broker a third of its CPU time in a
// storm of connections (two lines each: 125 µs of CPU per connection
// against 88 µs without the lines; docs/performance.md): the call, and the
// Go runtime handing the processor to another thread while it ran. Lines
// that come within logPause of a write wait for the next together, so that
// a storm of connections makes a write every few milliseconds, not two per
// connection; past maxPendingLog bytes waiting, the goroutine that logs
// writes them itself. Warnings and errors are written before the call that
// logs them returns. Close writes what waits; lines logged after it are
// written at once. syslog is written at once.
type Logging struct {
	state atomic.Pointer[logState]
	mu    sync.Mutex // serialises the writes to the destinations, Reconfigure and Close

	pmu     sync.Mutex // guards pending and closed
	pending []byte     // formatted lines waiting for the writer (run)
	closed  bool       // Close ran: lines are written at once
	spare   []byte     // the buffer written last, reused; under mu
	kick    chan struct{}
	stop    chan struct{}
}

// maxPendingLog bounds the bytes of lines waiting to be written.
const maxPendingLog = 256 << 10

// logPause is the least time between two writes of the logging goroutine:
// at a few thousand lines a second (a storm of connections), each write
// would otherwise carry a line or two.
const logPause = 2 * time.Millisecond

type logState struct {
	cfg     LogConfig
	levels  map[slog.Level]bool
	all     bool
	writers []io.Writer
	syslog  sysLogger
	closers []io.Closer
}

// NewLogging opens the destinations of lc. verbose (mqttd -v) logs every
// type, as mosquitto -v does.
func NewLogging(lc LogConfig, verbose bool) (*Logging, error) {
	return newLoggingTo(lc, verbose, os.Stdout, os.Stderr)
}

// newLoggingTo is NewLogging with stdout and stderr replaced (tests).
func newLoggingTo(lc LogConfig, verbose bool, stdout, stderr io.Writer) (*Logging, error) {
	l := &Logging{kick: make(chan struct{}, 1), stop: make(chan struct{})}
	st, err := openLog(lc, verbose, stdout, stderr)
	if err != nil {
		return nil, err
	}
	l.state.Store(st)
	go l.run()
	return l, nil
}

// run writes the waiting lines whenever some come, then lets those that
// come within logPause wait, to be written together; until Close.
func (l *Logging) run() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			return
		}
		l.Flush()
		t.Reset(logPause)
		select {
		case <-t.C:
		case <-l.stop:
			return
		}
	}
}

// Flush writes the lines waiting to be written.
func (l *Logging) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

// flushLocked is Flush with l.mu held.
func (l *Logging) flushLocked() {
	l.pmu.Lock()
	buf := l.pending
	l.pending = l.spare[:0]
	st := l.state.Load()
	l.pmu.Unlock()
	if len(buf) > 0 {
		for _, w := range st.writers {
			w.Write(buf)
		}
	}
	l.spare = nil
	if cap(buf) <= maxPendingLog {
		l.spare = buf[:0]
	}
}

// sysLogger is the system logger (log/syslog's Writer where there is one).
type sysLogger interface {
	Err(string) error
	Warning(string) error
	Notice(string) error
	Info(string) error
	Debug(string) error
	Close() error
}

// errLogDest reports an unusable log destination.
var errLogDest = errors.New("config: log_dest")

func openLog(lc LogConfig, verbose bool, stdout, stderr io.Writer) (*logState, error) {
	st := &logState{cfg: lc, levels: make(map[slog.Level]bool)}
	types := lc.Types
	if verbose {
		types = []string{"all"}
	}
	for _, t := range types {
		switch t {
		case "all":
			st.all = true
		case "none":
			st.all = false
			clear(st.levels)
		case "error":
			st.levels[slog.LevelError] = true
		case "warning":
			st.levels[slog.LevelWarn] = true
		case "notice":
			st.levels[LevelNotice] = true
		case "information":
			st.levels[slog.LevelInfo] = true
		case "debug":
			st.levels[slog.LevelDebug] = true
		}
	}
	for _, d := range lc.Dests {
		switch d.Kind {
		case "stderr":
			st.writers = append(st.writers, stderr)
		case "stdout":
			st.writers = append(st.writers, stdout)
		case "file":
			f, err := os.OpenFile(d.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
			if err != nil {
				st.close()
				return nil, fmt.Errorf("%w: %w", errLogDest, err)
			}
			st.writers = append(st.writers, f)
			st.closers = append(st.closers, f)
		case "syslog":
			w, err := openSyslog()
			if err != nil {
				st.close()
				return nil, fmt.Errorf("%w: syslog: %w", errLogDest, err)
			}
			st.syslog = w
			st.closers = append(st.closers, w)
		case "none", "topic":
			// topic: $SYS/broker/log is not published (accepted, not applied).
		}
	}
	return st, nil
}

func (st *logState) close() {
	for _, c := range st.closers {
		c.Close()
	}
}

// enabled reports whether records at level are written. Levels between the
// named ones count as the next lower named one.
func (st *logState) enabled(level slog.Level) bool {
	if st.all {
		return true
	}
	switch {
	case level >= slog.LevelError:
		return st.levels[slog.LevelError]
	case level >= slog.LevelWarn:
		return st.levels[slog.LevelWarn]
	case level >= LevelNotice:
		return st.levels[LevelNotice]
	case level >= slog.LevelInfo:
		return st.levels[slog.LevelInfo]
	}
	return st.levels[slog.LevelDebug]
}

// Reconfigure opens lc's destinations and switches to them; the old files
// are closed. On error the old settings stay.
func (l *Logging) Reconfigure(lc LogConfig, verbose bool) error {
	st, err := openLog(lc, verbose, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.flushLocked() // the waiting lines go where they were logged for
	l.pmu.Lock()
	old := l.state.Swap(st)
	l.pmu.Unlock()
	l.mu.Unlock()
	old.close()
	return nil
}

// Close writes the waiting lines and closes the log files.
func (l *Logging) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pmu.Lock()
	wasClosed := l.closed
	l.closed = true
	l.pmu.Unlock()
	l.flushLocked()
	if !wasClosed {
		close(l.stop)
	}
	l.state.Load().close()
}

// write writes one line at level: syslog at once, the other destinations
// by way of pending.
func (l *Logging) write(t time.Time, level slog.Level, line string) {
	st := l.state.Load()
	if !st.enabled(level) {
		return
	}
	if st.syslog != nil {
		l.writeSyslog(level, line)
	}
	l.pmu.Lock()
	st = l.state.Load() // as Reconfigure left it: the lines go to its writers
	if len(st.writers) == 0 || !st.enabled(level) {
		l.pmu.Unlock()
		return
	}
	if l.closed {
		l.pmu.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		b := st.appendLine(nil, t, line)
		for _, w := range st.writers {
			w.Write(b)
		}
		return
	}
	first := len(l.pending) == 0
	l.pending = st.appendLine(l.pending, t, line)
	full := len(l.pending) >= maxPendingLog
	l.pmu.Unlock()
	switch {
	case full, level >= slog.LevelWarn:
		// Warnings and errors are written before write returns, with
		// the lines before them: the last lines before a crash say the
		// most.
		l.Flush()
	case first:
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// appendLine appends line as it is written, with its timestamp.
func (st *logState) appendLine(b []byte, t time.Time, line string) []byte {
	if st.cfg.Timestamp {
		if st.cfg.TimestampFormat != "" {
			b = append(b, strftime.Format(st.cfg.TimestampFormat, t)...)
		} else {
			b = strconv.AppendInt(b, t.Unix(), 10)
		}
		b = append(b, ": "...)
	}
	b = append(b, line...)
	return append(b, '\n')
}

// writeSyslog sends one line to the system logger.
func (l *Logging) writeSyslog(level slog.Level, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state.Load()
	if st.syslog != nil {
		switch {
		case level >= slog.LevelError:
			st.syslog.Err(line)
		case level >= slog.LevelWarn:
			st.syslog.Warning(line)
		case level >= LevelNotice:
			st.syslog.Notice(line)
		case level >= slog.LevelInfo:
			st.syslog.Info(line)
		default:
			st.syslog.Debug(line)
		}
	}
}

// Handler returns a slog.Handler writing through l.
func (l *Logging) Handler() slog.Handler { return &logHandler{l: l} }

// supersededByConnectionMessages are the broker's own connection log lines,
// which Mosquitto-style connection messages (Event) replace: they are
// written as debug.
var supersededByConnectionMessages = map[string]bool{
	"client connected": true, "client disconnected": true, "connection closed": true,
	"connection refused": true, "client taken over": true,
}

type logHandler struct {
	l      *Logging
	attrs  []slog.Attr
	groups string
}

func (h *logHandler) Enabled(_ context.Context, level slog.Level) bool {
	return h.l.state.Load().enabled(level)
}

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	level := r.Level
	if supersededByConnectionMessages[r.Message] && level < slog.LevelWarn {
		level = slog.LevelDebug
	}
	if !h.l.state.Load().enabled(level) {
		return nil // write would drop it: not formatted (a line per connect)
	}
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		if a.Equal(slog.Attr{}) {
			return true
		}
		b.WriteByte(' ')
		b.WriteString(h.groups)
		b.WriteString(a.Key)
		b.WriteByte('=')
		v := a.Value.Resolve().String()
		if strings.ContainsAny(v, " \"=") || v == "" {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	h.l.write(t, level, b.String())
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.groups += name + "."
	return &n
}

// Event writes a broker connection event in Mosquitto 2.0's wording, at
// notice level, when connection_messages is true.
func (l *Logging) Event(ev broker.Event) {
	if !l.state.Load().cfg.ConnectionMessages {
		return
	}
	for _, line := range EventLines(ev) {
		l.write(time.Now(), LevelNotice, line)
	}
}

// EventLines renders ev as Mosquitto 2.0 logs it (none for events
// Mosquitto does not log).
func EventLines(ev broker.Event) []string {
	id := ev.ClientID
	if id == "" {
		id = "<unknown>"
	}
	switch ev.Kind {
	case broker.EventAccepted:
		return []string{fmt.Sprintf("New connection from %s on port %d.", hostPort(ev.Remote), ev.Port)}
	case broker.EventConnected:
		var out []string
		if ev.TookOver {
			out = append(out, fmt.Sprintf("Client %s already connected, closing old connection.", id))
		}
		clean := 0
		if ev.CleanStart {
			clean = 1
		}
		line := fmt.Sprintf("New client connected from %s as %s (p%d, c%d, k%d", hostPort(ev.Remote), id,
			protocolNumber(ev.Version), clean, ev.KeepAlive)
		if ev.HasUsername {
			line += fmt.Sprintf(", u'%s'", ev.Username)
		}
		return append(out, line+").")
	case broker.EventRefused:
		switch ev.Code {
		case packet.NotAuthorized, packet.BadUserNameOrPassword:
			return []string{"Client <unknown> disconnected, not authorised."}
		}
		return []string{fmt.Sprintf("Client <unknown> disconnected: %s.", ev.Code.Error())}
	case broker.EventDisconnected:
		switch ev.Cause {
		case broker.CauseDisconnect:
			return []string{fmt.Sprintf("Client %s disconnected.", id)}
		case broker.CauseClosed:
			return []string{fmt.Sprintf("Client %s closed its connection.", id)}
		case broker.CauseKeepAlive, broker.CauseConnectTimeout:
			return []string{fmt.Sprintf("Client %s has exceeded timeout, disconnecting.", id)}
		case broker.CauseProtocol:
			return []string{fmt.Sprintf("Client %s disconnected due to protocol error.", id)}
		case broker.CauseMalformed:
			return []string{fmt.Sprintf("Client %s disconnected due to malformed packet.", id)}
		case broker.CauseNotAuthorized:
			return []string{fmt.Sprintf("Client %s disconnected, not authorised.", id)}
		case broker.CauseTooLarge:
			return []string{fmt.Sprintf("Client %s disconnected due to oversize packet.", id)}
		case broker.CauseTakenOver:
			// Mosquitto's line is the new connection's "already connected,
			// closing old connection." (EventConnected.TookOver).
			return nil
		case broker.CauseShutdown:
			return []string{fmt.Sprintf("Client %s disconnected: server shutting down.", id)}
		case broker.CauseRedirect:
			return []string{fmt.Sprintf("Client %s disconnected: use another server.", id)}
		case broker.CauseSlowConsumer:
			return []string{fmt.Sprintf("Client %s disconnected: slow consumer, write timed out.", id)}
		case broker.CauseError:
			msg := "error"
			if ev.Err != nil {
				msg = ev.Err.Error()
			}
			return []string{fmt.Sprintf("Client %s disconnected: %s.", id, msg)}
		}
	}
	return nil
}

// hostPort prints an address as Mosquitto does: host:port, IPv6 without
// brackets.
func hostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host + ":" + port
}

// protocolNumber is Mosquitto's protocol number: 1 (3.1), 2 (3.1.1), 5.
func protocolNumber(v packet.Version) int {
	switch v {
	case packet.V31:
		return 1
	case packet.V311:
		return 2
	}
	return 5
}
