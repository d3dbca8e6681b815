// Package customhandler serves a function.App to the Azure Functions host as
// a custom handler: the host's JSON envelope for timers (and for HTTP when a
// request is not forwarded), and forwarded HTTP at /api/... It knows the
// host's quirks: lenient timestamps, a null ScheduleStatus, bodies that are
// absent, text or base64, and that any non-2xx answer fails the invocation.
package customhandler

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
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
	function.Logger(ctx).Info("http function", "function", name, "status", resp.Status, "duration_ms", time.Since(start).Milliseconds())
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

// The host's envelopes are decoded with go-json-experiment (encoding/json/v2
// as a module): decoding was half of an invocation's overhead, and v2 does it
// in less than half the time. Names match without regard to case, as
// encoding/json's did.
var decodeOptions = jsonv2.JoinOptions(jsonv2.MatchCaseInsensitiveNames(true), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))

// invocation is the host's envelope; its Metadata repeats what the
// functions need from Data, so it is not decoded.
type invocation struct {
	Data     map[string]jsontext.Value `json:"Data"`
	Metadata map[string]jsontext.Value `json:"Metadata"`
}

// binding is Data's value for the trigger binding want, or for the only
// binding when the function.json names it otherwise.
func (inv invocation) binding(want string) jsontext.Value {
	if raw, ok := inv.Data[want]; ok {
		return raw
	}
	for _, v := range inv.Data {
		return v
	}
	return nil
}

// result is the host's expected answer.
type result struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

func (h *handler) envelope(ctx context.Context, w http.ResponseWriter, r *http.Request, name string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4*h.opts.MaxBody+64<<10))
	if err != nil {
		h.fail(ctx, w, name, fmt.Errorf("the host's invocation request is not the expected JSON envelope: %w", err))
		return
	}
	t, isTimer := h.app.Timers[name]
	q, isQueue := h.app.Queues[name]
	if isTimer || isQueue {
		var inv invocation
		if err := jsonv2.Unmarshal(body, &inv, decodeOptions); err != nil {
			h.fail(ctx, w, name, fmt.Errorf("the host's invocation request is not the expected JSON envelope: %w", err))
			return
		}
		if isTimer {
			h.timer(ctx, w, name, t, inv)
		} else {
			h.queue(ctx, w, name, q, inv)
		}
		return
	}
	if route, ok := h.app.HTTP[name]; ok {
		// Decoded straight into the request's shape, in one pass: the
		// metadata repeats what Data.req holds.
		var inv struct {
			Data struct {
				Req *httpData `json:"req"`
			} `json:"Data"`
		}
		if err := jsonv2.Unmarshal(body, &inv, decodeOptions); err != nil {
			var se *jsontext.SyntacticError
			if errors.As(err, &se) {
				err = fmt.Errorf("the host's invocation request is not the expected JSON envelope: %w", err)
			} else {
				err = fmt.Errorf("HTTP data: %w", err)
			}
			h.fail(ctx, w, name, err)
			return
		}
		if inv.Data.Req == nil {
			h.fail(ctx, w, name, fmt.Errorf("Data has no %q binding", HTTPIn))
			return
		}
		h.httpEnvelope(ctx, w, name, route, inv.Data.Req)
		return
	}
	h.fail(ctx, w, name, fmt.Errorf("no function named %q", name))
}

// fail answers 500: the host marks the invocation failed (and drops the
// logs of a failed answer, so the error is logged here too).
func (h *handler) fail(ctx context.Context, w http.ResponseWriter, name string, err error) {
	function.Logger(ctx).Error("invocation failed", "function", name, "error", err.Error())
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	json.NewEncoder(w).Encode(result{Outputs: map[string]any{}, Logs: []string{name + " failed: " + err.Error()}})
}

// timerInfo is TimerInfo as the host serializes it.
type timerInfo struct {
	ScheduleStatus *struct {
		Last        lenientTime `json:"Last"`
		Next        lenientTime `json:"Next"`
		LastUpdated lenientTime `json:"LastUpdated"`
	} `json:"ScheduleStatus"`
	IsPastDue bool `json:"IsPastDue"`
}

// lenientTime accepts what the host writes: RFC 3339 with or without an
// offset, and "0001-01-01T00:00:00" (never) with none.
type lenientTime struct{ time.Time }

func (t *lenientTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return nil // null or a non-string: unknown
	}
	t.Time = parseLenient(s)
	return nil
}

func parseLenient(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", "2006-01-02T15:04:05.9999999Z07:00"} {
		if v, err := time.Parse(layout, s); err == nil {
			if v.Year() <= 1 {
				return time.Time{}
			}
			return v.UTC()
		}
	}
	return time.Time{}
}

func (h *handler) timer(ctx context.Context, w http.ResponseWriter, name string, t function.TimerSchedule, inv invocation) {
	raw := inv.binding(TimerIn)
	var ti timerInfo
	if len(raw) > 0 {
		if err := jsonv2.Unmarshal(raw, &ti, decodeOptions); err != nil {
			h.fail(ctx, w, name, fmt.Errorf("timer data: %w", err))
			return
		}
	}
	run := function.Timer{ScheduledTime: time.Now().UTC(), PastDue: ti.IsPastDue}
	if st := ti.ScheduleStatus; st != nil {
		// Next is the occurrence firing now; Last the one before.
		if !st.Next.IsZero() {
			run.ScheduledTime = st.Next.Time
		}
		run.LastRun = st.Last.Time
	}
	start := time.Now()
	function.Logger(ctx).Info("timer function started", "function", name, "scheduled", run.ScheduledTime, "past_due", run.PastDue)
	if err := t.Func(ctx, run); err != nil {
		h.fail(ctx, w, name, err)
		return
	}
	completed(w, name, start)
}

// completed answers the host for a function without outputs that succeeded.
func completed(w http.ResponseWriter, name string, start time.Time) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(result{Outputs: map[string]any{},
		Logs: []string{fmt.Sprintf("%s completed in %s", name, time.Since(start).Round(time.Millisecond))}})
}

// queue runs a queue function. The message is Data.msg, which the host
// encodes twice: ScriptInvocationContextExtensions.GetHttpScriptInvocationContextValue
// (Azure/azure-functions-host) turns a string input into
// JsonConvert.SerializeObject(text), a JSON string, and the request's
// formatter encodes that again (the host's own test
// GetHttpScriptInvocationContextValueTest_String expects "\"stringTest\"").
// The docs' sample shows the text encoded once, and a JSON message may come
// as the object itself: messageText accepts all three. The host writes
// Metadata's scalars the same way: "Id": "\"…\"", "DequeueCount": "1".
func (h *handler) queue(ctx context.Context, w http.ResponseWriter, name string, q function.QueueRoute, inv invocation) {
	raw, meta := inv.binding(QueueIn), inv.Metadata
	if raw.Kind() == 0 {
		h.fail(ctx, w, name, fmt.Errorf("Data has no %q binding", QueueIn))
		return
	}
	var m function.Message
	body, err := messageText(raw)
	if err != nil {
		h.fail(ctx, w, name, fmt.Errorf("queue message: %w", err))
		return
	}
	m.Body = body
	m.ID = scalar(meta["Id"])
	m.DequeueCount, _ = strconv.Atoi(scalar(meta["DequeueCount"]))
	m.InsertedAt = parseLenient(scalar(meta["InsertionTime"]))
	m.LastAttempt = m.DequeueCount >= h.opts.MaxDequeueCount
	start := time.Now()
	function.Logger(ctx).Info("queue function started", "function", name, "message", m.ID, "dequeue_count", m.DequeueCount)
	if err := q.Func(ctx, m); err != nil {
		h.fail(ctx, w, name, err)
		return
	}
	completed(w, name, start)
}

// messageText is a queue message's text from Data.msg: a JSON string
// whose value is itself a JSON string literal (the host's double encoding)
// is decoded twice; a JSON string once; any other JSON value is the text.
// A message whose text is a JSON string literal ("\"x\"" on the queue) is
// read as x: the one reading the two encodings cannot tell apart.
func messageText(raw jsontext.Value) ([]byte, error) {
	if raw.Kind() != '"' {
		return bytes.Clone(raw), nil
	}
	var text string
	if err := jsonv2.Unmarshal(raw, &text); err != nil {
		return nil, err
	}
	if inner := jsontext.Value(text); strings.HasPrefix(text, `"`) && inner.IsValid() {
		if err := jsonv2.Unmarshal(inner, &text); err != nil {
			return nil, err
		}
	}
	return []byte(text), nil
}

// scalar reads a metadata value: a number, a string, or a JSON value
// encoded in a string.
func scalar(v jsontext.Value) string {
	var s string
	if v.Kind() != '"' || jsonv2.Unmarshal(v, &s) != nil {
		return strings.TrimSpace(string(v))
	}
	var inner string
	if strings.HasPrefix(s, `"`) && json.Unmarshal([]byte(s), &inner) == nil {
		return inner
	}
	return s
}

// httpData is Data.req of a non-forwarded HTTP invocation.
type httpData struct {
	URL     string              `json:"Url"`
	Method  string              `json:"Method"`
	Query   jsontext.Value      `json:"Query"`
	Headers map[string][]string `json:"Headers"`
	Params  map[string]string   `json:"Params"`
	Body    jsontext.Value      `json:"Body"`
}

func (h *handler) httpEnvelope(ctx context.Context, w http.ResponseWriter, name string, route function.HTTPRoute, d *httpData) {
	req, err := h.requestFromData(d)
	if err != nil {
		h.fail(ctx, w, name, err)
		return
	}
	var resp *function.HTTPResponse
	if int64(len(req.Body)) > h.opts.MaxBody {
		resp = function.Text(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", h.opts.MaxBody))
	} else {
		resp = route.Func(ctx, req)
	}
	body := resp.Body
	if resp.Stream != nil {
		var b bytes.Buffer
		if err := resp.Stream(&b); err != nil {
			h.fail(ctx, w, name, err)
			return
		}
		body = b.Bytes()
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	headers := map[string]string{}
	for k, v := range resp.Header {
		headers[k] = strings.Join(v, ", ")
	}
	out := map[string]any{"statusCode": strconv.Itoa(status), "headers": headers, "body": string(body)}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(result{Outputs: map[string]any{HTTPOut: out}, Logs: []string{}})
	function.Logger(ctx).Info("http function", "function", name, "status", status, "mode", "envelope")
}

func (h *handler) requestFromData(d *httpData) (*function.HTTPRequest, error) {
	req := &function.HTTPRequest{Method: d.Method, Params: d.Params, Header: http.Header{}, Query: url.Values{}}
	if u, err := url.Parse(d.URL); err == nil {
		req.Path = u.Path
	}
	for k, vs := range d.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	// Query is an object of strings (the docs' sample once showed it as a string).
	if len(d.Query) > 0 && d.Query[0] == '{' {
		var q map[string]string
		if err := jsonv2.Unmarshal(d.Query, &q, decodeOptions); err != nil {
			return nil, fmt.Errorf("HTTP data: Query: %w", err)
		}
		for k, v := range q {
			req.Query.Set(k, v)
		}
	}
	if len(d.Body) > 0 && string(d.Body) != "null" {
		var s string
		if err := jsonv2.Unmarshal(d.Body, &s, decodeOptions); err != nil {
			// A JSON body the host passed as an object.
			req.Body = []byte(d.Body)
		} else {
			req.Body = []byte(s)
			if binaryContent(req.Header.Get("Content-Type")) {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return nil, errors.New("HTTP data: a binary body that is not base64")
				}
				req.Body = b
			}
		}
	}
	req.Principal = h.principal(req.Header)
	return req, nil
}

// binaryContent: the host base64-encodes these bodies.
func binaryContent(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/octet-stream" || strings.HasPrefix(mt, "multipart/")
}

// principal decodes Easy Auth's X-MS-CLIENT-PRINCIPAL, when trusted.
func (h *handler) principal(hdr http.Header) *function.Principal {
	if !h.opts.TrustEasyAuth {
		return nil
	}
	raw := hdr.Get("X-MS-CLIENT-PRINCIPAL")
	if raw == "" || len(raw) > 64<<10 {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil
	}
	var p struct {
		AuthTyp string `json:"auth_typ"`
		NameTyp string `json:"name_typ"`
		RoleTyp string `json:"role_typ"`
		Claims  []struct {
			Typ string `json:"typ"`
			Val string `json:"val"`
		} `json:"claims"`
	}
	if json.Unmarshal(b, &p) != nil {
		return nil
	}
	out := &function.Principal{Source: "easyauth"}
	for _, c := range p.Claims {
		switch {
		case c.Typ == p.RoleTyp || c.Typ == "roles":
			out.Roles = append(out.Roles, c.Val)
		case c.Typ == p.NameTyp && out.Name == "":
			out.Name = c.Val
		}
	}
	if out.Name == "" {
		out.Name = hdr.Get("X-MS-CLIENT-PRINCIPAL-NAME")
	}
	return out
}
