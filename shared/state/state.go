// Package state keeps small documents (export checkpoints, webhook
// de-duplication records) with optimistic concurrency: every Put names the
// version it replaces, so of two concurrent writers one wins and the other
// gets ErrConflict instead of corrupting the state. Lambda gives no
// singleton guarantee, and two Function App instances can overlap.
package state

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
	"sync"
)

var (
	// ErrNotFound: no document under that key.
	ErrNotFound = errors.New("state: not found")
	// ErrConflict: the document changed since it was read (or exists, for a create).
	ErrConflict = errors.New("state: changed by another writer")
)

// Store is a key-value store with versions.
type Store interface {
	// Get returns a document and its version.
	Get(ctx context.Context, key string) (data []byte, version string, err error)
	// Put stores data if the current version is ifVersion ("" means the
	// document must not exist yet) and returns the new version.
	Put(ctx context.Context, key string, data []byte, ifVersion string) (version string, err error)
	// Delete removes a document (missing is not an error).
	Delete(ctx context.Context, key string) error
}

var keyRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9._@-]+(/[A-Za-z0-9._@-]+)*$`) })

// CheckKey refuses keys that could escape the store's root.
func CheckKey(key string) error {
	if !keyRe().MatchString(key) || strings.Contains(key, "..") || len(key) > 512 {
		return fmt.Errorf("state: invalid key %q", key)
	}
	return nil
}

// Open returns the store a STATE_STORE URL names: file:///path, or an Azure
// Blob container URL (https://<account>.blob.core.windows.net/<container>,
// or Azurite's http://127.0.0.1:10000/<account>/<container>).
func Open(raw string, opts BlobOptions) (Store, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("STATE_STORE=%q is not a URL: %w", raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Path == "" || !path.IsAbs(u.Path) {
			return nil, fmt.Errorf("STATE_STORE=%q: use an absolute path, file:///var/lib/defender-functions/state", raw)
		}
		return NewFileStore(u.Path)
	case "https", "http":
		return NewBlobStore(raw, opts)
	}
	return nil, fmt.Errorf("STATE_STORE=%q: use file:///path or an Azure Blob container URL", raw)
}
