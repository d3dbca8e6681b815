package huntingquery

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/failure"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Function is hunting-query as the platforms bind it.
var Function = function.Descriptor{
	Name:     "hunting-query",
	HTTP:     &function.HTTPBinding{Route: "hunting-query", Methods: []string{"get", "post"}, AuthLevel: "function"},
	Roles:    function.Roles{Graph: []string{"ThreatHunting.Read.All"}, XDR: []string{"AdvancedHunting.Read.All"}},
	Settings: config.HuntingSettings,
}

// Hunter serves hunting-query.
type Hunter struct {
	Catalog Catalog
	// Clients are the configured tenants' API clients; DefaultTenant answers
	// requests that name none.
	Clients       map[string]defender.Client
	DefaultTenant string
	// TenantRoles are the roles a caller needs per tenant (lower-case keys).
	// A tenant without one, other than DefaultTenant, is queried by nobody:
	// in a multi-tenant app, a hunting role must not reach every customer.
	TenantRoles  map[string]string
	AllowAdhoc   bool
	RequiredRole string
	AdhocRole    string
	MaxRows      int
	Timeout      time.Duration
}

const (
	maxBody  = 64 << 10
	maxQuery = 10000
)

type request struct {
	Query      string                     `json:"query"`
	Timespan   string                     `json:"timespan"`
	Tenant     string                     `json:"tenant"`
	Name       string                     `json:"name"`
	Parameters map[string]json.RawMessage `json:"parameters"`
}

// outcome is what one request came to, for its log line: the query (a
// catalog name, "catalog", or adhoc: and a hash of the KQL), the tenant,
// the upstream status of a failure and the rows streamed.
type outcome struct {
	what, tenant string
	status       int
	rows         int
	cause        error // logged, never sent: what the operator needs
}

func apiErr(status int, code, msg string) *function.HTTPResponse {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	return &function.HTTPResponse{Status: status, Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Body: b}
}

// Serve is the function: GET lists the catalog, POST runs a query.
func (h *Hunter) Serve(ctx context.Context, r *function.HTTPRequest) *function.HTTPResponse {
	start := time.Now()
	caller := "anonymous"
	if r.Principal != nil && r.Principal.Name != "" {
		caller = r.Principal.Name
	}
	resp, out := h.serve(ctx, r)
	log := function.Logger(ctx).With("caller", caller, "query", out.what, "tenant", out.tenant)
	if resp.Stream == nil {
		attrs := []any{"status", resp.Status, "rows", out.rows, "duration_ms", time.Since(start).Milliseconds()}
		if out.cause != nil {
			attrs = append(attrs, "err", out.cause)
		}
		if resp.Status >= 500 {
			log.Warn("Hunting query answered.", attrs...)
		} else {
			log.Info("Hunting query answered.", attrs...)
		}
		if r.Method == http.MethodPost {
			telemetry.Hunting(ctx, time.Since(start), out.rows, statusOutcome(resp.Status))
		}
		return resp
	}
	stream := resp.Stream
	resp.Stream = func(w io.Writer) error {
		err := stream(w)
		outcome := "ok"
		if err != nil {
			outcome = "stream failed: " + err.Error()
			telemetry.Hunting(ctx, time.Since(start), out.rows, "stream_failed")
		} else {
			telemetry.Hunting(ctx, time.Since(start), out.rows, "ok")
		}
		log.Info("Hunting query answered.", "status", resp.Status, "rows", out.rows, "duration_ms", time.Since(start).Milliseconds(), "outcome", outcome)
		return err
	}
	return resp
}

// statusOutcome names an answer for the metrics: ok, throttled,
// rejected (the request's fault) or failed.
func statusOutcome(status int) string {
	switch {
	case status < 400:
		return "ok"
	case status == http.StatusTooManyRequests:
		return "throttled"
	case status < 500:
		return "rejected"
	}
	return "failed"
}

func (h *Hunter) serve(ctx context.Context, r *function.HTTPRequest) (*function.HTTPResponse, *outcome) {
	out := &outcome{}
	if resp := h.authenticate(r.Principal); resp != nil {
		return resp, out
	}
	if strings.EqualFold(r.Method, "GET") {
		out.what = "catalog"
		return h.list(), out
	}
	req, format, resp := parseRequest(r)
	if resp != nil {
		return resp, out
	}
	out.tenant = cmp.Or(req.Tenant, h.DefaultTenant)
	client := h.Clients[out.tenant]
	if client == nil {
		return apiErr(400, "UnknownTenant", fmt.Sprintf("tenant %q is not configured", req.Tenant)), out
	}
	if msg := h.tenantDenied(out.tenant, r.Principal); msg != "" {
		return apiErr(403, "TenantNotAllowed", msg), out
	}
	if err := checkTimespan(req.Timespan); err != nil {
		return apiErr(400, "BadTimespan", err.Error()), out
	}
	kql, resp := h.kql(req, r.Principal, out)
	if resp != nil {
		return resp, out
	}
	return h.run(ctx, client, defender.HuntQuery{Query: kql, Timespan: req.Timespan}, format, out), out
}

// authenticate refuses a caller without RequiredRole, when one is set.
func (h *Hunter) authenticate(p *function.Principal) *function.HTTPResponse {
	switch {
	case h.RequiredRole == "":
	case p == nil:
		return apiErr(401, "Unauthenticated", "this endpoint needs an authenticated caller (App Service Authentication or an API Gateway authorizer) with the role "+h.RequiredRole)
	case !p.HasRole(h.RequiredRole):
		return apiErr(403, "Forbidden", "the caller lacks the role "+h.RequiredRole)
	}
	return nil
}

// parseRequest reads a POST: its body (size-limited, no unknown fields)
// and the answer's format.
func parseRequest(r *function.HTTPRequest) (req request, format string, resp *function.HTTPResponse) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			return req, "", apiErr(415, "UnsupportedMediaType", "send the request as application/json")
		}
	}
	if len(r.Body) > maxBody {
		return req, "", apiErr(413, "TooLarge", fmt.Sprintf("the request body is larger than %d bytes", maxBody))
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, "", apiErr(400, "BadRequest", "the body must be a JSON object with query (and timespan, tenant) or name (and parameters): "+err.Error())
	}
	format, ok := negotiate(r.Header.Get("Accept"))
	if !ok {
		return req, "", apiErr(406, "NotAcceptable", "Accept must be application/json, application/x-ndjson or text/csv")
	}
	return req, format, nil
}

// kql is the KQL a request runs: a catalog query bound to its parameters,
// or ad-hoc KQL from a caller allowed it.
func (h *Hunter) kql(req request, p *function.Principal, out *outcome) (string, *function.HTTPResponse) {
	switch {
	case req.Name != "" && req.Query != "":
		return "", apiErr(400, "BadRequest", "send either name (a catalog query) or query (ad-hoc KQL), not both")
	case req.Name != "":
		out.what = req.Name
		return h.catalogKQL(req, p)
	case req.Query != "":
		sum := sha256.Sum256([]byte(req.Query))
		out.what = "adhoc:" + hex.EncodeToString(sum[:6])
		return h.adhocKQL(req.Query, p)
	}
	return "", apiErr(400, "BadRequest", "send name (a catalog query) or query (ad-hoc KQL)")
}

func (h *Hunter) catalogKQL(req request, p *function.Principal) (string, *function.HTTPResponse) {
	q := h.Catalog[req.Name]
	if q == nil {
		return "", apiErr(404, "UnknownQuery", fmt.Sprintf("no catalog query %q; GET this endpoint for the list", req.Name))
	}
	if len(q.Roles) > 0 && !anyRole(p, q.Roles) {
		return "", apiErr(403, "Forbidden", fmt.Sprintf("query %s needs one of the roles %s", q.Name, strings.Join(q.Roles, ", ")))
	}
	values, err := paramValues(req.Parameters)
	if err != nil {
		return "", apiErr(400, "BadParameter", err.Error())
	}
	kql, err := q.Bind(values)
	if err != nil {
		return "", apiErr(400, "BadParameter", err.Error())
	}
	return kql, nil
}

func (h *Hunter) adhocKQL(kql string, p *function.Principal) (string, *function.HTTPResponse) {
	if !h.AllowAdhoc {
		return "", apiErr(403, "AdhocDisabled", "ad-hoc KQL is disabled: use a catalog query (GET lists them), or set HUNTING_ALLOW_ADHOC=true")
	}
	if h.AdhocRole == "" || !p.HasRole(h.AdhocRole) {
		// No role configured refuses too (configuration requires one).
		return "", apiErr(403, "Forbidden", "ad-hoc KQL needs the role "+cmp.Or(h.AdhocRole, "HUNTING_ADHOC_ROLE names"))
	}
	if len(kql) > maxQuery {
		return "", apiErr(400, "QueryTooLong", fmt.Sprintf("the query is longer than %d characters", maxQuery))
	}
	return kql, nil
}

// run sends the query; the answer streams its rows, within the timeout.
func (h *Hunter) run(ctx context.Context, client defender.Client, q defender.HuntQuery, format string, out *outcome) *function.HTTPResponse {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	res, err := client.Hunt(ctx, q)
	if err != nil {
		cancel()
		resp := upstreamError(err)
		out.status, out.cause = resp.Status, err
		return resp
	}
	resp := &function.HTTPResponse{Status: 200, Header: http.Header{"Content-Type": {format}}}
	resp.Stream = func(w io.Writer) error {
		defer cancel()
		defer res.Close()
		return writeResult(w, format, res, h.MaxRows, out)
	}
	return resp
}

// tenantDenied says why the caller may not query tenant, or "". The home
// tenant needs no role of its own unless one is set for it.
func (h *Hunter) tenantDenied(tenant string, p *function.Principal) string {
	role, ok := h.TenantRoles[strings.ToLower(tenant)]
	switch {
	case !ok && strings.EqualFold(tenant, h.DefaultTenant):
		return ""
	case !ok:
		return fmt.Sprintf("no role may query tenant %s: HUNTING_TENANT_ROLES names none for it", tenant)
	case !p.HasRole(role):
		return fmt.Sprintf("querying tenant %s needs the role %s", tenant, role)
	}
	return ""
}

func anyRole(p *function.Principal, roles []string) bool {
	return slices.ContainsFunc(roles, p.HasRole)
}

// paramValues accepts strings, numbers and lists of strings. A decode is
// tried only where the first byte allows it to succeed (a string or null, a
// number): the attempts that fail cost an error each.
func paramValues(in map[string]json.RawMessage) (map[string][]string, error) {
	out := make(map[string][]string, len(in))
	for k, raw := range in {
		var s string
		var n json.Number
		var list []string
		switch {
		case json.Unmarshal(raw, &s) == nil:
			out[k] = []string{s}
		case json.Unmarshal(raw, &n) == nil:
			out[k] = []string{n.String()}
		case json.Unmarshal(raw, &list) == nil:
			out[k] = list
		default:
			return nil, fmt.Errorf("parameter %q must be a string, a number or a list of strings", k)
		}
	}
	return out, nil
}

var isoDur = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$`)
})

// checkTimespan accepts Graph's forms within the 30 days hunting keeps.
func checkTimespan(s string) error {
	if s == "" {
		return nil
	}
	span := func(d string) (time.Duration, bool) {
		m := isoDur().FindStringSubmatch(d)
		if m == nil || d == "P" || d == "PT" {
			return 0, false
		}
		var total time.Duration
		for i, u := range []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second} {
			if m[i+1] != "" {
				n, _ := strconv.Atoi(m[i+1])
				total += time.Duration(n) * u
			}
		}
		return total, true
	}
	bad := fmt.Errorf("timespan %q: use an ISO 8601 duration up to P30D, or an interval start/end, P7D/end, start/P7D", s)
	a, b, two := strings.Cut(s, "/")
	if !two {
		if d, ok := span(a); ok {
			if d <= 0 || d > maxTimespan {
				return bad
			}
			return nil
		}
		if _, err := time.Parse(time.RFC3339, a); err == nil {
			return nil
		}
		return bad
	}
	ta, errA := time.Parse(time.RFC3339, a)
	tb, errB := time.Parse(time.RFC3339, b)
	da, okA := span(a)
	db, okB := span(b)
	switch {
	case errA == nil && errB == nil && !tb.Before(ta) && tb.Sub(ta) <= maxTimespan:
	case okA && errB == nil && da <= maxTimespan:
	case errA == nil && okB && db <= maxTimespan:
	default:
		return bad
	}
	return nil
}

func negotiate(accept string) (string, bool) {
	if accept == "" {
		return "application/json", true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		switch mt {
		case "application/json", "*/*", "application/*":
			return "application/json", true
		case "application/x-ndjson", "application/ndjson":
			return "application/x-ndjson", true
		case "text/csv":
			return "text/csv", true
		}
	}
	return "", false
}

// upstreamError maps the API's failures to what the caller can act on.
func upstreamError(err error) *function.HTTPResponse {
	f := failure.Classify(err)
	var ae *defender.APIError
	switch {
	case f.Code == "Timeout":
		f.Message = "the query did not finish in time; narrow it or its timespan"
	case f.Code == "Rejected" && errors.As(err, &ae) && ae.StatusCode == 400:
		f.Code, f.Message = "BadQuery", ae.Message // the KQL error, for the query's author
	}
	resp := apiErr(f.Status, f.Code, f.Message)
	if f.RetryAfter > 0 {
		resp.Header.Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
	}
	return resp
}

// list is the catalog as the GET answers it.
func (h *Hunter) list() *function.HTTPResponse {
	qs := make([]*Query, 0, len(h.Catalog))
	for _, q := range h.Catalog {
		qs = append(qs, q)
	}
	sort.Slice(qs, func(i, j int) bool { return qs[i].Name < qs[j].Name })
	b, _ := json.Marshal(map[string]any{"queries": qs, "adhoc": h.AllowAdhoc})
	return &function.HTTPResponse{Status: 200, Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Body: b}
}
