package broker

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// A full (or failing) disk under the store (Options.Store).
//
// The broker refuses the PUBLISH packets whose message it would have to
// store — QoS 1/2 and retained ones — while either
//   - the file system of Options.StoreDir has less than
//     Options.StoreMinFreeBytes free (statfs, checked at start and every
//     diskCheckEvery; Pebble cannot go on once a write to its log failed:
//     store/pebble then refuses every write with store.ErrFailed until a
//     restart, so this stops the writes before the disk is completely
//     full), or
//   - a store write failed less than storeRetryAfter ago (then the next
//     burst tries again: the store heals by itself when space comes back).
//
// Refused is: a v5 client gets PUBACK/PUBREC 0x97 Quota Exceeded
// [MQTT-3.4.2-1] [MQTT-3.5.2-1] (a retained QoS 0 PUBLISH has no
// acknowledgement: DISCONNECT 0x97); a 3.x client, whose acknowledgements
// cannot say no, is disconnected without one, so that it sends the message
// again later. The refused message is not routed: nobody receives a message
// its publisher was told was refused. The test is made before routing, when
// the subscribers are not known yet, so a QoS 1/2 message that would only
// have reached clean sessions is refused too.
//
// A store write that fails at the end of a burst (conn.flushPending) still
// disconnects the client without acknowledging (its messages were routed
// already; the client re-sends them).

const (
	diskCheckEvery  = 2 * time.Second
	storeRetryAfter = time.Second
	// DefaultStoreMinFreeBytes is the free space below which store-needing
	// publishes are refused (Options.StoreMinFreeBytes).
	DefaultStoreMinFreeBytes = 64 << 20
)

// errStoreFull refuses a PUBLISH that must be stored while the store cannot
// take it.
var errStoreFull = errors.New("broker: the store is full or failing; message refused")

// diskGuard is the broker-wide state of the store's disk.
type diskGuard struct {
	dir     string
	minFree int64

	low      atomic.Bool  // statfs: free space below minFree
	failedAt atomic.Int64 // unix nanoseconds of the last failed store write; 0 after a success

	mu      sync.Mutex // serializes the transition logs
	failing bool
}

// startDiskGuard sets the guard up when the server has a store; with
// StoreDir and a threshold, it checks the free space now and then every
// diskCheckEvery until Shutdown.
func (s *Server) startDiskGuard() {
	if s.opts.Store == nil {
		return
	}
	d := &diskGuard{dir: s.opts.StoreDir, minFree: s.opts.StoreMinFreeBytes}
	s.disk = d
	if d.dir == "" || d.minFree <= 0 {
		return
	}
	if _, err := freeBytes(d.dir); errors.Is(err, errors.ErrUnsupported) {
		s.log.Warn("persistence_min_free_bytes is not supported on this system: relying on the store's write errors",
			"dir", d.dir)
		return
	}
	s.checkDisk(d)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(diskCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.checkDisk(d)
			}
		}
	}()
}

// checkDisk reads the free space of the store's file system and logs a
// change of state, once per transition.
func (s *Server) checkDisk(d *diskGuard) {
	free, err := freeBytes(d.dir)
	if err != nil {
		return // the store reports its own failures
	}
	low := free < d.minFree
	if d.low.Swap(low) == low {
		return
	}
	if low {
		s.log.Error("STORE DISK ALMOST FULL: refusing QoS 1/2 and retained messages until space is freed",
			"dir", d.dir, "free_bytes", free, "persistence_min_free_bytes", d.minFree)
	} else {
		s.log.Warn("store disk has free space again: accepting QoS 1/2 and retained messages",
			"dir", d.dir, "free_bytes", free)
	}
}

// noteApply records the outcome of a store write (storeApply: a read
// burst's, a CONNECT's, a will's, a refill's, a detach's). Only an error of
// the disk itself (full, over quota, read-only, failing) or of a store that
// stopped (store.ErrFailed) turns refusals on: a write the store refuses
// for its own reasons says nothing about the next one.
func (s *Server) noteApply(err error) {
	d := s.disk
	if d == nil || (err != nil && !isDiskError(err)) {
		return
	}
	if err == nil {
		if d.failedAt.Load() == 0 {
			return
		}
		d.failedAt.Store(0)
	} else {
		d.failedAt.Store(time.Now().UnixNano())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failing == (err != nil) {
		return
	}
	d.failing = err != nil
	if err != nil {
		s.log.Error("STORE WRITES FAILING: refusing QoS 1/2 and retained messages until a write succeeds",
			"err", err, "retry_every", storeRetryAfter.String())
	} else {
		s.log.Warn("store writes work again: accepting QoS 1/2 and retained messages")
	}
}

// refusing reports whether messages that must be stored are refused now.
func (d *diskGuard) refusing() bool {
	if d == nil {
		return false
	}
	if d.low.Load() {
		return true
	}
	at := d.failedAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < storeRetryAfter
}

// overload is handlePublish's check of an accepted PUBLISH against the
// memory limit (memlimit.go) and the store's disk. drop: the message is
// dropped silently (QoS 0 past the memory limit). rc and why refuse it
// (v5 QoS 1/2). err ends the connection (3.x, or a v5 QoS 0 PUBLISH that
// must be stored).
func (c *conn) overload(p *packet.Publish) (rc packet.ReasonCode, why string, drop bool, err error) {
	if c.memShed(p) {
		return packet.Success, "", true, nil
	}
	if (p.QoS == 0 && !p.Retain) || !c.srv.disk.refusing() {
		return packet.Success, "", false, nil
	}
	if p.QoS == 2 && c.sess.holdsInbound(p.PacketID) {
		// A re-sent PUBLISH whose id is held was routed before: PUBREC again.
		return packet.Success, "", false, nil
	}
	if c.version != packet.V5 {
		return 0, "", false, errStoreFull // 3.x: no acknowledgement, the client re-sends
	}
	if p.QoS == 0 {
		return 0, "", false, errors.Join(packet.QuotaExceeded, errStoreFull)
	}
	return packet.QuotaExceeded, "the broker's store is full", false, nil
}

// acksNeedStore reports whether an acknowledgement among acks tells the
// client that something was stored (a PUBLISH taken, a PUBREL or a
// subscription done): if the burst's writes failed, those must not go. A
// PINGRESP alone needs nothing.
func acksNeedStore(acks []packet.Packet) bool {
	for _, p := range acks {
		if _, ping := p.(*packet.Pingresp); !ping {
			return true
		}
	}
	return false
}

// isDiskError reports whether err comes from the disk under the store
// rather than from the store's own checks.
func isDiskError(err error) bool {
	for _, e := range []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO, store.ErrFailed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
