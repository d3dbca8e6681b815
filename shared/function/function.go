// Package function defines what a Defender Functions function is, whatever
// runs it: a plain Go function over plain Go types. The Azure Functions
// custom handler (package customhandler), the AWS Lambda adapter (package
// lambdahandler) and the local host turn their platform's envelopes into
// these types and back; a function never sees an envelope.
package function

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// HTTPRequest is an HTTP call to a function.
type HTTPRequest struct {
	Method string
	// Path is the request path as the caller sent it, e.g. /api/hunting-query.
	Path string
	// Params are the route's parameters, e.g. provider in ticket-webhook/{provider}.
	Params map[string]string
	Query  url.Values
	Header http.Header
	Body   []byte
	// Principal is the caller as the platform authenticated it (Easy Auth,
	// an API Gateway authorizer), or nil.
	Principal *Principal
}

// Principal is an authenticated caller.
type Principal struct {
	Name   string
	Roles  []string
	Source string // easyauth, jwt-authorizer, lambda-authorizer
}

// HasRole reports whether the principal carries role.
func (p *Principal) HasRole(role string) bool {
	return p != nil && slices.Contains(p.Roles, role)
}

// HTTPResponse is a function's answer. Stream, when set, writes the body
// instead of Body: adapters that can stream (forwarded HTTP) do so, the
// others buffer it.
type HTTPResponse struct {
	Status int
	Header http.Header
	Body   []byte
	Stream func(w io.Writer) error
}

// HTTPFunc handles an HTTP call. Failures are responses: the function
// decides the status and the message.
type HTTPFunc func(ctx context.Context, r *HTTPRequest) *HTTPResponse

// Timer is a scheduled run.
type Timer struct {
	// ScheduledTime is when this run was due (now, for a run on demand).
	ScheduledTime time.Time
	// PastDue is true when the platform fired late (after downtime).
	PastDue bool
	// LastRun is the previous scheduled run, zero when unknown or never.
	LastRun time.Time
}

// TimerFunc runs on a schedule. An error marks the run failed.
type TimerFunc func(ctx context.Context, t Timer) error

// Message is one queue message delivered to a function.
type Message struct {
	// ID is the platform's message ID.
	ID string
	// Body is the message's content.
	Body []byte
	// DequeueCount is how many times it has been delivered, this time
	// included (Azure's dequeueCount, SQS's ApproximateReceiveCount).
	DequeueCount int
	// InsertedAt is when it was enqueued, zero when unknown.
	InsertedAt time.Time
	// LastAttempt: the platform moves the message to its poison or
	// dead-letter queue if this delivery fails too.
	LastAttempt bool
}

// MessageFunc handles one queue message. An error leaves the message on
// the queue to be delivered again; after the platform's maximum it lands
// in the poison (Azure) or dead-letter (SQS) queue.
type MessageFunc func(ctx context.Context, m Message) error

// HTTPRoute, TimerRoute and QueueRoute are functions as the app serves
// them: each one's declaration (its name, binding and roles, read where
// they are needed rather than copied) and its code.
type (
	HTTPRoute struct {
		Descriptor
		Func HTTPFunc
	}
	TimerRoute struct {
		Descriptor
		Func TimerFunc
	}
	QueueRoute struct {
		Descriptor
		Func MessageFunc
	}
)

// App is the set of functions a process serves, by function name. Each
// route embeds its Descriptor, so a.HTTP[name].HTTP.Route is the App's
// HTTP function's binding's route.
type App struct {
	HTTP   map[string]HTTPRoute
	Timers map[string]TimerRoute
	Queues map[string]QueueRoute
	// Logger writes the process's structured log; nil means JSON to stdout.
	Logger *slog.Logger
	// Flush exports the telemetry pending, if any: Lambda calls it after
	// every invocation, before the sandbox freezes.
	Flush func(ctx context.Context) error
}

// Log returns the app's logger.
func (a *App) Log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.NewJSONHandler(stdout, nil))
	}
	return a.Logger
}

var stdout io.Writer = os.Stdout

// MatchHTTP finds the HTTP function for a path under /api/ and a method.
// It returns the function's name, route and parameters; ok is false when no
// route matches, and allowed lists the methods of a route that matched the
// path only.
func (a *App) MatchHTTP(path, method string) (name string, route HTTPRoute, params map[string]string, allowed []string, ok bool) {
	rel, found := strings.CutPrefix(path, "/api/")
	if !found {
		return "", HTTPRoute{}, nil, nil, false
	}
	for n, r := range a.HTTP {
		p, match := MatchRoute(r.HTTP.Route, rel)
		if !match {
			continue
		}
		for _, m := range r.HTTP.Methods {
			if strings.EqualFold(m, method) {
				return n, r, p, nil, true
			}
		}
		allowed = append(allowed, r.HTTP.Methods...)
	}
	return "", HTTPRoute{}, nil, allowed, false
}

// MatchRoute matches a function.json route such as "a/{b}/{c?}" (ASP.NET
// Core syntax; constraints like {id:int} are accepted, not checked) against
// a path relative to /api/, and returns the route's parameters.
func MatchRoute(route, path string) (map[string]string, bool) {
	rs := strings.Split(strings.Trim(route, "/"), "/")
	ps := strings.Split(strings.Trim(path, "/"), "/")
	if len(ps) == 1 && ps[0] == "" {
		ps = nil
	}
	params := map[string]string{}
	for i, seg := range rs {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name := strings.Trim(seg, "{}")
			optional := strings.HasSuffix(name, "?")
			name = strings.TrimSuffix(name, "?")
			if n, _, has := strings.Cut(name, ":"); has { // constraints such as {id:int}
				name = n
			}
			if i >= len(ps) {
				if optional {
					continue
				}
				return nil, false
			}
			v, err := url.PathUnescape(ps[i])
			if err != nil || v == "" {
				return nil, false
			}
			params[name] = v
			continue
		}
		if i >= len(ps) || !strings.EqualFold(seg, ps[i]) {
			return nil, false
		}
	}
	if len(ps) > len(rs) {
		return nil, false
	}
	return params, true
}

type ctxKey struct{}

type invocation struct {
	id  string
	log *slog.Logger
}

// WithInvocation puts the invocation's ID and logger in ctx. The adapters
// call it for every invocation; Logger(ctx) then writes lines that carry the
// ID, and so does any logger whose handler comes from LogHandler when it is
// given ctx (log.InfoContext(ctx, ...)).
func WithInvocation(ctx context.Context, log *slog.Logger, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, invocation{id: id, log: log.With(invocationID, id)})
}

// InvocationID is the ID of the invocation ctx belongs to, or "".
func InvocationID(ctx context.Context) string {
	inv, _ := ctx.Value(ctxKey{}).(invocation)
	return inv.id
}

// Logger returns the invocation's logger: every line carries its ID.
func Logger(ctx context.Context) *slog.Logger {
	if inv, ok := ctx.Value(ctxKey{}).(invocation); ok {
		return inv.log
	}
	return slog.New(slog.NewJSONHandler(stdout, nil))
}

const invocationID = "invocation_id"

// LogHandler wraps h so that a line logged with an invocation's context
// carries the invocation's ID. The shared services (credentials, the API
// client) take a plain *slog.Logger and log with the context of the work;
// the app gives them a logger over this handler, and they need not know
// what an invocation is.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(*invocationHandler); ok {
		return h
	}
	return &invocationHandler{inner: h}
}

type invocationHandler struct {
	inner slog.Handler
	// tagged: the logger already carries an ID (Logger(ctx) derives from
	// this handler with it), so records are not tagged twice.
	tagged bool
}

func (h *invocationHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *invocationHandler) Handle(ctx context.Context, r slog.Record) error {
	if inv, ok := ctx.Value(ctxKey{}).(invocation); ok && !h.tagged {
		r.AddAttrs(slog.String(invocationID, inv.id))
	}
	return h.inner.Handle(ctx, r)
}

func (h *invocationHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	tagged := h.tagged
	for _, a := range attrs {
		tagged = tagged || a.Key == invocationID
	}
	return &invocationHandler{inner: h.inner.WithAttrs(attrs), tagged: tagged}
}

func (h *invocationHandler) WithGroup(name string) slog.Handler {
	return &invocationHandler{inner: h.inner.WithGroup(name), tagged: h.tagged}
}

// Text is a plain-text response.
func Text(status int, msg string) *HTTPResponse {
	return &HTTPResponse{Status: status, Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte(msg)}
}
