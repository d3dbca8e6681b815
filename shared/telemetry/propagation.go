package telemetry

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// FromHeaders continues the W3C trace context (traceparent, tracestate) of
// a request's headers: the Functions host sends its own on every request to
// the custom handler, and a forwarded HTTP request keeps its caller's.
// Without one, ctx is returned as it was and the invocation starts a trace.
func FromHeaders(ctx context.Context, h http.Header) context.Context {
	return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(h))
}

// FromXRay continues the trace of an X-Ray trace header, which Lambda hands
// over (Lambda-Runtime-Trace-Id, _X_AMZN_TRACE_ID):
// "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".
// The root's two hex parts are the W3C trace ID, Parent the span ID. It is
// written here: the contrib propagator that did this is deprecated. A
// header it cannot read leaves ctx as it was.
func FromXRay(ctx context.Context, header string) context.Context {
	var root, parent string
	sampled := false
	for _, part := range strings.Split(header, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Root":
			root = v
		case "Parent":
			parent = v
		case "Sampled":
			sampled = v == "1"
		}
	}
	f := strings.Split(root, "-")
	if len(f) != 3 || f[0] != "1" || len(f[1]) != 8 || len(f[2]) != 24 {
		return ctx
	}
	tid, err := trace.TraceIDFromHex(f[1] + f[2])
	if err != nil {
		return ctx
	}
	sid, err := trace.SpanIDFromHex(parent)
	if err != nil {
		return ctx
	}
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true}
	if sampled {
		cfg.TraceFlags = trace.FlagsSampled
	}
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(cfg))
}
