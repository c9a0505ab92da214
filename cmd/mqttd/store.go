package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

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

// prepareStoreDir is run as root before switching to a: it creates the
// store directory dir (0700) and any missing parent, owned by a, and gives a
// what root owns in an existing store (one written by an mqttd that ran as
// root), so that the store opened after the switch is a's. It fails,
// changing nothing, when a cannot search every existing parent of dir.
func prepareStoreDir(dir string, a *account) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("store directory %s: %w", dir, err)
	}
	var missing []string
	p := abs
	for {
		_, err := os.Lstat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store directory %s: %w", dir, err)
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	// Every existing directory on the way must be searchable by a.
	for q := filepath.Dir(abs); ; q = filepath.Dir(q) {
		if fi, err := os.Stat(q); err == nil && !searchable(fi, a) {
			return fmt.Errorf("user %s (uid %d) cannot reach the store directory %s: %s is mode %04o owned by uid %d; "+
				"make it searchable (chmod o+x) or set persistence_location elsewhere",
				a.name, a.uid, abs, q, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
		}
		if filepath.Dir(q) == q {
			break
		}
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("store directory %s: %w", dir, err)
	}
	for _, m := range missing {
		if err := os.Lchown(m, a.uid, a.gid); err != nil {
			return fmt.Errorf("store directory %s: %w", dir, err)
		}
	}
	return filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == 0 {
			if err := os.Lchown(path, a.uid, a.gid); err != nil {
				return fmt.Errorf("store directory %s: %w", dir, err)
			}
		}
		return nil
	})
}

// searchable reports whether the mode bits of directory fi let a search it
// (a has only its primary group once switched).
func searchable(fi fs.FileInfo, a *account) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case int(st.Uid) == a.uid:
		return perm&0o100 != 0
	case int(st.Gid) == a.gid:
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}
