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
package incidentexport

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/google/uuid"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Function is incident-export as the platforms bind it. The schedule is the
// EXPORT_SCHEDULE setting, which the host resolves.
var Function = function.Descriptor{
	Name:  "incident-export",
	Timer: &function.TimerBinding{Schedule: "%EXPORT_SCHEDULE%"},
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
	log.Info("incident export finished", "tenants", len(e.Tenants), "failed", len(errs), "written", total, "requests", requests,
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
			o.run.log.Warn("another run is exporting this tenant; this run stopped without writing state")
		case o.err != nil:
			o.run.log.Error("tenant export failed", "error", o.err.Error(), "written", o.run.written)
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

type versionKey struct {
	id string
	lu int64
}

func keyOf(in *defender.Incident) versionKey { return versionKey{in.ID, in.LastUpdate.UnixNano()} }

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

func (r *run) key() string { return "incident-export/" + r.t.Client.API() + "/" + r.t.Name + ".json" }

func (r *run) load(ctx context.Context) error {
	r.savedAt = r.e.now()
	r.recent = map[versionKey]time.Time{}
	b, ver, err := r.e.State.Get(ctx, r.key())
	if errors.Is(err, state.ErrNotFound) {
		r.cp = Checkpoint{Version: 2, Tenant: r.t.Name, API: r.t.Client.API(), Since: r.e.now().Add(-r.e.Lookback).UTC().Truncate(tick)}
		r.log.Info("first run: starting from the look-back", "since", r.cp.Since)
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
		r.log.Info("checkpoint of version 1: continuing a lag before its position", "since", r.cp.Since)
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

// objectName is deterministic in the version: tenant, day, incident, last update.
func objectName(tenant string, in *defender.Incident) string {
	lu := in.LastUpdate.UTC()
	return fmt.Sprintf("%s/%s/%s_%s.json", tenant, lu.Format("2006/01/02"), in.ID, lu.Format("20060102T150405.0000000Z"))
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
		r.log.Info("window whole", "from", w.from, "to", w.to, "versions", res.members, "passes", res.passes)
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
	r.log.Info("caught up", "checkpoint", r.cp.Since, "lag_s", int(r.e.now().Sub(r.cp.Since).Seconds()), "trailing", n,
		"written", r.written, "pages", r.pages, "requests", r.requests)
	return nil
}

// target is how many versions a window aims to hold.
func (r *run) target() int {
	if !r.count {
		// One response, with a tenth of a page spare for a denser window
		// than the last: on a 10k backlog (BenchmarkExportRequests/xdr) 3/4
		// of a page cost 1.42 × the floor of requests, 9/10 1.20 ×, 95/100
		// 1.14 ×, a full page 5.9 × (nearly every window overflowed).
		return max(r.top*9/10, 1)
	}
	pages := r.e.WindowPages
	if pages <= 0 {
		pages = 20
	}
	return r.top * pages
}

// window is [from, to) of lastUpdate.
type window struct{ from, to time.Time }

func (w window) String() string {
	return w.from.Format(time.RFC3339Nano) + "/" + w.to.Format(time.RFC3339Nano)
}

// readResult is what reading a window found.
type readResult struct {
	whole   bool
	changed bool // the window changed while it was paged
	passes  int
	// first is the earliest last update on an overflowing first page,
	// and tie says that page was all at that one instant.
	first   time.Time
	tie     bool
	members int   // versions in the window (whole), or seen so far
	count   int64 // @odata.count of the first page, -1 unknown
}

// narrower is the next width for a window that was not read whole: one
// that changed while it was paged is narrowed to about a page, which is
// read in one response; one too large to page, to about target. Without
// a count, the first page's members say where the crowd is: a page all at
// the window's first instant is a tie, read alone; otherwise the window
// ends before the earliest member seen, if that halves it or more.
func (res readResult) narrower(w window, top, target int) time.Duration {
	d := w.to.Sub(w.from)
	switch {
	case res.changed && res.count > int64(top):
		d = time.Duration(float64(d) * float64(top) / float64(res.count))
	case !res.changed && res.count > int64(target):
		d = time.Duration(float64(d) * float64(target) / float64(res.count))
	case res.tie && res.first.Equal(w.from):
		d = tick
	case res.first.After(w.from) && res.first.Sub(w.from) < d/2:
		d = res.first.Sub(w.from)
	default:
		d /= 2
	}
	return max(d.Truncate(tick), tick)
}

// wider is the next width after a whole window: aimed at target members,
// at most eight times the last.
func (res readResult) wider(w window, target int) time.Duration {
	d := w.to.Sub(w.from)
	if res.members == 0 {
		return 8 * d
	}
	f := min(float64(target)/float64(res.members), 8)
	return max(time.Duration(float64(d)*f).Truncate(tick), tick)
}

// read reads window w and writes what was not written. A window that
// cannot be proven whole is reported so; its writes stand.
func (r *run) read(ctx context.Context, w window) (readResult, error) {
	single := w.to.Sub(w.from) <= tick
	opts := defender.ListOptions{Since: w.from, Before: w.to, WithAlerts: true, KeysOnly: true, PageSize: r.top, Count: r.count}
	if single && !r.count {
		return r.readInstant(ctx, w, opts)
	}
	return r.readPasses(ctx, w, opts, single)
}

// readPasses reads w with pass; a single instant is read again until a pass
// proves it whole.
func (r *run) readPasses(ctx context.Context, w window, opts defender.ListOptions, single bool) (readResult, error) {
	for pass := 0; ; pass++ {
		res, err := r.pass(ctx, w, opts, single)
		res.passes = pass + 1
		if err != nil || res.whole || !single {
			return res, err
		}
		// One instant holding more than a page, read again until whole.
		if pass >= 8 {
			return res, fmt.Errorf("the %d versions updated at %s could not be read whole in %d passes (they kept changing); the next run tries again",
				res.members, w.from.Format(time.RFC3339Nano), pass+1)
		}
		r.log.Info("an instant with more than a page changed while it was read; reading it again", "at", w.from, "pass", pass+1)
	}
}

// readInstant reads one instant of last update without a usable count.
// Paging it is unsound while its members leave it (an update moves an
// incident to now, every later member shifts back one place, and the next
// page's offset passes over one): a pass can miss a member another pass
// missed too. So the instant is cut by creation time, which never changes,
// into ranges each read in one response, which is whole. Only one creation
// instant holding more than a page, or an API whose creation filter does
// not hold, is paged until a pass finds nothing new.
func (r *run) readInstant(ctx context.Context, w window, opts defender.ListOptions) (readResult, error) {
	res := readResult{count: -1}
	seen := map[versionKey]bool{}
	todo := []span{{}} // every creation time
	for len(todo) > 0 {
		if r.e.now().After(r.deadline) {
			return res, errOutOfTime
		}
		sp := todo[0]
		todo = todo[1:]
		o := opts
		o.CreatedSince, o.CreatedBefore = sp.from, sp.to
		if sp.single() {
			sub, err := r.readPasses(ctx, w, o, true)
			res.passes += sub.passes
			if err != nil || !sub.whole {
				return res, err
			}
			continue
		}
		page, err := r.firstPage(ctx, o)
		var ae *defender.APIError
		if errors.As(err, &ae) && ae.StatusCode == 400 && sp != (span{}) {
			// The API refuses the creation filter: page the instant.
			r.log.Warn("the listing refuses a creation-time filter; an instant with more than a page is paged", "error", err)
			return r.readPasses(ctx, w, opts, true)
		}
		if err != nil {
			return res, err
		}
		res.passes++
		for _, in := range page.Incidents {
			if !sp.holds(in.Created) {
				// The API ignored the creation filter: page the instant.
				r.log.Warn("the listing's creation-time filter does not hold here; an instant with more than a page is paged", "incident", in.ID, "created", in.Created, "range", sp.String())
				sub, err := r.readPasses(ctx, w, opts, true)
				sub.passes += res.passes
				return sub, err
			}
			seen[keyOf(in)] = true
		}
		var none int
		if err := r.writePage(ctx, w, page, &none); err != nil {
			return res, err
		}
		if page.More {
			todo = append(sp.split(page.Incidents, max(r.top/2, 1)), todo...)
		}
	}
	res.whole, res.members = true, len(seen)
	return res, nil
}

// firstPage is one request: the first page of a listing.
func (r *run) firstPage(ctx context.Context, o defender.ListOptions) (*defender.Page, error) {
	for page, err := range r.t.Client.Incidents(ctx, o) {
		if err != nil {
			return nil, err
		}
		r.requests += page.Requests
		r.pages++
		return page, nil
	}
	return &defender.Page{}, nil
}

// span is [from, to) of creation time; a zero bound is open.
type span struct{ from, to time.Time }

func (sp span) single() bool { return !sp.from.IsZero() && sp.to.Sub(sp.from) == tick }

func (sp span) holds(t time.Time) bool {
	return (sp.from.IsZero() || !t.Before(sp.from)) && (sp.to.IsZero() || t.Before(sp.to))
}

func (sp span) String() string {
	f := func(t time.Time) string {
		if t.IsZero() {
			return "…"
		}
		return t.Format(time.RFC3339Nano)
	}
	return f(sp.from) + "/" + f(sp.to)
}

// split cuts a span whose first page overflowed, by the creation times on
// that page: before the earliest (what the page did not reach, when the
// listing is in creation order), then every per members. Where those cut
// nothing (the page crowds the span's first instant), its earliest creation
// instant is cut out alone.
func (sp span) split(page []*defender.Incident, per int) []span {
	cs := make([]time.Time, len(page))
	for i, in := range page {
		cs[i] = in.Created.UTC().Truncate(tick)
	}
	slices.SortFunc(cs, time.Time.Compare)
	cuts := []time.Time{cs[0]}
	for i := per; i < len(cs); i += per {
		cuts = append(cuts, cs[i])
	}
	out := sp.cut(cuts)
	if len(out) == 1 {
		out = sp.cut([]time.Time{cs[0], cs[0].Add(tick)})
	}
	return out
}

// cut splits sp at the ascending times inside it.
func (sp span) cut(at []time.Time) []span {
	var out []span
	from := sp.from
	for _, c := range at {
		if (from.IsZero() || c.After(from)) && sp.holds(c) {
			out = append(out, span{from, c})
			from = c
		}
	}
	return append(out, span{from, sp.to})
}

// pass reads w once. One response is whole. Paged, it is whole when
// @odata.count stayed the same on every page and as many distinct versions
// came; without a count only a single instant is paged, and a pass that
// finds nothing new ends it.
func (r *run) pass(ctx context.Context, w window, opts defender.ListOptions, single bool) (readResult, error) {
	res := readResult{count: -1}
	distinct := map[versionKey]bool{}
	newInPass := 0
	steady := true
	first := true
	proceed := make(chan struct{})
	for page, err := range ahead(ctx, proceed, func(ctx context.Context) iter.Seq2[*defender.Page, error] { return r.t.Client.Incidents(ctx, opts) }) {
		if err != nil {
			return res, err
		}
		r.requests += page.Requests
		r.pages++
		for _, in := range page.Incidents {
			distinct[keyOf(in)] = true
		}
		if r.count && (page.Count < int64(len(page.Incidents)) || page.More && page.Count == int64(len(page.Incidents))) {
			r.distrustCount(page.Count, len(page.Incidents))
			steady = false
		}
		if first {
			res.count = page.Count
			if page.More && !single && (!r.count || page.Count > 2*int64(r.target())) {
				// Too large to page: narrower, after writing what came.
				res.first, res.tie = crowd(page.Incidents)
				err := r.writePage(ctx, w, page, &newInPass)
				res.members = len(distinct)
				return res, err
			}
		} else if page.Count != res.count {
			steady = false
		}
		if err := r.writePage(ctx, w, page, &newInPass); err != nil {
			return res, err
		}
		if first {
			first = false
			if !page.More {
				res.whole, res.members = true, len(distinct)
				return res, nil
			}
			close(proceed) // the rest of the window is read one page ahead
		}
		if !page.More {
			break
		}
		if r.e.now().After(r.deadline) {
			return res, errOutOfTime
		}
	}
	res.members = len(distinct)
	switch {
	case r.count && steady && res.count >= 0 && int64(len(distinct)) == res.count:
		res.whole = true
	case r.count && res.count >= 0 && int64(len(distinct)) > res.count:
		// More came than the count said, in a window that can only shrink.
		r.distrustCount(res.count, len(distinct))
	case !r.count && single && newInPass == 0:
		res.whole = true
	case r.count:
		res.changed = true
		r.log.Info("a window changed while it was read; reading it again narrower", "window", w.String(), "count", res.count, "read", len(distinct))
	}
	return res, nil
}

// crowd returns the earliest last update among items, and whether all
// share it.
func crowd(items []*defender.Incident) (first time.Time, tie bool) {
	if len(items) == 0 {
		return first, false
	}
	first, tie = items[0].LastUpdate, true
	for _, in := range items[1:] {
		if !in.LastUpdate.Equal(first) {
			tie = false
		}
		if in.LastUpdate.Before(first) {
			first = in.LastUpdate
		}
	}
	return first, tie
}

// distrustCount stops relying on @odata.count for the rest of the run.
func (r *run) distrustCount(count int64, read int) {
	if !r.count {
		return
	}
	r.count = false
	r.log.Warn("@odata.count is not usable here; windows are read one response each", "count", count, "read", read)
}

func (r *run) writePage(ctx context.Context, w window, page *defender.Page, newInPass *int) error {
	fresh := r.fresh(page.Incidents)
	if err := r.write(ctx, fresh); err != nil {
		return err
	}
	*newInPass += len(fresh)
	r.progress(w, len(page.Incidents), len(fresh), page.Requests)
	return r.moved(ctx)
}

// recentPass reads the trailing Lag once, paged, and writes what is new.
// It proves nothing: the next run reads it again once it is older.
func (r *run) recentPass(ctx context.Context, from time.Time) (int, error) {
	opts := defender.ListOptions{Since: from, WithAlerts: true, KeysOnly: true, PageSize: r.top}
	proceed := make(chan struct{})
	close(proceed)
	n := 0
	var none int
	for page, err := range ahead(ctx, proceed, func(ctx context.Context) iter.Seq2[*defender.Page, error] { return r.t.Client.Incidents(ctx, opts) }) {
		if err != nil {
			return n, err
		}
		r.requests += page.Requests
		r.pages++
		n += len(page.Incidents)
		if err := r.writePage(ctx, window{from: from}, page, &none); err != nil {
			return n, err
		}
		if page.More && r.e.now().After(r.deadline) {
			return n, errOutOfTime
		}
	}
	return n, nil
}

type fetched struct {
	page *defender.Page
	err  error
}

// ahead runs a listing one page ahead of its reader once proceed is
// closed, so the API and the sink work at once; until then it stops after
// the first page (whose reader may not want the next).
func ahead(ctx context.Context, proceed <-chan struct{}, list func(context.Context) iter.Seq2[*defender.Page, error]) iter.Seq2[*defender.Page, error] {
	return func(yield func(*defender.Page, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		ch := make(chan fetched) // unbuffered: one page in flight while one is read
		go func() {
			defer close(ch)
			first := true
			for p, err := range list(ctx) {
				select {
				case ch <- fetched{p, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
				if first {
					first = false
					select {
					case <-proceed:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
		defer func() {
			cancel()
			for range ch {
			}
		}()
		for f := range ch {
			if !yield(f.page, f.err) || f.err != nil {
				return
			}
		}
	}
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
	r.log.Info("export page", "fetched", fetched, "written", written, "requests", requests, "window_from", w.from,
		"checkpoint", r.cp.Since, "lag_s", int(r.e.now().Sub(r.cp.Since).Seconds()))
}

func (r *run) behind(w *window) {
	args := []any{"checkpoint", r.cp.Since, "behind_s", int(r.e.now().Sub(r.cp.Since).Seconds()), "written", r.written, "pages", r.pages, "requests", r.requests}
	if w != nil {
		args = append(args, "unfinished_window", w.String())
	}
	r.log.Warn("stopping before the deadline; the next run continues", args...)
}
