// Package incidentexport is the incident-export function: on a timer it
// writes every incident version created or updated since the last run to a
// sink, exactly once.
//
// Each tenant's checkpoint is (Since, IDs already written at Since). Graph is
// read in lastUpdateDateTime order with an inclusive lower bound, one page
// per fresh query (keyset paging: no $skip across a set that changes under
// it); the XDR API, which documents no order, is scanned in time windows and
// its checkpoint moves only when a window is complete. A page goes to the
// sink first, then the checkpoint advances. Sink names derive from the
// version (tenant, incident, last update), so a page written again after a
// crash overwrites itself. Checkpoints are written with optimistic
// concurrency: of two overlapping runs, one stops without writing.
package incidentexport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
)

// Tenant is one tenant to export, with its API client.
type Tenant struct {
	Name   string
	Client defender.Client
}

// Exporter exports incidents of several tenants.
type Exporter struct {
	Tenants  []Tenant
	Sink     sink.Sink
	State    state.Store
	Lookback time.Duration
	PageSize int
	MaxRun   time.Duration
	// Margin is kept free before the deadline (default 15 s).
	Margin time.Duration
	// XDRWindow is the length of one XDR scan window.
	XDRWindow time.Duration
	// CheckpointEvery is how often the checkpoint is saved while pages are
	// written (default 1 s); it is saved when the run stops, too. Saving it
	// with every page cost as much as writing the page to a local disk; a
	// crash loses at most this much progress, which the next run writes
	// again over itself.
	CheckpointEvery time.Duration
	Now             func() time.Time
}

// Checkpoint is a tenant's progress.
type Checkpoint struct {
	Version int       `json:"version"`
	Tenant  string    `json:"tenant"`
	API     string    `json:"api"`
	Since   time.Time `json:"since"`
	// IDs were written with lastUpdate == Since; the inclusive bound returns them again.
	IDs     []string  `json:"idsAtSince"`
	Written int64     `json:"written"`
	Updated time.Time `json:"updated"`
}

// ErrConcurrentRun: another run changed the checkpoint; this one stopped.
var ErrConcurrentRun = errors.New("another export run holds this tenant's checkpoint")

// Run exports every tenant; a failing tenant does not stop the others.
func (e *Exporter) Run(ctx context.Context, t function.Timer) error {
	log := function.Logger(ctx)
	now := e.now()
	deadline := now.Add(e.MaxRun)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	margin := e.Margin
	if margin == 0 {
		margin = 15 * time.Second
	}
	// Requests end before the margin, so the checkpoint can still be written.
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(-margin/2))
	defer cancel()
	var errs []error
	total := 0
	for _, tn := range e.Tenants {
		r := &run{e: e, t: tn, log: log.With("tenant", tn.Name, "api", tn.Client.API()), deadline: deadline.Add(-margin), hard: deadline}
		err := r.export(rctx)
		total += r.written
		switch {
		case errors.Is(err, ErrConcurrentRun):
			r.log.Warn("another run is exporting this tenant; this run stopped without writing state")
		case err != nil:
			r.log.Error("tenant export failed", "error", err.Error(), "written", r.written)
			errs = append(errs, fmt.Errorf("tenant %s: %w", tn.Name, err))
		}
	}
	log.Info("incident export finished", "tenants", len(e.Tenants), "failed", len(errs), "written", total,
		"duration_ms", e.now().Sub(now).Milliseconds(), "past_due", t.PastDue)
	return errors.Join(errs...)
}

func (e *Exporter) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

type run struct {
	e        *Exporter
	t        Tenant
	log      *slog.Logger
	deadline time.Time // no new page is fetched after it
	hard     time.Time // the run's end: a fetched page may still be written until then
	cp       Checkpoint
	ver      string
	dirty    bool      // cp is ahead of the saved checkpoint
	savedAt  time.Time // when the checkpoint was last saved (or the run began)
	written  int
	pages    int
}

func (r *run) key() string { return "incident-export/" + r.t.Client.API() + "/" + r.t.Name + ".json" }

func (r *run) load(ctx context.Context) error {
	r.savedAt = r.e.now()
	b, ver, err := r.e.State.Get(ctx, r.key())
	if errors.Is(err, state.ErrNotFound) {
		r.cp = Checkpoint{Version: 1, Tenant: r.t.Name, API: r.t.Client.API(), Since: r.e.now().Add(-r.e.Lookback).UTC()}
		r.log.Info("first run: starting from the look-back", "since", r.cp.Since)
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &r.cp); err != nil {
		return fmt.Errorf("checkpoint %s is not valid JSON: %w (delete it to restart from the look-back)", r.key(), err)
	}
	r.ver = ver
	return nil
}

func (r *run) save(ctx context.Context) error {
	r.cp.Updated = r.e.now().UTC()
	b, _ := json.Marshal(r.cp)
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
	if s, ok := r.e.Sink.(sink.Syncer); ok {
		sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.hard)
		err := s.Sync(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("syncing %s: %w", r.e.Sink, err)
		}
	}
	if err := r.save(ctx); err != nil {
		return err
	}
	r.dirty, r.savedAt = false, r.e.now()
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
	if r.e.now().Sub(r.savedAt) < every {
		return nil
	}
	return r.commit(ctx)
}

// objectName is deterministic in the version: tenant, day, incident, last update.
func objectName(tenant string, in *defender.Incident) string {
	lu := in.LastUpdate.UTC()
	return fmt.Sprintf("%s/%s/%s_%s.json", tenant, lu.Format("2006/01/02"), in.ID, lu.Format("20060102T150405.0000000Z"))
}

// fresh drops what the checkpoint says was already written.
func (r *run) fresh(items []*defender.Incident) []*defender.Incident {
	var out []*defender.Incident
	for _, in := range items {
		if in.LastUpdate.Before(r.cp.Since) || in.LastUpdate.Equal(r.cp.Since) && slices.Contains(r.cp.IDs, in.ID) {
			continue
		}
		out = append(out, in)
	}
	return out
}

func (r *run) write(ctx context.Context, items []*defender.Incident) error {
	if len(items) == 0 {
		return nil
	}
	objs := make([]sink.Object, len(items))
	for i, in := range items {
		data := make([]byte, 0, len(in.Raw)+1)
		objs[i] = sink.Object{Name: objectName(r.t.Name, in), Data: append(append(data, in.Raw...), '\n')}
	}
	// A page already fetched may be written past the fetch cut-off (the
	// requests' context ends half a margin early), up to the run's end.
	wctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.hard)
	defer cancel()
	if err := r.e.Sink.Write(wctx, objs); err != nil {
		return fmt.Errorf("writing to %s: %w", r.e.Sink, err)
	}
	r.written += len(items)
	r.cp.Written += int64(len(items))
	return nil
}

// advance moves the checkpoint past written versions.
func (r *run) advance(items []*defender.Incident) {
	r.cp.Since, r.cp.IDs = advance(r.cp.Since, r.cp.IDs, items)
}

// advance returns the checkpoint (since, ids) moved past items; ids is
// never modified in place.
func advance(since time.Time, ids []string, items []*defender.Incident) (time.Time, []string) {
	ids = slices.Clip(ids)
	for _, in := range items {
		switch {
		case in.LastUpdate.After(since):
			since, ids = in.LastUpdate, []string{in.ID}
		case in.LastUpdate.Equal(since) && !slices.Contains(ids, in.ID):
			ids = append(ids, in.ID)
		}
	}
	return since, ids
}

func (r *run) export(ctx context.Context) error {
	if err := r.load(ctx); err != nil {
		return err
	}
	var err error
	if r.t.Client.API() == "xdr" {
		err = r.exportWindows(ctx)
	} else {
		err = r.exportKeyset(ctx)
	}
	if errors.Is(err, ErrConcurrentRun) {
		return err
	}
	// However the run stopped, what it wrote is kept.
	return errors.Join(err, r.commit(ctx))
}

// exportKeyset reads Graph one page per query, oldest update first. The
// next query depends only on the checkpoint this page leads to, so it is
// sent while this page is written: the API and the sink work at once. A
// page fetched ahead is dropped if this one cannot be written.
func (r *run) exportKeyset(ctx context.Context) error {
	size := r.e.PageSize
	if size == 0 {
		size = 50
	}
	ahead, cancelAhead := context.WithCancel(ctx)
	defer cancelAhead()
	var next <-chan fetched
	skip := 0
	for {
		if r.e.now().After(r.deadline) {
			r.behind()
			return nil
		}
		if next == nil {
			next = r.fetch(ahead, r.cp.Since, skip)
		}
		res := <-next
		next = nil
		page, err := res.page, res.err
		if err != nil {
			return r.stop(ctx, err)
		}
		items := page.Incidents
		if skip > 0 && !(len(items) == size && allAt(items, r.cp.Since)) {
			// Leaving a tie read with $skip: the count may have stepped over a
			// member (another one updated away shifts the rest). Settle the
			// tie before the checkpoint can move past it.
			if err := r.settleTie(ctx, r.cp.Since); err != nil {
				return r.stop(ctx, err)
			}
		}
		fresh := r.fresh(items)
		since, ids := advance(r.cp.Since, r.cp.IDs, fresh)
		// A full page entirely at the new Since (a tie larger than a page):
		// skip the part of the tie already written instead of reading it again.
		skip = 0
		if len(items) == size && allAt(items, since) {
			skip = len(ids)
		}
		if len(items) == size {
			next = r.fetch(ahead, since, skip)
		}
		if err := r.write(ctx, fresh); err != nil {
			return r.stop(ctx, err) // the checkpoint stays: nothing is lost
		}
		r.cp.Since, r.cp.IDs = since, ids
		if err := r.moved(ctx); err != nil {
			return err
		}
		r.pages++
		r.progress(len(items), len(fresh), page.Requests)
		if len(items) < size {
			r.log.Info("caught up", "checkpoint", r.cp.Since, "lag_s", int(r.e.now().Sub(r.cp.Since).Seconds()), "written", r.written, "pages", r.pages)
			return nil
		}
	}
}

type fetched struct {
	page *defender.Page
	err  error
}

// fetch requests the first page of incidents updated at or after since
// (less skip) in the background. Only each incident's ID and last update
// are decoded (KeysOnly): the sink gets the document as the API sent it.
func (r *run) fetch(ctx context.Context, since time.Time, skip int) <-chan fetched {
	ch := make(chan fetched, 1) // never blocks: a page nobody waits for is dropped
	opts := defender.ListOptions{Since: since, OrderByLastUpdate: true, WithAlerts: true, KeysOnly: true, PageSize: r.e.PageSize, Skip: skip}
	go func() {
		p, err := firstPage(ctx, r.t.Client, opts)
		ch <- fetched{p, err}
	}()
	return ch
}

// settleTie reads every incident still at exactly t (the checkpoint's
// Since) and writes those not yet written; the tie only shrinks, so the
// passes end.
func (r *run) settleTie(ctx context.Context, t time.Time) error {
	for pass := 0; ; pass++ {
		var missed []*defender.Incident
		known := map[string]bool{}
		for _, id := range r.cp.IDs {
			known[id] = true
		}
		for page, err := range r.t.Client.Incidents(ctx, defender.ListOptions{Since: t, Before: t.Add(100 * time.Nanosecond), OrderByLastUpdate: true, WithAlerts: true, KeysOnly: true, PageSize: r.e.PageSize}) {
			if err != nil {
				return err
			}
			for _, in := range page.Incidents {
				if in.LastUpdate.Equal(t) && !known[in.ID] {
					missed = append(missed, in)
					known[in.ID] = true
				}
			}
		}
		if len(missed) == 0 {
			return nil
		}
		r.log.Info("tie re-read found incidents the skip stepped over", "at", t, "found", len(missed), "pass", pass)
		if err := r.write(ctx, missed); err != nil {
			return err
		}
		r.advance(missed)
		if err := r.moved(ctx); err != nil {
			return err
		}
	}
}

func allAt(items []*defender.Incident, t time.Time) bool {
	for _, in := range items {
		if !in.LastUpdate.Equal(t) {
			return false
		}
	}
	return true
}

// exportWindows scans the XDR API in windows [Since, Since+W) while they lie
// in the past, then the open window [Since, ∞). Its order is undocumented
// (the devstack, like the docs, lists newest-created first), so a window is
// read whole before the checkpoint moves, with $skip paging, and:
//   - a past window only loses members while it is read (an update moves an
//     incident to now), which can shift an unread member past the $skip: it
//     is re-read until a pass finds nothing new;
//   - the open window only gains members, but an incident updated after it
//     was read may carry an older lastUpdate than one read later: the
//     checkpoint never passes the scan's start (less a clock-skew margin).
//     Versions after the checkpoint are read again next run and overwrite
//     themselves in the sink.
func (r *run) exportWindows(ctx context.Context) error {
	const skew = 2 * time.Minute
	for {
		if r.e.now().After(r.deadline) {
			r.behind()
			return nil
		}
		scanStart := r.e.now()
		before := r.cp.Since.Add(r.e.XDRWindow)
		open := !before.Before(scanStart.Add(-5 * time.Minute))
		opts := defender.ListOptions{Since: r.cp.Since, WithAlerts: true, KeysOnly: true, PageSize: r.e.PageSize}
		if !open {
			opts.Before = before
		}
		written := map[string]bool{}
		var seen []*defender.Incident
		for pass := 0; ; pass++ {
			newInPass := 0
			for page, err := range r.t.Client.Incidents(ctx, opts) {
				if err != nil {
					return r.stop(ctx, err)
				}
				var fresh []*defender.Incident
				for _, in := range r.fresh(page.Incidents) {
					if k := in.ID + "@" + in.LastUpdate.String(); !written[k] {
						written[k] = true
						fresh = append(fresh, in)
					}
				}
				if err := r.write(ctx, fresh); err != nil {
					return r.stop(ctx, err)
				}
				newInPass += len(fresh)
				for _, in := range page.Incidents {
					seen = append(seen, &defender.Incident{ID: in.ID, LastUpdate: in.LastUpdate})
				}
				r.pages++
				r.progress(len(page.Incidents), len(fresh), page.Requests)
			}
			if open || newInPass == 0 {
				break
			}
			if pass > 0 {
				r.log.Info("window re-read found versions a shift had hidden", "found", newInPass, "pass", pass)
			}
		}
		if open {
			limit := scanStart.Add(-skew)
			var upTo []*defender.Incident
			for _, in := range seen {
				if !in.LastUpdate.After(limit) {
					upTo = append(upTo, in)
				}
			}
			r.advance(upTo)
		} else {
			r.cp.Since, r.cp.IDs = before, nil
		}
		r.dirty = true
		if err := r.commit(ctx); err != nil {
			return err
		}
		if open {
			r.log.Info("caught up", "checkpoint", r.cp.Since, "lag_s", int(r.e.now().Sub(r.cp.Since).Seconds()), "written", r.written, "pages", r.pages)
			return nil
		}
	}
}

// stop returns err, unless the run's time ran out: then the run stops
// cleanly, saying how far behind it is (the checkpoint only ever moves past
// what was written, so nothing is lost).
func (r *run) stop(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		r.behind()
		return nil
	}
	return err
}

func (r *run) progress(fetched, written, requests int) {
	r.log.Info("export page", "fetched", fetched, "written", written, "requests", requests, "checkpoint", r.cp.Since,
		"lag_s", int(r.e.now().Sub(r.cp.Since).Seconds()))
}

func (r *run) behind() {
	r.log.Warn("stopping before the deadline; the next run continues", "checkpoint", r.cp.Since,
		"behind_s", int(r.e.now().Sub(r.cp.Since).Seconds()), "written", r.written, "pages", r.pages)
}

// firstPage runs a listing and keeps only its first page.
func firstPage(ctx context.Context, c defender.Client, o defender.ListOptions) (*defender.Page, error) {
	for p, err := range c.Incidents(ctx, o) {
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return &defender.Page{}, nil
}
