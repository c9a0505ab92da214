package store

import (
	"errors"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

func TestParseSyncPolicy(t *testing.T) {
	tests := []struct {
		in   string
		want SyncPolicy
		err  bool
	}{
		{"always", SyncAlways, false},
		{"batch", SyncBatch, false},
		{"never", SyncNever, false},
		{"Always", 0, true},
		{"", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSyncPolicy(tc.in)
			if tc.err {
				if !errors.Is(err, ErrSyncPolicy) {
					t.Fatalf("ParseSyncPolicy(%q) error = %v, want ErrSyncPolicy", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSyncPolicy(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

func TestSessionExpired(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tests := []struct {
		name string
		s    Session
		want bool
	}{
		{"connected", Session{ExpiryInterval: 0}, false},
		{"never", Session{ExpiryInterval: NeverExpire, DisconnectedAt: now.Add(-1000 * time.Hour)}, false},
		{"zero interval ends at disconnect", Session{DisconnectedAt: now}, true},
		{"just before the end", Session{ExpiryInterval: 10, DisconnectedAt: now.Add(-9999 * time.Millisecond)}, false},
		{"at the end", Session{ExpiryInterval: 10, DisconnectedAt: now.Add(-10 * time.Second)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Expired(now); got != tc.want {
				t.Errorf("Expired = %t, want %t", got, tc.want)
			}
		})
	}
}

func TestMessageExpired(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tests := []struct {
		name   string
		expiry time.Time
		want   bool
	}{
		{"no expiry", time.Time{}, false},
		{"future", now.Add(time.Millisecond), false},
		{"now", now, true},
		{"past", now.Add(-time.Second), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &Message{Expiry: tc.expiry}
			if got := m.Expired(now); got != tc.want {
				t.Errorf("Expired = %t, want %t", got, tc.want)
			}
		})
	}
}

func TestBatch(t *testing.T) {
	var b Batch
	if !b.Empty() || b.Len() != 0 {
		t.Fatalf("zero Batch not empty")
	}
	b.PutSession(&Session{ClientID: "c"})
	b.PutMessage(&Message{ID: 1, Publish: &packet.Publish{Topic: "t"}})
	b.PutQueueEntry(&QueueEntry{ClientID: "c", Seq: 1, MessageID: 1})
	b.PutRetained(&Message{ID: 2, Publish: &packet.Publish{Topic: "r"}})
	b.DeleteSubscription("c", "g", "f")
	ops := b.Ops()
	if len(ops) != 5 || ops[0].Kind != OpPutSession || ops[3].Topic != "r" || ops[4].Group != "g" ||
		ops[4].Filter != "f" || ops[2].ClientID != "c" {
		t.Fatalf("ops = %+v", ops)
	}
	if err := b.Validate(func(uint64) bool { return false }); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	b.Reset()
	if !b.Empty() {
		t.Fatalf("Reset batch not empty")
	}
}

func TestBatchValidate(t *testing.T) {
	exists := func(id uint64) bool { return id == 5 }
	tests := []struct {
		name string
		fill func(b *Batch)
		ok   bool
	}{
		{"entry names a stored message", func(b *Batch) { b.PutQueueEntry(&QueueEntry{ClientID: "c", MessageID: 5}) }, true},
		{"entry names a message put before", func(b *Batch) {
			b.PutMessage(&Message{ID: 6, Publish: &packet.Publish{}})
			b.PutQueueEntry(&QueueEntry{ClientID: "c", MessageID: 6})
		}, true},
		{"entry names an unknown message", func(b *Batch) { b.PutQueueEntry(&QueueEntry{ClientID: "c", MessageID: 6}) }, false},
		{"entry without client", func(b *Batch) { b.PutQueueEntry(&QueueEntry{MessageID: 5}) }, false},
		{"session without client", func(b *Batch) { b.PutSession(&Session{}) }, false},
		{"subscription without client", func(b *Batch) { b.PutSubscription(&Subscription{}) }, false},
		{"inbound without client", func(b *Batch) { b.PutInbound("", 1) }, false},
		{"retained without publish", func(b *Batch) { b.ops = append(b.ops, Op{Kind: OpPutRetained, Message: &Message{}}) }, false},
		{"unknown kind", func(b *Batch) { b.ops = append(b.ops, Op{Kind: 99}) }, false},
		{"delete retained", func(b *Batch) { b.DeleteRetained("t") }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b Batch
			tc.fill(&b)
			err := b.Validate(exists)
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}
