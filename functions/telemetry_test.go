package functions_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

// The functions' telemetry, read with the SDK's in-memory exporter and
// reader: the real app behind the custom handler, on the devstack with
// 429s injected, invoked as the host invokes it with a traceparent. Each
// figure is held to what the devstack served or the sink holds.
func TestTelemetry(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	tel, err := telemetry.Start(context.Background(), telemetry.Options{Platform: "azure.functions", Version: "test", SpanExporter: spans, MetricReader: reader})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())

	s := devstack.Start(t, devstack.Options{Incidents: 300, Faults: devstack.Faults{ThrottleRate: 0.2}})
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	dir := t.TempDir()
	key := []byte("a-generic-webhook-key-0123456789")
	m := s.Settings()
	m["STATE_STORE"], m["EXPORT_SINK"] = "file://"+filepath.Join(dir, "state"), "file://"+filepath.Join(dir, "export")
	m["WEBHOOK_SECRET_GENERIC"] = "whsec_" + base64.StdEncoding.EncodeToString(key)
	m["DEFENDER_RATE_LIMITS"], m["EXPORT_LOOKBACK"] = "off", "960h"
	app, err := functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, slog.New(slog.NewJSONHandler(devstack.AuditLog(), nil)),
		&functions.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(customhandler.New(app, customhandler.Options{}))
	defer srv.Close()
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	post := func(path string, body []byte, h http.Header) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+path, bytes.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Traceparent", parent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// The timer, as the host sends it (shared/customhandler/testdata has it too).
	timer, err := os.ReadFile("testdata/timer-normal.json")
	if err != nil {
		t.Fatal(err)
	}
	if resp := post("/incident-export", timer, nil); resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("incident-export: %d %s", resp.StatusCode, b)
	}
	written := 0
	filepath.WalkDir(filepath.Join(dir, "export"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			written++
		}
		return nil
	})
	// A catalog query; a webhook delivery with a bad signature.
	resp := post("/api/hunting-query", []byte(`{"name":"failed-logons"}`), nil)
	var hunt struct {
		Results []json.RawMessage `json:"results"`
	}
	json.NewDecoder(resp.Body).Decode(&hunt)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(hunt.Results) == 0 {
		t.Fatalf("hunting-query: %d, %d rows", resp.StatusCode, len(hunt.Results))
	}
	h := http.Header{}
	h.Set(webhook.HeaderID, "msg_1")
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(time.Now().Unix(), 10))
	h.Set(webhook.HeaderSignature, "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)))
	if resp := post("/api/ticket-webhook/generic", []byte(`{"type":"ticket.updated","data":{"incidentId":"1001"}}`), h); resp.StatusCode != 401 {
		t.Fatalf("ticket-webhook with a bad signature: %d", resp.StatusCode)
	}

	graph := s.Counters().Snapshot()
	served, throttled := int64(0), int64(0)
	for endpoint, byStatus := range graph {
		if strings.HasPrefix(endpoint, "graph.") {
			for st, n := range byStatus {
				served += n
				if st == "429" {
					throttled += n
				}
			}
		}
	}
	if throttled == 0 {
		t.Fatal("the devstack throttled nothing: the test proves nothing of 429s")
	}

	if err := tel.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums, gauges, hists := map[string]int64{}, map[string]float64{}, map[string]metricdata.HistogramDataPoint[float64]{}
	var rows []metricdata.HistogramDataPoint[int64]
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					sums[mt.Name+enc(dp.Attributes)] += dp.Value
					if dp.Attributes.Len() > 0 {
						sums[mt.Name] += dp.Value
					}
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					gauges[mt.Name+enc(dp.Attributes)] = dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					hists[mt.Name+enc(dp.Attributes)] = dp
				}
			case metricdata.Histogram[int64]:
				rows = append(rows, d.DataPoints...)
			}
		}
	}
	// Hunting's requests are Graph's too.
	for k, want := range map[string]int64{
		"defender.api.requests":                 served,
		"defender.api.throttled":                throttled,
		"defender.export.versions":              int64(written),
		"defender.token.requests{result=fetch}": 1,
		"defender.token.requests":               served,
		"defender.keyvault.reads{outcome=ok,secret=" + devstack.DefaultSecretName + "}": 1,
		"defender.webhook.deliveries{outcome=rejected,provider=generic}":                1,
	} {
		if sums[k] != want {
			t.Errorf("%s = %d, want %d", k, sums[k], want)
		}
	}
	if written < 300 {
		t.Errorf("only %d versions written", written)
	}
	// The checkpoint stays EXPORT_LAG (10 min) behind now.
	if lag := gauges["defender.export.lag{tenant="+devstack.DefaultTenantID+"}"]; lag < 600 || lag > 700 {
		t.Errorf("export lag %v s, want 600 to 700 (gauges %v)", lag, gauges)
	}
	if dp, ok := hists["defender.hunting.duration{outcome=ok}"]; !ok || dp.Count != 1 || dp.Sum <= 0 {
		t.Errorf("hunting duration %+v", hists)
	}
	if len(rows) != 1 || rows[0].Count != 1 || rows[0].Sum != int64(len(hunt.Results)) {
		t.Errorf("hunting rows %+v, want one query of %d", rows, len(hunt.Results))
	}

	// Spans: each invocation continues the caller's trace; every API call
	// is a child of its invocation.
	byID := map[trace.SpanID]tracetest.SpanStub{}
	invocations := map[string]tracetest.SpanStub{}
	apiCalls := 0
	for _, sp := range spans.GetSpans() {
		byID[sp.SpanContext.SpanID()] = sp
		switch sp.SpanKind {
		case trace.SpanKindClient:
			apiCalls++
		default:
			invocations[sp.Name] = sp
		}
	}
	if int64(apiCalls) != served {
		t.Errorf("%d API call spans for %d requests", apiCalls, served)
	}
	for _, name := range []string{"incident-export", "hunting-query", "ticket-webhook"} {
		sp, ok := invocations[name]
		if !ok {
			t.Fatalf("no span for %s (have %v)", name, invocations)
		}
		if sp.Parent.SpanID().String() != "b7ad6b7169203331" || sp.SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("%s does not continue the caller's trace: parent %s trace %s", name, sp.Parent.SpanID(), sp.SpanContext.TraceID())
		}
	}
	for _, sp := range spans.GetSpans() {
		if sp.SpanKind != trace.SpanKindClient {
			continue
		}
		p, ok := byID[sp.Parent.SpanID()]
		if !ok || (p.Name != "incident-export" && p.Name != "hunting-query") {
			t.Fatalf("API call %s has no invocation for parent", sp.Name)
		}
	}
}

// enc renders a set as {k=v,…} (a set iterates sorted by key).
func enc(set attribute.Set) string {
	if set.Len() == 0 {
		return ""
	}
	var parts []string
	for _, kv := range set.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
	}
	return "{" + strings.Join(parts, ",") + "}"
}
