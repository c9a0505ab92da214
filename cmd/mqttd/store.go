package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// storeDirName is the store's directory inside persistence_location, so
// that a location shared with Mosquitto (its mosquitto.db) works unchanged.
const storeDirName = "mqttd-store"

// storeDir is where the store lives: persistence_location, or a "data"
// directory beside the configuration file (the working directory without
// one).
func storeDir(location, configFile string) string {
	if location == "" {
		location = "data"
		if configFile != "" {
			location = filepath.Join(filepath.Dir(configFile), "data")
		}
	}
	return filepath.Join(location, storeDirName)
}

// persistence says how the store is opened.
type persistence struct {
	dir       string
	sync      string // always, batch, never
	moveAside bool   // persistence_on_corruption move-aside
	logger    *slog.Logger
}

// openStore opens the store and restores srv from it. A damaged store is
// refused with an error that names the directory and what to do, or, with
// move-aside, renamed and replaced by an empty one, loudly.
func (p persistence) openStore(newServer func(store.Store) *broker.Server) (*broker.Server, store.Store, error) {
	policy, err := store.ParseSyncPolicy(p.sync)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		st, err := pebble.Open(p.dir, pebble.Options{Sync: policy, Logger: p.logger})
		var srv *broker.Server
		if err == nil {
			srv = newServer(st)
			if err = srv.Restore(); err != nil {
				srv.Shutdown(context.Background())
				st.Close()
			} else {
				return srv, st, nil
			}
		}
		if !errors.Is(err, store.ErrCorrupt) {
			return nil, nil, fmt.Errorf("opening the store in %s: %w", p.dir, err)
		}
		if !p.moveAside || attempt > 0 {
			return nil, nil, fmt.Errorf("the store in %s is damaged (%v); move the directory aside to start empty, "+
				"or set persistence_on_corruption move-aside", p.dir, err)
		}
		moved, merr := pebble.MoveAside(p.dir)
		if merr != nil {
			return nil, nil, fmt.Errorf("the store in %s is damaged (%v) and could not be moved aside: %w", p.dir, err, merr)
		}
		p.logger.Error("the store was damaged: moved it aside and starting EMPTY; persistent sessions, "+
			"queued messages and retained messages from before are not loaded", "dir", p.dir, "moved_to", moved, "err", err)
	}
}
