package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/defender-functions/defender-functions/shared/defender"
)

// The listing probe checks, read-only, the facts incident-export depends
// on, against the tenant itself: the docs and a live tenant disagree on
// some of them (research: defender-api.md §6.1a), and the export must be
// right whichever way the tenant behaves. Each line says what the fact
// means for the export. Only the first two can fail: without them the
// export cannot work as configured.

const tick = 100 * time.Nanosecond

// probeListing prints one line per fact about tenant t's listing.
func probeListing(ctx context.Context, r *report, t string, c defender.Client, pageSize int) {
	caps := c.Capabilities()
	if pageSize <= 0 || pageSize > caps.PageMax {
		pageSize = caps.PageMax
	}
	field := caps.UpdatedField
	line := func(ok bool, format string, a ...any) {
		if ok {
			r.ok("listing", "tenant %s: %s", t, fmt.Sprintf(format, a...))
		} else {
			r.note("listing", "tenant %s: %s", t, fmt.Sprintf(format, a...))
		}
	}

	// $top: the export's page size is served; one more is refused.
	sample, err := first(ctx, c, defender.ListOptions{Top: pageSize})
	if err != nil {
		r.fail("listing", fmt.Errorf("tenant %s: $top=%d: %w", t, pageSize, err), "set EXPORT_PAGE_SIZE lower")
		return
	}
	if _, err := first(ctx, c, defender.ListOptions{Top: caps.PageMax + 1}); isBadRequest(err) {
		line(true, "$top=%d served, $top=%d refused: pages of %d", pageSize, caps.PageMax+1, pageSize)
	} else if err == nil {
		line(false, "$top=%d is accepted too; the export keeps to the documented %d", caps.PageMax+1, caps.PageMax)
	} else {
		r.fail("listing", fmt.Errorf("tenant %s: $top=%d: %w", t, caps.PageMax+1, err), "")
		return
	}
	if len(sample.Incidents) == 0 {
		r.note("listing", "tenant %s: no incidents: nothing more to probe", t)
		return
	}

	// $filter on the last update: ge and lt exact at the API's 100 ns.
	in := sample.Incidents[0]
	at := in.LastUpdate
	for _, q := range []struct {
		from, to time.Time
		want     bool
	}{{at, at.Add(tick), true}, {at.Add(tick), at.Add(time.Second), false}, {at.Add(-time.Second), at, false}} {
		got, err := contains(ctx, c, defender.ListOptions{Since: q.from, Before: q.to, Top: pageSize}, in.ID)
		if err != nil {
			r.fail("listing", fmt.Errorf("tenant %s: $filter on %s: %w", t, field, err), "")
			return
		}
		if got != q.want {
			r.fail("listing", fmt.Errorf("tenant %s: %s ge %s and lt %s returned incident %s: %v, want %v", t, field,
				q.from.Format(time.RFC3339Nano), q.to.Format(time.RFC3339Nano), in.ID, got, q.want),
				"the export's windows would lose or repeat versions at their edges; run doctor again (the incident may have changed), and report it if it persists")
			return
		}
	}
	line(true, "$filter on %s: ge and lt exact at 100 ns: windows tile with no gap and no overlap", field)

	// $filter on the creation time, which cuts an instant of last update
	// holding more than a page where no count proves a paged read.
	if !probeCreated(ctx, r, t, c, in, pageSize, line) {
		return
	}

	// $orderby on the last update: honoured, ignored, or refused.
	ordered, err := first(ctx, c, defender.ListOptions{OrderByLastUpdate: true, Top: pageSize})
	switch {
	case isBadRequest(err):
		line(false, "$orderby=%s is refused (400): the export sends no $orderby", field)
	case err != nil:
		r.fail("listing", fmt.Errorf("tenant %s: $orderby: %w", t, err), "")
		return
	case len(ordered.Incidents) < 3:
		line(false, "$orderby=%s: too few incidents to tell; the export relies on no order", field)
	case slices.IsSortedFunc(ordered.Incidents, func(a, b *defender.Incident) int { return a.LastUpdate.Compare(b.LastUpdate) }):
		line(true, "$orderby=%s asc is honoured (as documented); the export relies on no order either way", field)
	default:
		line(false, "$orderby=%s asc is accepted and ignored (as live tenants were seen to): the export relies on no order", field)
	}

	// A window old enough not to change, small enough for one response.
	w, truth, err := quietWindow(ctx, c, sample, pageSize)
	if err != nil {
		r.fail("listing", fmt.Errorf("tenant %s: %w", t, err), "")
		return
	}
	if len(truth) < 4 {
		line(false, "too few incidents updated over an hour ago to probe paging and @odata.count")
		return
	}

	// @odata.count under $filter.
	if caps.Count {
		p, err := first(ctx, c, defender.ListOptions{Since: w.from, Before: w.to, Top: 1, Count: true})
		switch {
		case err != nil:
			r.fail("listing", fmt.Errorf("tenant %s: $count: %w", t, err), "")
			return
		case p.Count < 0:
			line(false, "@odata.count is absent under $filter: the export reads each window in one response (more requests, same result)")
		case p.Count != int64(len(truth)):
			line(false, "@odata.count under $filter says %d for a window of %d: the export sees it is wrong and reads each window in one response", p.Count, len(truth))
		default:
			line(true, "@odata.count under $filter is the true total (%d): the export pages a window and proves it whole by the count", p.Count)
		}
	} else {
		line(true, "the %s API offers no @odata.count: the export reads each window in one response", c.API())
	}

	// Paging over the unchanging window: repeats and skips.
	step := max(len(truth)/4, 1)
	var paged []string
	for page, err := range c.Incidents(ctx, defender.ListOptions{Since: w.from, Before: w.to, Top: step}) {
		if err != nil {
			r.fail("listing", fmt.Errorf("tenant %s: paging: %w", t, err), "")
			return
		}
		for _, in := range page.Incidents {
			paged = append(paged, in.ID)
		}
	}
	after, _, err := readWindow(ctx, c, w, pageSize)
	if err != nil {
		r.fail("listing", fmt.Errorf("tenant %s: %w", t, err), "")
		return
	}
	if !slices.Equal(after, truth) {
		line(false, "the probed window changed while it was paged: run doctor again to probe paging")
		return
	}
	repeats, skips := len(paged)-len(distinct(paged)), 0
	for _, id := range truth {
		if !slices.Contains(paged, id) {
			skips++
		}
	}
	if repeats == 0 && skips == 0 {
		line(true, "paging a window of %d unchanged incidents by %d: no repeats, no skips", len(truth), step)
	} else {
		line(false, "paging a window of %d unchanged incidents by %d: %d repeated, %d skipped: the export's count check sees it and reads such windows in one response each", len(truth), step, repeats, skips)
	}
}

// probeCreated says whether the creation-time filter holds on incident in;
// false when the probe cannot go on.
func probeCreated(ctx context.Context, r *report, t string, c defender.Client, in *defender.Incident, pageSize int, line func(bool, string, ...any)) bool {
	field, at := c.Capabilities().CreatedField, in.LastUpdate
	if in.Created.IsZero() {
		line(false, "incident %s has no creation time to probe %s with", in.ID, field)
		return true
	}
	for _, q := range []struct {
		from, to time.Time
		want     bool
	}{{in.Created, in.Created.Add(tick), true}, {in.Created.Add(tick), time.Time{}, false}, {time.Time{}, in.Created, false}} {
		got, err := contains(ctx, c, defender.ListOptions{Since: at, Before: at.Add(tick), CreatedSince: q.from, CreatedBefore: q.to, Top: pageSize}, in.ID)
		if isBadRequest(err) {
			line(false, "$filter on %s is refused (400): an instant of last update holding more than a page is paged until a pass finds nothing new, which can miss a member that leaves it meanwhile", field)
			return true
		}
		if err != nil {
			r.fail("listing", fmt.Errorf("tenant %s: $filter on %s: %w", t, field, err), "")
			return false
		}
		if got != q.want {
			line(false, "$filter on %s is accepted and does not hold: an instant of last update holding more than a page is paged until a pass finds nothing new, which can miss a member that leaves it meanwhile", field)
			return true
		}
	}
	line(true, "$filter on %s holds: an instant of last update holding more than a page is cut by creation time, one response each", field)
	return true
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
