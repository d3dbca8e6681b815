package main_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/defender-functions/defender-functions/infra/build"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// The handler as it ships stops as the host stops it (SIGTERM): the
// invocation still running finishes, and what it recorded reaches the
// collector before the process exits 0; a collector that never answers
// holds the exit back by telemetry's share of the shutdown at most; a port
// it cannot listen on is an exit 1 with the reason.
func TestShutdown(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "handler")
	if err := build.Local(emulators.RepoRoot(t), bin, build.Handler, build.AzureTags); err != nil {
		t.Fatal(err)
	}
	t.Run("delivers what it recorded", func(t *testing.T) { shutdownDelivers(t, bin) })
	t.Run("a hung collector", func(t *testing.T) { shutdownHungCollector(t, bin) })
	t.Run("a port taken", func(t *testing.T) { listenError(t, bin) })
}

const (
	traceID = "0af7651916cd43dd8448eb211c80319c"
	parent  = "b7ad6b7169203331"
)

func shutdownDelivers(t *testing.T, bin string) {
	rc := &collector{}
	otlp := httptest.NewServer(rc)
	defer otlp.Close()
	dir := t.TempDir()
	s := devstack.Start(t, devstack.Options{Incidents: 20, Dir: filepath.Join(dir, "local")})
	// Each Defender API answer takes a second: the stop comes while the
	// invocation waits for its query's.
	s.SetFaults(devstack.Faults{LatencyMs: 1000})
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlp.URL, "OTEL_SERVICE_NAME=shutdown-test"}
	for k, v := range s.Settings() {
		env = append(env, k+"="+v)
	}
	p := startHandler(t, bin, env)

	type answer struct {
		status int
		body   string
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		st, b, err := p.post("/api/hunting-query", `{"name":"failed-logons","parameters":{"threshold":1,"lookback":"30d"}}`)
		answered <- answer{st, b, err}
	}()
	// The invocation's token is the last thing it asks for before its
	// query: from then on it is running.
	for deadline := time.Now().Add(30 * time.Second); served(s, "entra.") == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the invocation asked for no token\n%s", p.out)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a := <-answered
	if a.err != nil || a.status != 200 || !strings.Contains(a.body, `"results":[{`) {
		t.Fatalf("the invocation running at the stop: %d %v %.300s\n%s", a.status, a.err, a.body, p.out)
	}
	p.wait(t, 40*time.Second)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.out)
	}

	rc.mu.Lock()
	defer rc.mu.Unlock()
	inv := rc.span("hunting-query")
	if inv == nil || fmt.Sprintf("%x", inv.TraceId) != traceID || fmt.Sprintf("%x", inv.ParentSpanId) != parent {
		t.Fatalf("the invocation's span, continuing the caller's trace, was not delivered: %v (spans %v)", inv, rc.names())
	}
	calls := 0
	for _, sp := range rc.spans {
		if sp.Kind == tracepb.Span_SPAN_KIND_CLIENT && bytes.Equal(sp.ParentSpanId, inv.SpanId) {
			calls++
		}
	}
	graph := served(s, "graph.")
	if calls == 0 || int64(calls) != graph {
		t.Errorf("%d API call spans under the invocation; the devstack served %d", calls, graph)
	}
	if rc.service != "shutdown-test" {
		t.Errorf("service.name %q", rc.service)
	}
	for k, want := range map[string]int64{
		"defender.api.requests{api=graph,status=200}":                                   graph,
		"defender.token.requests{result=fetch}":                                         1,
		"defender.keyvault.reads{outcome=ok,secret=" + devstack.DefaultSecretName + "}": 1,
		"defender.hunting.duration{outcome=ok}":                                         1, // a histogram: its count
	} {
		if got, ok := rc.points[k]; !ok || got != want {
			t.Errorf("%s = %d (delivered: %v), want %d", k, got, ok, want)
		}
	}
}

// A collector that accepts connections and never answers: the handler
// still exits 0, after telemetry's share of the shutdown (3 s), saying the
// telemetry was not exported.
func shutdownHungCollector(t *testing.T, bin string) {
	hung := loopback.NewHung(t)
	env := append(os.Environ(), "DEFENDER_TENANT_ID=contoso.onmicrosoft.com",
		"DEFENDER_CLIENT_ID=2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84", "KEY_VAULT_URL=https://kv.vault.azure.net/",
		"EXPORT_SINK=file://"+t.TempDir(), "STATE_STORE=file://"+t.TempDir(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+hung.Addr().String())
	p := startHandler(t, bin, env)
	// The hunting catalog: an invocation (a span) that needs no network.
	if st, b, err := p.get("/api/hunting-query"); err != nil || st != 200 {
		t.Fatalf("catalog: %d %v %s", st, err, b)
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	// A generous ceiling: telemetry's share is 3 s, the exporters' own
	// timeout 10 s and their retries a minute, which an unbounded
	// shutdown would wait for.
	p.wait(t, 9*time.Second)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.out)
	}
	if !strings.Contains(p.out.String(), `"msg":"Telemetry not exported.","err":"`) || hung.Accepted() == 0 {
		t.Fatalf("after %s: the collector took %d connections; the log:\n%s", time.Since(start), hung.Accepted(), p.out)
	}
}

// A port the handler cannot listen on: exit 1 at once, naming the port.
func listenError(t *testing.T, bin string) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	var out bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "FUNCTIONS_CUSTOMHANDLER_PORT="+port, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1")
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("still running on a port taken\n%s", &out)
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out.String(), `"msg":"The handler cannot listen on its port.","port":"`+port+`","err":"`) {
		t.Fatalf("exit code %d\n%s", code, &out)
	}
}

// handler is the built handler, started as the host starts it.
type handler struct {
	cmd  *exec.Cmd
	url  string
	out  *devstack.LogBuffer
	done <-chan struct{}
}

func startHandler(t *testing.T, bin string, env []string) *handler {
	t.Helper()
	out := &devstack.LogBuffer{}
	w := io.MultiWriter(out, devstack.AuditLog())
	proc, err := loopback.Start(func(port int) *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(env, "FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port))
		cmd.Stdout, cmd.Stderr = w, w
		return cmd
	}, func(port int) bool {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}, 20*time.Second)
	if err != nil {
		t.Fatalf("the handler: %v\n%s", err, out)
	}
	p := &handler{cmd: proc.Cmd, url: "http://127.0.0.1:" + strconv.Itoa(proc.Port), out: out, done: proc.Exited}
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

// wait waits for the handler to exit, at most limit.
func (p *handler) wait(t *testing.T, limit time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("the handler had not exited %s after the stop\n%s", limit, p.out)
	}
}

// post sends a forwarded HTTP request, as the host does, in the caller's trace.
func (p *handler) post(path, body string) (int, string, error) {
	req, _ := http.NewRequest("POST", p.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return p.do(req)
}

func (p *handler) get(path string) (int, string, error) {
	req, _ := http.NewRequest("GET", p.url+path, nil)
	return p.do(req)
}

func (p *handler) do(req *http.Request) (int, string, error) {
	req.Header.Set("Traceparent", "00-"+traceID+"-"+parent+"-01")
	req.Header.Set("X-Azure-Functions-InvocationId", "3f1c2b7e-5d4a-4e8f-9b6c-0a1d2e3f4a5b")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// served counts the devstack's answers to a service's requests ("graph.").
func served(s *devstack.Stack, prefix string) int64 {
	var n int64
	for endpoint, byStatus := range s.Counters().Snapshot() {
		if strings.HasPrefix(endpoint, prefix) {
			for _, c := range byStatus {
				n += c
			}
		}
	}
	return n
}

// collector is an OTLP/HTTP collector: it keeps the spans it is sent, and
// each metric series' last point (they are cumulative) by name{attributes}:
// a sum's value, a histogram's count.
type collector struct {
	mu      sync.Mutex
	spans   []*tracepb.Span
	points  map[string]int64
	service string
}

func (rc *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want protobuf", http.StatusUnsupportedMediaType)
		return
	}
	var req, resp proto.Message
	switch r.URL.Path {
	case "/v1/traces":
		req, resp = &colltrace.ExportTraceServiceRequest{}, &colltrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		req, resp = &collmetrics.ExportMetricsServiceRequest{}, &collmetrics.ExportMetricsServiceResponse{}
	default:
		http.NotFound(w, r)
		return
	}
	if err := proto.Unmarshal(body, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.keep(req)
	b, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b)
}

func (rc *collector) keep(req proto.Message) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.points == nil {
		rc.points = map[string]int64{}
	}
	switch m := req.(type) {
	case *colltrace.ExportTraceServiceRequest:
		for _, rs := range m.ResourceSpans {
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					rc.service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				rc.spans = append(rc.spans, ss.Spans...)
			}
		}
	case *collmetrics.ExportMetricsServiceRequest:
		for _, rm := range m.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, mt := range sm.Metrics {
					rc.keepMetric(mt)
				}
			}
		}
	}
}

func (rc *collector) keepMetric(mt *metricspb.Metric) {
	if s := mt.GetSum(); s != nil {
		for _, dp := range s.DataPoints {
			rc.points[mt.Name+attrs(dp.Attributes)] = dp.GetAsInt()
		}
	}
	if h := mt.GetHistogram(); h != nil {
		for _, dp := range h.DataPoints {
			rc.points[mt.Name+attrs(dp.Attributes)] = int64(dp.Count)
		}
	}
}

func (rc *collector) span(name string) *tracepb.Span {
	for _, sp := range rc.spans {
		if sp.Name == name {
			return sp
		}
	}
	return nil
}

func (rc *collector) names() []string {
	var n []string
	for _, sp := range rc.spans {
		n = append(n, sp.Name)
	}
	return n
}

// attrs renders data point attributes as {k=v,…}, sorted.
func attrs(kvs []*commonpb.KeyValue) string {
	var parts []string
	for _, kv := range kvs {
		v := kv.Value.GetStringValue()
		if v == "" {
			v = strconv.FormatInt(kv.Value.GetIntValue(), 10)
		}
		parts = append(parts, kv.Key+"="+v)
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, ",") + "}"
}
