//go:build unix

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/mqttd/mqttd/config"
)

// defaultUser is the user a process started as root switches to without a
// `user` option, as in Mosquitto.
const defaultUser = "mosquitto"

// account is the user a root process switches to.
type account struct {
	name     string
	uid, gid int
	explicit bool // named by the user option, not the default
}

// targetAccount says which user a process started as root runs as: the
// `user` option, by default mosquitto. It returns nil to stay as it is: not
// started as root, `user root` (with a warning), or no user option and no
// mosquitto user (with a warning: Mosquitto would try nobody). A user named
// by the option that does not exist is an error.
func targetAccount(name string, log *slog.Logger) (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	explicit := name != ""
	if !explicit {
		name = defaultUser
	}
	if name == "root" {
		log.Warn("running as root (user root): every client-facing bug runs with full privileges; " +
			"set user to an unprivileged account")
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if explicit {
			return nil, fmt.Errorf("user %s: cannot drop privileges: %w", name, err)
		}
		log.Warn("started as root without a user option and user " + defaultUser + " does not exist: " +
			"mqttd keeps running AS ROOT; set user to an unprivileged account (or user root to keep root)")
		return nil, nil
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s: non-numeric uid or gid", name)
	}
	return &account{name: name, uid: uid, gid: gid, explicit: explicit}, nil
}

// switchUser, for a process started as root, gives the store directory
// (created if missing) to the account of targetAccount and switches to it.
// A store directory that user cannot reach is an error with the user
// option, and a loud warning and no switch with the default user (a
// configuration written for an mqttd that ran as root keeps working).
func switchUser(cfg *config.Config, storeDir string, log *slog.Logger) error {
	a, err := targetAccount(cfg.User, log)
	if a == nil || err != nil {
		return err
	}
	if cfg.Persistence {
		if err := prepareStoreDir(storeDir, a); err != nil {
			if a.explicit {
				return err
			}
			log.Warn("started as root without a user option: mqttd keeps running AS ROOT, because the default user " +
				a.name + " cannot use the store (" + err.Error() + "); set user (root to keep root)")
			return nil
		}
	}
	if cfg.Cluster.Enabled() { // the cluster's JetStream directory, beside the store
		if err := prepareStoreDir(clusterDir(storeDir), a); err != nil {
			return err
		}
	}
	// Go applies these to every thread of the process (Linux, Go >= 1.16).
	if err := syscall.Setgroups([]int{a.gid}); err != nil {
		return fmt.Errorf("user %s: setgroups: %w", a.name, err)
	}
	if err := syscall.Setgid(a.gid); err != nil {
		return fmt.Errorf("user %s: setgid: %w", a.name, err)
	}
	if err := syscall.Setuid(a.uid); err != nil {
		return fmt.Errorf("user %s: setuid: %w", a.name, err)
	}
	log.Info("dropped privileges", "user", a.name, "uid", a.uid, "gid", a.gid)
	return nil
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
