package defender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/credentials"
)

// Options tune New. The zero value is right for production.
type Options struct {
	// HTTPClient carries the API calls; nil means credentials.DefaultHTTPClient().
	HTTPClient *http.Client
	// Limits replaces the documented client-side rate limits.
	Limits Limits
	// MaxResponseBytes bounds one response (default 256 MiB: hunting's 100k rows).
	MaxResponseBytes int64
	// MaxAttempts bounds the tries of one request (default 6).
	MaxAttempts int
	// RetryBase is the first retry's back-off (default 500 ms), doubled per
	// retry up to 20 s, with jitter.
	RetryBase time.Duration
	// Logger receives retries and fallbacks; nil discards.
	Logger *slog.Logger
	// Pacers are shared with the other clients of the process (the app
	// owns them); nil paces this client alone.
	Pacers *Pacers
}

// New returns the client of api, served at baseURL (such as
// https://graph.microsoft.com or a national cloud's), for one tenant, with
// tokens from src.
func New(api API, baseURL, tenant string, src credentials.Source, opts *Options) (Client, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = credentials.DefaultHTTPClient()
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = 256 << 20
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 6
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RetryBase == 0 {
		o.RetryBase = 500 * time.Millisecond
	}
	if o.Pacers == nil {
		o.Pacers = NewPacers()
	}
	if api != Graph && api != XDR {
		return nil, fmt.Errorf("defender: API %q: use defender.Graph or defender.XDR", api)
	}
	baseURL = strings.TrimRight(baseURL, "/")
	base, err := url.Parse(baseURL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("defender: %q is not the API's base URL (such as https://graph.microsoft.com)", baseURL)
	}
	t := &transport{api: string(api), base: base, hc: credentials.SameOrigin(o.HTTPClient), src: src, limits: o.Limits, maxBody: o.MaxResponseBytes,
		attempts: o.MaxAttempts, retryBase: o.RetryBase, log: o.Logger, userAgent: "defender-functions/" + Version + " (+https://github.com/defender-functions/defender-functions)",
		// Limits are per app and tenant: one source of tokens is one app in
		// one tenant.
		pacers: o.Pacers, pacerKey: fmt.Sprintf("%s|%s|%p", baseURL, tenant, src)}
	if api == XDR {
		if t.limits == nil {
			t.limits = XDRLimits
		}
		return &xdr{t: t, tenant: tenant, base: baseURL}, nil
	}
	if t.limits == nil {
		t.limits = GraphLimits
	}
	// Evolvable enums: without this header Graph hides new members (awaitingAction).
	t.prefer = "include-unknown-enum-members"
	return &graph{t: t, base: baseURL}, nil
}

func odataTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0000000Z") }

func odataString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// lister is one API's way of listing incidents: the bucket its requests
// are paced in, how a page decodes, how it pages where there is no
// nextLink, and how alerts are fetched when $expand=alerts fails.
type lister struct {
	t        *transport
	bucket   string
	pageSize int
	decode   func(io.Reader, func(*Incident)) (envelope, error)
	// withSkip is the URL of the page after skip incidents; nil: the API
	// pages by nextLink alone.
	withSkip func(skip int) string
	// alerts fetches a page's alerts per incident; nil: no fallback.
	alerts func(context.Context, *Page) error
}

// list drives the paging from first: follow nextLink, else $skip until a
// short page.
func (l lister) list(ctx context.Context, first string) iter.Seq2[*Page, error] {
	return func(yield func(*Page, error) bool) {
		u := first
		pages, total := 0, 0
		var through time.Time
		for u != "" {
			p, next, err := l.page(ctx, u)
			if err != nil {
				yield(nil, &IncompleteError{Pages: pages, Incidents: total, Through: through, Err: err})
				return
			}
			pages++
			total += len(p.Incidents)
			if len(p.Incidents) > 0 {
				through = p.Incidents[len(p.Incidents)-1].LastUpdate
			}
			skipping := l.withSkip != nil && len(p.Incidents) == l.pageSize
			p.More = next != "" || skipping
			if !yield(p, nil) {
				return
			}
			switch {
			case next != "":
				u = next
			case skipping:
				u = l.withSkip(total)
			default:
				u = ""
			}
		}
	}
}

// page reads one page and its nextLink. Graph fails $expand=alerts for
// large incidents (5xx): the page is then read without it and its alerts
// fetched per incident.
func (l lister) page(ctx context.Context, u string) (*Page, string, error) {
	p := &Page{Count: -1}
	var next string
	n, err := l.t.do(ctx, request{method: "GET", url: u, bucket: l.bucket, retry429: true, handle: func(resp *http.Response) error {
		p.Incidents = p.Incidents[:0]
		env, err := l.decode(resp.Body, func(in *Incident) { p.Incidents = append(p.Incidents, in) })
		next, p.Count = env.next, env.count
		return err
	}})
	p.Requests += n
	var ae *APIError
	if err == nil || l.alerts == nil || !errors.As(err, &ae) || ae.StatusCode < 500 || !strings.Contains(u, "expand=alerts") {
		return p, next, err
	}
	p2, err := fallbackPage(ctx, l.t, u, l.decode, l.alerts)
	if err != nil {
		return nil, "", err
	}
	p2.page.Requests += p.Requests
	return p2.page, p2.next, nil
}

type fallback struct {
	page *Page
	next string
}

func fallbackPage(ctx context.Context, t *transport, u string, decode func(io.Reader, func(*Incident)) (envelope, error), after func(context.Context, *Page) error) (*fallback, error) {
	pu, _ := url.Parse(u)
	q := pu.Query()
	q.Del("$expand")
	pu.RawQuery = q.Encode()
	p := &Page{AlertsFallback: true, Count: -1}
	var next string
	n, err := t.do(ctx, request{method: "GET", url: pu.String(), bucket: "security", retry429: true, handle: func(resp *http.Response) error {
		p.Incidents = p.Incidents[:0]
		env, err := decode(resp.Body, func(in *Incident) { p.Incidents = append(p.Incidents, in) })
		next, p.Count = env.next, env.count
		return err
	}})
	p.Requests += n
	if err != nil {
		return nil, err
	}
	if next != "" {
		// Keep paging with $expand on the following pages.
		nu, _ := url.Parse(next)
		nq := nu.Query()
		nq.Set("$expand", "alerts")
		nu.RawQuery = nq.Encode()
		next = nu.String()
	}
	t.log.InfoContext(ctx, "$expand=alerts failed; alerts fetched per incident", "incidents", len(p.Incidents))
	if err := after(ctx, p); err != nil {
		return nil, err
	}
	return &fallback{p, next}, nil
}

// --- Microsoft Graph ---

type graph struct {
	t    *transport
	base string
}

func (g *graph) API() string { return string(Graph) }

// Capabilities: Graph documents $count on incidents and a live tenant
// honours it under $filter (research: defender-api.md §6.1a).
func (g *graph) Capabilities() Capabilities {
	return Capabilities{PageMax: 50, Count: true, UpdatedField: "lastUpdateDateTime", CreatedField: "createdDateTime"}
}

func (g *graph) Incidents(ctx context.Context, o ListOptions) iter.Seq2[*Page, error] {
	caps := g.Capabilities()
	top := o.PageSize
	if top <= 0 || top > caps.PageMax {
		top = caps.PageMax
	}
	if o.Top > 0 {
		top = o.Top
	}
	q := url.Values{}
	q.Set("$top", strconv.Itoa(top))
	if f := filter(o, caps); f != "" {
		q.Set("$filter", f)
	}
	if o.OrderByLastUpdate {
		q.Set("$orderby", caps.UpdatedField+" asc")
	}
	if o.WithAlerts {
		q.Set("$expand", "alerts")
	}
	if o.Skip > 0 {
		q.Set("$skip", strconv.Itoa(o.Skip))
	}
	if o.Count {
		q.Set("$count", "true")
	}
	var after func(context.Context, *Page) error
	if o.WithAlerts {
		after = g.attachAlerts
	}
	l := lister{t: g.t, bucket: "security", pageSize: top, decode: pageDecoder("graph", "", o.KeysOnly, &g.t.pageHint), alerts: after}
	return l.list(ctx, g.base+"/v1.0/security/incidents?"+q.Encode())
}

func filter(o ListOptions, caps Capabilities) string {
	var parts []string
	for _, b := range []struct {
		field, op string
		t         time.Time
	}{{caps.UpdatedField, "ge", o.Since}, {caps.UpdatedField, "lt", o.Before}, {caps.CreatedField, "ge", o.CreatedSince}, {caps.CreatedField, "lt", o.CreatedBefore}} {
		if !b.t.IsZero() {
			parts = append(parts, b.field+" "+b.op+" "+odataTime(b.t))
		}
	}
	if o.Status != "" {
		parts = append(parts, "status eq "+odataString(o.Status))
	}
	if o.AssignedTo != "" {
		parts = append(parts, "assignedTo eq "+odataString(o.AssignedTo))
	}
	return strings.Join(parts, " and ")
}

// attachAlerts fetches each incident's alerts from alerts_v2 and splices
// them into its raw JSON as "alerts", the shape $expand would have given.
func (g *graph) attachAlerts(ctx context.Context, p *Page) error {
	for _, in := range p.Incidents {
		q := url.Values{"$filter": {"incidentId eq " + odataString(in.ID)}}
		u := g.base + "/v1.0/security/alerts_v2?" + q.Encode()
		var raws []json.RawMessage
		for u != "" {
			var next string
			n, err := g.t.do(ctx, request{method: "GET", url: u, bucket: "security", retry429: true, handle: func(resp *http.Response) error {
				raws = raws[:0:0]
				var err error
				env, err := readPage(resp.Body, func(raw json.RawMessage) error { raws = append(raws, raw); return nil })
				next = env.next
				return err
			}})
			p.Requests += n
			if err != nil {
				return fmt.Errorf("alerts of incident %s: %w", in.ID, err)
			}
			var ws []graphAlertWire
			for _, r := range raws {
				var w graphAlertWire
				if err := json.Unmarshal(r, &w); err != nil {
					return err
				}
				ws = append(ws, w)
			}
			in.Alerts = append(in.Alerts, graphAlerts(ws)...)
			in.Raw = spliceAlerts(in.Raw, raws)
			u = next
		}
	}
	return nil
}

// spliceAlerts appends alerts to an incident's JSON object (or to the
// "alerts" array it was given by an earlier page of alerts).
func spliceAlerts(raw json.RawMessage, alerts []json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	trimmed := bytes.TrimRight(raw, " \t\r\n")
	const marker = `,"alerts":[`
	if i := bytes.LastIndex(trimmed, []byte(marker)); i >= 0 && bytes.HasSuffix(trimmed, []byte("]}")) {
		b.Write(trimmed[:len(trimmed)-2])
		for _, a := range alerts {
			if !bytes.HasSuffix(b.Bytes(), []byte("[")) {
				b.WriteByte(',')
			}
			b.Write(a)
		}
		b.WriteString("]}")
		return b.Bytes()
	}
	b.Write(trimmed[:len(trimmed)-1])
	b.WriteString(marker)
	for i, a := range alerts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(a)
	}
	b.WriteString("]}")
	return b.Bytes()
}

func (g *graph) Incident(ctx context.Context, id string) (*Incident, error) {
	var in *Incident
	_, err := g.t.do(ctx, request{method: "GET", url: g.base + "/v1.0/security/incidents/" + url.PathEscape(id) + "?$expand=alerts", bucket: "security", retry429: true,
		handle: func(resp *http.Response) error {
			var err error
			in, err = decodeEntity(resp, decodeGraphIncident)
			return err
		}})
	return in, err
}

// patchBody is an Update as a PATCH body: the set fields only, enums in the
// API's spelling (spell gets Graph's spelling and whether it is a
// determination), tags under the API's name.
func patchBody(u Update, spell func(v string, determination bool) string, tagsKey string) map[string]any {
	body := map[string]any{}
	if u.Status != nil {
		body["status"] = spell(Normalize(*u.Status, Statuses), false)
	}
	if u.AssignedTo != nil {
		body["assignedTo"] = *u.AssignedTo
	}
	if u.Classification != nil {
		body["classification"] = spell(Normalize(*u.Classification, Classifications), false)
	}
	if u.Determination != nil {
		body["determination"] = spell(Normalize(*u.Determination, Determinations), true)
	}
	if u.Tags != nil {
		body[tagsKey] = *u.Tags
	}
	return body
}

func (g *graph) UpdateIncident(ctx context.Context, id string, u Update) (*Incident, error) {
	b, _ := json.Marshal(patchBody(u, func(v string, _ bool) string { return v }, "customTags"))
	var in *Incident
	_, err := g.t.do(ctx, request{method: "PATCH", url: g.base + "/v1.0/security/incidents/" + url.PathEscape(id), body: b, bucket: "security", retry429: true,
		handle: func(resp *http.Response) error {
			var err error
			in, err = decodeEntity(resp, decodeGraphIncident)
			return err
		}})
	return in, err
}

func (g *graph) AddComment(ctx context.Context, id, text string) error {
	b, _ := json.Marshal(map[string]string{"@odata.type": "microsoft.graph.security.alertComment", "comment": text})
	_, err := g.t.do(ctx, request{method: "POST", url: g.base + "/v1.0/security/incidents/" + url.PathEscape(id) + "/comments", body: b, bucket: "security", retry429: true, once: true,
		handle: func(*http.Response) error { return nil }})
	return err
}

func (g *graph) Hunt(ctx context.Context, q HuntQuery) (*HuntResult, error) {
	body := map[string]string{"Query": q.Query}
	if q.Timespan != "" {
		body["Timespan"] = q.Timespan
	}
	b, _ := json.Marshal(body)
	return hunt(ctx, g.t, g.base+"/v1.0/security/runHuntingQuery", b)
}

// decodeEntity reads a single-incident response (its @odata.context dropped from Raw).
func decodeEntity(resp *http.Response, decode func(json.RawMessage) (*Incident, error)) (*Incident, error) {
	var m map[string]json.RawMessage
	dec := json.NewDecoder(resp.Body)
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	delete(m, "@odata.context")
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return decode(raw)
}

// --- Defender XDR API ---

type xdr struct {
	t      *transport
	tenant string
	base   string
}

func (x *xdr) API() string { return string(XDR) }

// Capabilities: the XDR API documents $top up to 100 and no $count, so
// ListOptions.Count is not sent to it.
func (x *xdr) Capabilities() Capabilities {
	return Capabilities{PageMax: 100, UpdatedField: "lastUpdateTime", CreatedField: "createdTime"}
}

func (x *xdr) Incidents(ctx context.Context, o ListOptions) iter.Seq2[*Page, error] {
	caps := x.Capabilities()
	top := o.PageSize
	if top <= 0 || top > caps.PageMax {
		top = caps.PageMax
	}
	if o.Top > 0 {
		top = o.Top
	}
	q := url.Values{}
	if f := filter(o, caps); f != "" {
		q.Set("$filter", f)
	}
	if o.OrderByLastUpdate {
		q.Set("$orderby", caps.UpdatedField+" asc")
	}
	q.Set("$top", strconv.Itoa(top))
	at := func(skip int) string {
		qq := url.Values{}
		for k, v := range q {
			qq[k] = v
		}
		if skip > 0 {
			qq.Set("$skip", strconv.Itoa(skip))
		}
		return x.base + "/api/incidents?" + qq.Encode()
	}
	decode := pageDecoder("xdr", x.tenant, o.KeysOnly, &x.t.pageHint)
	// The XDR API documents no nextLink: page with $skip until a short page
	// (and follow a nextLink if one comes).
	l := lister{t: x.t, bucket: "list", pageSize: top, decode: decode, withSkip: func(skip int) string { return at(o.Skip + skip) }}
	return l.list(ctx, at(o.Skip))
}

func (x *xdr) Incident(ctx context.Context, id string) (*Incident, error) {
	var in *Incident
	_, err := x.t.do(ctx, request{method: "GET", url: x.base + "/api/incidents/" + url.PathEscape(id), bucket: "get", retry429: true,
		handle: func(resp *http.Response) error {
			var err error
			in, err = decodeEntity(resp, func(r json.RawMessage) (*Incident, error) { return decodeXDRIncident(r, x.tenant) })
			return err
		}})
	return in, err
}

func (x *xdr) UpdateIncident(ctx context.Context, id string, u Update) (*Incident, error) {
	return x.patch(ctx, id, u, "")
}

func (x *xdr) patch(ctx context.Context, id string, u Update, comment string) (*Incident, error) {
	body := patchBody(u, xdrSpelling, "tags")
	once := false
	if comment != "" {
		body["comment"] = comment
		once = true // a repeated PATCH would add the comment twice
	}
	b, _ := json.Marshal(body)
	var in *Incident
	_, err := x.t.do(ctx, request{method: "PATCH", url: x.base + "/api/incidents/" + url.PathEscape(id), body: b, bucket: "update", retry429: true, once: once,
		handle: func(resp *http.Response) error {
			var err error
			in, err = decodeEntity(resp, func(r json.RawMessage) (*Incident, error) { return decodeXDRIncident(r, x.tenant) })
			return err
		}})
	return in, err
}

// AddComment is a PATCH with "comment" on the XDR API.
func (x *xdr) AddComment(ctx context.Context, id, text string) error {
	_, err := x.patch(ctx, id, Update{}, text)
	return err
}

func (x *xdr) Hunt(ctx context.Context, q HuntQuery) (*HuntResult, error) {
	b, _ := json.Marshal(map[string]string{"Query": q.Query})
	return hunt(ctx, x.t, x.base+"/api/advancedhunting/run", b)
}
