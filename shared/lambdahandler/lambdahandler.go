// Package lambdahandler serves a function.App on AWS Lambda: API Gateway
// HTTP API (payload 2.0) and Function URL events reach the HTTP functions by
// path; EventBridge scheduled events and EventBridge Scheduler invocations
// run the timer function; SQS batches run the queue function, each message
// on its own, answered with the failed ones (batchItemFailures); any other
// event is refused with a clear error.
package lambdahandler

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
)

// Options tune the handler.
type Options struct {
	// MaxBody bounds a request body (default 1 MiB, after base64 decoding).
	MaxBody int
	// MaxReceiveCount is the queue's redrive policy's maxReceiveCount
	// (default DefaultMaxReceiveCount): a message failing on that receive
	// goes to the dead-letter queue.
	MaxReceiveCount int
	// FlushTimeout bounds the telemetry flush after each invocation
	// (default DefaultFlushTimeout).
	FlushTimeout time.Duration
	// Doctor runs the preflight with the function's own settings and
	// identity, writing its report, on a {"source":"doctor"} event: an
	// operator's `aws lambda invoke` (only IAM reaches a function directly;
	// neither the HTTP API nor SQS can send a top-level event). Nil: off.
	Doctor func(ctx context.Context, w io.Writer) (passed bool)
}

// DefaultFlushTimeout bounds what the telemetry flush after an invocation
// adds to it, whatever the collector does (one that never answers
// included). 500 ms: a cold export to a collector on the same continent
// (DNS, TCP and TLS handshakes, then the request: about four round trips)
// fits, one to a collector on localhost (a Lambda extension's) takes
// milliseconds, and it is a small share of the tightest budget a function
// answers within (API Gateway's 30 s). A flush cut short drops the spans
// it was sending; the metrics' totals go with the next export
// (docs/telemetry.md).
const DefaultFlushTimeout = 500 * time.Millisecond

// DefaultMaxReceiveCount is the SAM template's redrive policy's
// maxReceiveCount (a test holds them equal): an SQS event does not carry it.
const DefaultMaxReceiveCount = 5

// Handler is a lambda.Handler for the app.
type Handler struct {
	app  *function.App
	opts Options
	log  *slog.Logger
}

// New returns the Lambda handler of app.
func New(app *function.App, opts Options) *Handler {
	if opts.MaxBody == 0 {
		opts.MaxBody = 1 << 20
	}
	if opts.MaxReceiveCount == 0 {
		opts.MaxReceiveCount = DefaultMaxReceiveCount
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = DefaultFlushTimeout
	}
	return &Handler{app: app, opts: opts, log: app.Log()}
}

// SchedulerInput is the Input an EventBridge Scheduler schedule sends; the
// SAM template sets it (Scheduler's default notification is undocumented).
type SchedulerInput struct {
	Source        string `json:"source"` // "scheduler"
	Function      string `json:"function"`
	ScheduledTime string `json:"scheduledTime"`
	ExecutionID   string `json:"executionId"`
	Attempt       string `json:"attempt"`
}

// probe reads the fields that tell the event types apart.
type probe struct {
	Version        string          `json:"version"`
	RequestContext json.RawMessage `json:"requestContext"`
	Source         string          `json:"source"`
	DetailType     string          `json:"detail-type"`
	Function       string          `json:"function"`
	Records        []struct {
		EventSource string `json:"eventSource"`
	} `json:"Records"`
}

// Invoke implements lambda.Handler.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	id := uuid.NewString()
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		id = lc.AwsRequestID
	}
	ctx = function.WithInvocation(ctx, h.log, id)
	// Lambda hands over its trace as an X-Ray header; a request's own W3C
	// context, where it has one, is the caller's and wins (h.http).
	if xr, _ := ctx.Value("x-amzn-trace-id").(string); xr != "" {
		ctx = telemetry.FromXRay(ctx, xr)
	} else if xr := os.Getenv("_X_AMZN_TRACE_ID"); xr != "" {
		ctx = telemetry.FromXRay(ctx, xr)
	}
	if h.app.Flush != nil {
		// The sandbox freezes after the answer: what is pending goes now,
		// within the bound, and never past the invocation's deadline (a
		// flush that ran over would time the invocation out, losing its
		// answer: an SQS batch's failures, an HTTP response).
		defer func() {
			bound := h.opts.FlushTimeout
			if d, ok := ctx.Deadline(); ok {
				if left := time.Until(d) - deadlineMargin; left < bound {
					bound = left
				}
			}
			if bound <= 0 {
				function.Logger(ctx).Warn("Telemetry not exported.", "err", "no time left before the invocation's deadline")
				return
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bound)
			defer cancel()
			if err := h.app.Flush(fctx); err != nil {
				function.Logger(ctx).Warn("Telemetry not exported.", "err", err)
			}
		}()
	}
	var p probe
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("the event is not a JSON object: %w", err)
	}
	switch {
	case p.Version == "2.0" && len(p.RequestContext) > 0:
		var ev events.APIGatewayV2HTTPRequest
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, fmt.Errorf("HTTP event: %w", err)
		}
		return json.Marshal(h.http(ctx, &ev))
	case p.Source == "aws.events" && p.DetailType == "Scheduled Event":
		var ev events.EventBridgeEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, fmt.Errorf("scheduled event: %w", err)
		}
		return h.timer(ctx, "", function.Timer{ScheduledTime: ev.Time.UTC()})
	case p.Source == "scheduler":
		var in SchedulerInput
		if err := json.Unmarshal(payload, &in); err != nil {
			return nil, fmt.Errorf("scheduler input: %w", err)
		}
		t := function.Timer{ScheduledTime: time.Now().UTC()}
		if st, err := time.Parse(time.RFC3339, in.ScheduledTime); err == nil {
			t.ScheduledTime = st
		}
		return h.timer(ctx, in.Function, t)
	case p.Source == "doctor" && h.opts.Doctor != nil:
		return h.doctor(ctx)
	case len(p.Records) > 0 && p.Records[0].EventSource == "aws:sqs":
		var ev events.SQSEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, fmt.Errorf("SQS event: %w", err)
		}
		return h.queue(ctx, &ev)
	}
	return nil, fmt.Errorf("unsupported event: expected an API Gateway HTTP API (payload 2.0) or Function URL request, an EventBridge scheduled event, EventBridge Scheduler input with \"source\":\"scheduler\", or an SQS batch")
}

// deadlineMargin is kept free before an invocation's deadline for the
// answer to reach the runtime.
const deadlineMargin = 100 * time.Millisecond

// DoctorReport answers a doctor event: whether every check passed, and the
// report's lines as doctor prints them.
type DoctorReport struct {
	Passed bool     `json:"passed"`
	Report []string `json:"report"`
}

func (h *Handler) doctor(ctx context.Context) ([]byte, error) {
	// Checks that hang (the case doctor is run for) end before the
	// function's timeout, so the report comes back with them failed.
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-2*time.Second))
		defer cancel()
	}
	var b bytes.Buffer
	passed := h.opts.Doctor(ctx, &b)
	return json.Marshal(DoctorReport{Passed: passed, Report: strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")})
}

// queue runs the queue function on each message of an SQS batch at once,
// each with its own invocation ID (the message's), and answers the failed
// ones: the event source mapping (ReportBatchItemFailures) deletes the
// others, and the failed ones come back after the visibility timeout.
func (h *Handler) queue(ctx context.Context, ev *events.SQSEvent) ([]byte, error) {
	if len(h.app.Queues) != 1 {
		return nil, fmt.Errorf("an SQS batch, and %d queue functions to give it to", len(h.app.Queues))
	}
	var name string
	var q function.QueueRoute
	for name, q = range h.app.Queues {
	}
	failed := make([]bool, len(ev.Records))
	var wg sync.WaitGroup
	for i := range ev.Records {
		rec := &ev.Records[i]
		wg.Go(func() {
			m := function.Message{ID: rec.MessageId, Body: []byte(rec.Body)}
			m.DequeueCount, _ = strconv.Atoi(rec.Attributes["ApproximateReceiveCount"])
			if ms, err := strconv.ParseInt(rec.Attributes["SentTimestamp"], 10, 64); err == nil {
				m.InsertedAt = time.UnixMilli(ms).UTC()
			}
			m.LastAttempt = m.DequeueCount >= h.opts.MaxReceiveCount
			mctx := function.WithInvocation(ctx, h.log, rec.MessageId)
			mctx, end := telemetry.Invocation(mctx, name, rec.MessageId, trace.SpanKindConsumer)
			function.Logger(mctx).Info("Queue function started.", "function", name, "message", m.ID, "dequeue_count", m.DequeueCount)
			err := q.Func(mctx, m)
			if err != nil {
				function.Logger(mctx).Error("Queue message failed.", "function", name, "message", m.ID, "err", err)
				failed[i] = true
			}
			end(err)
		})
	}
	wg.Wait()
	resp := events.SQSEventResponse{BatchItemFailures: []events.SQSBatchItemFailure{}}
	for i, f := range failed {
		if f {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: ev.Records[i].MessageId})
		}
	}
	return json.Marshal(resp)
}

// timer runs the named timer function, or the only one.
func (h *Handler) timer(ctx context.Context, name string, t function.Timer) ([]byte, error) {
	if name == "" && len(h.app.Timers) == 1 {
		for n := range h.app.Timers {
			name = n
		}
	}
	ts, ok := h.app.Timers[name]
	if !ok {
		names := make([]string, 0, len(h.app.Timers))
		for n := range h.app.Timers {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no timer function %q (have %s); set \"function\" in the schedule's input", name, strings.Join(names, ", "))
	}
	start := time.Now()
	ctx, end := telemetry.Invocation(ctx, name, function.InvocationID(ctx), trace.SpanKindInternal)
	err := ts.Func(ctx, t)
	end(err)
	if err != nil {
		function.Logger(ctx).Error("Timer function failed.", "function", name, "err", err)
		return nil, err
	}
	return json.Marshal(map[string]any{"function": name, "status": "completed", "duration_ms": time.Since(start).Milliseconds()})
}

func (h *Handler) http(ctx context.Context, ev *events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	path := ev.RawPath
	if path == "" {
		path = ev.RequestContext.HTTP.Path
	}
	// An HTTP API stage other than $default prefixes the path.
	if st := ev.RequestContext.Stage; st != "" && st != "$default" {
		path = strings.TrimPrefix(path, "/"+st)
	}
	// Paths may come with or without the Azure-style /api prefix.
	if !strings.HasPrefix(path, "/api/") {
		path = "/api" + path
	}
	method := ev.RequestContext.HTTP.Method
	name, route, params, allowed, ok := h.app.MatchHTTP(path, method)
	if !ok {
		if len(allowed) > 0 {
			return respond(function.Text(http.StatusMethodNotAllowed, "method not allowed"))
		}
		return respond(function.Text(http.StatusNotFound, "no function at "+path))
	}
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return respond(function.Text(http.StatusBadRequest, "the body is not valid base64"))
		}
		body = b
	}
	if len(body) > h.opts.MaxBody {
		return respond(function.Text(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", h.opts.MaxBody)))
	}
	q, err := url.ParseQuery(ev.RawQueryString)
	if err != nil {
		q = url.Values{}
		for k, v := range ev.QueryStringParameters {
			q.Set(k, v)
		}
	}
	hdr := http.Header{}
	for k, v := range ev.Headers {
		hdr.Set(k, v)
	}
	if len(ev.Cookies) > 0 {
		hdr.Set("Cookie", strings.Join(ev.Cookies, "; "))
	}
	req := &function.HTTPRequest{Method: method, Path: path, Params: params, Query: q, Header: hdr, Body: body, Principal: principal(ev)}
	start := time.Now()
	if hdr.Get("Traceparent") != "" {
		ctx = telemetry.FromHeaders(ctx, hdr)
	}
	ctx, end := telemetry.Invocation(ctx, name, function.InvocationID(ctx), trace.SpanKindServer)
	resp := route.Func(ctx, req)
	out := respond(resp)
	end(telemetry.StatusError(out.StatusCode))
	function.Logger(ctx).Info("HTTP function answered.", "function", name, "status", out.StatusCode, "duration_ms", time.Since(start).Milliseconds())
	return out
}

func respond(r *function.HTTPResponse) events.APIGatewayV2HTTPResponse {
	body := r.Body
	if r.Stream != nil {
		var b bytes.Buffer
		if err := r.Stream(&b); err != nil {
			return events.APIGatewayV2HTTPResponse{StatusCode: 500, Headers: map[string]string{"Content-Type": "text/plain; charset=utf-8"}, Body: "the response failed: " + err.Error()}
		}
		body = b.Bytes()
	}
	status := r.Status
	if status == 0 {
		status = http.StatusOK
	}
	out := events.APIGatewayV2HTTPResponse{StatusCode: status, Headers: map[string]string{}}
	for k, v := range r.Header {
		out.Headers[k] = strings.Join(v, ", ")
	}
	out.Body = string(body)
	return out
}

// principal reads the caller from the authorizer API Gateway ran: a JWT
// authorizer's claims (roles in "roles"), a Lambda authorizer's context, or
// IAM auth on a Function URL.
func principal(ev *events.APIGatewayV2HTTPRequest) *function.Principal {
	a := ev.RequestContext.Authorizer
	if a == nil {
		return nil
	}
	switch {
	case a.JWT != nil:
		// A user's name (v2: preferred_username, v1: upn), else the calling
		// app's ID (v2: azp, v1: appid), else the subject.
		c := a.JWT.Claims
		p := &function.Principal{Source: "jwt-authorizer", Name: cmp.Or(c["preferred_username"], c["upn"], c["azp"], c["appid"], c["sub"])}
		p.Roles = splitRoles(a.JWT.Claims["roles"])
		return p
	case a.Lambda != nil:
		p := &function.Principal{Source: "lambda-authorizer"}
		if n, ok := a.Lambda["principal"].(string); ok {
			p.Name = n
		}
		switch r := a.Lambda["roles"].(type) {
		case string:
			p.Roles = splitRoles(r)
		case []any:
			for _, v := range r {
				if s, ok := v.(string); ok {
					p.Roles = append(p.Roles, s)
				}
			}
		}
		return p
	case a.IAM != nil:
		return &function.Principal{Source: "iam", Name: a.IAM.UserARN}
	}
	return nil
}

// splitRoles reads a roles claim as API Gateway flattens it: "[a b]", "a,b" or "a".
func splitRoles(v string) []string {
	v = strings.Trim(v, "[]")
	var out []string
	for _, r := range strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == ' ' }) {
		out = append(out, strings.Trim(r, `"`))
	}
	return out
}
