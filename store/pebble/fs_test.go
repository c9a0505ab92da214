package pebble

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// countingFS is the default file system, counting syncs of WAL files;
// while failWAL is set, writes and syncs of WAL files fail with EIO.
type countingFS struct {
	vfs.FS
	walSyncs atomic.Int64
	failWAL  atomic.Bool
}

func newCountingFS() *countingFS { return &countingFS{FS: vfs.Default} }

type countingFile struct {
	vfs.File
	n    *atomic.Int64
	fail *atomic.Bool
}

func (f countingFile) Write(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, fmt.Errorf("write WAL: %w", syscall.EIO)
	}
	return f.File.Write(p)
}

func (f countingFile) Sync() error {
	f.n.Add(1)
	if f.fail.Load() {
		return fmt.Errorf("sync WAL: %w", syscall.EIO)
	}
	return f.File.Sync()
}

func (f countingFile) SyncData() error {
	f.n.Add(1)
	if f.fail.Load() {
		return fmt.Errorf("sync WAL: %w", syscall.EIO)
	}
	return f.File.SyncData()
}

func (f countingFile) SyncTo(length int64) (bool, error) {
	f.n.Add(1)
	if f.fail.Load() {
		return false, fmt.Errorf("sync WAL: %w", syscall.EIO)
	}
	return f.File.SyncTo(length)
}

func (fs *countingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return countingFile{File: f, n: &fs.walSyncs, fail: &fs.failWAL}, nil
}

func (fs *countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *countingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

func (fs *countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}
