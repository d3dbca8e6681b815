// Package customhandler serves a function.App to the Azure Functions host as
// a custom handler: the host's JSON envelope for timers (and for HTTP when a
// request is not forwarded), and forwarded HTTP at /api/... It knows the
// host's quirks: lenient timestamps, a null ScheduleStatus, bodies that are
// absent, text or base64, and that any non-2xx answer fails the invocation.
package customhandler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
)

// Binding names the function.json files use.
const (
	HTTPIn  = "req"
	HTTPOut = "res"
	TimerIn = "timer"
	QueueIn = "msg"
)

// Options tune the handler.
type Options struct {
	// MaxBody bounds a request body (default 1 MiB); the envelope may be
	// four times larger, base64 included.
	MaxBody int64
	// TrustEasyAuth reads the caller from X-MS-CLIENT-PRINCIPAL. Set it only
	// when App Service Authentication is on (WEBSITE_AUTH_ENABLED=True): only
	// then does the platform strip the header from outside requests.
	TrustEasyAuth bool
	// MaxDequeueCount is host.json's extensions.queues.maxDequeueCount
	// (default 5; HostMaxDequeueCount reads it): a message failing on that
	// delivery goes to the poison queue.
	MaxDequeueCount int
}

// EnvMaxDequeueCount is the app setting by which the host overrides
// host.json's extensions.queues.maxDequeueCount.
const EnvMaxDequeueCount = "AzureFunctionsJobHost__extensions__queues__maxDequeueCount"

// HostMaxDequeueCount reads maxDequeueCount as the host does: the app
// setting EnvMaxDequeueCount over host.json in dir (the handler runs in the
// app's root). It is 0 when neither sets it, and an error when a value is
// not a positive number.
func HostMaxDequeueCount(dir string, getenv func(string) string) (int, error) {
	if v := getenv(EnvMaxDequeueCount); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("customhandler: %s=%q is not a positive number", EnvMaxDequeueCount, v)
		}
		return n, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "host.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("customhandler: %w", err)
	}
	// Keys match without regard to case, as the host's configuration does.
	var host struct {
		Extensions struct {
			Queues struct {
				MaxDequeueCount *int
			}
		}
	}
	if err := json.Unmarshal(b, &host); err != nil {
		return 0, fmt.Errorf("customhandler: host.json: %w", err)
	}
	switch n := host.Extensions.Queues.MaxDequeueCount; {
	case n == nil:
		return 0, nil
	case *n < 1:
		return 0, fmt.Errorf("customhandler: host.json's extensions.queues.maxDequeueCount is %d; the host needs a positive number", *n)
	default:
		return *n, nil
	}
}

type handler struct {
	app  *function.App
	opts Options
	log  *slog.Logger
}

// New returns the custom handler for app.
func New(app *function.App, opts Options) http.Handler {
	if opts.MaxBody == 0 {
		opts.MaxBody = 1 << 20
	}
	if opts.MaxDequeueCount == 0 {
		opts.MaxDequeueCount = 5
	}
	return &handler{app: app, opts: opts, log: app.Log()}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Azure-Functions-InvocationId")
	if id == "" {
		id = uuid.NewString()
	}
	ctx := function.WithInvocation(r.Context(), h.log, id)
	switch {
	case r.URL.Path == "/":
		// The host's readiness probe: answer at once, whatever the method.
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(r.URL.Path, "/api/"):
		// A forwarded request keeps its caller's trace context.
		h.forwarded(telemetry.FromHeaders(ctx, r.Header), w, r)
	case r.Method == http.MethodPost && strings.Count(r.URL.Path, "/") == 1:
		// The host sends its own (the invocation's) with the envelope.
		name := strings.TrimPrefix(r.URL.Path, "/")
		kind := trace.SpanKindServer
		if _, ok := h.app.Timers[name]; ok {
			kind = trace.SpanKindInternal
		} else if _, ok := h.app.Queues[name]; ok {
			kind = trace.SpanKindConsumer
		}
		ctx, end := telemetry.Invocation(telemetry.FromHeaders(ctx, r.Header), name, id, kind)
		sw := &statusWriter{ResponseWriter: w}
		h.envelope(ctx, sw, r, name)
		end(telemetry.StatusError(sw.status))
	default:
		http.NotFound(w, r)
	}
}

// statusWriter keeps the answer's status, for the invocation's span.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets a streamed answer through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// forwarded serves an HTTP request the host passed through as is.
func (h *handler) forwarded(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	name, route, params, allowed, ok := h.app.MatchHTTP(r.URL.Path, r.Method)
	if !ok {
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.ToUpper(strings.Join(allowed, ", ")))
			writeText(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		writeText(w, http.StatusNotFound, "no function at "+r.URL.Path)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		writeText(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", h.opts.MaxBody))
		return
	}
	req := &function.HTTPRequest{Method: r.Method, Path: r.URL.Path, Params: params, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body}
	req.Principal = h.principal(r.Header)
	start := time.Now()
	ctx, end := telemetry.Invocation(ctx, name, function.InvocationID(ctx), trace.SpanKindServer)
	resp := route.Func(ctx, req)
	writeResponse(w, resp)
	end(telemetry.StatusError(resp.Status))
	function.Logger(ctx).Info("HTTP function answered.", "function", name, "status", resp.Status, "duration_ms", time.Since(start).Milliseconds())
}

func writeResponse(w http.ResponseWriter, resp *function.HTTPResponse) {
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if resp.Stream != nil {
		// Errors mid-stream can only end the body; the function logged them.
		_ = resp.Stream(w)
		return
	}
	w.Write(resp.Body)
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, msg)
}
