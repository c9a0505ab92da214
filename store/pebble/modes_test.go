package pebble

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mqttd/mqttd/store"
)

// checkPrivate fails for any file under dir that is not 0600 or directory
// that is not 0700, and returns how many files it saw.
func checkPrivate(t *testing.T, dir string) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			files++
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The store holds retained messages, queued payloads, wills and user names:
// its directory is 0700 and every file Pebble writes (WAL, tables, MANIFEST,
// OPTIONS, LOCK, markers) 0600, whatever the umask, also after a flush and
// a reopen that write new files.
func TestStoreFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data", "store")
	s := open(t, dir, store.SyncAlways)
	fill(t, s)
	if err := s.db.Flush(); err != nil { // a table file, a new WAL and MANIFEST edits
		t.Fatal(err)
	}
	closeStore(t, s)
	s = open(t, dir, store.SyncAlways)
	fill(t, s)
	closeStore(t, s)
	if n := checkPrivate(t, dir); n < 5 {
		t.Errorf("only %d files in the store", n)
	}
	if fi, err := os.Stat(filepath.Dir(dir)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("parent created by Open: %v %v, want 0755 (so that root can hand the store to another user)", fi.Mode(), err)
	}
}

// A store written world-readable (by an older mqttd) is made private when
// opened.
func TestOpenMakesOldStorePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := open(t, dir, store.SyncAlways)
	fill(t, s)
	closeStore(t, s)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, 0o755)
		}
		return os.Chmod(path, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, store.SyncAlways)
	closeStore(t, s)
	checkPrivate(t, dir)
}
