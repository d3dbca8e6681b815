package incidentexport_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	incidentexport "github.com/defender-functions/defender-functions/functions/incident-export"
	"github.com/defender-functions/defender-functions/infra/local/devstack"
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
	logs    *syncBuf
	clients []incidentexport.Tenant
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

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
	e := &env{s: s, cfg: cfg, sinkDir: filepath.Join(dir, "export"), logs: &syncBuf{}}
	e.state, err = state.NewFileStore(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := credentials.New(cfg, &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range cfg.Tenants {
		c, err := defender.New(cfg, tn, creds.Source(tn), &defender.Options{HTTPClient: s.HTTPClient(), Limits: defender.NoLimits, RetryBase: 5 * time.Millisecond, MaxAttempts: 10})
		if err != nil {
			t.Fatal(err)
		}
		e.clients = append(e.clients, incidentexport.Tenant{Name: tn, Client: c})
	}
	return e
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
	return &incidentexport.Exporter{Tenants: e.clients, Sink: sk, State: st, Lookback: 40 * 24 * time.Hour, MaxRun: time.Minute, XDRWindow: 5 * 24 * time.Hour,
		PageSize: e.cfg.ExportPageSize}
}

func (e *env) run(t testing.TB, x *incidentexport.Exporter) error {
	ctx := function.WithInvocation(context.Background(), slog.New(slog.NewJSONHandler(io.MultiWriter(e.logs, devstack.AuditLog()), nil)), "test")
	return x.Run(ctx, function.Timer{ScheduledTime: time.Now()})
}

func TestExactlyOnceAcrossRuns(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 1500})
	since := time.Now().Add(-40 * 24 * time.Hour)
	for _, api := range []string{"graph", "xdr"} {
		t.Run(api, func(t *testing.T) {
			e := newEnv(t, s, api)
			x := e.exporter(t, nil, nil)
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
			// Nothing changed: the next run writes nothing.
			before := len(exported(t, e.sinkDir, devstack.DefaultTenantID))
			if err := e.run(t, x); err != nil {
				t.Fatal(err)
			}
			if after := len(exported(t, e.sinkDir, devstack.DefaultTenantID)); after != before {
				t.Fatalf("an idle run wrote %d versions", after-before)
			}
			if !strings.Contains(e.logs.String(), `"msg":"caught up"`) {
				t.Fatal("no caught-up line")
			}
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

	// A failing sink never advances the checkpoint.
	key := "incident-export/graph/" + devstack.DefaultTenantID + ".json"
	before, _, err := e.state.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	s.Mutate(3)
	if err := e.run(t, e.exporter(t, failingSink{}, nil)); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}
	after, _, _ := e.state.Get(context.Background(), key)
	if !bytes.Equal(before, after) {
		t.Fatal("the checkpoint moved although the sink failed")
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
	if n := strings.Count(e.logs.String(), "another run is exporting this tenant"); n != 1 {
		t.Fatalf("%d runs stopped as losers, want 1\n%s", n, e.logs.String())
	}
	verify(t, s, e.sinkDir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// A run out of time stops cleanly; the next one continues.
func TestStopsBeforeDeadline(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 1000, Faults: devstack.Faults{LatencyMs: 40}})
	e := newEnv(t, s, "graph")
	x := e.exporter(t, nil, nil)
	x.MaxRun, x.Margin = 400*time.Millisecond, 100*time.Millisecond
	if err := e.run(t, x); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "stopping before the deadline") {
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
	if err := app.Timers[functions.IncidentExport].Func(context.Background(), function.Timer{}); err != nil {
		t.Fatal(err)
	}
	verify(t, s, strings.TrimPrefix(m["EXPORT_SINK"], "file://"), devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-7*24*time.Hour))
	delete(m, "EXPORT_SINK")
	app, _ = functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, slog.New(slog.DiscardHandler), nil)
	if err := app.Timers[functions.IncidentExport].Func(context.Background(), function.Timer{}); err == nil || !strings.Contains(err.Error(), "incident-export needs [EXPORT_SINK") {
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

func TestTieShrinkingUnderSkip(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 600})
	e := newEnv(t, s, "graph", "EXPORT_PAGE_SIZE", "20")
	if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
		t.Fatal(err)
	}
	tie := map[int64]bool{}
	for _, id := range s.Mutate(150) {
		tie[id] = true
	}
	fs, _ := sink.NewFileSink(e.sinkDir)
	ts := &touchingSink{Sink: fs, s: s, tie: tie}
	if err := e.run(t, e.exporter(t, ts, nil)); err != nil {
		t.Fatal(err)
	}
	if !ts.touched {
		t.Fatal("no tie member was touched")
	}
	if !strings.Contains(e.logs.String(), "tie re-read found incidents the skip stepped over") {
		t.Fatal("the skip did not step over anyone: the test did not exercise the case")
	}
	if err := e.run(t, e.exporter(t, nil, nil)); err != nil {
		t.Fatal(err)
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
				want = strings.Count(e.logs.String(), `"msg":"export page"`)
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
}
