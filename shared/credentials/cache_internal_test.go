package credentials

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// counting is a fetch that issues tokens living life, and counts them.
type counting struct {
	n    atomic.Int32
	life time.Duration
}

func (c *counting) fetch(context.Context) (*Token, error) {
	c.n.Add(1)
	return &Token{AccessToken: "t", Expiry: time.Now().Add(c.life)}, nil
}

// refreshIn is the lifetime whose refresh time comes d after issue:
// min(life/2, life-minRemaining-10m) = d.
func refreshIn(d time.Duration) time.Duration { return d + minRemaining + 10*time.Minute }

// A hit under a deadline that ends before the token's refresh time reads
// no clock; any other hit reads it once, and a deadline never keeps a
// token past its refresh time.
func TestHitUnderDeadline(t *testing.T) {
	t.Parallel()
	c := NewCache(nil)
	f := &counting{life: refreshIn(time.Hour)}
	e, _ := c.source(Key{Tenant: "a"}, f, f.fetch)
	var reads atomic.Int32
	e.mono = func() int64 { reads.Add(1); return sinceEpoch() }
	first, err := e.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inside, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	beyond, cancel2 := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel2()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		reads int32
	}{
		{"deadline before the refresh time", inside, 0},
		{"no deadline", context.Background(), 1},
		{"deadline after the refresh time", beyond, 1},
	} {
		before := reads.Load()
		tok, err := e.Token(tc.ctx)
		if err != nil || tok != first {
			t.Fatalf("%s: %v, same token %v", tc.name, err, tok == first)
		}
		if got := reads.Load() - before; got != tc.reads {
			t.Errorf("%s: %d clock reads, want %d", tc.name, got, tc.reads)
		}
	}
	if f.n.Load() != 1 {
		t.Fatalf("%d fetches", f.n.Load())
	}

	// A token whose refresh time is 50 ms away: a call under a one-minute
	// deadline reads the clock, and once the time has come, refreshes.
	g := &counting{life: refreshIn(50 * time.Millisecond)}
	e2, _ := c.source(Key{Tenant: "b"}, g, g.fetch)
	old, _ := e2.Token(inside)
	time.Sleep(60 * time.Millisecond)
	if tok, _ := e2.Token(inside); tok == old || g.n.Load() != 2 {
		t.Fatalf("past the refresh time under a deadline: same token %v, %d fetches", tok == old, g.n.Load())
	}
}

// A cache on a test clock never compares real deadlines with its times.
func TestTestClockIgnoresDeadlines(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := NewCache(func() time.Time { return now })
	f := &counting{life: time.Hour}
	e, _ := c.source(Key{Tenant: "a"}, f, f.fetch)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, _ := e.Token(ctx)
	if !e.cur.Load().freshUntil.IsZero() {
		t.Fatal("a test-clock token has a real fresh-until time")
	}
	now = now.Add(2 * time.Hour) // expired on the test clock, not on the real one
	if tok, _ := e.Token(ctx); tok == first || f.n.Load() != 2 {
		t.Fatalf("the test clock's expiry was ignored: same token %v, %d fetches", tok == first, f.n.Load())
	}
}

// A second owner of the same key is refused, not silently given the first
// owner's fetcher.
func TestCacheRefusesASecondOwner(t *testing.T) {
	c := NewCache(nil)
	f, g := &counting{life: time.Hour}, &counting{life: time.Hour}
	e, err := c.source(Key{Tenant: "a", ClientID: "app"}, f, f.fetch)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.source(Key{Tenant: "a", ClientID: "app"}, f, f.fetch); err != nil || again != e {
		t.Fatalf("the owner again: %v %v", again == e, err)
	}
	if _, err := c.source(Key{Tenant: "a", ClientID: "app"}, g, g.fetch); err == nil || !strings.Contains(err.Error(), "app app in tenant a for other credentials") {
		t.Fatalf("a second owner: %v", err)
	}
	if _, err := c.source(Key{Tenant: "b", ClientID: "app"}, g, g.fetch); err != nil {
		t.Fatalf("another key: %v", err)
	}
}
