package devstack

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// store is one tenant's incidents, indexed by last update, by creation and
// in the listing's own order so that a page costs O(log N + page), not O(N).
//
// byID holds each incident's latest version (what GET and PATCH see); the
// indexes hold the version listings see. They differ while an update is
// pending: with the replication-lag fault on, a share of new versions
// reach the listings only some time after their lastUpdate, and until then
// a listing shows the one before (or, for a new incident, nothing).
type store struct {
	mu        sync.RWMutex
	tenantID  string
	domain    string
	byID      map[int64]*incident
	listed    map[int64]*incident // the version the indexes hold
	byUpdate  []*incident         // ascending (LastUpdate, ID)
	byCreated []*incident         // ascending (Created, ID)
	byHash    []*incident         // ascending listKey: the undocumented order listings come in
	pending   map[int64]pendingVersion
	nextID    int64
	clock     time.Time // the last update time handed out
	rng       *rand.Rand
	alertSeq  int
	// lag says how late a new version becomes visible to listings (0: at once).
	lag func() time.Duration
	// history holds every version ever served, for tests' exactly-once proofs.
	history map[int64][]time.Time
}

// pendingVersion is a version listings do not show yet.
type pendingVersion struct {
	in      *incident
	visible time.Time
}

// listKey orders listings when no order is asked for (or an ignored one
// is): the live service lists in a stable order that is not chronological
// (research: defender-api.md §6.1a). A multiplicative hash of the ID is
// stable across updates and unrelated to time, which is what a client must
// not depend on.
func listKey(id int64) uint64 { return uint64(id) * 0x9E3779B97F4A7C15 }

func lessHash(a, b *incident) bool { return listKey(a.ID) < listKey(b.ID) }

func seedFor(seed int64, tid string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(tid))
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
}

// newStore generates n incidents created over the 30 days before anchor.
func newStore(seed int64, tid, domain string, n int, firstID int64, anchor time.Time) *store {
	s := &store{tenantID: tid, domain: domain, byID: make(map[int64]*incident, n), listed: make(map[int64]*incident, n), pending: map[int64]pendingVersion{},
		nextID: firstID, rng: seedFor(seed, tid), history: map[int64][]time.Time{}}
	span := 30 * 24 * time.Hour
	for i := 0; i < n; i++ {
		created := anchor.Add(-span + time.Duration(float64(span)*float64(i)/float64(max(n, 1)))).Add(time.Duration(s.rng.IntN(1000)) * time.Millisecond)
		in := newIncident(s.rng, tid, domain, s.nextID, created, s.alertCount())
		s.nextID++
		s.byID[in.ID] = in
		s.byCreated = append(s.byCreated, in)
	}
	// Some incidents were merged into others.
	for i := 0; i < n/40; i++ {
		in := s.byCreated[s.rng.IntN(n)]
		if target := in.ID - 1 - int64(s.rng.IntN(5)); target >= firstID && in.RedirectID == 0 {
			in.Status, in.RedirectID = "redirected", target
		}
	}
	sortByCreated(s.byCreated)
	for _, in := range s.byCreated {
		s.history[in.ID] = []time.Time{in.LastUpdate}
		s.listed[in.ID] = in
	}
	s.byUpdate = append([]*incident(nil), s.byCreated...)
	sortByUpdate(s.byUpdate)
	s.byHash = append([]*incident(nil), s.byCreated...)
	sort.Slice(s.byHash, func(i, j int) bool { return lessHash(s.byHash[i], s.byHash[j]) })
	if n > 0 {
		s.clock = s.byUpdate[n-1].LastUpdate
	}
	return s
}

func (s *store) alertCount() int {
	// About 1 % of incidents are large: the ones Graph fails to $expand.
	if s.rng.IntN(100) == 0 {
		return 60 + s.rng.IntN(140)
	}
	return 1 + s.rng.IntN(4)
}

func sortByUpdate(s []*incident) {
	sort.Slice(s, func(i, j int) bool { return lessUpdate(s[i], s[j]) })
}

func sortByCreated(s []*incident) {
	sort.Slice(s, func(i, j int) bool {
		if !s[i].Created.Equal(s[j].Created) {
			return s[i].Created.Before(s[j].Created)
		}
		return s[i].ID < s[j].ID
	})
}

func lessUpdate(a, b *incident) bool {
	if !a.LastUpdate.Equal(b.LastUpdate) {
		return a.LastUpdate.Before(b.LastUpdate)
	}
	return a.ID < b.ID
}

// tick returns a new update time, strictly after every earlier one, so a
// (incident, lastUpdate) pair names exactly one version.
func (s *store) tick(now time.Time) time.Time {
	t := now.UTC().Truncate(100 * time.Nanosecond)
	if !t.After(s.clock) {
		t = s.clock.Add(100 * time.Nanosecond)
	}
	s.clock = t
	return t
}

// replace stores a new version of an incident (caller holds mu). It is
// listed at once, or after the lag the replication fault draws for it.
func (s *store) replace(nu *incident) {
	s.byID[nu.ID] = nu
	s.history[nu.ID] = append(s.history[nu.ID], nu.LastUpdate)
	if s.lag != nil {
		if d := s.lag(); d > 0 {
			// A later version supersedes one still pending: that one is never listed.
			s.pending[nu.ID] = pendingVersion{nu, nu.LastUpdate.Add(d)}
			return
		}
	}
	delete(s.pending, nu.ID)
	s.list(nu)
}

// publish lists the pending versions whose time has come (caller holds mu).
func (s *store) publish(now time.Time) {
	for id, p := range s.pending {
		if !p.visible.After(now) {
			delete(s.pending, id)
			s.list(p.in)
		}
	}
}

// duePending says whether publish has work (caller holds mu, read or write).
func (s *store) duePending(now time.Time) bool {
	for _, p := range s.pending {
		if !p.visible.After(now) {
			return true
		}
	}
	return false
}

// list puts a version in the indexes in place of the one they held.
func (s *store) list(nu *incident) {
	old := s.listed[nu.ID]
	s.listed[nu.ID] = nu
	if old != nil {
		i := sort.Search(len(s.byUpdate), func(i int) bool { return !lessUpdate(s.byUpdate[i], old) })
		if i < len(s.byUpdate) && s.byUpdate[i] == old {
			s.byUpdate = append(s.byUpdate[:i], s.byUpdate[i+1:]...)
		}
		j := sort.Search(len(s.byCreated), func(j int) bool {
			c := s.byCreated[j]
			return c.Created.After(old.Created) || (c.Created.Equal(old.Created) && c.ID >= old.ID)
		})
		if j < len(s.byCreated) && s.byCreated[j].ID == old.ID {
			s.byCreated[j] = nu
		}
		if h := sort.Search(len(s.byHash), func(h int) bool { return !lessHash(s.byHash[h], old) }); h < len(s.byHash) && s.byHash[h].ID == old.ID {
			s.byHash[h] = nu
		}
	} else {
		s.byCreated = insertSorted(s.byCreated, nu, func(a, b *incident) bool {
			return a.Created.Before(b.Created) || a.Created.Equal(b.Created) && a.ID < b.ID
		})
		s.byHash = insertSorted(s.byHash, nu, lessHash)
	}
	s.byUpdate = insertSorted(s.byUpdate, nu, lessUpdate)
}

func insertSorted(list []*incident, in *incident, less func(a, b *incident) bool) []*incident {
	i := sort.Search(len(list), func(i int) bool { return less(in, list[i]) })
	list = append(list, nil)
	copy(list[i+1:], list[i:])
	list[i] = in
	return list
}

// mutate changes up to n incidents in one batch that shares one timestamp,
// the way Defender often stamps several incidents in the same tick. Now and
// then it opens a new incident instead. It returns the IDs changed.
func (s *store) mutate(now time.Time, n int) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byUpdate) == 0 {
		return nil
	}
	at := s.tick(now)
	var ids []int64
	seen := map[int64]bool{}
	for k := 0; k < n; k++ {
		if s.rng.IntN(10) == 0 {
			in := newIncident(s.rng, s.tenantID, s.domain, s.nextID, at, 1+s.rng.IntN(3))
			in.LastUpdate = at
			s.nextID++
			s.replace(in)
			ids = append(ids, in.ID)
			continue
		}
		// Recent incidents are the ones analysts work on.
		idx := len(s.byCreated) - 1 - s.rng.IntN(min(len(s.byCreated), 500))
		old := s.byID[s.byCreated[idx].ID] // the latest version, listed or not
		if seen[old.ID] {
			continue
		}
		seen[old.ID] = true
		nu := old.clone()
		switch s.rng.IntN(6) {
		case 0:
			nu.Status = pick(s.rng, []string{"active", "inProgress", "resolved"})
		case 1:
			nu.AssignedTo = pick(s.rng, analysts)
		case 2:
			nu.Comments = append(nu.Comments, comment{Text: "Investigating: " + pick(s.rng, []string{"isolated the device", "reset the password", "blocked the sender", "no further activity"}), CreatedBy: pick(s.rng, analysts), Created: at})
		case 3:
			nu.Tags = append(nu.Tags, pick(s.rng, tags))
		case 4:
			nu.Classification, nu.Determination, nu.Status = "truePositive", pick(s.rng, []string{"malware", "phishing", "multiStagedAttack"}), "resolved"
		default:
			a := *old.Alerts[0]
			s.alertSeq++
			a.ID = fmt.Sprintf("%s-%d", a.ID, s.alertSeq)
			a.Created, a.Updated = at, at
			nu.Alerts = append(nu.Alerts, &a)
		}
		nu.LastUpdate = at
		s.replace(nu)
		ids = append(ids, nu.ID)
	}
	return ids
}

// --- OData queries ---

type odataError struct{ msg string }

func (e *odataError) Error() string { return e.msg }

type pred func(*incident) bool

// listQuery is a parsed $filter/$orderby/$top/$skip.
type listQuery struct {
	preds   []pred
	after   *time.Time // lastUpdate lower bound, used with the index
	before  *time.Time // lastUpdate upper bound, used with the index
	orderBy string     // "update", "created", or "" for the listing's own order
	desc    bool
	top     int
	skip    int
	count   bool
}

type fieldNames struct {
	update, created string
	extra           map[string][]string // enum fields filterable with eq/ne
}

var (
	graphFields = fieldNames{"lastUpdateDateTime", "createdDateTime", map[string][]string{
		"status": statuses, "severity": severities, "classification": classifications, "determination": determinations, "assignedTo": nil}}
	xdrFields = fieldNames{"lastUpdateTime", "createdTime", map[string][]string{"status": statuses, "assignedTo": nil}}
)

// parseFilter understands the subset both APIs document: comparisons of the
// time fields (ge, gt, le, lt, eq) and eq/ne on enum fields, joined with
// "and". ignoreCreated accepts the creation time's clauses and drops them.
func parseFilter(f string, fn fieldNames, ignoreCreated bool) (preds []pred, after, before *time.Time, err error) {
	if strings.TrimSpace(f) == "" {
		return nil, nil, nil, nil
	}
	for _, clause := range splitAnd(f) {
		parts := strings.Fields(clause)
		if len(parts) < 3 {
			return nil, nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: syntax error in '%s'.", clause)}
		}
		field, op, val := parts[0], strings.ToLower(parts[1]), strings.Join(parts[2:], " ")
		switch {
		case field == fn.update || field == fn.created:
			t, err := time.Parse(time.RFC3339Nano, strings.Trim(val, "'"))
			if err != nil {
				return nil, nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: the value '%s' is not a valid DateTimeOffset.", val)}
			}
			if field == fn.created && ignoreCreated {
				continue
			}
			get := func(in *incident) time.Time { return in.LastUpdate }
			if field == fn.created {
				get = func(in *incident) time.Time { return in.Created }
			}
			var p pred
			switch op {
			case "ge":
				p = func(in *incident) bool { return !get(in).Before(t) }
			case "gt":
				p = func(in *incident) bool { return get(in).After(t) }
			case "le":
				p = func(in *incident) bool { return !get(in).After(t) }
			case "lt":
				p = func(in *incident) bool { return get(in).Before(t) }
			case "eq":
				p = func(in *incident) bool { return get(in).Equal(t) }
			default:
				return nil, nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: operator '%s' is not supported for '%s'.", op, field)}
			}
			preds = append(preds, p)
			if field == fn.update && (op == "ge" || op == "gt" || op == "eq") && (after == nil || t.After(*after)) {
				tt := t
				after = &tt
			}
			if field == fn.update && (op == "lt" || op == "le" || op == "eq") && (before == nil || t.Before(*before)) {
				tt := t.Add(time.Nanosecond) // an exclusive bound that keeps t
				before = &tt
			}
		default:
			set, ok := fn.extra[field]
			if !ok {
				return nil, nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: could not find a property named '%s' on type 'incident', or it does not support filtering.", field)}
			}
			if op != "eq" && op != "ne" {
				return nil, nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: operator '%s' is not supported for '%s'.", op, field)}
			}
			var want string
			if val != "null" {
				if len(val) < 2 || val[0] != '\'' || val[len(val)-1] != '\'' {
					return nil, nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: the value %s must be a quoted string.", val)}
				}
				want = strings.ReplaceAll(val[1:len(val)-1], "''", "'")
			}
			get := func(in *incident) string { return in.AssignedTo }
			if set != nil {
				if want != "" {
					if e := parseEnum(want, set); e != "" {
						want = e
					} else {
						return nil, nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: the string '%s' is not a valid enumeration type constant for '%s'.", want, field)}
					}
				}
				switch field {
				case "status":
					get = func(in *incident) string { return in.Status }
				case "severity":
					get = func(in *incident) string { return in.Severity }
				case "classification":
					get = func(in *incident) string { return in.Classification }
				case "determination":
					get = func(in *incident) string { return in.Determination }
				}
			}
			neg := op == "ne"
			preds = append(preds, func(in *incident) bool { return strings.EqualFold(get(in), want) != neg })
		}
	}
	return preds, after, before, nil
}

// splitAnd splits on " and " outside quotes.
func splitAnd(f string) []string {
	var out []string
	inQ := false
	start := 0
	lower := strings.ToLower(f)
	for i := 0; i < len(f); i++ {
		if f[i] == '\'' {
			inQ = !inQ
		}
		if !inQ && strings.HasPrefix(lower[i:], " and ") {
			out = append(out, strings.TrimSpace(f[start:i]))
			start = i + 5
			i += 4
		}
	}
	return append(out, strings.TrimSpace(f[start:]))
}

// parseOrderBy reads $orderby. By default it behaves as a live tenant was
// observed to (research: defender-api.md §6.1a): no $orderby lists in the
// service's own order, not newest first; lastUpdate is accepted and
// ignored; createdDateTime is honoured; any other field is a 400. With
// documented set, the docs' reading: newest created first, lastUpdate
// honoured.
func parseOrderBy(v string, fn fieldNames, documented bool) (string, bool, error) {
	if v == "" {
		if documented {
			return "created", true, nil // "the most recent incidents are displayed at the top"
		}
		return "", false, nil
	}
	first := strings.TrimSpace(strings.Split(v, ",")[0])
	parts := strings.Fields(first)
	desc := len(parts) > 1 && strings.EqualFold(parts[1], "desc")
	if len(parts) > 1 && !desc && !strings.EqualFold(parts[1], "asc") {
		return "", false, &odataError{"The $orderby direction must be asc or desc."}
	}
	switch parts[0] {
	case fn.update:
		if !documented {
			return "", false, nil
		}
		return "update", desc, nil
	case fn.created:
		return "created", desc, nil
	}
	return "", false, &odataError{fmt.Sprintf("Order by '%s' is not supported.", parts[0])}
}

func parseInt(v string, def int, what string) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, &odataError{fmt.Sprintf("Invalid value '%s' for %s; it must be a non-negative integer.", v, what)}
	}
	return n, nil
}

// prerender renders every incident in one form, on every core.
func (s *store) prerender(form int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(s.byCreated); i += workers {
				s.byCreated[i].render(form)
			}
		})
	}
	wg.Wait()
}

// page runs a query: it returns the matching page, whether more follow, and
// the total count when asked. Pending versions whose time has come are
// listed first.
func (s *store) page(q listQuery, now time.Time) (items []*incident, more bool, total int) {
	s.mu.RLock()
	if s.duePending(now) {
		s.mu.RUnlock()
		s.mu.Lock()
		s.publish(now)
		s.mu.Unlock()
		s.mu.RLock()
	}
	defer s.mu.RUnlock()
	// The lastUpdate bounds narrow the scan to a range of byUpdate.
	lo, hi := 0, len(s.byUpdate)
	if q.after != nil {
		t := *q.after
		lo = sort.Search(len(s.byUpdate), func(i int) bool { return !s.byUpdate[i].LastUpdate.Before(t) })
	}
	if q.before != nil {
		t := *q.before
		hi = max(lo, sort.Search(len(s.byUpdate), func(i int) bool { return !s.byUpdate[i].LastUpdate.Before(t) }))
	}
	var src []*incident
	switch {
	case q.orderBy == "update":
		src = s.byUpdate[lo:hi]
	case q.orderBy == "created":
		src = s.byCreated
	case hi-lo <= len(s.byUpdate)/4:
		// A narrow window: its members, put in the listing's order.
		src = slices.Clone(s.byUpdate[lo:hi])
		slices.SortFunc(src, func(a, b *incident) int { return cmp.Compare(listKey(a.ID), listKey(b.ID)) })
	default:
		src = s.byHash
	}
	i, step := 0, 1
	if q.desc {
		i, step = len(src)-1, -1
	}
	skipped := 0
	for ; i >= 0 && i < len(src); i += step {
		in := src[i]
		ok := true
		for _, p := range q.preds {
			if !p(in) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		total++
		if skipped < q.skip {
			skipped++
			continue
		}
		if len(items) < q.top {
			items = append(items, in)
			continue
		}
		more = true
		if !q.count {
			break
		}
	}
	return items, more, total
}

func (s *store) get(id int64) *incident {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id]
}

func (s *store) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

// update applies a PATCH under the store lock and returns the new version.
func (s *store) update(id int64, now time.Time, fn func(*incident)) *incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.byID[id]
	if old == nil {
		return nil
	}
	nu := old.clone()
	fn(nu)
	nu.LastUpdate = s.tick(now)
	s.replace(nu)
	return nu
}
