// Package telemetry is what the functions tell OpenTelemetry: metrics of
// the export's lag and output, the API's requests and throttling, tokens
// and Key Vault reads, hunting and the webhook; and a trace per invocation,
// continuing the context the platform handed over, with a span per API
// call. It is off unless an OTLP endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT, which config reads): the instruments are
// then OpenTelemetry's no-ops, a few nanoseconds a call.
//
// The packages that measure use the instruments here, through
// OpenTelemetry's global providers; Start installs the SDK's behind them,
// exporting OTLP over HTTP. Flush pushes what is pending (Lambda freezes
// the sandbox between invocations) and Shutdown does too, last, as a
// process stops. Neither waits longer than its context allows: the caller
// bounds them (docs/telemetry.md has the bounds).
package telemetry

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope names the instrumentation: the tracer and the meter.
const Scope = "github.com/defender-functions/defender-functions"

// Options describe the process to the telemetry.
type Options struct {
	// ServiceName is service.name (default defender-functions).
	ServiceName string
	// Platform is "azure.functions" or "aws.lambda" (cloud.platform).
	Platform string
	// Version is the build's.
	Version string
	// Exporters replace OTLP/HTTP (tests give in-memory ones).
	SpanExporter sdktrace.SpanExporter
	MetricReader sdkmetric.Reader
}

// Telemetry is the SDK installed by Start.
type Telemetry struct {
	tp *sdktrace.TracerProvider
	mp *sdkmetric.MeterProvider
}

// Start installs the SDK's providers as OpenTelemetry's global ones, with
// OTLP/HTTP exporters configured by the standard OTEL_EXPORTER_OTLP_*
// variables (endpoint, headers, timeout, compression; OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES for the resource). It performs no I/O.
func Start(ctx context.Context, o Options) (*Telemetry, error) {
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(cmp.Or(o.ServiceName, "defender-functions")), semconv.ServiceVersion(o.Version), semconv.CloudPlatformKey.String(o.Platform)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	se, mr := o.SpanExporter, o.MetricReader
	if se == nil {
		hc, err := exportClient("TRACES")
		if err != nil {
			return nil, err
		}
		if se, err = otlptracehttp.New(ctx, otlptracehttp.WithHTTPClient(hc)); err != nil {
			return nil, fmt.Errorf("telemetry: OTLP traces: %w", err)
		}
	}
	if mr == nil {
		hc, err := exportClient("METRICS")
		if err != nil {
			return nil, err
		}
		me, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithHTTPClient(hc))
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP metrics: %w", err)
		}
		mr = sdkmetric.NewPeriodicReader(me, sdkmetric.WithInterval(30*time.Second))
	}
	t := &Telemetry{
		tp: sdktrace.NewTracerProvider(sdktrace.WithBatcher(se), sdktrace.WithResource(res)),
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithReader(mr), sdkmetric.WithResource(res)),
	}
	otel.SetTracerProvider(t.tp)
	otel.SetMeterProvider(t.mp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	installed.Store(t)
	return t, nil
}

// installed is the Telemetry Start installed last: the global providers'.
var installed atomic.Pointer[Telemetry]

// Installed returns the Telemetry Start installed last, behind
// OpenTelemetry's global providers (nil before Start), for the process's
// last Shutdown: the app that started it is built elsewhere.
func Installed() *Telemetry { return installed.Load() }

// exportClient carries one signal's exports. The exporters' own client
// follows a redirect with OTEL_EXPORTER_OTLP_HEADERS, which hold the
// collector's credentials, to wherever it points (a 307 to another port
// received them): this one follows none, and a collector that redirects
// fails the export. A client of our own takes the place of the variables
// the exporters then no longer read: the timeout and the CA certificate,
// per signal or for both.
func exportClient(signal string) (*http.Client, error) {
	env := func(name string) (string, string) {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_" + signal + "_" + name, "OTEL_EXPORTER_OTLP_" + name} {
			if v := os.Getenv(k); v != "" {
				return k, v
			}
		}
		return "", ""
	}
	timeout := 10 * time.Second
	if k, v := env("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("telemetry: %s=%q: use a number of milliseconds", k, v)
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if _, f := env("CERTIFICATE"); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("telemetry: the collector's CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("telemetry: %s holds no PEM certificate", f)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// Flush exports what is pending, within ctx. Spans in a batch whose export
// ctx cuts short are dropped (the SDK's batch processor keeps no failed
// batch); metrics are cumulative, so the next export that succeeds carries
// the totals.
func (t *Telemetry) Flush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return both(ctx, t.tp.ForceFlush, t.mp.ForceFlush)
}

// Shutdown exports what is pending, within ctx, and stops the exporters:
// the SDK's Shutdown flushes first, so no Flush is needed before it.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return both(ctx, t.tp.Shutdown, t.mp.Shutdown)
}

// both runs the traces' and the metrics' step at once: one after the
// other, a collector that hangs on the first would leave the second
// nothing of ctx's time.
func both(ctx context.Context, traces, metrics func(context.Context) error) error {
	errc := make(chan error, 1)
	go func() { errc <- metrics(ctx) }()
	err := traces(ctx)
	return errors.Join(err, <-errc)
}

// The instruments, created once against the global meter: before Start
// they are no-ops, after it the SDK's (the global meter delegates).
var (
	meter  = otel.Meter(Scope)
	tracer = otel.Tracer(Scope)

	exportLag = must(meter.Float64Gauge("defender.export.lag", metric.WithUnit("s"),
		metric.WithDescription("How far the tenant's checkpoint is behind now: versions updated since are not yet exported")))
	exportVersions = must(meter.Int64Counter("defender.export.versions", metric.WithUnit("{version}"),
		metric.WithDescription("Incident versions written to the sink")))
	apiRequests = must(meter.Int64Counter("defender.api.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests to the Defender API, by API and HTTP status (0: no answer)")))
	apiThrottled = must(meter.Int64Counter("defender.api.throttled", metric.WithUnit("{request}"),
		metric.WithDescription("Requests the Defender API answered 429")))
	tokenRequests = must(meter.Int64Counter("defender.token.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Tokens asked for: served from the cache (hit) or fetched from Entra ID (fetch, fetch_failed)")))
	vaultReads = must(meter.Int64Counter("defender.keyvault.reads", metric.WithUnit("{read}"),
		metric.WithDescription("Secrets read from Key Vault, by outcome")))
	huntingDuration = must(meter.Float64Histogram("defender.hunting.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to answer a hunting query, by outcome"),
		metric.WithExplicitBucketBoundaries(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 230)))
	huntingRows = must(meter.Int64Histogram("defender.hunting.rows", metric.WithUnit("{row}"),
		metric.WithDescription("Rows a hunting query returned"),
		metric.WithExplicitBucketBoundaries(0, 1, 10, 100, 1000, 10000, 100000)))
	webhookOutcomes = must(meter.Int64Counter("defender.webhook.deliveries", metric.WithUnit("{delivery}"),
		metric.WithDescription("Ticket webhook deliveries, by provider and outcome")))
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// The options of the hot paths, made once: a cache hit allocates nothing
// (an option passed as a literal would escape through the interface).
var (
	hit         = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "hit")))}
	fetched     = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "fetch")))}
	fetchFailed = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "fetch_failed")))}
)

// TokenHit counts a token served from the cache.
func TokenHit(ctx context.Context) { tokenRequests.Add(ctx, 1, hit...) }

// TokenFetch counts a token fetched from Entra ID.
func TokenFetch(ctx context.Context, err error) {
	if err != nil {
		tokenRequests.Add(ctx, 1, fetchFailed...)
		return
	}
	tokenRequests.Add(ctx, 1, fetched...)
}

// VaultRead counts a read of a Key Vault secret.
func VaultRead(ctx context.Context, secret string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	vaultReads.Add(ctx, 1, metric.WithAttributes(attribute.String("secret", secret), attribute.String("outcome", outcome)))
}

// ExportLag records how far tenant's checkpoint is behind now.
func ExportLag(ctx context.Context, tenant string, lag time.Duration) {
	exportLag.Record(ctx, lag.Seconds(), metric.WithAttributes(attribute.String("tenant", tenant)))
}

// VersionsWritten counts versions of tenant written to the sink.
func VersionsWritten(ctx context.Context, tenant string, n int) {
	exportVersions.Add(ctx, int64(n), metric.WithAttributes(attribute.String("tenant", tenant)))
}

// Hunting records a hunting query's answer.
func Hunting(ctx context.Context, d time.Duration, rows int, outcome string) {
	o := metric.WithAttributes(attribute.String("outcome", outcome))
	huntingDuration.Record(ctx, d.Seconds(), o)
	if outcome == "ok" {
		huntingRows.Record(ctx, int64(rows))
	}
}

// Webhook counts a webhook delivery's outcome (applied, duplicate, …).
func Webhook(ctx context.Context, provider, outcome string) {
	webhookOutcomes.Add(ctx, 1, metric.WithAttributes(attribute.String("provider", provider), attribute.String("outcome", outcome)))
}

// APICall starts the span of one request to the Defender API; end records
// its answer (status 0: none) in the span and the request counters.
func APICall(ctx context.Context, api, method, host, path string) (context.Context, func(status int, err error)) {
	ctx, span := tracer.Start(ctx, method+" "+path, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.HTTPRequestMethodKey.String(method), semconv.ServerAddress(host), semconv.URLPath(path), attribute.String("defender.api", api)))
	return ctx, func(status int, err error) {
		a := []attribute.KeyValue{attribute.String("api", api), attribute.Int("status", status)}
		apiRequests.Add(ctx, 1, metric.WithAttributes(a...))
		if status == 429 {
			apiThrottled.Add(ctx, 1, metric.WithAttributes(attribute.String("api", api)))
		}
		if status != 0 {
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		}
		if err != nil || status >= 400 {
			span.SetStatus(codes.Error, statusText(status, err))
		}
		span.End()
	}
}

func statusText(status int, err error) string {
	if err != nil {
		return err.Error()
	}
	return "HTTP " + strconv.Itoa(status)
}

// Invocation starts the span of one invocation of a function, continuing
// ctx's trace (Continue put the platform's there); end records its error.
func Invocation(ctx context.Context, function, id string, kind trace.SpanKind) (context.Context, func(err error)) {
	ctx, span := tracer.Start(ctx, function, trace.WithSpanKind(kind),
		trace.WithAttributes(semconv.FaaSInvocationID(id), attribute.String("faas.name", function)))
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// StatusError is an HTTP answer as its invocation's error: a 5xx failed.
func StatusError(status int) error {
	if status >= 500 {
		return fmt.Errorf("HTTP %d", status)
	}
	return nil
}
