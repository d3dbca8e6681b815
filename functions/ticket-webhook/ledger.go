package ticketwebhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/defender-functions/defender-functions/shared/state"
)

// ledger remembers deliveries in the state store, so that a redelivery
// changes nothing. A delivery is claimed (pending, with a lease) before it is
// applied and marked done after; a failed one is released so the sender's
// retry applies it. The store's versions make a claim exclusive across
// instances. Records expire logically after ttl (the store has no TTL of its
// own; a Blob lifecycle rule on the prefix removes old ones).
type ledger struct {
	st    state.Store
	ttl   time.Duration
	lease time.Duration
	now   func() time.Time
}

type record struct {
	State   string    `json:"state"` // pending, done, released
	Until   time.Time `json:"until"` // lease end (pending) or expiry (done)
	Outcome string    `json:"outcome,omitempty"`
}

type claimResult int

const (
	claimed claimResult = iota
	duplicate
	busy
)

type claim struct {
	key     string
	version string
}

const deliveriesPrefix = "webhook-deliveries/"

// deliveryKey is a state key for a provider's delivery identifier: hashed,
// because identifiers come from outside.
func deliveryKey(provider, kind, id string) string {
	h := sha256.Sum256([]byte(id))
	return deliveriesPrefix + provider + "/" + kind + "-" + hex.EncodeToString(h[:])
}

func (l *ledger) read(ctx context.Context, key string) (*record, string, error) {
	b, ver, err := l.st.Get(ctx, key)
	if errors.Is(err, state.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	var r record
	if json.Unmarshal(b, &r) != nil {
		return nil, ver, nil // unreadable: treat as absent, overwrite
	}
	return &r, ver, nil
}

// seen reports whether a delivery is done and not expired.
func (l *ledger) seen(ctx context.Context, key string) (bool, error) {
	r, _, err := l.read(ctx, key)
	return err == nil && r != nil && r.State == "done" && l.now().Before(r.Until), err
}

// claim takes a delivery for this invocation, or says it is done already or
// being applied by another invocation right now.
func (l *ledger) claim(ctx context.Context, key string) (*claim, claimResult, error) {
	for attempt := 0; attempt < 2; attempt++ {
		r, ver, err := l.read(ctx, key)
		if err != nil {
			return nil, 0, err
		}
		now := l.now()
		if r != nil && now.Before(r.Until) {
			switch r.State {
			case "done":
				return nil, duplicate, nil
			case "pending":
				return nil, busy, nil
			}
		}
		b, _ := json.Marshal(record{State: "pending", Until: now.Add(l.lease)})
		nv, err := l.st.Put(ctx, key, b, ver)
		if errors.Is(err, state.ErrConflict) {
			continue // another invocation wrote first: look again
		}
		if err != nil {
			return nil, 0, err
		}
		return &claim{key: key, version: nv}, claimed, nil
	}
	return nil, busy, nil
}

// done marks a claimed delivery applied.
func (l *ledger) done(ctx context.Context, c *claim, outcome string) error {
	b, _ := json.Marshal(record{State: "done", Until: l.now().Add(l.ttl), Outcome: outcome})
	_, err := l.st.Put(ctx, c.key, b, c.version)
	return err
}

// mark records a delivery as done whatever its current record (secondary keys).
func (l *ledger) mark(ctx context.Context, key, outcome string) error {
	_, ver, err := l.read(ctx, key)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(record{State: "done", Until: l.now().Add(l.ttl), Outcome: outcome})
	_, err = l.st.Put(ctx, key, b, ver)
	if errors.Is(err, state.ErrConflict) {
		return nil // another invocation recorded it
	}
	return err
}

// release gives a claim back after a failure, so a retry applies it.
func (l *ledger) release(ctx context.Context, c *claim) {
	b, _ := json.Marshal(record{State: "released", Until: l.now()})
	l.st.Put(context.WithoutCancel(ctx), c.key, b, c.version)
}

// link is the remembered incident of a ticket.
type link struct {
	Incident string `json:"incident"`
	Tenant   string `json:"tenant"`
	// At is the time of the event that set the link: an older event never
	// replaces it (deliveries arrive out of order).
	At time.Time `json:"at,omitzero"`
}

func linkKey(provider, ticket string) string {
	h := sha256.Sum256([]byte(ticket))
	return "webhook-links/" + provider + "/" + hex.EncodeToString(h[:])
}

func (l *ledger) link(ctx context.Context, provider, ticket string) (*link, error) {
	b, _, err := l.st.Get(ctx, linkKey(provider, ticket))
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var k link
	if err := json.Unmarshal(b, &k); err != nil || k.Incident == "" {
		return nil, nil
	}
	return &k, nil
}

func (l *ledger) setLink(ctx context.Context, provider, ticket string, k link) error {
	key := linkKey(provider, ticket)
	b, _ := json.Marshal(k)
	for attempt := 0; attempt < 3; attempt++ {
		old, ver, err := l.st.Get(ctx, key)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		if string(old) == string(b) {
			return nil
		}
		var prev link
		if json.Unmarshal(old, &prev) == nil && prev.At.After(k.At) {
			return nil
		}
		if _, err = l.st.Put(ctx, key, b, ver); !errors.Is(err, state.ErrConflict) {
			return err
		}
	}
	return nil
}
