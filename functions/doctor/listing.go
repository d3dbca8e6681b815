package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/defender-functions/defender-functions/shared/advice"
	"github.com/defender-functions/defender-functions/shared/defender"
)

// The listing probe checks, read-only, the facts incident-export depends
// on, against the tenant itself: the docs and a live tenant disagree on
// some of them (research: defender-api.md §6.1a), and the export must be
// right whichever way the tenant behaves. Each line says what the fact
// means for the export. Only the first two can fail: without them the
// export cannot work as configured.

const tick = 100 * time.Nanosecond

// probe is one run of the listing probe against tenant t.
type probe struct {
	ctx      context.Context
	r        *report
	t        string
	c        defender.Client
	caps     defender.Capabilities
	pageSize int
}

// line reports a fact: ok when the tenant behaves as documented, a note
// when the export works around it.
func (p *probe) line(ok bool, format string, a ...any) {
	if ok {
		p.r.ok("listing", "tenant %s: %s", p.t, fmt.Sprintf(format, a...))
	} else {
		p.r.note("listing", "tenant %s: %s", p.t, fmt.Sprintf(format, a...))
	}
}

// fail reports that the probe cannot go on.
func (p *probe) fail(err error, fix string) {
	p.r.fail("listing", fmt.Errorf("tenant %s: %w", p.t, err), fix)
}

// probeListing prints one line per fact about tenant t's listing, in
// order; each step returns false when the probe cannot go on.
func probeListing(ctx context.Context, r *report, t string, c defender.Client, pageSize int) {
	caps := c.Capabilities()
	if pageSize <= 0 || pageSize > caps.PageMax {
		pageSize = caps.PageMax
	}
	p := &probe{ctx: ctx, r: r, t: t, c: c, caps: caps, pageSize: pageSize}
	sample, ok := p.top()
	if !ok {
		return
	}
	if len(sample.Incidents) == 0 {
		r.note("listing", "tenant %s: no incidents: nothing more to probe", t)
		return
	}
	in := sample.Incidents[0]
	if !p.updatedFilter(in) || !p.createdFilter(in) || !p.orderBy() {
		return
	}
	// A window old enough not to change, small enough for one response.
	w, truth, err := quietWindow(ctx, c, sample, pageSize)
	if err != nil {
		p.fail(err, "")
		return
	}
	if len(truth) < 4 {
		p.line(false, "too few incidents updated over an hour ago to probe paging and @odata.count")
		return
	}
	if p.count(w, truth) {
		p.paging(w, truth)
	}
}

// top: the export's page size is served ($top); one more is refused. It
// returns the first page, a sample of the tenant's incidents.
func (p *probe) top() (*defender.Page, bool) {
	sample, err := first(p.ctx, p.c, defender.ListOptions{Top: p.pageSize})
	if err != nil {
		p.fail(fmt.Errorf("$top=%d: %w", p.pageSize, err), advice.Say(advice.PageTooLarge, nil))
		return nil, false
	}
	over := p.caps.PageMax + 1
	if _, err := first(p.ctx, p.c, defender.ListOptions{Top: over}); isBadRequest(err) {
		p.line(true, "$top=%d served, $top=%d refused: pages of %d", p.pageSize, over, p.pageSize)
	} else if err == nil {
		p.line(false, "$top=%d is accepted too; the export keeps to the documented %d", over, p.caps.PageMax)
	} else {
		p.fail(fmt.Errorf("$top=%d: %w", over, err), "")
		return nil, false
	}
	return sample, true
}

// updatedFilter: $filter on the last update, ge and lt exact at the API's
// 100 ns, tried on incident in.
func (p *probe) updatedFilter(in *defender.Incident) bool {
	field, at := p.caps.UpdatedField, in.LastUpdate
	for _, q := range []struct {
		from, to time.Time
		want     bool
	}{{at, at.Add(tick), true}, {at.Add(tick), at.Add(time.Second), false}, {at.Add(-time.Second), at, false}} {
		got, err := contains(p.ctx, p.c, defender.ListOptions{Since: q.from, Before: q.to, Top: p.pageSize}, in.ID)
		if err != nil {
			p.fail(fmt.Errorf("$filter on %s: %w", field, err), "")
			return false
		}
		if got != q.want {
			p.fail(fmt.Errorf("%s ge %s and lt %s returned incident %s: %v, want %v", field,
				q.from.Format(time.RFC3339Nano), q.to.Format(time.RFC3339Nano), in.ID, got, q.want), advice.Say(advice.FilterEdges, nil))
			return false
		}
	}
	p.line(true, "$filter on %s: ge and lt exact at 100 ns: windows tile with no gap and no overlap", field)
	return true
}

// createdFilter says whether the creation-time filter holds on incident
// in: it cuts an instant of last update holding more than a page where no
// count proves a paged read.
func (p *probe) createdFilter(in *defender.Incident) bool {
	field, at := p.caps.CreatedField, in.LastUpdate
	if in.Created.IsZero() {
		p.line(false, "incident %s has no creation time to probe %s with", in.ID, field)
		return true
	}
	for _, q := range []struct {
		from, to time.Time
		want     bool
	}{{in.Created, in.Created.Add(tick), true}, {in.Created.Add(tick), time.Time{}, false}, {time.Time{}, in.Created, false}} {
		got, err := contains(p.ctx, p.c, defender.ListOptions{Since: at, Before: at.Add(tick), CreatedSince: q.from, CreatedBefore: q.to, Top: p.pageSize}, in.ID)
		if isBadRequest(err) {
			p.line(false, "$filter on %s is refused (400): an instant of last update holding more than a page is paged until a pass finds nothing new, which can miss a member that leaves it meanwhile", field)
			return true
		}
		if err != nil {
			p.fail(fmt.Errorf("$filter on %s: %w", field, err), "")
			return false
		}
		if got != q.want {
			p.line(false, "$filter on %s is accepted and does not hold: an instant of last update holding more than a page is paged until a pass finds nothing new, which can miss a member that leaves it meanwhile", field)
			return true
		}
	}
	p.line(true, "$filter on %s holds: an instant of last update holding more than a page is cut by creation time, one response each", field)
	return true
}

// orderBy: $orderby on the last update honoured, ignored, or refused.
func (p *probe) orderBy() bool {
	field := p.caps.UpdatedField
	ordered, err := first(p.ctx, p.c, defender.ListOptions{OrderByLastUpdate: true, Top: p.pageSize})
	switch {
	case isBadRequest(err):
		p.line(false, "$orderby=%s is refused (400): the export sends no $orderby", field)
	case err != nil:
		p.fail(fmt.Errorf("$orderby: %w", err), "")
		return false
	case len(ordered.Incidents) < 3:
		p.line(false, "$orderby=%s: too few incidents to tell; the export relies on no order", field)
	case slices.IsSortedFunc(ordered.Incidents, func(a, b *defender.Incident) int { return a.LastUpdate.Compare(b.LastUpdate) }):
		p.line(true, "$orderby=%s asc is honoured (as documented); the export relies on no order either way", field)
	default:
		p.line(false, "$orderby=%s asc is accepted and ignored (as live tenants were seen to): the export relies on no order", field)
	}
	return true
}

// count: @odata.count under $filter, against the window's true members.
func (p *probe) count(w span, truth []string) bool {
	if !p.caps.Count {
		p.line(true, "the %s API offers no @odata.count: the export reads each window in one response", p.c.API())
		return true
	}
	pg, err := first(p.ctx, p.c, defender.ListOptions{Since: w.from, Before: w.to, Top: 1, Count: true})
	switch {
	case err != nil:
		p.fail(fmt.Errorf("$count: %w", err), "")
		return false
	case pg.Count < 0:
		p.line(false, "@odata.count is absent under $filter: the export reads each window in one response (more requests, same result)")
	case pg.Count != int64(len(truth)):
		p.line(false, "@odata.count under $filter says %d for a window of %d: the export sees it is wrong and reads each window in one response", pg.Count, len(truth))
	default:
		p.line(true, "@odata.count under $filter is the true total (%d): the export pages a window and proves it whole by the count", pg.Count)
	}
	return true
}

// paging over the unchanging window: repeats and skips.
func (p *probe) paging(w span, truth []string) {
	step := max(len(truth)/4, 1)
	var paged []string
	for page, err := range p.c.Incidents(p.ctx, defender.ListOptions{Since: w.from, Before: w.to, Top: step}) {
		if err != nil {
			p.fail(fmt.Errorf("paging: %w", err), "")
			return
		}
		for _, in := range page.Incidents {
			paged = append(paged, in.ID)
		}
	}
	after, _, err := readWindow(p.ctx, p.c, w, p.pageSize)
	if err != nil {
		p.fail(err, "")
		return
	}
	if !slices.Equal(after, truth) {
		p.line(false, "the probed window changed while it was paged: run doctor again to probe paging")
		return
	}
	repeats, skips := len(paged)-len(distinct(paged)), 0
	for _, id := range truth {
		if !slices.Contains(paged, id) {
			skips++
		}
	}
	if repeats == 0 && skips == 0 {
		p.line(true, "paging a window of %d unchanged incidents by %d: no repeats, no skips", len(truth), step)
	} else {
		p.line(false, "paging a window of %d unchanged incidents by %d: %d repeated, %d skipped: the export's count check sees it and reads such windows in one response each", len(truth), step, repeats, skips)
	}
}

type span struct{ from, to time.Time }

// quietWindow finds a window of last updates that ended over an hour ago
// and that one response holds whole, and returns its incidents' IDs.
func quietWindow(ctx context.Context, c defender.Client, sample *defender.Page, pageSize int) (span, []string, error) {
	to := time.Now().Add(-time.Hour).UTC().Truncate(tick)
	from := to.Add(-30 * 24 * time.Hour)
	// From the oldest sampled update: a sure member, and room for more.
	oldest := to
	for _, in := range sample.Incidents {
		if in.LastUpdate.Before(oldest) && in.LastUpdate.After(from) {
			oldest = in.LastUpdate.Truncate(tick)
		}
	}
	if oldest.Before(to) {
		from = oldest
	}
	w := span{from, to}
	for range 40 {
		ids, more, err := readWindow(ctx, c, w, pageSize)
		if err != nil {
			return w, nil, err
		}
		if !more {
			return w, ids, nil
		}
		w.to = w.from.Add(w.to.Sub(w.from) / 2).Truncate(tick)
	}
	return w, nil, errors.New("no window of last updates small enough for one response was found")
}

// readWindow reads a window in one response: its IDs, sorted, and whether
// more followed.
func readWindow(ctx context.Context, c defender.Client, w span, pageSize int) ([]string, bool, error) {
	p, err := first(ctx, c, defender.ListOptions{Since: w.from, Before: w.to, Top: pageSize})
	if err != nil {
		return nil, false, err
	}
	ids := make([]string, len(p.Incidents))
	for i, in := range p.Incidents {
		ids[i] = in.ID
	}
	slices.Sort(ids)
	return ids, p.More, nil
}

func distinct(ids []string) []string {
	s := slices.Clone(ids)
	slices.Sort(s)
	return slices.Compact(s)
}

func first(ctx context.Context, c defender.Client, o defender.ListOptions) (*defender.Page, error) {
	o.KeysOnly = true
	for p, err := range c.Incidents(ctx, o) {
		return p, err
	}
	return &defender.Page{}, nil
}

func contains(ctx context.Context, c defender.Client, o defender.ListOptions, id string) (bool, error) {
	p, err := first(ctx, c, o)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(p.Incidents, func(in *defender.Incident) bool { return in.ID == id }), nil
}

func isBadRequest(err error) bool {
	var ae *defender.APIError
	return errors.As(err, &ae) && ae.StatusCode == 400
}
