package state_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/shared/state"
)

func stores(t *testing.T) map[string]state.Store {
	fs, err := state.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	az := emulators.StartAzurite(t)
	c, err := container.NewClientFromConnectionString(az.ConnectionString, "state", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	bs, err := state.Open(az.BlobURL+"/state", state.BlobOptions{ConnectionString: az.ConnectionString})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]state.Store{"file": fs, "blob": bs}
}

func TestOptimisticConcurrency(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if _, _, err := s.Get(ctx, "a/b.json"); !errors.Is(err, state.ErrNotFound) {
				t.Fatalf("missing: %v", err)
			}
			v1, err := s.Put(ctx, "a/b.json", []byte(`{"n":1}`), "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Put(ctx, "a/b.json", []byte(`{"n":9}`), ""); !errors.Is(err, state.ErrConflict) {
				t.Fatalf("second create: %v", err)
			}
			v2, err := s.Put(ctx, "a/b.json", []byte(`{"n":2}`), v1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Put(ctx, "a/b.json", []byte(`{"n":9}`), v1); !errors.Is(err, state.ErrConflict) {
				t.Fatalf("stale version: %v", err)
			}
			b, v, err := s.Get(ctx, "a/b.json")
			if err != nil || string(b) != `{"n":2}` || v != v2 {
				t.Fatalf("get: %s %s %v", b, v, err)
			}
			// Ten writers from the same version: exactly one wins.
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins := 0
			for i := 0; i < 10; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := s.Put(ctx, "a/b.json", []byte(`{"n":3}`), v2); err == nil {
						mu.Lock()
						wins++
						mu.Unlock()
					} else if !errors.Is(err, state.ErrConflict) {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if wins != 1 {
				t.Fatalf("%d writers won", wins)
			}
			for _, bad := range []string{"../x", "/abs", "a//b", "a/../b", ""} {
				if _, err := s.Put(ctx, bad, nil, ""); err == nil {
					t.Errorf("key %q accepted", bad)
				}
			}
			if err := s.Delete(ctx, "a/b.json"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Get(ctx, "a/b.json"); !errors.Is(err, state.ErrNotFound) {
				t.Fatalf("after delete: %v", err)
			}
		})
	}
}
