package credentials

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Token is an app-only access token. It is immutable once issued: the cache
// hands out the same pointer to every caller, which is what makes a hit free.
type Token struct {
	AccessToken string
	Expiry      time.Time
}

// String never prints the token itself.
func (t *Token) String() string {
	return "credentials.Token{expires " + t.Expiry.Format(time.RFC3339) + "}"
}

// A Source supplies app-only access tokens for one API and tenant.
type Source interface {
	// Token returns a token valid for at least the cache's minimum lifetime.
	Token(ctx context.Context) (*Token, error)
	// Invalidate drops tok if it is still the cached one: call it when the API
	// answers 401 with that token. A stale tok is ignored, so N callers that
	// all got 401 with the same token cause one new token request.
	Invalidate(tok *Token)
}

// fetchFunc gets a new token from Entra ID.
type fetchFunc func(ctx context.Context) (*Token, error)

// Key identifies a cached token.
type Key struct {
	Authority, Tenant, ClientID, Scope string
}

// Cache holds one entry per Key. The app owns one for the life of the
// process (Credentials makes it), so warm invocations and concurrent ones
// reuse the same tokens. It starts no goroutine: refreshes
// happen on the calling path, because Lambda freezes a sandbox between
// invocations.
type Cache struct {
	mu      sync.Mutex
	entries map[Key]*entry
	now     func() time.Time
	mono    func() int64
	real    bool // on the real clock: deadlines can be compared with it
}

// epoch anchors the monotonic offsets the hot path compares: reading only
// the monotonic clock costs about half of time.Now.
var epoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(epoch)) }

// NewCache makes a cache with its own clock (nil = time.Now), for tests.
func NewCache(now func() time.Time) *Cache {
	c := &Cache{entries: map[Key]*entry{}, now: now, mono: sinceEpoch}
	if now == nil {
		c.now, c.real = time.Now, true
	} else {
		c.mono = func() int64 { return int64(now().Sub(epoch)) }
	}
	return c
}

// Timing of refreshes.
const (
	// minRemaining: a token with less life left is never handed out, so a
	// call made with it (advanced hunting may run three minutes) does not
	// expire mid-flight.
	minRemaining = 4 * time.Minute
	// retryRefreshAfter spaces refresh attempts that failed while the old
	// token was still valid.
	retryRefreshAfter = 30 * time.Second
	// fetchTimeout bounds one shared fetch, whatever the callers' deadlines.
	fetchTimeout = 30 * time.Second
)

// state is one immutable snapshot of an entry's token and its schedule.
// Its times are monotonic nanoseconds since epoch.
type state struct {
	tok       *Token
	refreshAt int64 // after this, refresh; serve tok if that fails
	usableTo  int64 // after this, tok is never served
	nextTry   int64 // no refresh attempt before this (after a failure)
	// freshUntil is refreshAt as a time (with its monotonic reading), for
	// comparing with a context's deadline; zero on a test clock.
	freshUntil time.Time
}

type entry struct {
	owner any
	cur   atomic.Pointer[state]
	fetch fetchFunc
	now   func() time.Time
	mono  func() int64
	real  bool
	sf    singleflight.Group
}

// source returns the entry for key, creating it with fetch. An entry
// belongs to the owner that made it: another owner's fetch (other
// credentials for the same app and tenant) would be ignored in silence, so
// it is refused.
func (c *Cache) source(key Key, owner any, fetch fetchFunc) (*entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil {
		e = &entry{owner: owner, fetch: fetch, now: c.now, mono: c.mono, real: c.real}
		c.entries[key] = e
	}
	if e.owner != owner {
		return nil, fmt.Errorf("credentials: this token cache already serves app %s in tenant %s for other credentials: give each set of credentials its own Cache", key.ClientID, key.Tenant)
	}
	return e, nil
}

// Token is the hot path. A call whose context ends before the token's
// refresh time needs no clock: the whole call lies in the token's fresh
// life. Every function's calls run under a deadline, and reading the clock
// costs some 40 ns on a VM, more than the rest of a hit. The deadline was
// set from the clock when the invocation began, so a Lambda thawed after
// hours sets a new one. (A caller past its deadline may get a token past
// its refresh time: its requests fail before they are sent.) Otherwise
// one clock read decides.
func (e *entry) Token(ctx context.Context) (*Token, error) {
	st := e.cur.Load()
	if st != nil {
		if dl, ok := ctx.Deadline(); ok && dl.Before(st.freshUntil) {
			telemetry.TokenHit(ctx)
			return st.tok, nil
		}
		now := e.mono()
		if now < st.refreshAt {
			telemetry.TokenHit(ctx)
			return st.tok, nil
		}
		if now < st.usableTo {
			// Refresh window: try, but a failure still serves the valid token.
			if now < st.nextTry {
				return st.tok, nil
			}
			if tok, err := e.refresh(ctx, st); err == nil {
				return tok, nil
			} else if ctx.Err() != nil {
				return nil, err
			}
			e.backoff(st)
			return st.tok, nil
		}
	}
	return e.refresh(ctx, st)
}

// backoff records a failed refresh so the next attempt waits a little.
func (e *entry) backoff(seen *state) {
	nu := *seen
	nu.nextTry = e.mono() + int64(retryRefreshAfter)
	e.cur.CompareAndSwap(seen, &nu)
}

// refresh fetches once for all concurrent callers. The fetch runs detached
// from any one caller's cancellation; a caller that gives up gets its
// context's error, the others still get the token.
func (e *entry) refresh(ctx context.Context, seen *state) (*Token, error) {
	ch := e.sf.DoChan("", func() (any, error) {
		// Another caller may have refreshed between our load and now.
		if st := e.cur.Load(); st != seen && st != nil && e.mono() < st.refreshAt {
			return st.tok, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		tok, err := e.fetch(fctx)
		telemetry.TokenFetch(ctx, err)
		if err != nil {
			return nil, err
		}
		e.store(tok)
		return tok, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Token), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *entry) store(tok *Token) {
	now := e.mono()
	life := int64(tok.Expiry.Sub(e.now()))
	st := &state{tok: tok, usableTo: now + life - int64(minRemaining)}
	// Refresh at half-life, but never later than 10 minutes before the
	// token stops being served, so a failing Entra ID has time to recover.
	st.refreshAt = min(now+life/2, st.usableTo-int64(10*time.Minute))
	if e.real {
		st.freshUntil = epoch.Add(time.Duration(st.refreshAt))
	}
	e.cur.Store(st)
}

// Invalidate drops tok if it is still the cached token.
func (e *entry) Invalidate(tok *Token) {
	st := e.cur.Load()
	if st != nil && st.tok == tok {
		e.cur.CompareAndSwap(st, nil)
	}
}
