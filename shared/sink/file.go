package sink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	if len(objs) == 0 {
		return nil
	}
	made := map[string]bool{}
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := checkName(o.Name); err != nil {
			return err
		}
		p := filepath.Join(s.dir, filepath.FromSlash(o.Name))
		dir := filepath.Dir(p)
		if !made[dir] {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return fmt.Errorf("sink: %w", err)
			}
			made[dir] = true
		}
		// A unique temporary name: two runs may write the same version at once.
		f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".*.tmp")
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		_, werr := f.Write(o.Data)
		cerr := f.Close()
		if werr != nil || cerr != nil {
			os.Remove(f.Name())
			return fmt.Errorf("sink: write %s: %w", o.Name, errors.Join(werr, cerr))
		}
		if err := os.Rename(f.Name(), p); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("sink: %w", err)
		}
	}
	return nil
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
