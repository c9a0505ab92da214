// Package pebble is the default store.Store: an embedded, crash-safe
// key-value store (CockroachDB's Pebble, an LSM tree with a write-ahead log)
// in one directory.
//
// Apply writes a batch to the write-ahead log; with store.SyncAlways it
// returns once the log is synced, and concurrent Apply calls share one sync:
// Pebble's commit pipeline gathers every batch that arrives while a sync is
// under way into the next one. The key layout is in keys.go, the value
// layout in codec.go.
package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/internal/prune"
)

// formatVersion is the version of the key and value layout.
const formatVersion = 1

// DefaultSyncInterval is the longest time between syncs under
// store.SyncBatch when Options.SyncInterval is zero.
const DefaultSyncInterval = 10 * time.Millisecond

// Options configures Open. The zero value is store.SyncAlways with the
// default logger.
type Options struct {
	Sync store.SyncPolicy
	// SyncInterval is the longest time between syncs under store.SyncBatch,
	// and so the window of writes a power loss can take. Zero means
	// DefaultSyncInterval.
	SyncInterval time.Duration
	// Logger receives Pebble's messages; nil means slog.Default().
	Logger *slog.Logger

	fs vfs.FS // tests: a file system that counts syncs
}

// cacheSize is the block cache of the store.
const cacheSize = 32 << 20

// Store is a store.Store in a Pebble database.
type Store struct {
	dir    string
	db     *pebbledb.DB
	policy store.SyncPolicy
	log    *slog.Logger

	mu     sync.Mutex // serialises Apply's bookkeeping and Load
	closed bool
	refs   map[uint64]uint32 // queue entries naming each message; guarded by mu
	// maxSeq bounds the queue entry sequence numbers of each client: a put
	// above it is a new entry and needs no read. Guarded by mu.
	maxSeq map[string]uint64
	// live remembers recently written queue entries (guarded by mu).
	live liveEntries
	// scratch is the builder apply reuses, its maps cleared (guarded by mu).
	scratch builder

	inflight sync.WaitGroup        // Apply calls waiting for their sync, and ApplyAsync's batches in syncQ
	syncs    atomic.Uint64         // batches committed to wait for a sync, in all (SyncedWrites)
	seen     atomic.Uint64         // syncs as syncPause last read it
	arrived  atomic.Int64          // when the last batch waiting for a sync was committed (monoNow)
	pausedAt atomic.Int64          // when syncPause last ran (monoNow)
	paused   atomic.Int64          // the gap it returned then (a time.Duration)
	syncQ    chan asyncSync        // ApplyAsync's batches waiting for their sync, in order (SyncAlways)
	dirty    atomic.Bool           // SyncBatch: written since the last sync
	failed   atomic.Pointer[error] // a background sync failed or damage was found: Apply refuses
	wedged   atomic.Bool           // a commit panicked: Pebble cannot be used or closed (commit)
	stop     chan struct{}
	stopped  sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// fatalError is the panic value of the Pebble logger's Fatalf: Open turns it
// into an error.
type fatalError struct{ msg string }

type logger struct{ l *slog.Logger }

func (l logger) Infof(format string, args ...any) {
	l.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l logger) Errorf(format string, args ...any) {
	l.l.Error("pebble: " + shortError{fmt.Errorf(format, args...)}.Error())
}

func (l logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.l.Error("pebble: fatal: " + msg)
	panic(fatalError{msg})
}

// Open opens the store in dir, creating dir if it does not exist. An error
// names the directory and what to do about it; a damaged store gives an
// error wrapping store.ErrCorrupt (see MoveAside).
func Open(dir string, opts Options) (s *Store, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Sync < store.SyncAlways || opts.Sync > store.SyncNever {
		return nil, fmt.Errorf("store/pebble: open %s: %w", dir, store.ErrSyncPolicy)
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	s = &Store{dir: dir, policy: opts.Sync, log: log, stop: make(chan struct{})}
	base := opts.fs
	if base == nil {
		base = vfs.Default
	}
	po := &pebbledb.Options{
		Logger:             logger{log},
		FormatMajorVersion: pebbledb.FormatNewest,
		FS:                 privateFS{base},
		EventListener: &pebbledb.EventListener{
			DataCorruption: s.onCorruption, // instead of exiting the process

		},
		// Deleting a queue entry reads it back (to release its message):
		// Bloom filters keep those point reads from probing every L0 table,
		// and the cache and a larger memtable keep recent entries in memory.
		Cache:        pebbledb.NewCache(cacheSize),
		MemTableSize: 32 << 20,
	}
	if s.policy == store.SyncAlways {
		po.WALMinSyncInterval = s.syncPause
	}
	defer po.Cache.Unref() // the DB holds its own reference
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := openDB(dir, po)
	if err != nil {
		return nil, openError(dir, err)
	}
	s.db = db
	if err := s.init(); err != nil {
		return nil, errors.Join(openError(dir, err), closeDB(db))
	}
	if s.policy == store.SyncBatch {
		iv := opts.SyncInterval
		if iv <= 0 {
			iv = DefaultSyncInterval
		}
		s.stopped.Add(1)
		go s.syncLoop(iv)
	}
	if s.policy == store.SyncAlways {
		s.syncQ = make(chan asyncSync, asyncQueue)
		s.stopped.Add(1)
		go s.asyncLoop()
	}
	return s, nil
}

// Group commit under SyncAlways. When groupedSync or more batches came to
// wait on the log during one sync (several writers at once: the load of
// many publishers), the next sync waits syncGap after it: the batches that
// arrive meanwhile share it, so fewer syncs carry the same batches, and
// each sync (a system call that holds one of the broker's threads, and on
// a one-core machine its only processor, for its duration) costs the rest
// of the broker less. A writer alone (a batch or two a sync) is synced at
// once, so its acknowledgement does not wait for the gap. With 50 QoS 1
// publishers to persistent sessions on one core this raised the rate by a
// third; the latency of a lone publisher's pair did not move
// (docs/performance.md).
//
// The gap is no longer than the batches keep coming. Writers that each wait
// for their sync before writing again (a few publishers, each with one
// message in flight) all write within a moment of the sync that released
// them, and then nothing comes until the next: waiting out 2 ms then only
// delays them (four persistent pairs with a window of 1: 1.2k msg/s with
// the full gap, 2.9k-3.0k without any). So after a gap in which the last
// batch came at t after the sync, the next gap is twice t and
// syncGapSlack, up to syncGap; a stream that keeps coming keeps syncGap.
const (
	groupedSync  = 4
	syncGap      = 2 * time.Millisecond
	syncGapSlack = 100 * time.Microsecond
)

// monoClock is the origin of monoNow.
var monoClock = time.Now()

// monoNow is the monotonic time in nanoseconds since monoClock.
func monoNow() int64 { return int64(time.Since(monoClock)) }

// syncPause is Pebble's WALMinSyncInterval under SyncAlways: called after
// each sync of the log, it returns the least time before the next.
func (s *Store) syncPause() time.Duration {
	return s.syncPauseAt(monoNow())
}

// syncPauseAt is syncPause at now (monoNow). Pebble calls it from the log
// writer's goroutine; the fields are atomic because, when the log rotates,
// the old writer's last sync may overlap the new writer's first.
func (s *Store) syncPauseAt(now int64) time.Duration {
	gap := time.Duration(0)
	// The batches committed to wait for a sync since the last sync.
	cur := s.syncs.Load()
	if cur-s.seen.Swap(cur) >= groupedSync {
		gap = syncGap
		if s.paused.Load() > 0 {
			// The last gap ran from pausedAt; the batches that came
			// after it started stopped coming at arrived.
			came := time.Duration(s.arrived.Load() - s.pausedAt.Load())
			gap = min(syncGap, 2*max(came, 0)+syncGapSlack)
		}
	}
	s.pausedAt.Store(now)
	s.paused.Store(int64(gap))
	return gap
}

// asyncQueue bounds the batches of ApplyAsync waiting for their sync; past
// it ApplyAsync waits for room (as Apply would wait for the sync).
const asyncQueue = 4096

// asyncSync is a batch of ApplyAsync waiting for its sync (nil pb: a
// barrier), and what to call when it is done.
type asyncSync struct {
	pb   *pebbledb.Batch
	done func(error)
}

// asyncLoop waits for the syncs of ApplyAsync's batches in the order they
// were applied and calls their done. One wait covers every batch the sync
// took: the Pebble log is written in that order and synced as a whole.
func (s *Store) asyncLoop() {
	defer s.stopped.Done()
	for {
		select {
		case <-s.stop:
			return // Close waited for inflight: the queue is empty
		case a := <-s.syncQ:
			var err error
			if a.pb != nil {
				if err = a.pb.SyncWait(); err != nil {
					err = s.halt("sync", err) // as apply does
				}
				err = errors.Join(err, a.pb.Close())
			}
			a.done(err)
			s.inflight.Done()
		}
	}
}

// onCorruption is Pebble's DataCorruption event. Pebble's default is to exit
// the process; instead the error is logged and kept: reads fail with it, and
// Apply refuses from now on.
func (s *Store) onCorruption(info pebbledb.DataCorruptionInfo) {
	err := fmt.Errorf("store/pebble: the store in %s is damaged: %w: file %s: %w; "+
		"stop mqttd and move the directory aside", s.dir, store.ErrCorrupt, info.Path, shortError{info.Details})
	s.log.Error(err.Error())
	s.failed.CompareAndSwap(nil, &err)
}

// openDB is pebble.Open, with a panic on damaged files made an error.
func openDB(dir string, po *pebbledb.Options) (db *pebbledb.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: pebble: %v", store.ErrCorrupt, r)
		}
	}()
	return pebbledb.Open(dir, po)
}

func closeDB(db *pebbledb.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store/pebble: close: %v", r)
		}
	}()
	return db.Close()
}

// damageMarkers are fragments of Pebble's messages about files it cannot
// make sense of that it does not mark as corruption.
var damageMarkers = []string{
	"corrupt", "checksum", "invalid chunk", "malformed", "unexpected EOF",
	"CURRENT", "MANIFEST", "bad magic", "unknown format", "zeroed", "invalid table",
	"unknown to the objstorage provider", "object size mismatch",
}

// isDamage reports whether err says that files in dir are damaged.
func isDamage(dir string, err error) bool {
	if errors.Is(err, store.ErrCorrupt) || errors.Is(err, errBadKey) || errors.Is(err, errBadValue) ||
		pebbledb.IsCorruptionError(err) {
		return true
	}
	if errors.Is(err, fs.ErrPermission) {
		return false
	}
	msg := strings.ReplaceAll(err.Error(), dir, "")
	for _, m := range damageMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// shortError shows only the first line of a Pebble error, whose message
// may carry more.
type shortError struct{ err error }

func (e shortError) Error() string {
	msg := e.err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

func (e shortError) Unwrap() error { return e.err }

func openError(dir string, err error) error {
	err = shortError{err}
	if isDamage(dir, err) {
		return fmt.Errorf("store/pebble: the store in %s is damaged: %w: %w; "+
			"move the directory aside to start empty (persistence_on_corruption move-aside does it), "+
			"or restore it from a backup", dir, store.ErrCorrupt, err)
	}
	return fmt.Errorf("store/pebble: cannot open the store in %s: %w; "+
		"check that the directory is readable and writable by mqttd and that no other process uses it",
		dir, err)
}

// init checks the format version (writing it into a new store) and counts
// the queue entries that name each message.
func (s *Store) init() error {
	v, closer, err := s.db.Get(formatKey)
	switch {
	case errors.Is(err, pebbledb.ErrNotFound):
		empty, err := s.isEmpty()
		if err != nil {
			return err
		}
		if !empty {
			return fmt.Errorf("%w: no format version record", store.ErrCorrupt)
		}
		if err := s.db.Set(formatKey, binary.AppendUvarint(nil, formatVersion), pebbledb.Sync); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		ver, n := binary.Uvarint(v)
		_ = closer.Close() // closing a Get result only releases memory; it cannot fail
		if n <= 0 {
			return fmt.Errorf("%w: bad format version record", store.ErrCorrupt)
		}
		if ver != formatVersion {
			return fmt.Errorf("store/pebble: format version %d is not %d: written by another mqttd version", ver,
				formatVersion)
		}
	}
	s.refs = make(map[uint64]uint32)
	s.maxSeq = make(map[string]uint64)
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{kindQueue}, UpperBound: []byte{kindQueue + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		id, err := queueEntryMessageID(it.Value())
		if err != nil {
			return errors.Join(fmt.Errorf("%w: queue entry %q: %w", store.ErrCorrupt, it.Key(), err), it.Close())
		}
		s.refs[id]++
		client, rest, err := splitClient(it.Key())
		if err != nil || len(rest) != 8 {
			return errors.Join(fmt.Errorf("%w: queue entry key %q", store.ErrCorrupt, it.Key()), it.Close())
		}
		s.maxSeq[string(client)] = max(s.maxSeq[string(client)], binary.BigEndian.Uint64(rest))
	}
	return it.Close()
}

func (s *Store) isEmpty() (bool, error) {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return false, err
	}
	empty := !it.First()
	return empty, errors.Join(it.Error(), it.Close())
}

func (s *Store) syncLoop(iv time.Duration) {
	defer s.stopped.Done()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if s.failed.Load() != nil {
				continue // stopped: Pebble may not be usable (commit)
			}
			if s.dirty.Swap(false) {
				if err := s.commit("sync", func() error { return s.db.LogData(nil, pebbledb.Sync) }); err != nil {
					s.halt("sync", err)
				}
			}
		}
	}
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// pendingEntry is a queue entry written earlier in the batch being built.
type pendingEntry struct {
	client string
	seq    uint64
	msgID  uint64
	live   bool // false: deleted
}

// liveEntries is a bounded set of queue entries known to be in the
// database, with the message each names: the entries written by the
// batches applied lately, until deleted. A deletion (a subscriber's
// acknowledgement, mostly of an entry written moments before) finds the
// entry here instead of reading it back from the database, which cost a
// tenth of the broker's processor time in QoS 1 fan-in to persistent
// sessions. An entry not here is read as before: the set only ever holds
// entries that exist, so it can miss but not mislead.
type liveEntries struct {
	m        map[entryID]uint64
	byClient map[string]int // entries of each client in m
}

type entryID struct {
	client string
	seq    uint64
}

// maxLiveEntries bounds liveEntries (a few hundred kilobytes).
const maxLiveEntries = 16384

func (l *liveEntries) get(client string, seq uint64) (uint64, bool) {
	id, ok := l.m[entryID{client, seq}]
	return id, ok
}

// put records a live entry, if there is room or it is there already.
func (l *liveEntries) put(client string, seq, msgID uint64) {
	k := entryID{client, seq}
	if _, had := l.m[k]; had {
		l.m[k] = msgID
		return
	}
	if len(l.m) >= maxLiveEntries {
		return
	}
	if l.m == nil {
		l.m = make(map[entryID]uint64)
		l.byClient = make(map[string]int)
	}
	l.m[k] = msgID
	l.byClient[client]++
}

func (l *liveEntries) remove(client string, seq uint64) {
	k := entryID{client, seq}
	if _, had := l.m[k]; !had {
		return
	}
	delete(l.m, k)
	if l.byClient[client]--; l.byClient[client] == 0 {
		delete(l.byClient, client)
	}
}

// clear forgets every entry of client (its session was deleted).
func (l *liveEntries) clear(client string) {
	if l.byClient[client] == 0 {
		return
	}
	for k := range l.m {
		if k.client == client {
			delete(l.m, k)
		}
	}
	delete(l.byClient, client)
}

// applied updates l with what the builder's batch, now committed, did:
// the sessions it deleted, then the entries it wrote or deleted.
func (l *liveEntries) applied(bd *builder) {
	for c := range bd.cleared {
		l.clear(c)
	}
	for _, p := range bd.pending {
		if p.live {
			l.put(p.client, p.seq, p.msgID)
		} else {
			l.remove(p.client, p.seq)
		}
	}
}

// builder turns a store.Batch into a Pebble batch and the reference count
// changes that go with it.
type builder struct {
	s       *Store
	pb      *pebbledb.Batch
	deltas  map[uint64]int64         // reference count changes; every touched message
	pending map[entryID]pendingEntry // queue entries written in this batch
	cleared map[string]struct{}      // clients whose session this batch deleted
	maxSeq  map[string]uint64        // changes to Store.maxSeq
	buf     []byte
	key     []byte // a key being written (Pebble copies it)
}

// reset readies bd to build a batch into pb, keeping its maps and buffer
// unless a large batch grew them.
func (bd *builder) reset(s *Store, pb *pebbledb.Batch) {
	bd.s, bd.pb = s, pb
	const keep = 1024
	if bd.deltas == nil || len(bd.deltas) > keep || len(bd.pending) > keep || len(bd.cleared) > keep ||
		len(bd.maxSeq) > keep {
		bd.deltas = make(map[uint64]int64)
		bd.pending = make(map[entryID]pendingEntry)
		bd.cleared = make(map[string]struct{})
		bd.maxSeq = make(map[string]uint64)
	} else {
		clear(bd.deltas)
		clear(bd.pending)
		clear(bd.cleared)
		clear(bd.maxSeq)
	}
	if cap(bd.buf) > 64<<10 {
		bd.buf = nil
	}
}

// existing returns the message id of the queue entry at key as this batch
// sees it so far.
func (bd *builder) existing(clientID string, seq uint64, key []byte) (uint64, bool, error) {
	if p, ok := bd.pending[entryID{clientID, seq}]; ok {
		return p.msgID, p.live, nil
	}
	if _, ok := bd.cleared[clientID]; ok {
		return 0, false, nil
	}
	if id, ok := bd.s.live.get(clientID, seq); ok {
		return id, true, nil
	}
	v, closer, err := bd.s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	id, err := queueEntryMessageID(v)
	_ = closer.Close() // releases memory only
	if err != nil {
		return 0, false, fmt.Errorf("%w: queue entry %q: %w", store.ErrCorrupt, key, err)
	}
	return id, true, nil
}

// deleteSessionKeys deletes a session record and all the client's records.
func deleteSessionKeys(pb *pebbledb.Batch, clientID string) error {
	if err := pb.Delete(sessionKey(clientID), nil); err != nil {
		return err
	}
	for _, kind := range []byte{kindSubscription, kindQueue, kindInbound} {
		p := clientPrefix(nil, kind, clientID)
		if err := pb.DeleteRange(p, prefixEnd(p), nil); err != nil {
			return err
		}
	}
	return nil
}

func (bd *builder) deleteSession(clientID string) error {
	if err := deleteSessionKeys(bd.pb, clientID); err != nil {
		return err
	}
	// Release the messages its queue names: entries written earlier in this
	// batch, then those in the database that this batch has not written
	// (an entry it replaced or deleted released its message then).
	qp := clientPrefix(nil, kindQueue, clientID)
	var decided map[uint64]struct{}
	for k, p := range bd.pending {
		if k.client != clientID {
			continue
		}
		if p.live {
			bd.deltas[p.msgID]--
		}
		if decided == nil {
			decided = make(map[uint64]struct{})
		}
		decided[k.seq] = struct{}{}
		delete(bd.pending, k)
	}
	if _, ok := bd.cleared[clientID]; !ok {
		it, err := bd.s.db.NewIter(&pebbledb.IterOptions{LowerBound: qp, UpperBound: prefixEnd(qp)})
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			if k := it.Key(); len(k) == len(qp)+8 {
				if _, ok := decided[binary.BigEndian.Uint64(k[len(qp):])]; ok {
					continue
				}
			}
			id, err := queueEntryMessageID(it.Value())
			if err != nil {
				return errors.Join(fmt.Errorf("%w: queue entry %q: %w", store.ErrCorrupt, it.Key(), err), it.Close())
			}
			bd.deltas[id]--
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	bd.cleared[clientID] = struct{}{}
	bd.maxSeq[clientID] = 0
	return nil
}

func (bd *builder) putQueueEntry(e *store.QueueEntry) error {
	bd.key = appendQueueKey(bd.key[:0], e.ClientID, e.Seq)
	key := bd.key
	top, ok := bd.maxSeq[e.ClientID]
	if !ok {
		top = bd.s.maxSeq[e.ClientID]
	}
	if e.Seq <= top { // may replace an entry
		old, ok, err := bd.existing(e.ClientID, e.Seq, key)
		if err != nil {
			return err
		}
		if ok {
			bd.deltas[old]--
		}
	} else {
		bd.maxSeq[e.ClientID] = e.Seq
	}
	bd.deltas[e.MessageID]++
	bd.pending[entryID{e.ClientID, e.Seq}] = pendingEntry{client: e.ClientID, seq: e.Seq, msgID: e.MessageID, live: true}
	bd.buf = appendQueueEntry(bd.buf[:0], e)
	return bd.pb.Set(key, bd.buf, nil)
}

func (bd *builder) deleteQueueEntry(clientID string, seq, known uint64) error {
	bd.key = appendQueueKey(bd.key[:0], clientID, seq)
	key := bd.key
	// The entry is read even when the caller names its message
	// (DeleteQueueEntryOf): a late acknowledgement may delete an entry that
	// a DeleteSession (a clean start that replaced the session) already
	// removed, and trusting the caller would release the message a second
	// time, from under another session's entry.
	old, ok, err := bd.existing(clientID, seq, key)
	if err != nil || !ok {
		return err
	}
	if known != 0 && old != known {
		return fmt.Errorf("%w: queue entry %q names message %d, not %d", store.ErrInvalid, key, old, known)
	}
	bd.deltas[old]--
	bd.pending[entryID{clientID, seq}] = pendingEntry{client: clientID, seq: seq}
	return bd.pb.Delete(key, nil)
}

func (bd *builder) add(op *store.Op) error {
	pb := bd.pb
	var err error
	switch op.Kind {
	case store.OpPutSession:
		if bd.buf, err = appendSession(bd.buf[:0], op.Session); err != nil {
			return fmt.Errorf("%w: session %q: %w", store.ErrInvalid, op.ClientID, err)
		}
		return pb.Set(sessionKey(op.ClientID), bd.buf, nil)
	case store.OpDeleteSession:
		return bd.deleteSession(op.ClientID)
	case store.OpPutSubscription:
		sub := op.Subscription
		return pb.Set(subscriptionKey(op.ClientID, sub.Group, sub.Sub.Filter), appendSubscription(bd.buf[:0], sub), nil)
	case store.OpDeleteSubscription:
		return pb.Delete(subscriptionKey(op.ClientID, op.Group, op.Filter), nil)
	case store.OpPutMessage:
		if bd.buf, err = appendMessage(bd.buf[:0], op.Message); err != nil {
			return fmt.Errorf("%w: message %d: %w", store.ErrInvalid, op.Message.ID, err)
		}
		bd.deltas[op.Message.ID] += 0 // touched: dropped at the end if nothing names it
		bd.key = appendMessageKey(bd.key[:0], op.Message.ID)
		return pb.Set(bd.key, bd.buf, nil)
	case store.OpPutQueueEntry:
		return bd.putQueueEntry(op.Entry)
	case store.OpDeleteQueueEntry:
		return bd.deleteQueueEntry(op.ClientID, op.Seq, op.MessageID)
	case store.OpPutInbound:
		return pb.Set(inboundKey(op.ClientID, op.PacketID), nil, nil)
	case store.OpDeleteInbound:
		return pb.Delete(inboundKey(op.ClientID, op.PacketID), nil)
	case store.OpPutRetained:
		if bd.buf, err = appendRetained(bd.buf[:0], op.Message); err != nil {
			return fmt.Errorf("%w: retained message %q: %w", store.ErrInvalid, op.Topic, err)
		}
		return pb.Set(retainedKey(op.Topic), bd.buf, nil)
	case store.OpDeleteRetained:
		return pb.Delete(retainedKey(op.Topic), nil)
	}
	return fmt.Errorf("%w: unknown change kind %d", store.ErrInvalid, op.Kind)
}

// SyncedWrites implements store.SyncCounter.
func (s *Store) SyncedWrites() uint64 { return s.syncs.Load() }

// Apply implements store.Store.
func (s *Store) Apply(b *store.Batch) error {
	return s.apply(b, s.policy == store.SyncAlways, nil, nil)
}

// ApplyNoSync implements store.LazyApplier: b is written (a process crash
// keeps it) without waiting for stable storage, whatever the sync policy.
func (s *Store) ApplyNoSync(b *store.Batch) error { return s.apply(b, false, nil, nil) }

// ApplyOrdered implements store.OrderedApplier: ordered runs once b has its
// place in the write-ahead log (every later batch is logged after it) and
// the store's references are updated, before the wait for the log's sync.
func (s *Store) ApplyOrdered(b *store.Batch, ordered func()) error {
	return s.apply(b, s.policy == store.SyncAlways, ordered, nil)
}

// ApplyAsync implements store.AsyncApplier. Under SyncAlways done is called
// by the store's goroutine once the log's sync took b; under the other
// policies (nothing to wait for) before ApplyAsync returns.
func (s *Store) ApplyAsync(b *store.Batch, ordered func(), done func(error)) error {
	if s.policy != store.SyncAlways {
		if err := s.apply(b, false, ordered, nil); err != nil {
			return err
		}
		done(nil)
		return nil
	}
	return s.apply(b, true, ordered, done)
}

// apply writes b; with sync, it waits for the log's sync, or, with done,
// leaves the wait to asyncLoop.
func (s *Store) apply(b *store.Batch, sync bool, ordered func(), done func(error)) error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	if b.Empty() {
		if done != nil {
			s.inflight.Add(1)
			s.mu.Unlock()
			s.syncQ <- asyncSync{done: done} // a barrier
			return nil
		}
		s.mu.Unlock()
		return nil
	}
	if err := b.Validate(func(id uint64) bool { return s.refs[id] > 0 }); err != nil {
		s.mu.Unlock()
		return err
	}
	bd := &s.scratch
	bd.reset(s, s.db.NewBatch())
	pb := bd.pb
	fail := func(err error) error {
		s.mu.Unlock()
		return errors.Join(err, pb.Close())
	}
	for i, op := range b.Ops() {
		if err := bd.add(&op); err != nil {
			return fail(fmt.Errorf("store/pebble: change %d: %w", i, err))
		}
	}
	for id, d := range bd.deltas {
		if int64(s.refs[id])+d <= 0 {
			bd.key = appendMessageKey(bd.key[:0], id)
			if err := pb.Delete(bd.key, nil); err != nil {
				return fail(err)
			}
		}
	}
	var err error
	if sync {
		s.syncs.Add(1)
		s.arrived.Store(monoNow())
		err = s.commit("write to", func() error { return s.db.ApplyNoSyncWait(pb, pebbledb.Sync) })
	} else {
		err = s.commit("write to", func() error { return s.db.Apply(pb, pebbledb.NoSync) })
		s.dirty.Store(true)
	}
	if errors.Is(err, store.ErrFailed) {
		s.mu.Unlock() // the batch is Pebble's, half committed: not closed
		return err
	}
	if err != nil {
		return fail(fmt.Errorf("store/pebble: write to %s: %w", s.dir, err))
	}
	for id, d := range bd.deltas {
		if n := int64(s.refs[id]) + d; n > 0 {
			s.refs[id] = uint32(n)
		} else {
			delete(s.refs, id)
		}
	}
	for c, n := range bd.maxSeq {
		if n == 0 {
			delete(s.maxSeq, c)
		} else {
			s.maxSeq[c] = n
		}
	}
	s.live.applied(bd)
	if !sync {
		s.mu.Unlock()
		if ordered != nil {
			ordered()
		}
		return pb.Close()
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	if ordered != nil {
		ordered()
	}
	if done != nil {
		s.syncQ <- asyncSync{pb: pb, done: done} // asyncLoop waits for the sync
		return nil
	}
	defer s.inflight.Done()
	// Wait for the sync outside the lock: batches that arrive meanwhile
	// join the next sync.
	if err := pb.SyncWait(); err != nil {
		// Pebble's log writer stops at its first error: every later write
		// would panic (commit). Stop here, as commit does.
		err = s.halt("sync", err)
		return errors.Join(err, pb.Close())
	}
	return pb.Close()
}

// commit runs f, a call that commits to Pebble's write-ahead log. Pebble
// panics when the log cannot be written (its commit pipeline keeps a lock
// held: no further commit can be made, and Close could wait forever), and
// its logger's Fatalf panics too (logger). Either panic is recovered here,
// on the caller's goroutine: the store stops, every later write
// is refused with store.ErrFailed (halt), Close leaves the database as the last
// successful write left it, and the process goes on (the broker refuses
// what must be stored, diskfull.go) until it is restarted; Pebble replays
// its log on the next Open. Panics in Pebble's own background goroutines
// (a failed MANIFEST write during a flush or compaction) cannot be
// recovered from here and still end the process.
func (s *Store) commit(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			perr, ok := r.(error)
			if fe, isFatal := r.(fatalError); isFatal {
				perr, ok = errors.New(fe.msg), true
			}
			if !ok {
				perr = fmt.Errorf("%v", r)
			}
			s.wedged.Store(true)
			err = s.halt(what, perr)
		}
	}()
	return f()
}

// halt records cause as the failure that stops the store and returns the
// error every write gets from now on (store.ErrFailed, and the cause).
func (s *Store) halt(what string, cause error) error {
	err := fmt.Errorf("store/pebble: %s %s: %w: %w", what, s.dir, store.ErrFailed, cause)
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error(err.Error())
	}
	return *s.failed.Load()
}

// Load implements store.Store.
func (s *Store) Load(now time.Time) (*store.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, store.ErrClosed
	}
	raw, err := s.readAll()
	if err != nil {
		if isDamage(s.dir, err) && !errors.Is(err, store.ErrCorrupt) {
			err = fmt.Errorf("%w: %w", store.ErrCorrupt, err)
		}
		return nil, fmt.Errorf("store/pebble: load %s: %w", s.dir, err)
	}
	st, drops, refs, err := prune.Prune(raw, now)
	if err != nil {
		return nil, fmt.Errorf("store/pebble: load %s: %w", s.dir, err)
	}
	if !drops.Empty() {
		if err := s.applyDrops(drops); err != nil {
			return nil, fmt.Errorf("store/pebble: load %s: delete expired records: %w", s.dir, err)
		}
	}
	s.refs = refs
	for _, c := range drops.Sessions {
		delete(s.maxSeq, c)
	}
	return st, nil
}

func (s *Store) applyDrops(d *prune.Drops) error {
	s.live = liveEntries{} // it may name entries dropped here
	pb := s.db.NewBatch()
	for _, id := range d.Sessions {
		if err := deleteSessionKeys(pb, id); err != nil {
			return errors.Join(err, pb.Close())
		}
	}
	for _, k := range d.Entries {
		if err := pb.Delete(queueKey(k.ClientID, k.Seq), nil); err != nil {
			return errors.Join(err, pb.Close())
		}
	}
	for _, id := range d.Messages {
		if err := pb.Delete(messageKey(id), nil); err != nil {
			return errors.Join(err, pb.Close())
		}
	}
	for _, t := range d.Retained {
		if err := pb.Delete(retainedKey(t), nil); err != nil {
			return errors.Join(err, pb.Close())
		}
	}
	return errors.Join(s.db.Apply(pb, s.writeOptions()), pb.Close())
}

func (s *Store) writeOptions() *pebbledb.WriteOptions {
	if s.policy == store.SyncAlways {
		return pebbledb.Sync
	}
	return pebbledb.NoSync
}

// readAll reads every record.
func (s *Store) readAll() (*prune.Raw, error) {
	raw := &prune.Raw{
		Sessions: make(map[string]*store.SessionState),
		Messages: make(map[uint64]*store.Message),
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return nil, err
	}
	var (
		lastID []byte // client id of the previous per-client key: consecutive keys share it
		cur    *store.SessionState
		curID  string
	)
	sessionOf := func(id []byte) *store.SessionState {
		if cur != nil && string(id) == string(lastID) {
			return cur
		}
		curID = string(id)
		lastID = append(lastID[:0], id...)
		cur = raw.Sessions[curID]
		if cur == nil {
			cur = &store.SessionState{}
			raw.Sessions[curID] = cur
		}
		return cur
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		if err := s.readRecord(raw, k, v, sessionOf, &curID); err != nil {
			return nil, errors.Join(fmt.Errorf("%w: record %q: %w", store.ErrCorrupt, k, err), it.Close())
		}
	}
	return raw, errors.Join(it.Error(), it.Close())
}

func (s *Store) readRecord(raw *prune.Raw, k, v []byte, sessionOf func([]byte) *store.SessionState,
	curID *string) error {
	if len(k) == 0 {
		return errBadKey
	}
	switch k[0] {
	case kindMeta:
		return nil
	case kindSession:
		id := string(k[1:])
		sess, err := decodeSession(id, append([]byte(nil), v...)) // the will aliases its bytes
		if err != nil {
			return err
		}
		ss := raw.Sessions[id]
		if ss == nil {
			ss = &store.SessionState{}
			raw.Sessions[id] = ss
		}
		ss.Session = sess
	case kindMessage:
		if len(k) != 9 {
			return errBadKey
		}
		id := binary.BigEndian.Uint64(k[1:])
		m, err := decodeMessage(id, append([]byte(nil), v...))
		if err != nil {
			return err
		}
		raw.Messages[id] = m
	case kindRetained:
		m, err := decodeRetained(append([]byte(nil), v...))
		if err != nil {
			return err
		}
		if m.Publish.Topic != string(k[1:]) {
			return fmt.Errorf("%w: retained topic %q under another key", errBadValue, m.Publish.Topic)
		}
		raw.Retained = append(raw.Retained, m)
	case kindQueue, kindInbound, kindSubscription:
		id, rest, err := splitClient(k)
		if err != nil {
			return err
		}
		ss := sessionOf(id)
		switch k[0] {
		case kindQueue:
			if len(rest) != 8 {
				return errBadKey
			}
			e, err := decodeQueueEntry(*curID, binary.BigEndian.Uint64(rest), v)
			if err != nil {
				return err
			}
			ss.Queue = append(ss.Queue, e)
		case kindInbound:
			if len(rest) != 2 {
				return errBadKey
			}
			ss.Inbound = append(ss.Inbound, binary.BigEndian.Uint16(rest))
		default:
			group, filter, err := parseSubscriptionRest(rest)
			if err != nil {
				return err
			}
			sub, err := decodeSubscription(*curID, string(group), string(filter), v)
			if err != nil {
				return err
			}
			ss.Subscriptions = append(ss.Subscriptions, sub)
		}
	default:
		return errBadKey
	}
	return nil
}

// Close implements store.Store: it waits for Apply calls in progress, syncs
// the write-ahead log and closes the database. A second Close returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.wedged.Load() {
		// A commit panicked (commit): Pebble holds a lock of its commit
		// pipeline for good, and closing it (or a sync, or waiting for a
		// sync loop stuck in it) could wait forever. Its files stay as the
		// last successful write left them; the next Open replays the log.
		close(s.stop)
		return *s.failed.Load()
	}
	s.inflight.Wait()
	close(s.stop)
	s.stopped.Wait()
	var errs []error
	if s.policy != store.SyncAlways {
		if err := s.db.LogData(nil, pebbledb.Sync); err != nil {
			errs = append(errs, fmt.Errorf("store/pebble: sync %s: %w", s.dir, err))
		}
	}
	if err := closeDB(s.db); err != nil {
		errs = append(errs, fmt.Errorf("store/pebble: close %s: %w", s.dir, err))
	}
	return errors.Join(errs...)
}

// MoveAside renames the store directory dir to a new name beside it
// (dir.damaged-<UTC time>, with a -N suffix if that exists) and returns the
// new path, so that the broker can start with an empty store and the damaged
// one stays for inspection.
func MoveAside(dir string) (string, error) {
	dir = filepath.Clean(dir)
	base := dir + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
	for i := range 100 {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		_, err := os.Lstat(name)
		if err == nil {
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("store/pebble: move %s aside: %w", dir, err)
		}
		if err := os.Rename(dir, name); err != nil {
			return "", fmt.Errorf("store/pebble: move %s aside: %w", dir, err)
		}
		return name, nil
	}
	return "", fmt.Errorf("store/pebble: move %s aside: too many directories named %s*", dir, base)
}

// The store holds retained messages, queued payloads, wills and user names:
// only the user mqttd runs as may read it. Files are 0600 and directories
// 0700, whatever the umask.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// privateFS is a vfs.FS whose new files and directories are private to
// their owner. The store directory is made 0700 before Pebble opens it, so a
// file is never reachable by others in the moment between its creation and
// its chmod.
type privateFS struct{ vfs.FS }

func (p privateFS) private(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	if err := os.Chmod(name, fileMode); err != nil {
		return nil, errors.Join(fmt.Errorf("store/pebble: %w", err), f.Close())
	}
	return f, nil
}

func (p privateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(name, c)
	return p.private(name, f, err)
}

func (p privateFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := p.FS.OpenReadWrite(name, c, opts...)
	return p.private(name, f, err)
}

func (p privateFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.ReuseForWrite(oldname, newname, c)
	return p.private(newname, f, err)
}

func (p privateFS) MkdirAll(dir string, _ os.FileMode) error {
	if err := p.FS.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	return os.Chmod(dir, dirMode)
}

func (p privateFS) Lock(name string) (io.Closer, error) {
	l, err := p.FS.Lock(name)
	if err != nil {
		return l, err
	}
	if err := os.Chmod(name, fileMode); err != nil {
		return nil, errors.Join(fmt.Errorf("store/pebble: %w", err), l.Close())
	}
	return l, nil
}

func (p privateFS) Unwrap() vfs.FS { return p.FS }

// prepareDir creates dir (0700) or, when it exists, makes it and everything
// in it private (a store written by an older mqttd was 0644/0755) and
// checks that this process can write every file in it: Pebble panics, and
// so crashes the broker, when it cannot create or reuse a file later, so a
// store it cannot write is refused now, with the file and what to do.
func prepareDir(dir string) error {
	// Parents created here are 0755 (as pebble made them), so that a store
	// directory created by root can be given to the user mqttd switches to.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return openError(dir, err)
	}
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return openError(dir, err)
	}
	euid := os.Geteuid()
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return openError(dir, err)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return openError(dir, err)
		}
		mode := os.FileMode(fileMode)
		if d.IsDir() {
			mode = dirMode
		}
		owner := fileOwner(info)
		if info.Mode().Perm()&^mode != 0 && (owner == euid || euid == 0) {
			if err := os.Chmod(path, info.Mode().Perm()&mode); err != nil {
				return openError(dir, err)
			}
		}
		if err := writable(path, d.IsDir()); err != nil {
			return fmt.Errorf("store/pebble: cannot open the store in %s: %s is not writable by uid %d (owner uid %d): %w; "+
				"chown -R the directory to the user mqttd runs as", dir, path, euid, owner, err)
		}
		return nil
	})
}
