package devstack

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// store is one tenant's incidents, indexed by last update and by creation
// so that a page costs O(log N + page), not O(N).
type store struct {
	mu        sync.RWMutex
	tenantID  string
	domain    string
	byID      map[int64]*incident
	byUpdate  []*incident // ascending (LastUpdate, ID)
	byCreated []*incident // ascending (Created, ID)
	nextID    int64
	clock     time.Time // the last update time handed out
	rng       *rand.Rand
	alertSeq  int
	// history holds every version ever served, for tests' exactly-once proofs.
	history map[int64][]time.Time
}

func seedFor(seed int64, tid string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(tid))
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
}

// newStore generates n incidents created over the 30 days before anchor.
func newStore(seed int64, tid, domain string, n int, firstID int64, anchor time.Time) *store {
	s := &store{tenantID: tid, domain: domain, byID: make(map[int64]*incident, n), nextID: firstID, rng: seedFor(seed, tid), history: map[int64][]time.Time{}}
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
	}
	s.byUpdate = append([]*incident(nil), s.byCreated...)
	sortByUpdate(s.byUpdate)
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

// replace stores a new version of an incident (caller holds mu).
func (s *store) replace(old, nu *incident) {
	s.byID[nu.ID] = nu
	s.history[nu.ID] = append(s.history[nu.ID], nu.LastUpdate)
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
	} else {
		s.byCreated = append(s.byCreated, nu)
	}
	i := sort.Search(len(s.byUpdate), func(i int) bool { return lessUpdate(nu, s.byUpdate[i]) })
	s.byUpdate = append(s.byUpdate, nil)
	copy(s.byUpdate[i+1:], s.byUpdate[i:])
	s.byUpdate[i] = nu
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
			s.replace(nil, in)
			ids = append(ids, in.ID)
			continue
		}
		// Recent incidents are the ones analysts work on.
		idx := len(s.byCreated) - 1 - s.rng.IntN(min(len(s.byCreated), 500))
		old := s.byCreated[idx]
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
		s.replace(old, nu)
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
	orderBy string     // "update" or "created"
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
// time fields (ge, gt, le, lt, eq) and eq/ne on enum fields, joined with "and".
func parseFilter(f string, fn fieldNames) ([]pred, *time.Time, error) {
	var preds []pred
	var after *time.Time
	if strings.TrimSpace(f) == "" {
		return nil, nil, nil
	}
	for _, clause := range splitAnd(f) {
		parts := strings.Fields(clause)
		if len(parts) < 3 {
			return nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: syntax error in '%s'.", clause)}
		}
		field, op, val := parts[0], strings.ToLower(parts[1]), strings.Join(parts[2:], " ")
		switch {
		case field == fn.update || field == fn.created:
			t, err := time.Parse(time.RFC3339Nano, strings.Trim(val, "'"))
			if err != nil {
				return nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: the value '%s' is not a valid DateTimeOffset.", val)}
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
				return nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: operator '%s' is not supported for '%s'.", op, field)}
			}
			preds = append(preds, p)
			if field == fn.update && (op == "ge" || op == "gt") && (after == nil || t.After(*after)) {
				tt := t
				after = &tt
			}
		default:
			set, ok := fn.extra[field]
			if !ok {
				return nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: could not find a property named '%s' on type 'incident', or it does not support filtering.", field)}
			}
			if op != "eq" && op != "ne" {
				return nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: operator '%s' is not supported for '%s'.", op, field)}
			}
			var want string
			if val != "null" {
				if len(val) < 2 || val[0] != '\'' || val[len(val)-1] != '\'' {
					return nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: the value %s must be a quoted string.", val)}
				}
				want = strings.ReplaceAll(val[1:len(val)-1], "''", "'")
			}
			get := func(in *incident) string { return in.AssignedTo }
			if set != nil {
				if want != "" {
					if e := parseEnum(want, set); e != "" {
						want = e
					} else {
						return nil, nil, &odataError{fmt.Sprintf("Invalid filter clause: the string '%s' is not a valid enumeration type constant for '%s'.", want, field)}
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
	return preds, after, nil
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

func parseOrderBy(v string, fn fieldNames) (string, bool, error) {
	if v == "" {
		return "created", true, nil // newest first, as both APIs list by default
	}
	first := strings.TrimSpace(strings.Split(v, ",")[0])
	parts := strings.Fields(first)
	desc := len(parts) > 1 && strings.EqualFold(parts[1], "desc")
	if len(parts) > 1 && !desc && !strings.EqualFold(parts[1], "asc") {
		return "", false, &odataError{"The $orderby direction must be asc or desc."}
	}
	switch parts[0] {
	case fn.update:
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
// the total count when asked.
func (s *store) page(q listQuery) (items []*incident, more bool, total int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	src := s.byCreated
	if q.orderBy == "update" {
		src = s.byUpdate
	}
	lo, hi, step := 0, len(src), 1
	if q.orderBy == "update" && q.after != nil && !q.desc {
		t := *q.after
		lo = sort.Search(len(src), func(i int) bool { return !src[i].LastUpdate.Before(t) })
	}
	i := lo
	if q.desc {
		i, step = hi-1, -1
	}
	skipped := 0
	for ; i >= lo && i < hi; i += step {
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
	s.replace(old, nu)
	return nu
}
