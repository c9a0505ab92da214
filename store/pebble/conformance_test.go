package pebble

import (
	"testing"

	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/storetest"
)

func TestConformance(t *testing.T) {
	for _, policy := range []store.SyncPolicy{store.SyncAlways, store.SyncBatch, store.SyncNever} {
		t.Run(policy.String(), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				s, err := Open(t.TempDir(), Options{Sync: policy})
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return s
			})
		})
	}
}
