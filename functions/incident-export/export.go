// Package incidentexport is the incident-export function: on a timer it
// writes every incident version created or updated since the last run to a
// sink, exactly once.
//
// No listing order can be relied on: a live tenant accepts
// $orderby=lastUpdateDateTime and ignores it, lists in an order that is not
// chronological, and an update may become visible some time after its
// lastUpdateDateTime. So the export reads time windows of lastUpdate as sets,
// sends no $orderby, and proves each set read whole before its checkpoint
// passes it:
//
//   - A window answered in one response is whole.
//   - A window paged under @odata.count is whole when the count stayed the
//     same on every page and as many distinct versions were read. A window
//     that ends more than Lag ago can only lose members while it is read (an
//     update moves an incident to now), so an unchanged count means an
//     unchanged set; a window that changed is read again narrower.
//   - Without a usable count, a window with more than a page is split in two
//     by time; a single instant holding more than a page is cut by creation
//     time, which never changes, into ranges each answered in one response.
//     Nothing is paged with $skip while it can change under the pages, but
//     one creation instant holding more than a page, read until a pass finds
//     nothing new.
//
// Windows tile [Since, now-Lag): Since, the checkpoint, moves past a window
// only once it is whole and written. The trailing Lag, which can still gain
// late versions, is read each run and written, but it stays ahead of Since
// and is read again next run; the versions already written there (and only
// there: the state is bounded by the updates of one Lag) are kept in the
// checkpoint so they are not written again. A page goes to the sink first,
// then the checkpoint. Sink names derive from the version (tenant, incident,
// last update), so a page written again after a crash overwrites itself.
// Checkpoints are written with optimistic concurrency: of two overlapping
// runs, one stops without writing.
//
// A file a concept: export.go the run, checkpoint.go the checkpoint,
// window.go the window reader, prefetch.go its prefetch, batch.go the
// batched layout, queue.go the fan-out's tasks.
package incidentexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Function is incident-export as the platforms bind it. The schedule is the
// EXPORT_SCHEDULE setting, which the host resolves.
var Function = function.Descriptor{
	Name:     "incident-export",
	Timer:    &function.TimerBinding{Schedule: "%" + config.EnvExportSchedule + "%"},
	Settings: config.ExportSettings,
	Roles: function.Roles{
		Graph: []string{"SecurityIncident.Read.All", "SecurityIncident.ReadWrite.All"},
		XDR:   []string{"Incident.Read.All", "Incident.ReadWrite.All"},
	},
}

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
	// Lag is how late an update may become visible to listings after its
	// lastUpdate (replication lag and clock skew): the trailing Lag is read
	// again by every run until it is older.
	Lag time.Duration
	// Margin is kept free before the deadline (default 15 s, or a quarter
	// of the run when that is less).
	Margin time.Duration
	// WindowPages is how many pages a window read under @odata.count aims
	// at (default 20): larger windows cost fewer partial pages, smaller ones
	// less to read again when a window changed while it was read.
	WindowPages int
	// CheckpointEvery is how often the checkpoint is saved while pages are
	// written (default 1 s); it is saved when the run stops, too. Saving it
	// with every page cost as much as writing the page to a local disk; a
	// crash loses at most this much progress, which the next run writes
	// again over itself.
	CheckpointEvery time.Duration
	// Concurrency is how many tenants are exported at once (default 1): a
	// partner app's tenants share the run's time instead of queueing behind
	// one backlog. Each tenant keeps its own client and pacing.
	Concurrency int
	// Queue, when set, makes Run send a Task per tenant instead of
	// exporting; Export runs one (incident-export-tenant).
	Queue Queue
	// Batched writes the versions read between two checkpoints as one
	// gzip-compressed NDJSON object with a manifest (batch.go), instead of
	// one object per version. The sink must be a sink.Exister.
	Batched bool
	// BatchEvery is how often a batched run commits, and so how much one
	// object holds at most (default 10 s; and 16 MiB compressed).
	BatchEvery time.Duration
	Now        func() time.Time
}

// ErrConcurrentRun: another run changed the checkpoint; this one stopped.
var ErrConcurrentRun = errors.New("another export run holds this tenant's checkpoint")

// Run exports every tenant; a failing tenant does not stop the others.
// With a Queue it only enqueues a task per tenant, which Export runs.
func (e *Exporter) Run(ctx context.Context, t function.Timer) error {
	if e.Queue != nil {
		return e.enqueue(ctx, t)
	}
	log := function.Logger(ctx)
	now := e.now()
	outcomes := e.runs(ctx, e.Tenants)
	var errs []error
	total, requests := 0, 0
	for _, o := range outcomes {
		total += o.run.written
		requests += o.run.requests
		if o.err != nil && !errors.Is(o.err, ErrConcurrentRun) {
			errs = append(errs, fmt.Errorf("tenant %s: %w", o.run.t.Name, o.err))
		}
	}
	log.Info("Incident export finished.", "tenants", len(e.Tenants), "failed", len(errs), "written", total, "requests", requests,
		"duration_ms", e.now().Sub(now).Milliseconds(), "past_due", t.PastDue)
	return errors.Join(errs...)
}

// outcome is how one tenant's export ended.
type outcome struct {
	run *run
	err error
}

// runs exports tenants, Concurrency at a time, within MaxRun (and the
// context's deadline), and logs each failure.
func (e *Exporter) runs(ctx context.Context, tenants []Tenant) []outcome {
	log := function.Logger(ctx)
	deadline := e.now().Add(e.MaxRun)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	// The margin is a quarter of the run at most: a fixed 15 s left a run
	// of 10 to 15 s no time at all, and each one "completed", having
	// written nothing (with a queue, re-enqueuing itself for ever).
	margin := e.Margin
	if margin == 0 {
		margin = min(15*time.Second, deadline.Sub(e.now())/4)
	}
	// Requests end before the margin, so the checkpoint can still be written.
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(-margin/2))
	defer cancel()
	// Every goroutine ends before runs returns: nothing runs while Lambda
	// freezes the sandbox.
	out := make([]outcome, len(tenants))
	sem := make(chan struct{}, max(1, e.Concurrency))
	var wg sync.WaitGroup
	for i, tn := range tenants {
		r := &run{e: e, t: tn, log: log.With("tenant", tn.Name, "api", tn.Client.API()), deadline: deadline.Add(-margin), hard: deadline,
			scope: tn.Name + "/" + uuid.NewString()}
		out[i].run = r
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i].err = r.export(rctx)
		})
	}
	wg.Wait()
	for _, o := range out {
		switch {
		case errors.Is(o.err, ErrConcurrentRun):
			o.run.log.Warn("Another run is exporting this tenant; this run stopped without writing state.")
		case o.err != nil:
			o.run.log.Error("Tenant export failed.", "err", o.err, "written", o.run.written)
		}
	}
	return out
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
	recent   map[versionKey]time.Time // written versions at or after cp.Since
	ver      string
	dirty    bool      // cp is ahead of the saved checkpoint
	savedAt  time.Time // when the checkpoint was last saved (or the run began)
	top      int       // page size
	count    bool      // @odata.count is asked for and believed
	written  int
	pages    int
	requests int
	caughtUp bool   // the run read up to now, the trailing Lag included
	batch    batch  // the batched layout's versions since the last commit
	saved    []byte // the checkpoint as last saved (or loaded)
	// scope is the run's own in a ScopeSyncer sink: another run of the
	// tenant in this process never waits for its writes, nor it for theirs.
	scope string
	// unsynced is the first failure to make the sink's writes durable:
	// what was written since the last checkpoint may be lost, so no later
	// commit of the run saves one (a failed fsync's pages, or a request
	// whose acknowledgement never came, would otherwise count as written).
	unsynced error
}

// objectName is deterministic in the version: tenant, day, incident, last update.
func objectName(tenant string, in *defender.Incident) string {
	lu := in.LastUpdate.UTC()
	return fmt.Sprintf("%s/%s/%s_%s.json", tenant, lu.Format("2006/01/02"), in.ID, lu.Format("20060102T150405.0000000Z"))
}

// write puts versions in the sink and remembers them as written.
func (r *run) write(ctx context.Context, items []*defender.Incident) error {
	if len(items) == 0 {
		return nil
	}
	if r.e.Batched {
		for _, in := range items {
			r.batch.add(in)
		}
		r.remember(items)
		return nil
	}
	objs := make([]sink.Object, len(items))
	for i, in := range items {
		data := make([]byte, 0, len(in.Raw)+1)
		objs[i] = sink.Object{Name: objectName(r.t.Name, in), Data: append(append(data, in.Raw...), '\n'),
			Tenant: r.t.Name, ID: in.ID, LastUpdate: in.LastUpdate, Scope: r.scope}
	}
	// A page already fetched may be written past the fetch cut-off (the
	// requests' context ends half a margin early), up to the run's end.
	wctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.hard)
	defer cancel()
	if err := r.e.Sink.Write(wctx, objs); err != nil {
		return &sinkError{fmt.Errorf("writing to %s: %w", r.e.Sink, err)}
	}
	telemetry.VersionsWritten(ctx, r.t.Name, len(items))
	r.remember(items)
	return nil
}

func (r *run) export(ctx context.Context) error {
	if err := r.load(ctx); err != nil {
		return err
	}
	caps := r.t.Client.Capabilities()
	r.top = caps.PageMax
	if r.e.PageSize > 0 && r.e.PageSize < r.top {
		r.top = r.e.PageSize
	}
	r.count = caps.Count
	err := r.scan(ctx)
	if errors.Is(err, ErrConcurrentRun) {
		return err
	}
	// However the run stopped, what it wrote is kept (a failed sync is
	// that commit's error already: said once).
	if cerr := r.commit(ctx); cerr != nil && !errors.Is(err, cerr) {
		err = errors.Join(err, cerr)
	}
	return err
}

// errOutOfTime stops a scan before the deadline.
var errOutOfTime = errors.New("out of time")

// scan reads the settled windows, then the trailing Lag.
func (r *run) scan(ctx context.Context) error {
	start := r.e.now()
	horizon := start.Add(-r.e.Lag).UTC().Truncate(tick)
	width := horizon.Sub(r.cp.Since) // the first window: all of it, narrowed by what it holds
	normal := time.Duration(0)       // the width after the last whole window wider than an instant
	for r.cp.Since.Before(horizon) {
		to := horizon
		if width > 0 && r.cp.Since.Add(width).Before(horizon) {
			to = r.cp.Since.Add(width)
		}
		w := window{from: r.cp.Since, to: to}
		if r.e.now().After(r.deadline) {
			r.behind(&w)
			return nil
		}
		res, err := r.read(ctx, w)
		if err != nil {
			return r.stop(ctx, err, &w)
		}
		if !res.whole {
			width = res.narrower(w, r.top, r.target())
			continue
		}
		r.settle(to)
		r.log.Info("Window read whole.", "from", w.from, "to", w.to, "versions", res.members, "passes", res.passes)
		if err := r.moved(ctx); err != nil {
			return err
		}
		width = res.wider(w, r.target())
		if to.Sub(w.from) > tick {
			normal = width
		} else if normal > 0 {
			// Past one crowded instant the data is as dense as before it:
			// growing back from one tick would cost a request per step.
			width = normal
		}
	}
	if r.e.now().After(r.deadline) {
		r.behind(nil)
		return nil
	}
	// The trailing Lag: written now, read again until it is settled.
	n, err := r.recentPass(ctx, horizon)
	if err != nil {
		return r.stop(ctx, err, nil)
	}
	r.caughtUp = true
	r.log.Info("Caught up.", "checkpoint", r.cp.Since, "lag_s", int(r.e.now().Sub(r.cp.Since).Seconds()), "trailing", n,
		"written", r.written, "pages", r.pages, "requests", r.requests)
	return nil
}

// stop returns err, unless the run's time ran out: then the run stops
// cleanly, saying how far behind it is (the checkpoint only ever moves past
// what was written, so nothing is lost).
func (r *run) stop(ctx context.Context, err error, w *window) error {
	if se := (*sinkError)(nil); errors.As(err, &se) {
		// The sink refused (or kept asking to wait) until the deadline:
		// the run fails, so that the platform's retries and alerts see it.
		return err
	}
	if errors.Is(err, errOutOfTime) || ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		r.behind(w)
		return nil
	}
	return err
}

// sinkError is a write the sink did not take, even at the deadline: never
// a run merely out of time.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }

func (e *sinkError) Unwrap() error { return e.err }

func (r *run) progress(w window, fetched, written, requests int) {
	r.log.Info("Page exported.", "fetched", fetched, "written", written, "requests", requests, "window_from", w.from,
		"checkpoint", r.cp.Since, "lag_s", int(r.e.now().Sub(r.cp.Since).Seconds()))
}

func (r *run) behind(w *window) {
	args := []any{"checkpoint", r.cp.Since, "behind_s", int(r.e.now().Sub(r.cp.Since).Seconds()), "written", r.written, "pages", r.pages, "requests", r.requests}
	if w != nil {
		args = append(args, "unfinished_window", w.String())
	}
	r.log.Warn("Stopping before the deadline; the next run continues.", args...)
}
