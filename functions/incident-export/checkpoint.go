package incidentexport

// The checkpoint: a tenant's progress (Since, and the versions written
// at or after it), loaded and saved with optimistic concurrency, and saved
// only once what it counts as written is durable in the sink.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Checkpoint is a tenant's progress.
type Checkpoint struct {
	Version int    `json:"version"`
	Tenant  string `json:"tenant"`
	API     string `json:"api"`
	// Since: every version updated before it that was visible Lag after
	// its update has been written.
	Since time.Time `json:"since"`
	// Recent are the versions updated at or after Since already written.
	Recent []Version `json:"recent,omitempty"`
	// IDs is the position of a checkpoint of version 1 (keyset paging),
	// read to continue from it.
	IDs     []string  `json:"idsAtSince,omitempty"`
	Written int64     `json:"written"`
	Updated time.Time `json:"updated"`
	// Batches counts the batch objects written (the batched layout).
	Batches int64 `json:"batches,omitempty"`
	// Pending is a batch named but perhaps not written (batch.go).
	Pending *Pending `json:"pending,omitempty"`
}

// Version names one version of an incident.
type Version struct {
	ID         string    `json:"id"`
	LastUpdate time.Time `json:"lastUpdate"`
}

// maxRecent bounds the checkpoint's Recent: past it the oldest are
// dropped, and a re-read writes them again over themselves.
const maxRecent = 100_000

// tick is the resolution of the APIs' timestamps (seven fractional digits).
const tick = 100 * time.Nanosecond

type versionKey struct {
	id string
	lu int64
}

func keyOf(in *defender.Incident) versionKey { return versionKey{in.ID, in.LastUpdate.UnixNano()} }

func (r *run) key() string { return "incident-export/" + r.t.Client.API() + "/" + r.t.Name + ".json" }

func (r *run) load(ctx context.Context) error {
	r.savedAt = r.e.now()
	r.recent = map[versionKey]time.Time{}
	b, ver, err := r.e.State.Get(ctx, r.key())
	if errors.Is(err, state.ErrNotFound) {
		r.cp = Checkpoint{Version: 2, Tenant: r.t.Name, API: r.t.Client.API(), Since: r.e.now().Add(-r.e.Lookback).UTC().Truncate(tick)}
		r.log.Info("First run: starting from the look-back.", "since", r.cp.Since)
		r.saved = r.snapshot()
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &r.cp); err != nil {
		return fmt.Errorf("checkpoint %s is not valid JSON: %w (delete it to restart from the look-back)", r.key(), err)
	}
	r.ver = ver
	if r.cp.Version < 2 {
		// Keyset paging's position: its IDs were written at Since. It read
		// in an order the API does not keep, so continue a Lag earlier.
		for _, id := range r.cp.IDs {
			r.recent[versionKey{id, r.cp.Since.UnixNano()}] = r.cp.Since
		}
		r.cp.Version, r.cp.IDs, r.cp.Since = 2, nil, r.cp.Since.Add(-r.e.Lag).Truncate(tick)
		r.log.Info("Checkpoint of version 1: continuing a lag before its position.", "since", r.cp.Since)
		r.saved = r.snapshot()
		return nil
	}
	for _, v := range r.cp.Recent {
		r.recent[versionKey{v.ID, v.LastUpdate.UnixNano()}] = v.LastUpdate
	}
	if r.cp.Pending != nil {
		// Settled and saved before anything else: the next batch is named
		// in a checkpoint that already holds this one.
		if err := r.settlePending(ctx); err != nil {
			return err
		}
		return r.save(ctx)
	}
	r.saved = r.snapshot()
	return nil
}

// snapshot is the checkpoint as it stands, Recent from the versions
// remembered.
func (r *run) snapshot() []byte {
	r.cp.Updated = r.e.now().UTC()
	r.cp.Recent = r.cp.Recent[:0]
	for k, lu := range r.recent {
		r.cp.Recent = append(r.cp.Recent, Version{ID: k.id, LastUpdate: lu})
	}
	slices.SortFunc(r.cp.Recent, func(a, b Version) int {
		if c := a.LastUpdate.Compare(b.LastUpdate); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	b, _ := json.Marshal(r.cp)
	return b
}

func (r *run) save(ctx context.Context) error {
	b := r.snapshot()
	if err := r.putRaw(ctx, b); err != nil {
		return err
	}
	r.saved = b
	return nil
}

// put saves cp (a checkpoint other than the run's own: the batched
// layout's pending one).
func (r *run) put(ctx context.Context, cp *Checkpoint) error {
	cp.Updated = r.e.now().UTC()
	b, _ := json.Marshal(cp)
	return r.putRaw(ctx, b)
}

func (r *run) putRaw(ctx context.Context, b []byte) error {
	// The checkpoint is written even when the run is out of time.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ver, err := r.e.State.Put(sctx, r.key(), b, r.ver)
	if errors.Is(err, state.ErrConflict) {
		return ErrConcurrentRun
	}
	if err != nil {
		return err
	}
	r.ver = ver
	return nil
}

// commit makes what was written durable, then saves the checkpoint.
func (r *run) commit(ctx context.Context) error {
	if !r.dirty {
		return nil
	}
	if r.unsynced != nil {
		return r.unsynced
	}
	if r.e.Batched {
		if err := r.commitBatch(ctx); err != nil {
			return err
		}
	} else if err := r.sync(ctx); err != nil {
		r.unsynced = fmt.Errorf("syncing %s: %w (the versions since the last checkpoint are read and sent again next run)", r.e.Sink, err)
		return r.unsynced
	}
	if err := r.save(ctx); err != nil {
		return err
	}
	r.dirty, r.savedAt = false, r.e.now()
	telemetry.ExportLag(ctx, r.t.Name, r.savedAt.Sub(r.cp.Since))
	return nil
}

// sync makes the run's writes durable: a ScopeSyncer's for the run's
// scope, a Syncer's all.
func (r *run) sync(ctx context.Context) error {
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.hard)
	defer cancel()
	switch s := r.e.Sink.(type) {
	case sink.ScopeSyncer:
		return s.SyncScope(sctx, r.scope)
	case sink.Syncer:
		return s.Sync(sctx)
	}
	return nil
}

// moved records that the checkpoint advanced, and commits when the saved
// one is CheckpointEvery old.
func (r *run) moved(ctx context.Context) error {
	r.dirty = true
	every := r.e.CheckpointEvery
	if every == 0 {
		every = time.Second
	}
	if r.e.Batched {
		// A batch is an object: fewer, larger ones are what collectors want.
		every = r.e.BatchEvery
		if every == 0 {
			every = 10 * time.Second
		}
	}
	if r.e.now().Sub(r.savedAt) < every && !r.batch.full() {
		return nil
	}
	return r.commit(ctx)
}

// settle moves Since to t: the window before it is whole and written.
func (r *run) settle(t time.Time) {
	r.cp.Since = t
	for k, lu := range r.recent {
		if lu.Before(t) {
			delete(r.recent, k)
		}
	}
}

// fresh drops what was already written: before Since, or among the recent.
func (r *run) fresh(items []*defender.Incident) []*defender.Incident {
	var out []*defender.Incident
	for _, in := range items {
		if in.LastUpdate.Before(r.cp.Since) {
			continue
		}
		if _, ok := r.recent[keyOf(in)]; ok {
			continue
		}
		out = append(out, in)
	}
	return out
}

// remember marks versions written (in the batched layout: in the batch,
// written with it).
func (r *run) remember(items []*defender.Incident) {
	for _, in := range items {
		r.recent[keyOf(in)] = in.LastUpdate
	}
	if len(r.recent) > maxRecent {
		r.trimRecent()
	}
	r.written += len(items)
	r.cp.Written += int64(len(items))
}

// trimRecent drops the oldest remembered versions past maxRecent.
func (r *run) trimRecent() {
	lus := make([]time.Time, 0, len(r.recent))
	for _, lu := range r.recent {
		lus = append(lus, lu)
	}
	slices.SortFunc(lus, time.Time.Compare)
	cut := lus[len(lus)-maxRecent]
	for k, lu := range r.recent {
		if lu.Before(cut) {
			delete(r.recent, k)
		}
	}
}
