package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// FileStore keeps documents as files. Versions are content hashes; an
// exclusive flock on the store's lock file makes check-and-write atomic
// across processes on one machine.
type FileStore struct{ dir string }

// NewFileStore opens (and creates) a directory store.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return &FileStore{dir: dir}, nil
}

func version(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:12])
}

func (f *FileStore) path(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(f.dir, filepath.FromSlash(key)), nil
}

func (f *FileStore) Get(ctx context.Context, key string) ([]byte, string, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", ErrNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("state: %w", err)
	}
	return b, version(b), nil
}

func (f *FileStore) lock() (func(), error) {
	l, err := os.OpenFile(filepath.Join(f.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := syscall.Flock(int(l.Fd()), syscall.LOCK_EX); err != nil {
		l.Close()
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	return func() { syscall.Flock(int(l.Fd()), syscall.LOCK_UN); l.Close() }, nil
}

func (f *FileStore) Put(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	p, err := f.path(key)
	if err != nil {
		return "", err
	}
	unlock, err := f.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	cur, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if ifVersion != "" {
			return "", ErrConflict
		}
	case err != nil:
		return "", fmt.Errorf("state: %w", err)
	case version(cur) != ifVersion:
		return "", ErrConflict
	}
	if err := WriteFileDurable(p, data); err != nil {
		return "", fmt.Errorf("state: %w", err)
	}
	return version(data), nil
}

func (f *FileStore) Delete(ctx context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	unlock, err := f.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// WriteFileDurable writes a file so that after it returns the content is on
// disk under its name, whole or not at all: a temporary file, fsync, rename,
// fsync of the directory.
func WriteFileDurable(p string, data []byte) error {
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
