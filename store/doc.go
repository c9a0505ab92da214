// Package store is mqttd's persistence: the records a broker keeps across
// restarts, the Batch of changes it writes, and the Store interface that
// store/mem (in memory: tests, and "persistence false") and store/pebble (on
// disk, crash-safe: the default) implement.
//
// # What is stored
//
// Only what a restart needs, and only for persistent sessions: clean
// sessions and QoS 0 traffic never reach the store.
//
//   - Session: client id, username, protocol version, expiry interval, the
//     time of the disconnect, and the will (with its v5 properties, the will
//     delay among them).
//   - Subscription: the session's subscriptions, shared ones with their group.
//   - QueueEntry: each outgoing QoS 1/2 message of a session, queued or in
//     flight, with its packet id and State (Queued, PublishSent, PubrelSent),
//     in Seq order.
//   - Inbound QoS 2 packet ids awaiting PUBREL.
//   - Message: the body of a queued message (its v5 PUBLISH encoding), stored
//     once however many queues hold it.
//   - Retained messages, by topic, with their expiry.
//
// # Writing
//
// The broker collects the changes of one event in a Batch and applies it:
//
//	var b store.Batch
//	b.PutMessage(msg)                // once
//	for _, e := range entries {      // one per persistent session it goes to
//		b.PutQueueEntry(e)
//	}
//	if err := st.Apply(&b); err != nil { ... } // durable now: send PUBACK/PUBREC
//
// Apply is atomic and, under SyncAlways, durable when it returns: a QoS 1/2
// message bound for a persistent session is applied before the publisher is
// acknowledged. Apply is safe for concurrent use, and concurrent callers
// share one fsync (group commit), so many publishers cost about one sync per
// disk rotation, not one each. Message bodies are reference-counted by the
// queue entries that name them: the store deletes a body with the last entry
// that names it (DeleteQueueEntry, or DeleteSession, which also deletes the
// session's subscriptions, queue and inbound ids), and drops a body that no
// entry names at the end of the batch that put it.
//
// # Sync policy (persistence_sync)
//
//   - always (SyncAlways, the default): Apply returns once the write-ahead
//     log is synced. Nothing acknowledged is lost, even to a power cut.
//   - batch (SyncBatch): Apply returns once the batch is written to the OS;
//     the log is synced at most every sync interval (10 ms by default). A
//     crash of mqttd loses nothing; a power cut or kernel crash can lose
//     what was acknowledged in the last interval.
//   - never (SyncNever): the log is synced only at Close. A crash of mqttd
//     loses nothing; a power cut can lose everything since the OS last wrote
//     its cache back (typically up to 30 s on Linux).
//
// # Starting
//
// Load returns everything, after dropping (and deleting from the store)
// sessions that expired while the broker was down (returned in
// State.Expired, with the wills the broker may owe), queued messages whose
// expiry passed before delivery started, expired retained messages, and
// bodies that nothing names. State.NextMessageID is the first free message
// id. A session stored while connected (zero DisconnectedAt) is kept: the
// broker treats it as disconnected at startup.
//
// A store that cannot be opened gives an error naming the directory and what
// to do. A damaged one (from store/pebble's Open, or its Load) wraps
// ErrCorrupt; the broker refuses to start unless persistence_on_corruption
// is move-aside, in which case it renames the directory with
// pebble.MoveAside, logs the new name loudly, and opens an empty store:
//
//	s, err := pebble.Open(dir, opts)
//	if errors.Is(err, store.ErrCorrupt) && moveAside {
//		moved, merr := pebble.MoveAside(dir)
//		// log an error naming dir and moved, then pebble.Open(dir, opts) again
//	}
//
// Close flushes and closes the store: the next Open finds everything.
package store
