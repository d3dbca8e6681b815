package lambdahandler_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/defender-functions/defender-functions/shared/lambdahandler"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Each invocation's span continues the trace Lambda hands over (the X-Ray
// header aws-lambda-go puts in the context), or an HTTP caller's W3C
// context; each SQS message has its own span; what is pending is flushed
// before the answer (the sandbox freezes after it).
func TestInvocationTrace(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Start(context.Background(), telemetry.Options{SpanExporter: spans, MetricReader: metric.NewManualReader()})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	const xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
	for _, tc := range []struct {
		fixture, span string
		traceparent   string // put in the HTTP event's headers
		spans         int
		kind          trace.SpanKind
		trace, parent string
	}{
		{"scheduler-input.json", "incident-export", "", 1, trace.SpanKindInternal, "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"},
		{"sqs-event-tasks.json", "incident-export-tenant", "", 2, trace.SpanKindConsumer, "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"},
		{"lambda-urls-request.json", "path", "", 1, trace.SpanKindServer, "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"},
		// The caller's own context wins over Lambda's.
		{"lambda-urls-request.json", "path", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 1, trace.SpanKindServer, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"},
	} {
		t.Run(tc.fixture+tc.traceparent, func(t *testing.T) {
			spans.Reset()
			a := app(&seen{})
			flushed := 0
			a.Flush = func(ctx context.Context) error { flushed++; return tel.Flush(ctx) }
			h := lambdahandler.New(a, lambdahandler.Options{})
			b, err := os.ReadFile("testdata/" + tc.fixture)
			if err != nil {
				t.Fatal(err)
			}
			if tc.traceparent != "" {
				var ev map[string]any
				json.Unmarshal(b, &ev)
				ev["headers"].(map[string]any)["traceparent"] = tc.traceparent
				b, _ = json.Marshal(ev)
			}
			//lint:ignore SA1029 the key aws-lambda-go uses
			ctx := context.WithValue(context.Background(), "x-amzn-trace-id", xray) //nolint:staticcheck
			if _, err := h.Invoke(ctx, b); err != nil {
				t.Fatal(err)
			}
			if flushed != 1 {
				t.Errorf("flushed %d times", flushed)
			}
			got := spans.GetSpans()
			if len(got) != tc.spans {
				t.Fatalf("%d spans, want %d", len(got), tc.spans)
			}
			for _, sp := range got {
				if sp.Name != tc.span || sp.SpanKind != tc.kind || sp.SpanContext.TraceID().String() != tc.trace || sp.Parent.SpanID().String() != tc.parent {
					t.Errorf("span %s (%v) trace %s parent %s", sp.Name, sp.SpanKind, sp.SpanContext.TraceID(), sp.Parent.SpanID())
				}
			}
		})
	}
}

// The flush after an invocation is given its bound, DefaultFlushTimeout or
// Options.FlushTimeout, from when it starts, whatever the invocation's own
// context (here one already cancelled). The deadline is pinned between
// two readings of the clock, not timed: before the invocation, and as the
// flush begins.
func TestFlushBound(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts lambdahandler.Options
		want time.Duration
	}{
		{"default", lambdahandler.Options{}, lambdahandler.DefaultFlushTimeout},
		{"set", lambdahandler.Options{FlushTimeout: 50 * time.Millisecond}, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := app(&seen{})
			var started, deadline time.Time
			a.Flush = func(ctx context.Context) error {
				started = time.Now()
				deadline, _ = ctx.Deadline()
				<-ctx.Done() // a collector that never answers
				return ctx.Err()
			}
			b, err := os.ReadFile("testdata/scheduler-input.json")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			before := time.Now()
			if _, err := lambdahandler.New(a, tc.opts).Invoke(ctx, b); err != nil {
				t.Fatal(err)
			}
			if deadline.Sub(before) < tc.want || deadline.Sub(started) > tc.want {
				t.Fatalf("the flush's deadline is %s after the invocation began and %s after the flush did; want %s", deadline.Sub(before), deadline.Sub(started), tc.want)
			}
		})
	}
}

// The flush never runs past the invocation's deadline: with less time left
// than the bound it gets what is left (less a margin), with none it is
// skipped, so the answer still reaches the runtime.
func TestFlushWithinDeadline(t *testing.T) {
	b, err := os.ReadFile("testdata/scheduler-input.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		left    time.Duration
		flushed bool
	}{
		{"time for a short flush", 300 * time.Millisecond, true},
		{"no time left", 50 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := app(&seen{})
			var flushed bool
			var deadline time.Time
			a.Flush = func(ctx context.Context) error {
				flushed = true
				deadline, _ = ctx.Deadline()
				return nil
			}
			end := time.Now().Add(tc.left)
			ctx, cancel := context.WithDeadline(context.Background(), end)
			defer cancel()
			if _, err := lambdahandler.New(a, lambdahandler.Options{}).Invoke(ctx, b); err != nil {
				t.Fatal(err)
			}
			if flushed != tc.flushed {
				t.Fatalf("flushed: %v, want %v", flushed, tc.flushed)
			}
			if flushed && !deadline.Before(end) {
				t.Fatalf("the flush's deadline %s is not before the invocation's %s", deadline, end)
			}
		})
	}
}
