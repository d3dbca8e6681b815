package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// FileSink writes one file per object under a directory. Each file is
// written to a temporary name and renamed (a reader never sees half of
// one). It is a Syncer: one syncfs makes everything written before it
// durable, at the cost of a single flush instead of one fsync per file.
type FileSink struct{ dir string }

// NewFileSink opens (and creates) a directory sink.
func NewFileSink(dir string) (*FileSink, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	return &FileSink{dir: dir}, nil
}

func (s *FileSink) String() string { return "file://" + s.dir }

func (s *FileSink) Write(ctx context.Context, objs []Object) error {
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := checkName(o.Name); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(s.dir, filepath.FromSlash(o.Name)), o.Data); err != nil {
			return fmt.Errorf("sink: write %s: %w", o.Name, err)
		}
	}
	return nil
}

// writeFile writes data to a unique temporary name beside p (two runs may
// write the same version at once) and renames it over p. It calls the
// system directly: os.CreateTemp and os.Rename add an Lstat and a poller
// registration to each file, a fifth of the export's time in the sink.
func writeFile(p string, data []byte) error {
	dir := filepath.Dir(p)
	var tmp string
	var fd int
	made, collisions := false, 0
	for {
		tmp = filepath.Join(dir, "."+filepath.Base(p)+"."+strconv.FormatUint(rand.Uint64(), 36)+".tmp")
		var err error
		// 0600, as os.CreateTemp made them: incidents are for the sink's owner.
		fd, err = unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		if err == nil {
			break
		}
		switch {
		case err == unix.ENOENT && !made: // the day's directory is new
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return err
			}
			made = true
		case err == unix.EEXIST && collisions < 3:
			collisions++
		case err == unix.EINTR:
		default:
			return &os.PathError{Op: "open", Path: tmp, Err: err}
		}
	}
	werr := writeAll(fd, data)
	cerr := unix.Close(fd)
	if err := errors.Join(werr, cerr); err != nil {
		unix.Unlink(tmp)
		return err
	}
	if err := unix.Rename(tmp, p); err != nil {
		unix.Unlink(tmp)
		return &os.LinkError{Op: "rename", Old: tmp, New: p, Err: err}
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// Exists says whether a file is there (renamed into place: whole).
func (s *FileSink) Exists(ctx context.Context, name string) (bool, error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	_, err := os.Stat(filepath.Join(s.dir, filepath.FromSlash(name)))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sink: %w", err)
	}
	return true, nil
}

// Sync makes every file written so far durable.
func (s *FileSink) Sync(ctx context.Context) error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("sink: sync: %w", err)
	}
	return nil
}
