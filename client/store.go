package client

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mqttd/mqttd/packet"
)

// Store keeps outgoing QoS 1 and 2 messages from the moment Publish accepts
// them until the server has acknowledged them, so that a client created
// later with the same Store sends what an earlier one could not. The client
// calls it from several goroutines, but never concurrently for the same
// packet id. Two clients must not use one Store at the same time.
type Store interface {
	// Put inserts or replaces the message with m.Publish.PacketID.
	Put(m *StoredMessage) error
	// Delete removes the message with packet id id; a missing one is no error.
	Delete(id uint16) error
	// Load returns all stored messages (in any order).
	Load() ([]*StoredMessage, error)
}

// StoredMessage is one outgoing message in a Store.
type StoredMessage struct {
	Seq      uint64          // publish order: messages are re-sent by ascending Seq
	Released bool            // QoS 2: PUBREC received, only PUBREL is left to send
	Publish  *packet.Publish // with its PacketID; do not modify
}

// FileStore is a Store that keeps each message in its own file in a
// directory, written to a temporary file and renamed into place, so a
// message is either stored whole or not at all. It holds a lock on the
// directory (the file "lock" in it) from NewFileStore until Close, so that
// two clients, in one process or in two, cannot share it.
type FileStore struct {
	dir  string
	lock *os.File
	// NoSync skips fsync: faster, and still safe against the client
	// process dying, but not against the machine losing power.
	NoSync bool
}

// NewFileStore returns a FileStore in dir, creating the directory if
// needed, and locks the directory: while another FileStore has it open
// (and until that one's Close), NewFileStore fails with ErrStoreLocked.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: file store: %w", err)
	}
	l, err := lockDir(filepath.Join(dir, fileStoreLock))
	if err != nil {
		return nil, fmt.Errorf("client: file store %s: %w", dir, err)
	}
	return &FileStore{dir: dir, lock: l}, nil
}

// Close releases the directory's lock. Close the client that uses the
// store first; the stored messages stay for the next FileStore.
func (s *FileStore) Close() error {
	if s.lock == nil {
		return nil
	}
	err := unlockDir(s.lock)
	s.lock = nil
	if err != nil {
		return fmt.Errorf("client: file store: %w", err)
	}
	return nil
}

const (
	fileStoreMagic   = "MQCS"
	fileStoreVersion = 1
	fileStoreSuffix  = ".msg"
	fileStoreLock    = "lock"
	fileStoreHeader  = 4 + 1 + 1 + 8 // magic, version, flags, seq
)

// ErrCorruptStore is returned by FileStore.Load for a file it cannot read.
var ErrCorruptStore = errors.New("client: corrupt store file")

// ErrStoreLocked is returned by NewFileStore for a directory that another
// FileStore holds.
var ErrStoreLocked = errors.New("client: store directory in use by another client")

func (s *FileStore) path(id uint16) string {
	return filepath.Join(s.dir, fmt.Sprintf("%05d%s", id, fileStoreSuffix))
}

// Put writes m to its file.
func (s *FileStore) Put(m *StoredMessage) error {
	b := make([]byte, fileStoreHeader, fileStoreHeader+len(m.Publish.Payload)+len(m.Publish.Topic)+16)
	copy(b, fileStoreMagic)
	b[4] = fileStoreVersion
	if m.Released {
		b[5] = 1
	}
	binary.BigEndian.PutUint64(b[6:], m.Seq)
	// The PUBLISH is kept in its v5 encoding, which holds every field of
	// every version.
	b, err := m.Publish.Encode(b, packet.V5)
	if err != nil {
		return fmt.Errorf("client: file store: %w", err)
	}
	f, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("client: file store: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil && !s.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(m.Publish.PacketID))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("client: file store: %w", err)
	}
	return s.syncDir()
}

// Delete removes the file of packet id id.
func (s *FileStore) Delete(id uint16) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("client: file store: %w", err)
	}
	return nil
}

func (s *FileStore) syncDir() error {
	if s.NoSync {
		return nil
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("client: file store: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("client: file store: %w", err)
	}
	return nil
}

// Load reads every stored message, ordered by Seq, and removes temporary
// files that a crash left behind.
func (s *FileStore) Load() ([]*StoredMessage, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("client: file store: %w", err)
	}
	var out []*StoredMessage
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			_ = os.Remove(filepath.Join(s.dir, name))
			continue
		}
		idText, ok := strings.CutSuffix(name, fileStoreSuffix)
		if !ok || e.IsDir() {
			continue
		}
		id, err := strconv.ParseUint(idText, 10, 16)
		if err != nil || id == 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, fmt.Errorf("client: file store: %w", err)
		}
		m, err := decodeStored(b)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrCorruptStore, name, err)
		}
		if m.Publish.PacketID != uint16(id) {
			return nil, fmt.Errorf("%w %s: holds packet id %d", ErrCorruptStore, name, m.Publish.PacketID)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *StoredMessage) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out, nil
}

func decodeStored(b []byte) (*StoredMessage, error) {
	if len(b) < fileStoreHeader || string(b[:4]) != fileStoreMagic {
		return nil, errors.New("bad header")
	}
	if b[4] != fileStoreVersion {
		return nil, fmt.Errorf("format version %d", b[4])
	}
	m := &StoredMessage{Released: b[5]&1 != 0, Seq: binary.BigEndian.Uint64(b[6:])}
	body := b[fileStoreHeader:]
	p, err := packet.Read(bufio.NewReaderSize(bytes.NewReader(body), 512), packet.V5, len(body))
	if err != nil {
		return nil, err
	}
	pub, ok := p.(*packet.Publish)
	if !ok {
		return nil, fmt.Errorf("holds a %s", p.Type())
	}
	m.Publish = pub
	return m, nil
}
