package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Counters count what the devstack served, per endpoint and status.
type Counters struct {
	mu sync.Mutex
	m  map[string]map[int]int64
}

func newCounters() *Counters { return &Counters{m: map[string]map[int]int64{}} }

func (c *Counters) add(endpoint string, status int) {
	c.mu.Lock()
	m := c.m[endpoint]
	if m == nil {
		m = map[int]int64{}
		c.m[endpoint] = m
	}
	m[status]++
	c.mu.Unlock()
}

// Get returns how many responses of one status an endpoint served; status 0 means all.
func (c *Counters) Get(endpoint string, status int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if status != 0 {
		return c.m[endpoint][status]
	}
	var n int64
	for _, v := range c.m[endpoint] {
		n += v
	}
	return n
}

// Snapshot returns every counter: endpoint → status → count.
func (c *Counters) Snapshot() map[string]map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string]int64{}
	for e, m := range c.m {
		out[e] = map[string]int64{}
		for st, n := range m {
			out[e][strconv.Itoa(st)] = n
		}
	}
	return out
}

// Reset zeroes every counter.
func (c *Counters) Reset() {
	c.mu.Lock()
	c.m = map[string]map[int]int64{}
	c.mu.Unlock()
}

// recorder captures the status and counts the response the moment its
// status is decided, so a client that has its answer sees it counted.
type recorder struct {
	http.ResponseWriter
	status   int
	endpoint string
	service  string
	r        *http.Request
	counters *Counters
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
		r.counters.add(r.name(), code)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) name() string {
	if r.endpoint != "" {
		return r.endpoint
	}
	return r.service + "." + routeName(r.r)
}

// route registers a handler under a counter name.
func route(mux *http.ServeMux, pattern, name string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(*recorder); ok {
			rec.endpoint = name
		}
		h(w, r)
	})
}

// counted names the requests of one service and counts their responses.
func (s *Stack) counted(service string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w, service: service, r: r, counters: s.counters}
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.WriteHeader(http.StatusOK)
		}
	})
}

func routeName(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return "unmatched"
}

func (s *Stack) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		// Never the query string of a token request or a header: only the path.
		s.opts.Logger.LogAttrs(r.Context(), slog.LevelDebug, "request", slog.String("host", r.Host), slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Duration("took", time.Since(start)))
	})
}

func slogErrorLog() *log.Logger { return log.New(io.Discard, "", 0) }

// --- rate limits ---

// Limit is "Requests per Window".
type Limit struct {
	Requests int
	Window   time.Duration
}

// RateLimits maps a bucket to its limits.
type RateLimits map[string][]Limit

// DocumentedLimits are the published limits, per app and tenant.
var DocumentedLimits = RateLimits{
	"graph.security": {{150, time.Minute}},
	"graph.hunting":  {{45, time.Minute}},
	"xdr.list":       {{50, time.Minute}, {1500, time.Hour}},
	"xdr.get":        {{100, time.Minute}, {1500, time.Hour}},
	"xdr.update":     {{50, time.Minute}, {1500, time.Hour}},
	"xdr.hunting":    {{45, time.Minute}},
}

// NoLimits disables rate limiting.
var NoLimits = RateLimits{}

// limiter keeps a sliding log of accepted requests per bucket and caller.
type limiter struct {
	mu     sync.Mutex
	limits RateLimits
	scale  float64
	log    map[string][]time.Time
}

func newLimiter(l RateLimits, scale float64) *limiter {
	return &limiter{limits: l, scale: scale, log: map[string][]time.Time{}}
}

// allow records a request, or says how long to wait and which limit was hit.
func (l *limiter) allow(bucket, caller string, now time.Time) (time.Duration, *Limit) {
	limits := l.limits[bucket]
	if len(limits) == 0 {
		return 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	key := bucket + "|" + caller
	events := l.log[key]
	var longest time.Duration
	for _, lim := range limits {
		longest = max(longest, l.window(lim))
	}
	cut := 0
	for cut < len(events) && !events[cut].After(now.Add(-longest)) {
		cut++
	}
	events = events[cut:]
	for i := range limits {
		lim := &limits[i]
		w := l.window(*lim)
		first := sort.Search(len(events), func(i int) bool { return events[i].After(now.Add(-w)) })
		if len(events)-first >= lim.Requests {
			l.log[key] = events
			return events[len(events)-lim.Requests].Add(w).Sub(now), lim
		}
	}
	l.log[key] = append(events, now)
	return 0, nil
}

func (l *limiter) window(lim Limit) time.Duration {
	return time.Duration(float64(lim.Window) / l.scale)
}

// retryAfter renders a wait as whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

func fmtWindow(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}

// --- faults ---

type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newLockedRand(seed int64) *lockedRand {
	return &lockedRand{r: rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))}
}

func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}

func (l *lockedRand) IntN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.IntN(n)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// --- control endpoint ---

func (s *Stack) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /control/healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /control/counters", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.counters.Snapshot()) })
	mux.HandleFunc("POST /control/counters/reset", func(w http.ResponseWriter, r *http.Request) { s.counters.Reset(); w.WriteHeader(204) })
	mux.HandleFunc("GET /control/faults", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.faults()) })
	mux.HandleFunc("PUT /control/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			writeJSON(w, 400, map[string]string{"error": "faults: " + err.Error()})
			return
		}
		s.SetFaults(f)
		writeJSON(w, 200, f)
	})
	mux.HandleFunc("POST /control/rotate", func(w http.ResponseWriter, r *http.Request) {
		mode := map[string]Rotation{"": RevokeOld, "revoke": RevokeOld, "expire": ExpireOld, "keep": KeepOld}
		m, ok := mode[r.URL.Query().Get("old")]
		if !ok {
			writeJSON(w, 400, map[string]string{"error": "old must be revoke, expire or keep"})
			return
		}
		writeJSON(w, 200, map[string]string{"secret": DefaultSecretName, "version": s.RotateSecret(m)})
	})
	mux.HandleFunc("POST /control/mutate", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 1 || n > 1000 {
			n = 1
		}
		writeJSON(w, 200, map[string]any{"changed": s.Mutate(n)})
	})
	mux.HandleFunc("GET /control/settings", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.Settings()) })
	s.consentControls(mux)
	return mux
}
