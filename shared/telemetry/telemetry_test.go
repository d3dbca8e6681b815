package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"

	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// The platform's trace is continued: W3C from headers, X-Ray from Lambda;
// what cannot be read starts a new trace.
func TestContinue(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ctx           func() context.Context
		trace, parent string // "" = no remote parent
		sampled       bool
	}{
		{"traceparent", func() context.Context {
			h := http.Header{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
			return telemetry.FromHeaders(context.Background(), h)
		}, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", true},
		{"traceparent not sampled", func() context.Context {
			h := http.Header{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}}
			return telemetry.FromHeaders(context.Background(), h)
		}, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", false},
		{"traceparent malformed", func() context.Context {
			return telemetry.FromHeaders(context.Background(), http.Header{"Traceparent": {"00-zz-b7ad6b7169203331-01"}})
		}, "", "", false},
		{"x-ray", func() context.Context {
			return telemetry.FromXRay(context.Background(), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
		}, "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", true},
		{"x-ray, lineage and unsampled", func() context.Context {
			return telemetry.FromXRay(context.Background(), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1|68fd508a:5")
		}, "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", false},
		{"x-ray without a parent", func() context.Context {
			return telemetry.FromXRay(context.Background(), "Root=1-5759e988-bd862e3fe1be46a994272793")
		}, "", "", false},
		{"x-ray of another version", func() context.Context {
			return telemetry.FromXRay(context.Background(), "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8")
		}, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := trace.SpanContextFromContext(tc.ctx())
			if tc.trace == "" {
				if sc.IsValid() {
					t.Fatalf("continued %v", sc)
				}
				return
			}
			if sc.TraceID().String() != tc.trace || sc.SpanID().String() != tc.parent || !sc.IsRemote() || sc.IsSampled() != tc.sampled {
				t.Fatalf("got trace %s parent %s sampled %v remote %v", sc.TraceID(), sc.SpanID(), sc.IsSampled(), sc.IsRemote())
			}
		})
	}
}

// receiver is an OTLP/HTTP collector: it keeps what it is sent.
type receiver struct {
	mu      sync.Mutex
	traces  []*colltrace.ExportTraceServiceRequest
	metrics []*collmetrics.ExportMetricsServiceRequest
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want protobuf", http.StatusUnsupportedMediaType)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch r.URL.Path {
	case "/v1/traces":
		m := &colltrace.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(body, m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.traces = append(rc.traces, m)
		b, _ := proto.Marshal(&colltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	case "/v1/metrics":
		m := &collmetrics.ExportMetricsServiceRequest{}
		if err := proto.Unmarshal(body, m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.metrics = append(rc.metrics, m)
		b, _ := proto.Marshal(&collmetrics.ExportMetricsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	default:
		http.NotFound(w, r)
	}
}

// Start with the standard variables exports OTLP over HTTP: an invocation's
// span continuing the caller's trace, its API call a child, and the
// metrics with their attributes, each pushed by Flush.
func TestOTLPExport(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	tel, err := telemetry.Start(context.Background(), telemetry.Options{ServiceName: "defender-functions-test", Platform: "azure.functions", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())

	h := http.Header{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	ctx, end := telemetry.Invocation(telemetry.FromHeaders(context.Background(), h), "incident-export", "inv-1", trace.SpanKindInternal)
	_, done := telemetry.APICall(ctx, "graph", "GET", "graph.microsoft.com", "/v1.0/security/incidents")
	done(429, nil)
	_, done = telemetry.APICall(ctx, "graph", "GET", "graph.microsoft.com", "/v1.0/security/incidents")
	done(200, nil)
	telemetry.TokenFetch(ctx, nil)
	telemetry.TokenHit(ctx)
	telemetry.TokenHit(ctx)
	telemetry.VersionsWritten(ctx, "contoso", 42)
	telemetry.ExportLag(ctx, "contoso", 90*time.Second)
	end(errors.New("tenant contoso: boom"))
	if err := tel.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	rc.mu.Lock()
	defer rc.mu.Unlock()
	spans := map[string][]byte{} // name → parent span ID
	var traceID []byte
	var service string
	for _, req := range rc.traces {
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					spans[s.Name+"/"+s.Status.GetCode().String()] = s.ParentSpanId
					traceID = s.TraceId
				}
			}
		}
	}
	if service != "defender-functions-test" {
		t.Errorf("service.name %q", service)
	}
	inv, ok := spans["incident-export/STATUS_CODE_ERROR"]
	if !ok || len(spans) != 3 {
		t.Fatalf("spans %v, want the invocation (failed) and two API calls", keys(spans))
	}
	if trace.SpanID(inv).String() != "b7ad6b7169203331" || trace.TraceID(traceID).String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("the invocation does not continue the caller's trace: parent %x, trace %x", inv, traceID)
	}
	if _, ok := spans["GET /v1.0/security/incidents/STATUS_CODE_ERROR"]; !ok {
		t.Errorf("the throttled call is not an error: %v", keys(spans))
	}

	sums := map[string]int64{}
	gauges := map[string]float64{}
	for _, req := range rc.metrics {
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if s := m.GetSum(); s != nil {
						for _, dp := range s.DataPoints {
							sums[m.Name+attrs(dp.Attributes)] += dp.GetAsInt()
						}
					}
					if g := m.GetGauge(); g != nil {
						for _, dp := range g.DataPoints {
							gauges[m.Name+attrs(dp.Attributes)] = dp.GetAsDouble()
						}
					}
				}
			}
		}
	}
	for k, want := range map[string]int64{
		"defender.api.requests{api=graph,status=429}": 1,
		"defender.api.requests{api=graph,status=200}": 1,
		"defender.api.throttled{api=graph}":           1,
		"defender.token.requests{result=fetch}":       1,
		"defender.token.requests{result=hit}":         2,
		"defender.export.versions{tenant=contoso}":    42,
	} {
		if sums[k] != want {
			t.Errorf("%s = %d, want %d (all: %v)", k, sums[k], want, sums)
		}
	}
	if gauges["defender.export.lag{tenant=contoso}"] != 90 {
		t.Errorf("export lag %v", gauges)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// attrs renders data point attributes as {k=v,…}, sorted as sent.
func attrs(kvs []*commonpb.KeyValue) string {
	var parts []string
	for _, kv := range kvs {
		v := kv.Value.GetStringValue()
		if v == "" {
			v = fmt.Sprint(kv.Value.GetIntValue())
		}
		parts = append(parts, kv.Key+"="+v)
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// A collector that redirects gets no export past it: the headers of
// OTEL_EXPORTER_OTLP_HEADERS hold its credentials, and a redirect to
// another origin would hand them over.
func TestOTLPRedirectNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var leaked []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		leaked = append(leaked, r.URL.Path+" "+r.Header.Get("X-Api-Key")+" "+r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer other.Close()
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "X-Api-Key=collector-key,Authorization=Basic%20Y29sbGVjdG9y")
	tel, err := telemetry.Start(context.Background(), telemetry.Options{ServiceName: "redirect-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	_, end := telemetry.Invocation(context.Background(), "incident-export", "inv-1", trace.SpanKindInternal)
	telemetry.VersionsWritten(context.Background(), "contoso", 1)
	end(nil)
	if err := tel.Flush(context.Background()); err == nil {
		t.Error("a collector that only redirects accepted the export")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) != 0 {
		t.Fatalf("the redirect's target received %q", leaked)
	}
}

// The exporters' client reads the standard timeout and CA variables.
func TestOTLPClientSettings(t *testing.T) {
	for _, tc := range []struct{ name, key, value, err string }{
		{"timeout not a number", "OTEL_EXPORTER_OTLP_TIMEOUT", "10s", `OTEL_EXPORTER_OTLP_TIMEOUT="10s": use a number of milliseconds`},
		{"traces timeout", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-1", `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="-1"`},
		{"no CA file", "OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "the collector's CA certificate"},
		{"a CA file without PEM", "OTEL_EXPORTER_OTLP_CERTIFICATE", "telemetry_test.go", "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
			t.Setenv(tc.key, tc.value)
			_, err := telemetry.Start(context.Background(), telemetry.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Start = %v, want %q", err, tc.err)
			}
		})
	}
}

// A collector that hangs on traces holds back neither the metrics nor the
// caller: Shutdown (as Flush) gives both signals all of ctx at once, ends
// with ctx's error, and the metrics are delivered.
func TestShutdownTracesHung(t *testing.T) {
	rc := &receiver{}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			select { // hangs until the client gives up
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		rc.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer close(release)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	tel, err := telemetry.Start(context.Background(), telemetry.Options{ServiceName: "hung-traces-test"})
	if err != nil {
		t.Fatal(err)
	}
	if telemetry.Installed() != tel {
		t.Fatal("Installed is not the Telemetry Start installed")
	}
	// The package's instruments delegate to the providers the process
	// installed first (another test's); these are this Start's own.
	_, span := otel.GetTracerProvider().Tracer("test").Start(context.Background(), "incident-export")
	span.End()
	versions, _ := otel.GetMeterProvider().Meter("test").Int64Counter("defender.export.versions")
	versions.Add(context.Background(), 7)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline's error", err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	got := int64(0)
	for _, req := range rc.metrics {
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if m.Name == "defender.export.versions" {
						got = m.GetSum().DataPoints[0].GetAsInt()
					}
				}
			}
		}
	}
	if got != 7 {
		t.Fatalf("the metrics were not delivered beside the hung traces: %d versions", got)
	}
}
