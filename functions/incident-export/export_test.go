package incidentexport_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	incidentexport "github.com/defender-functions/defender-functions/functions/incident-export"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
)

type env struct {
	s       *devstack.Stack
	cfg     *config.Config
	sinkDir string
	state   state.Store
	logs    *devstack.LogBuffer
	creds   *credentials.Credentials
	clients []incidentexport.Tenant
}

func newEnv(t testing.TB, s *devstack.Stack, api string, kv ...string) *env {
	t.Helper()
	dir := t.TempDir()
	m := s.Settings()
	m["DEFENDER_CREDENTIAL"], m["DEFENDER_CLIENT_SECRET"] = "env-secret", s.ClientSecret(devstack.DefaultClientID)
	m["DEFENDER_API"], m["DEFENDER_API_URL"] = api, map[string]string{"graph": s.GraphURL, "xdr": s.XDRURL}[api]
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	e := &env{s: s, cfg: cfg, sinkDir: filepath.Join(dir, "export"), logs: &devstack.LogBuffer{}}
	e.state, err = state.NewFileStore(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	e.creds = creds
	e.connect(t, s.HTTPClient())
	return e
}

// connect makes the tenants' API clients, sending through hc.
func (e *env) connect(t testing.TB, hc *http.Client) {
	t.Helper()
	e.clients = nil
	for _, tn := range e.cfg.Tenants {
		c, err := defender.New(defender.API(e.cfg.API), e.cfg.APIURL, tn, e.creds.Source(tn), &defender.Options{HTTPClient: hc, Limits: defender.NoLimits, RetryBase: 5 * time.Millisecond, MaxAttempts: 10})
		if err != nil {
			t.Fatal(err)
		}
		e.clients = append(e.clients, incidentexport.Tenant{Name: tn, Client: c})
	}
}

func (e *env) exporter(t testing.TB, sk sink.Sink, st state.Store) *incidentexport.Exporter {
	if sk == nil {
		var err error
		if sk, err = sink.NewFileSink(e.sinkDir); err != nil {
			t.Fatal(err)
		}
	}
	if st == nil {
		st = e.state
	}
	return &incidentexport.Exporter{Tenants: e.clients, Sink: sk, State: st, Lookback: 40 * 24 * time.Hour, MaxRun: time.Minute, Lag: e.cfg.ExportLag,
		PageSize: e.cfg.ExportPageSize}
}

func (e *env) run(t testing.TB, x *incidentexport.Exporter) error {
	ctx := function.WithInvocation(context.Background(), slog.New(slog.NewJSONHandler(io.MultiWriter(e.logs, devstack.AuditLog()), nil)), "test")
	return x.Run(ctx, function.Timer{ScheduledTime: time.Now()})
}

// Runs between changes export each version once, whatever order the API
// lists in, with and without a trailing lag window.
func TestExactlyOnceAcrossRuns(t *testing.T) {
	t.Parallel()
	since := time.Now().Add(-40 * 24 * time.Hour)
	for _, documented := range []bool{false, true} {
		s := devstack.Start(t, devstack.Options{Incidents: 1500, DocumentedOrder: documented})
		for _, api := range []string{"graph", "xdr"} {
			for _, lag := range []string{"0s", "1m"} {
				t.Run(fmt.Sprintf("%s/documented=%v/lag=%s", api, documented, lag), func(t *testing.T) {
					e := newEnv(t, s, api, "EXPORT_LAG", lag)
					cs := newCountingSink(t, e.sinkDir)
					x := e.exporter(t, cs, nil)
					for round := 0; round < 5; round++ {
						if err := e.run(t, x); err != nil {
							t.Fatal(err)
						}
						s.Mutate(4) // a batch sharing one timestamp
						s.Mutate(1)
					}
					if err := e.run(t, x); err != nil {
						t.Fatal(err)
					}
					n := verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, since)
					if n < 1500 {
						t.Fatalf("only %d versions exported", n)
					}
					// Without crashes, not even a rewrite: the trailing window
					// read again skips what it already wrote.
					cs.once(t)
					// Nothing changed: the next run writes nothing.
					before := len(exported(t, e.sinkDir, devstack.DefaultTenantID))
					e.logs.Reset()
					if err := e.run(t, x); err != nil {
						t.Fatal(err)
					}
					if after := len(exported(t, e.sinkDir, devstack.DefaultTenantID)); after != before {
						t.Fatalf("an idle run wrote %d versions", after-before)
					}
					if !strings.Contains(e.logs.String(), `"msg":"Caught up."`) || !strings.Contains(e.logs.String(), `"written":0,`) {
						t.Fatalf("no caught-up line with nothing written:\n%s", e.logs.String())
					}
				})
			}
		}
	}
}

// countingSink counts the writes of each object.
type countingSink struct {
	*sink.FileSink
	mu     sync.Mutex
	writes map[string]int
}

func newCountingSink(t testing.TB, dir string) *countingSink {
	fs, err := sink.NewFileSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &countingSink{FileSink: fs, writes: map[string]int{}}
}

func (c *countingSink) Write(ctx context.Context, objs []sink.Object) error {
	c.mu.Lock()
	for _, o := range objs {
		c.writes[o.Name]++
	}
	c.mu.Unlock()
	return c.FileSink.Write(ctx, objs)
}

// once fails the test if any object was written more than once.
func (c *countingSink) once(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, n := range c.writes {
		if n != 1 {
			t.Fatalf("%s was written %d times", name, n)
		}
	}
}

// Any $orderby is answered 400: the export sends none, so it works.
func TestOrderByRejected(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 400, Faults: devstack.Faults{RejectOrderBy: true}})
	for _, api := range []string{"graph", "xdr"} {
		t.Run(api, func(t *testing.T) {
			e := newEnv(t, s, api, "EXPORT_LAG", "1m")
			// The devstack does answer 400 to an ordered listing.
			for _, err := range e.clients[0].Client.Incidents(context.Background(), defender.ListOptions{OrderByLastUpdate: true}) {
				var ae *defender.APIError
				if !errors.As(err, &ae) || ae.StatusCode != 400 {
					t.Fatalf("ordered listing: %v, want a 400", err)
				}
				break
			}
			x := e.exporter(t, nil, nil)
			if err := e.run(t, x); err != nil {
				t.Fatal(err)
			}
			s.MutateTenant(devstack.DefaultTenantID, 3)
			if err := e.run(t, x); err != nil {
				t.Fatal(err)
			}
			verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
		})
	}
}

// An @odata.count that is not the filtered total (it echoes the page, as
// some Graph endpoints do) is noticed: windows are then read one response
// each, and nothing is lost.
func TestCountNotTheTotal(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 700, Faults: devstack.Faults{CountEchoesTop: true}})
	e := newEnv(t, s, "graph", "EXPORT_LAG", "0s")
	x := e.exporter(t, nil, nil)
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	s.Mutate(4)
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "@odata.count is not usable here") {
		t.Fatal("the wrong count went unnoticed")
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// Updates listed only 1.5 s after their lastUpdate are exported, once,
// when EXPORT_LAG covers the delay; with no lag allowed they are lost
// (what the setting is for).
func TestLateVisibility(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		api, lag string
		lost     bool
	}{
		{"graph", "3s", false},
		{"xdr", "3s", false},
		{"graph", "0s", true},
	} {
		t.Run(tc.api+"/lag="+tc.lag, func(t *testing.T) {
			t.Parallel()
			s := devstack.Start(t, devstack.Options{Incidents: 400, Faults: devstack.Faults{LagShare: 1, LagMs: 1500}})
			e := newEnv(t, s, tc.api, "EXPORT_LAG", tc.lag)
			cs := newCountingSink(t, e.sinkDir)
			x := e.exporter(t, cs, nil)
			if err := e.run(t, x); err != nil {
				t.Fatal(err)
			}
			for range 5 {
				s.Mutate(4)
			}
			time.Sleep(10 * time.Millisecond)
			// Run while the updates are not listed yet, then after.
			if err := e.run(t, x); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1600 * time.Millisecond)
			if err := e.run(t, x); err != nil {
				t.Fatal(err)
			}
			since := time.Now().Add(-40 * 24 * time.Hour)
			if tc.lost {
				if n := missingCurrent(s, exported(t, e.sinkDir, devstack.DefaultTenantID), devstack.DefaultTenantID, since); n == 0 {
					t.Fatal("no update was lost without EXPORT_LAG: the test did not exercise late visibility")
				}
				return
			}
			verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, since)
			cs.once(t)
		})
	}
}

// More incidents share one timestamp than fit in a page: no stall, no repeat.
func TestTieLargerThanPage(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 1000})
	e := newEnv(t, s, "graph", "EXPORT_PAGE_SIZE", "20")
	x := e.exporter(t, nil, nil)
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	ids := s.Mutate(200) // up to 200 incidents with one lastUpdate
	if len(ids) < 100 {
		t.Fatalf("tie of only %d", len(ids))
	}
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// failingState fails the first n checkpoint writes: a crash between the
// sink write and the checkpoint.
type failingState struct {
	state.Store
	mu sync.Mutex
	n  int
}

func (f *failingState) Put(ctx context.Context, k string, d []byte, v string) (string, error) {
	f.mu.Lock()
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return "", errors.New("state: connection reset")
	}
	f.mu.Unlock()
	return f.Store.Put(ctx, k, d, v)
}

type failingSink struct{ sink.Sink }

func (failingSink) Write(context.Context, []sink.Object) error { return errors.New("disk full") }

func TestCrashAndSinkFailure(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 600})
	e := newEnv(t, s, "graph")
	// The checkpoint write fails after a page was written.
	fs := &failingState{Store: e.state, n: 1}
	if err := e.run(t, e.exporter(t, nil, fs)); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v", err)
	}
	first := len(exported(t, e.sinkDir, devstack.DefaultTenantID))
	if first == 0 {
		t.Fatal("nothing was written before the failure")
	}
	if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
		t.Fatal(err)
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))

	// A failing sink never moves the checkpoint past what it failed to
	// write (it may pass a window that held nothing to write).
	key := "incident-export/graph/" + devstack.DefaultTenantID + ".json"
	changed := s.Mutate(3)
	if err := e.run(t, e.exporter(t, failingSink{}, nil)); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}
	b, _, err := e.state.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var cp incidentexport.Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		t.Fatal(err)
	}
	for _, v := range s.Incidents(devstack.DefaultTenantID) {
		if !slices.Contains(changed, v.ID) {
			continue
		}
		if v.LastUpdate.Before(cp.Since) || slices.ContainsFunc(cp.Recent, func(r incidentexport.Version) bool {
			return r.ID == strconv.FormatInt(v.ID, 10) && r.LastUpdate.Equal(v.LastUpdate)
		}) {
			t.Fatalf("the checkpoint counts version %d@%s written although the sink failed", v.ID, v.LastUpdate)
		}
	}
	if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
		t.Fatal(err)
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// Two runs on the same state: one wins, the other stops without writing state.
func TestConcurrentRuns(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 2000})
	e := newEnv(t, s, "graph")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = e.run(t, e.exporter(t, nil, nil)) }()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	if n := strings.Count(e.logs.String(), "Another run is exporting this tenant"); n != 1 {
		t.Fatalf("%d runs stopped as losers, want 1\n%s", n, e.logs.String())
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// A run out of time stops cleanly; the next one continues.
func TestStopsBeforeDeadline(t *testing.T) {
	t.Parallel()
	// 20 pages at 150 ms each take 3 s; the run may fetch for 1.2 s.
	s := devstack.Start(t, devstack.Options{Incidents: 1000, Faults: devstack.Faults{LatencyMs: 150}})
	e := newEnv(t, s, "graph")
	x := e.exporter(t, nil, nil)
	x.MaxRun, x.Margin = 1500*time.Millisecond, 300*time.Millisecond
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "Stopping before the deadline") {
		t.Fatal("no stop line")
	}
	partial := len(exported(t, e.sinkDir, devstack.DefaultTenantID))
	if partial == 0 || partial >= 1000 {
		t.Fatalf("%d exported in the short run", partial)
	}
	x.MaxRun = time.Minute
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// One run covers every tenant; a failing tenant is reported, the others complete.
func TestMultiTenant(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 300})
	e := newEnv(t, s, "graph", "DEFENDER_TENANT_ID", devstack.DefaultTenantID+",nosuch.onmicrosoft.com,"+devstack.PartnerTenantName)
	err := e.run(t, e.exporter(t, nil, nil))
	if err == nil || !strings.Contains(err.Error(), "tenant nosuch.onmicrosoft.com") || !strings.Contains(err.Error(), "AADSTS90002") {
		t.Fatalf("err = %v", err)
	}
	since := time.Now().Add(-40 * 24 * time.Hour)
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, since)
	verify(t, s, e.sinkDir, devstack.PartnerTenantName, devstack.PartnerTenantID, since)
}

// The app wires the export from settings; missing settings fail only it.
func TestAppWiring(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 100, Dir: t.TempDir()})
	m := s.Settings()
	m["DEFENDER_CREDENTIAL"], m["DEFENDER_CLIENT_SECRET"] = "env-secret", s.ClientSecret(devstack.DefaultClientID)
	app, err := functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, slog.New(slog.DiscardHandler),
		&functions.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Timers[incidentexport.Function.Name].Func(context.Background(), function.Timer{}); err != nil {
		t.Fatal(err)
	}
	verify(t, s, strings.TrimPrefix(m["EXPORT_SINK"], "file://"), devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-7*24*time.Hour))
	delete(m, "EXPORT_SINK")
	app, _ = functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, slog.New(slog.DiscardHandler), nil)
	if err := app.Timers[incidentexport.Function.Name].Func(context.Background(), function.Timer{}); err == nil || !strings.Contains(err.Error(), "incident-export needs [EXPORT_SINK") {
		t.Fatalf("err = %v", err)
	}
}

// touchingSink updates an already-written member of the tie after the first
// tie page, so a $skip counted over the tie steps over an unwritten member.
type touchingSink struct {
	sink.Sink
	s       *devstack.Stack
	tie     map[int64]bool
	touched bool
}

func (t *touchingSink) Write(ctx context.Context, objs []sink.Object) error {
	if err := t.Sink.Write(ctx, objs); err != nil {
		return err
	}
	if t.touched {
		return nil
	}
	for _, o := range objs {
		base := filepath.Base(o.Name)
		id, _ := strconv.ParseInt(base[:strings.IndexByte(base, '_')], 10, 64)
		if t.tie[id] {
			t.touched = t.s.Touch(devstack.DefaultTenantID, id)
			return nil
		}
	}
	return nil
}

// A settled instant with more than a page loses a member while it is
// paged under @odata.count (Graph): the count changed, the pass is not
// whole, and the next finds the member the shift hid.
func TestTieShrinkingUnderSkip(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 600})
	e := newEnv(t, s, "graph", "EXPORT_PAGE_SIZE", "20", "EXPORT_LAG", "0s")
	if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
		t.Fatal(err)
	}
	tie := map[int64]bool{}
	for _, id := range s.Mutate(150) {
		tie[id] = true
	}
	time.Sleep(10 * time.Millisecond) // the tie lies in the past: a settled window
	fs, _ := sink.NewFileSink(e.sinkDir)
	ts := &touchingSink{Sink: fs, s: s, tie: tie}
	if err := e.run(t, e.exporter(t, ts, nil)); err != nil {
		t.Fatal(err)
	}
	if !ts.touched {
		t.Fatal("no tie member was touched")
	}
	if !strings.Contains(e.logs.String(), "changed while it was read") {
		t.Fatalf("the tie was not read again: the test did not exercise the case\n%s", e.logs.String())
	}
	// Everything current is in the sink after that one run.
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// departing sends the export's requests to the devstack and, after each
// listing of the tie's instant, updates some of the tie's members: they
// leave the instant while it is read, as an analyst's changes would.
type departing struct {
	s     *devstack.Stack
	next  http.RoundTripper
	at    string // the tie's instant, as a $filter bound
	mu    sync.Mutex
	rng   *rand.Rand
	tie   []int64 // members still at the instant
	reads int     // listings of the instant
	skips int     // of them paged with $skip
}

func (d *departing) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := d.next.RoundTrip(req)
	f := req.URL.Query().Get("$filter")
	if err != nil || !strings.Contains(f, " ge "+d.at) {
		return resp, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	if req.URL.Query().Has("$skip") {
		d.skips++
	}
	for k := 0; k < 3 && len(d.tie) > 0; k++ {
		i := d.rng.IntN(len(d.tie))
		d.s.Touch(devstack.DefaultTenantID, d.tie[i])
		d.tie = slices.Delete(d.tie, i, i+1)
	}
	return resp, nil
}

// Without a usable count an instant holding more than a page is read by
// creation time, a range per response, never paged: members leaving it
// while it is read (three after every listing of it) shift nothing past a
// page's offset, and every current version is written once. On the XDR API
// in both listing orders, and on Graph whose count is not usable.
func TestTieDepartingWhileRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, api  string
		documented bool
		faults     devstack.Faults
	}{
		{"xdr/observed", "xdr", false, devstack.Faults{}},
		{"xdr/documented", "xdr", true, devstack.Faults{}},
		{"graph/count-echoes-top", "graph", false, devstack.Faults{CountEchoesTop: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := devstack.Start(t, devstack.Options{Incidents: 600, DocumentedOrder: tc.documented, Faults: tc.faults})
			e := newEnv(t, s, tc.api, "EXPORT_PAGE_SIZE", "20", "EXPORT_LAG", "0s")
			if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
				t.Fatal(err)
			}
			tie := s.Mutate(150)
			at := s.Incidents(devstack.DefaultTenantID)
			var when time.Time
			for _, v := range at {
				if v.ID == tie[0] {
					when = v.LastUpdate
				}
			}
			time.Sleep(10 * time.Millisecond) // the tie lies in the past: a settled window
			d := &departing{s: s, next: s.HTTPClient().Transport, at: when.UTC().Format("2006-01-02T15:04:05.0000000Z"), rng: rand.New(rand.NewPCG(3, 4)), tie: slices.Clone(tie)}
			e.connect(t, &http.Client{Transport: d})
			if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
				t.Fatal(err)
			}
			if d.reads < 3 || len(d.tie) > len(tie)-9 {
				t.Fatalf("the instant was listed %d times and %d of its %d members left it: the test did not exercise the case\n%s", d.reads, len(tie)-len(d.tie), len(tie), e.logs.String())
			}
			if d.skips > 0 {
				t.Fatalf("%d of the %d listings of the instant were paged with $skip", d.skips, d.reads)
			}
			verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
		})
	}
}

// Where the creation-time filter is accepted and ignored (or refused), an
// instant with more than a page is paged as before, and says so.
func TestTieCreatedFilterIgnored(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 600, Faults: devstack.Faults{CreatedFilterIgnored: true}})
	e := newEnv(t, s, "xdr", "EXPORT_PAGE_SIZE", "20", "EXPORT_LAG", "0s")
	x := e.exporter(t, nil, nil)
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	if tie := s.Mutate(150); len(tie) < 100 {
		t.Fatalf("tie of only %d", len(tie))
	}
	time.Sleep(10 * time.Millisecond)
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "The listing's creation-time filter does not hold here") {
		t.Fatalf("the ignored filter was not noticed:\n%s", e.logs.String())
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// countingState counts checkpoint writes.
type countingState struct {
	state.Store
	mu   sync.Mutex
	puts int
}

func (c *countingState) Put(ctx context.Context, k string, d []byte, v string) (string, error) {
	c.mu.Lock()
	c.puts++
	c.mu.Unlock()
	return c.Store.Put(ctx, k, d, v)
}

// syncFailing is the file sink whose flush fails.
type syncFailing struct{ *sink.FileSink }

func (syncFailing) Sync(context.Context) error { return errors.New("I/O error") }

// syncFailingOnce is the file sink whose first flush fails and later ones
// succeed: Linux reports a write-back error to one fsync, and the next
// returns 0 though the pages are gone.
type syncFailingOnce struct {
	*sink.FileSink
	failed atomic.Bool
}

func (s *syncFailingOnce) Sync(ctx context.Context) error {
	if s.failed.CompareAndSwap(false, true) {
		return errors.New("I/O error")
	}
	return s.FileSink.Sync(ctx)
}

// The checkpoint is saved once per CheckpointEvery while pages are written
// and once when the run stops; nothing is saved before the sink has synced,
// and a failed sync leaves the checkpoint where it was.
func TestCheckpointEvery(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 1000})
	for _, tc := range []struct {
		name  string
		every time.Duration
		puts  int // -1: one per page
	}{
		{"every page", time.Nanosecond, -1},
		{"only at the end", time.Hour, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, s, "graph")
			cs := &countingState{Store: e.state}
			x := e.exporter(t, nil, cs)
			x.CheckpointEvery = tc.every
			if err := e.run(t, x); err != nil {
				t.Fatal(err)
			}
			want := tc.puts
			if want < 0 {
				// Every page read, and every window settled.
				want = strings.Count(e.logs.String(), `"msg":"Page exported."`) + strings.Count(e.logs.String(), `"msg":"Window read whole."`)
			}
			if cs.puts != want || want < 1 {
				t.Fatalf("%d checkpoint writes, want %d", cs.puts, want)
			}
			verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
		})
	}
	t.Run("sync fails", func(t *testing.T) {
		e := newEnv(t, s, "graph")
		fs, err := sink.NewFileSink(e.sinkDir)
		if err != nil {
			t.Fatal(err)
		}
		cs := &countingState{Store: e.state}
		x := e.exporter(t, syncFailing{fs}, cs)
		x.CheckpointEvery = time.Nanosecond
		if err := e.run(t, x); err == nil || !strings.Contains(err.Error(), "I/O error") {
			t.Fatalf("err = %v", err)
		}
		if cs.puts != 0 {
			t.Fatalf("%d checkpoint writes after a failed sync", cs.puts)
		}
		if _, _, err := e.state.Get(context.Background(), "incident-export/graph/"+devstack.DefaultTenantID+".json"); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("checkpoint: %v", err)
		}
		// The next run, with a working disk, loses nothing and repeats nothing.
		if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
			t.Fatal(err)
		}
		verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
	})
	// A flush that fails once: the run's last commit flushes again, and
	// succeeds, but what the failed one held may be gone, so no checkpoint
	// of the run counts it written.
	t.Run("sync fails once", func(t *testing.T) {
		e := newEnv(t, s, "graph")
		fs, err := sink.NewFileSink(e.sinkDir)
		if err != nil {
			t.Fatal(err)
		}
		cs := &countingState{Store: e.state}
		x := e.exporter(t, &syncFailingOnce{FileSink: fs}, cs)
		x.CheckpointEvery = time.Nanosecond
		if err := e.run(t, x); err == nil || !strings.Contains(err.Error(), "I/O error") {
			t.Fatalf("err = %v", err)
		}
		if cs.puts != 0 {
			t.Fatalf("%d checkpoint writes after a failed sync", cs.puts)
		}
	})
}

// Splunk with indexer acknowledgement, where the indexer loses requests
// (answered with an ackId that never turns true, their events never
// indexed): a run that waited in vain saves no checkpoint past them, and
// the next run, the indexers well again, sends them again. Once, the run's
// last commit found the failed wait's IDs forgotten and saved the
// checkpoint: 2 to 33 of 240 versions were lost in each of 8 runs.
func TestSplunkLostAcknowledgement(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 120, SIEM: devstack.SIEMOptions{HECAck: true, HECAckDelay: 20 * time.Millisecond}})
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint) // the collector's token is read from Key Vault with the identity
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	e := newEnv(t, s, "graph", "EXPORT_PAGE_SIZE", "10")
	tok, err := credentials.NewVaultSecret(functions.Registration(e.cfg), devstack.HECTokenSecret, config.EnvSplunkTokenSecret, &credentials.Options{HTTPClient: s.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	sk, err := sink.Open(s.HECEventURL(), sink.Options{Splunk: sink.SplunkOptions{Token: tok, HTTPClient: s.HTTPClient(), Ack: true,
		AckTimeout: 300 * time.Millisecond, RetryBase: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-40 * 24 * time.Hour)
	x := e.exporter(t, sk, nil)
	x.CheckpointEvery = time.Nanosecond
	s.LoseHECAcks(0.3)
	if err := e.run(t, x); err == nil || strings.Count(err.Error(), "did not acknowledge") != 1 {
		t.Fatalf("the run with lost requests: %v (said once)", err)
	}
	dir, _ := mirrorRows(t, hecVersions(t, s))
	if n := len(exported(t, dir, devstack.DefaultTenantID)); n == s.IncidentCount(devstack.DefaultTenantID) {
		t.Fatal("no request was lost: the test proves nothing")
	}
	s.LoseHECAcks(0)
	if err := e.run(t, e.exporter(t, sk, nil)); err != nil {
		t.Fatalf("the run with the indexers well: %v", err)
	}
	dir, _ = mirrorRows(t, hecVersions(t, s))
	verify(t, s, dir, devstack.DefaultTenantID, devstack.DefaultTenantID, since)
}

// inflight counts the tenants whose listing is being read at once.
type inflight struct {
	defender.Client
	now, peak *atomic.Int32
}

func (c inflight) Incidents(ctx context.Context, o defender.ListOptions) iter.Seq2[*defender.Page, error] {
	return func(yield func(*defender.Page, error) bool) {
		n := c.now.Add(1)
		defer c.now.Add(-1)
		for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
		}
		for p, err := range c.Client.Incidents(ctx, o) {
			if !yield(p, err) {
				return
			}
		}
	}
}

// A partner app's tenants are exported at once, never more than the bound,
// each exactly once; a tenant that fails holds back no other.
func TestTenantsConcurrently(t *testing.T) {
	t.Parallel()
	tenants, ids := devstack.Customers(7, 60)
	tenants[3].Apps = nil // not consented: AADSTS700016 there alone
	s := devstack.Start(t, devstack.Options{Tenants: tenants, Faults: devstack.Faults{LatencyMs: 30}})
	e := newEnv(t, s, "graph", "DEFENDER_TENANT_ID", strings.Join(ids, ","))
	var now, peak atomic.Int32
	for i := range e.clients {
		e.clients[i].Client = inflight{e.clients[i].Client, &now, &peak}
	}
	x := e.exporter(t, nil, nil)
	x.Concurrency = 3
	err := e.run(t, x)
	if err == nil || !strings.HasPrefix(err.Error(), "tenant "+tenants[3].ID+": ") || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Fatalf("err = %v; want the unconsented tenant's failure", err)
	}
	for i, id := range ids {
		if i != 3 && strings.Contains(err.Error(), "tenant "+id+": ") {
			t.Fatalf("tenant %d failed too: %v", i, err)
		}
	}
	if p := peak.Load(); p < 2 || p > 3 {
		t.Fatalf("%d tenants read at once; want 2 or 3 (the bound)", p)
	}
	since := time.Now().Add(-40 * 24 * time.Hour)
	for i, tn := range tenants {
		if i != 3 {
			verify(t, s, e.sinkDir, tn.ID, tn.ID, since)
		}
	}
}

// sentQueue records what the exporter sends to its queue.
type sentQueue struct {
	mu   sync.Mutex
	sent [][]byte
	err  error
}

func (q *sentQueue) Send(_ context.Context, bodies [][]byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	q.sent = append(q.sent, bodies...)
	return nil
}

func (q *sentQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.sent
	q.sent = nil
	return out
}

// A queue message is a task for one configured tenant, or it is refused,
// naming what is wrong, before anything is read or written.
func TestParseTask(t *testing.T) {
	t.Parallel()
	x := &incidentexport.Exporter{Tenants: []incidentexport.Tenant{{Name: "contoso.onmicrosoft.com"}, {Name: "fabrikam.onmicrosoft.com"}}}
	for _, tc := range []struct {
		name, body, err string
	}{
		{"task", `{"tenant":"fabrikam.onmicrosoft.com","round":"2026-11-26T13:05:00Z"}`, ""},
		{"continued", `{"tenant":"contoso.onmicrosoft.com","round":"2026-11-26T13:05:00Z","continued":3}`, ""},
		{"unknown tenant", `{"tenant":"evil.onmicrosoft.com","round":"2026-11-26T13:05:00Z"}`, `the message names tenant "evil.onmicrosoft.com", which is not in DEFENDER_TENANT_ID`},
		{"no tenant", `{"round":"2026-11-26T13:05:00Z"}`, `the message names tenant "", which is not in DEFENDER_TENANT_ID`},
		{"unknown field", `{"tenant":"contoso.onmicrosoft.com","path":"../../etc"}`, `the message is not a task`},
		{"not JSON", `contoso.onmicrosoft.com`, `the message is not a task`},
		{"too large", `{"tenant":"contoso.onmicrosoft.com","round":"` + strings.Repeat("x", 5000) + `"}`, `bytes; a task is at most 4096`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task, tn, err := x.ParseTask([]byte(tc.body))
			if tc.err == "" {
				if err != nil || tn.Name != task.Tenant || tn.Name == "" {
					t.Fatalf("%+v %+v %v", task, tn, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// With a queue the timer only enqueues a task per tenant; a task exports
// its tenant alone. One whose backlog does not fit in an invocation is
// continued by a task at the back of the queue.
func TestQueueTasks(t *testing.T) {
	t.Parallel()
	tenants, ids := devstack.Customers(3, 300)
	s := devstack.Start(t, devstack.Options{Tenants: tenants, Faults: devstack.Faults{LatencyMs: 20}})
	e := newEnv(t, s, "graph", "DEFENDER_TENANT_ID", strings.Join(ids, ","), "EXPORT_PAGE_SIZE", "10")
	q := &sentQueue{}
	x := e.exporter(t, nil, nil)
	x.Queue = q
	scheduled := time.Date(2026, 11, 26, 13, 5, 0, 0, time.UTC)
	ctx := function.WithInvocation(context.Background(), slog.New(slog.NewJSONHandler(io.MultiWriter(e.logs, devstack.AuditLog()), nil)), "test")
	if err := x.Run(ctx, function.Timer{ScheduledTime: scheduled}); err != nil {
		t.Fatal(err)
	}
	sent := q.take()
	if len(sent) != 3 {
		t.Fatalf("%d tasks for 3 tenants", len(sent))
	}
	for i, b := range sent {
		if want := `{"tenant":"` + ids[i] + `","round":"2026-11-26T13:05:00Z"}`; string(b) != want {
			t.Fatalf("task %s, want %s", b, want)
		}
	}
	if files := exported(t, e.sinkDir, ids[0]); len(files) != 0 {
		t.Fatal("the timer exported")
	}
	// The first tenant's task, with too little time for its backlog: it
	// stops, saves its progress, and sends its continuation.
	x.MaxRun, x.Margin = 1200*time.Millisecond, time.Second
	if err := x.Export(ctx, function.Message{ID: "m1", Body: sent[0], DequeueCount: 1}); err != nil {
		t.Fatal(err)
	}
	cont := q.take()
	if len(cont) != 1 || string(cont[0]) != `{"tenant":"`+ids[0]+`","round":"2026-11-26T13:05:00Z","continued":1}` {
		t.Fatalf("continuation %q", cont)
	}
	partial := len(exported(t, e.sinkDir, ids[0]))
	if partial == 0 || partial >= s.IncidentCount(ids[0]) {
		t.Fatalf("%d of %d exported by the bounded invocation", partial, s.IncidentCount(ids[0]))
	}
	if len(exported(t, e.sinkDir, ids[1])) != 0 {
		t.Fatal("a task exported another tenant")
	}
	// The continuation and the other tasks, with time enough: no more
	// continuations, every tenant whole.
	x.MaxRun, x.Margin = time.Minute, 0
	for i, b := range append(cont, sent[1:]...) {
		if err := x.Export(ctx, function.Message{ID: fmt.Sprint("m", i+2), Body: b, DequeueCount: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if more := q.take(); len(more) != 0 {
		t.Fatalf("continued again: %q", more)
	}
	since := time.Now().Add(-40 * 24 * time.Hour)
	for _, id := range ids {
		verify(t, s, e.sinkDir, id, id, since)
	}
	// A refused message changes nothing and fails, for the poison queue.
	if err := x.Export(ctx, function.Message{ID: "bad", Body: []byte(`{"tenant":"evil"}`), DequeueCount: 5, LastAttempt: true}); err == nil {
		t.Fatal("a task for an unknown tenant succeeded")
	}
}

// Invocations for one tenant overlap (the queue delivers a continuation
// and the next round's task to two instances at once) while incidents
// change: the checkpoint's optimistic concurrency is the lease, and every
// current version is exported, once.
func TestQueueTasksOverlapping(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 1500})
	e := newEnv(t, s, "graph", "EXPORT_PAGE_SIZE", "20", "EXPORT_LAG", "1s")
	x := e.exporter(t, nil, nil)
	x.Queue = &sentQueue{}
	task := []byte(`{"tenant":"` + devstack.DefaultTenantID + `","round":"2026-11-26T13:05:00Z"}`)
	ctx := function.WithInvocation(context.Background(), slog.New(slog.NewJSONHandler(io.MultiWriter(e.logs, devstack.AuditLog()), nil)), "test")
	stop := make(chan struct{})
	var changes sync.WaitGroup
	changes.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
				s.Mutate(3)
			}
		}
	})
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if err := x.Export(ctx, function.Message{Body: task, DequeueCount: 1}); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	changes.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d invocations failed\n%s", failed.Load(), e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "Another run is exporting this tenant") {
		t.Fatal("no invocations overlapped: the test did not exercise the case")
	}
	time.Sleep(1100 * time.Millisecond) // past the lag: the last run lists every change
	if err := x.Export(ctx, function.Message{Body: task, DequeueCount: 1}); err != nil {
		t.Fatal(err)
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// dyingSink fails the writes of objects whose names end in suffix, as a
// crash between the batch's steps would leave them.
type dyingSink struct {
	*sink.FileSink
	suffix string
}

func (f *dyingSink) Write(ctx context.Context, objs []sink.Object) error {
	for _, o := range objs {
		if f.suffix != "" && strings.HasSuffix(o.Name, f.suffix) {
			return errors.New("injected: the process died here")
		}
	}
	return f.FileSink.Write(ctx, objs)
}

// The batched layout: a few gzip NDJSON objects, each beside its manifest,
// every version in one of them once, also when a run stopped between
// naming a batch and writing it (read again) or between writing it and
// saving the checkpoint (adopted).
func TestBatchedLayout(t *testing.T) {
	t.Parallel()
	since := time.Now().Add(-40 * 24 * time.Hour)
	s := devstack.Start(t, devstack.Options{Incidents: 1200})
	for _, tc := range []struct {
		name, fail string // the object whose write the first run dies at
		log        string // what the next run says of the batch
		// A run with the backlog writes one batch (BatchEvery is longer
		// than any run, also under -race on a loaded machine); the three
		// after it one each.
		objects int
	}{
		{name: "no crash", objects: 4},
		{name: "died before the object", fail: ".ndjson.gz", log: "The last run stopped before writing its batch; its versions are read again.", objects: 3},
		{name: "died after the object", fail: ".json", log: "The last run wrote its batch before it stopped; its versions count as written.", objects: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, s, "graph")
			fs, err := sink.NewFileSink(e.sinkDir)
			if err != nil {
				t.Fatal(err)
			}
			fail := &dyingSink{FileSink: fs, suffix: tc.fail}
			x := e.exporter(t, fail, nil)
			x.Batched, x.BatchEvery = true, time.Hour
			err = e.run(t, x)
			if tc.fail != "" {
				if err == nil || !strings.Contains(err.Error(), "injected") {
					t.Fatalf("the first run: %v", err)
				}
				fail.suffix = ""
			} else if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				s.Mutate(4)
				if err := e.run(t, x); err != nil {
					t.Fatal(err)
				}
			}
			if tc.log != "" && !strings.Contains(e.logs.String(), tc.log) {
				t.Fatalf("no line %q:\n%.2000s", tc.log, e.logs.String())
			}
			dir, objects := unbatch(t, e.sinkDir)
			n := verify(t, s, dir, devstack.DefaultTenantID, devstack.DefaultTenantID, since)
			if n < 1200 || objects != tc.objects {
				t.Fatalf("%d versions in %d objects, want ≥ 1200 in %d\n%s", n, objects, tc.objects, grepLines(e.logs.String(), "batch"))
			}
			// Nothing per version.
			if got := exported(t, e.sinkDir, devstack.DefaultTenantID); len(got) != 0 {
				t.Fatalf("%d per-version objects beside the batches", len(got))
			}
		})
	}
}

// grepLines are the lines of s that hold sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The shortest EXPORT_MAX_RUN the settings take exports: the margin kept
// before the deadline was a fixed 15 s, so a run of 10 to 15 s wrote
// nothing and "completed".
func TestShortestMaxRunExports(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 60})
	e := newEnv(t, s, "graph")
	x := e.exporter(t, nil, nil)
	x.MaxRun = 10 * time.Second
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// A sink that answers 503 with Retry-After: 300 to every write: the run
// fails (it had answered "completed" with a warning, having exported
// nothing), saving no checkpoint past what it could not write.
func TestSinkRefusingUntilTheDeadlineFails(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 30})
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "300")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"text":"Server is busy","code":9}`)
	}))
	defer busy.Close()
	for _, tc := range []struct {
		name string
		open func() (sink.Sink, error)
	}{
		{"blob", func() (sink.Sink, error) {
			return sink.NewBlobSink(busy.URL+"/devstoreaccount1/exports", state.BlobOptions{
				ConnectionString: "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + emulators.AzuriteKey + ";BlobEndpoint=" + busy.URL + "/devstoreaccount1;",
				HTTPClient:       busy.Client()})
		}},
		{"splunk", func() (sink.Sink, error) {
			return sink.NewSplunkSink(busy.URL+"/services/collector/event", sink.SplunkOptions{Token: fixedToken("hec-token"), HTTPClient: busy.Client()})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, s, "graph")
			sk, err := tc.open()
			if err != nil {
				t.Fatal(err)
			}
			cs := &countingState{Store: e.state}
			x := e.exporter(t, sk, cs)
			x.MaxRun = 3 * time.Second
			err = e.run(t, x)
			if err == nil || !strings.Contains(err.Error(), "writing to "+sk.String()) {
				t.Fatalf("the run = %v, want the sink's refusal", err)
			}
			if cs.puts != 0 {
				t.Fatalf("%d checkpoints saved", cs.puts)
			}
		})
	}
}

// fixedToken is a collector's token that never changes.
type fixedToken string

func (f fixedToken) Value(context.Context) (string, error) { return string(f), nil }
func (fixedToken) Rejected(string)                         {}
