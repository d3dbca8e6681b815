package huntingquery

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/csv"
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

	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Function is hunting-query as the platforms bind it.
var Function = function.Descriptor{
	Name:  "hunting-query",
	HTTP:  &function.HTTPBinding{Route: "hunting-query", Methods: []string{"get", "post"}, AuthLevel: "function"},
	Roles: function.Roles{Graph: []string{"ThreatHunting.Read.All"}, XDR: []string{"AdvancedHunting.Read.All"}},
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
			attrs = append(attrs, "cause", out.cause.Error())
		}
		if resp.Status >= 500 {
			log.Warn("hunting-query", attrs...)
		} else {
			log.Info("hunting-query", attrs...)
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
		log.Info("hunting-query", "status", resp.Status, "rows", out.rows, "duration_ms", time.Since(start).Milliseconds(), "outcome", outcome)
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
	if h.RequiredRole != "" {
		if r.Principal == nil {
			return apiErr(401, "Unauthenticated", "this endpoint needs an authenticated caller (App Service Authentication or an API Gateway authorizer) with the role "+h.RequiredRole), out
		}
		if !r.Principal.HasRole(h.RequiredRole) {
			return apiErr(403, "Forbidden", "the caller lacks the role "+h.RequiredRole), out
		}
	}
	if strings.EqualFold(r.Method, "GET") {
		out.what = "catalog"
		return h.list(), out
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			return apiErr(415, "UnsupportedMediaType", "send the request as application/json"), out
		}
	}
	if len(r.Body) > maxBody {
		return apiErr(413, "TooLarge", fmt.Sprintf("the request body is larger than %d bytes", maxBody)), out
	}
	var req request
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return apiErr(400, "BadRequest", "the body must be a JSON object with query (and timespan, tenant) or name (and parameters): "+err.Error()), out
	}
	format, ok := negotiate(r.Header.Get("Accept"))
	if !ok {
		return apiErr(406, "NotAcceptable", "Accept must be application/json, application/x-ndjson or text/csv"), out
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
	var kql string
	switch {
	case req.Name != "" && req.Query != "":
		return apiErr(400, "BadRequest", "send either name (a catalog query) or query (ad-hoc KQL), not both"), out
	case req.Name != "":
		out.what = req.Name
		q := h.Catalog[req.Name]
		if q == nil {
			return apiErr(404, "UnknownQuery", fmt.Sprintf("no catalog query %q; GET this endpoint for the list", req.Name)), out
		}
		if len(q.Roles) > 0 && !anyRole(r.Principal, q.Roles) {
			return apiErr(403, "Forbidden", fmt.Sprintf("query %s needs one of the roles %s", q.Name, strings.Join(q.Roles, ", "))), out
		}
		values, err := paramValues(req.Parameters)
		if err != nil {
			return apiErr(400, "BadParameter", err.Error()), out
		}
		if kql, err = q.Bind(values); err != nil {
			return apiErr(400, "BadParameter", err.Error()), out
		}
	case req.Query != "":
		sum := sha256.Sum256([]byte(req.Query))
		out.what = "adhoc:" + hex.EncodeToString(sum[:6])
		if !h.AllowAdhoc {
			return apiErr(403, "AdhocDisabled", "ad-hoc KQL is disabled: use a catalog query (GET lists them), or set HUNTING_ALLOW_ADHOC=true"), out
		}
		if h.AdhocRole == "" || !r.Principal.HasRole(h.AdhocRole) {
			// No role configured refuses too (configuration requires one).
			return apiErr(403, "Forbidden", "ad-hoc KQL needs the role "+cmp.Or(h.AdhocRole, "HUNTING_ADHOC_ROLE names")), out
		}
		if len(req.Query) > maxQuery {
			return apiErr(400, "QueryTooLong", fmt.Sprintf("the query is longer than %d characters", maxQuery)), out
		}
		kql = req.Query
	default:
		return apiErr(400, "BadRequest", "send name (a catalog query) or query (ad-hoc KQL)"), out
	}

	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	res, err := client.Hunt(ctx, defender.HuntQuery{Query: kql, Timespan: req.Timespan})
	if err != nil {
		cancel()
		resp := upstreamError(err)
		out.status, out.cause = resp.Status, err
		return resp, out
	}
	resp := &function.HTTPResponse{Status: 200, Header: http.Header{"Content-Type": {format}}}
	resp.Stream = func(w io.Writer) error {
		defer cancel()
		defer res.Close()
		return writeResult(w, format, res, h.MaxRows, out)
	}
	return resp, out
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

// paramValues accepts strings, numbers and lists of strings.
func paramValues(in map[string]json.RawMessage) (map[string][]string, error) {
	out := map[string][]string{}
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
	f := defender.Classify(err)
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

// writeResult streams the rows in format, stopping after max rows (the JSON
// and NDJSON forms say when rows were left out). It stops at the first failed
// write (the caller went away) and returns it; a failure of the upstream
// stream comes first.
func writeResult(w io.Writer, format string, res *defender.HuntResult, max int, out *outcome) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	var cw *csv.Writer
	switch format {
	case "application/json":
		schema, _ := json.Marshal(res.Schema)
		bw.WriteString(`{"schema":`)
		bw.Write(schema)
		bw.WriteString(`,"results":[`)
	case "text/csv":
		cw = csv.NewWriter(bw)
		names := make([]string, len(res.Schema))
		for i, c := range res.Schema {
			names[i] = c.Name
		}
		cw.Write(names)
	}
	truncated := false
	for {
		row, err := res.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if out.rows == max {
			truncated = true
			break
		}
		out.rows++
		// bufio.Writer's errors stick: the first failed write fails every
		// later one, so one check per row finds it.
		var werr error
		switch format {
		case "application/json":
			if out.rows > 1 {
				bw.WriteByte(',')
			}
			_, werr = bw.Write(row)
		case "application/x-ndjson":
			bw.Write(row)
			werr = bw.WriteByte('\n')
		case "text/csv":
			werr = cw.Write(csvRow(res.Schema, row))
		}
		if werr != nil {
			return werr
		}
	}
	switch format {
	case "application/json":
		fmt.Fprintf(bw, `],"truncated":%t,"stats":{"rows":%d,"maxRows":%d}}`, truncated, out.rows, max)
	case "application/x-ndjson":
		if truncated {
			fmt.Fprintf(bw, "{\"@truncated\":true,\"rows\":%d}\n", out.rows)
		}
	case "text/csv":
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// neutralize keeps a spreadsheet from running a text cell as a formula:
// one that begins with =, +, -, @, a tab or a carriage return is prefixed
// with a single quote (OWASP's CSV injection advice). Numbers are JSON
// numbers in the rows, not text, and pass as they are.
func neutralize(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func csvRow(schema []defender.Column, row json.RawMessage) []string {
	var m map[string]json.RawMessage
	json.Unmarshal(row, &m)
	out := make([]string, len(schema))
	for i, c := range schema {
		v := m[c.Name]
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[i] = neutralize(s)
		} else if string(v) != "null" {
			out[i] = string(v)
		}
	}
	return out
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
