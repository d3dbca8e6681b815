package incidentexport

// The window reader: a window of lastUpdate read as a set and proven
// whole (one response, a steady count, or cut by time and by creation time),
// each page written before the checkpoint moves past it.

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/defender-functions/defender-functions/shared/defender"
)

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
		r.log.Info("An instant with more than a page changed while it was read; reading it again.", "at", w.from, "pass", pass+1)
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
			r.log.Warn("The listing refuses a creation-time filter; an instant with more than a page is paged.", "err", err)
			return r.readPasses(ctx, w, opts, true)
		}
		if err != nil {
			return res, err
		}
		res.passes++
		for _, in := range page.Incidents {
			if !sp.holds(in.Created) {
				// The API ignored the creation filter: page the instant.
				r.log.Warn("The listing's creation-time filter does not hold here; an instant with more than a page is paged.", "incident", in.ID, "created", in.Created, "range", sp.String())
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
		r.log.Info("A window changed while it was read; reading it again narrower.", "window", w.String(), "count", res.count, "read", len(distinct))
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
	r.log.Warn("@odata.count is not usable here; windows are read one response each.", "count", count, "read", read)
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
