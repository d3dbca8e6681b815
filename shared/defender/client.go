package defender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	limits, prefer := o.Limits, ""
	if limits == nil {
		limits = GraphLimits
		if api == XDR {
			limits = XDRLimits
		}
	}
	if api == Graph {
		// Evolvable enums: without this header Graph hides new members (awaitingAction).
		prefer = "include-unknown-enum-members"
	}
	// One attempt's layers, outermost first (roundtrip.go); do retries above them.
	auth := &bearer{src: src, base: base, next: traced{api: string(api), next: sender{credentials.SameOrigin(o.HTTPClient)}}}
	paced := &pacer{pacers: o.Pacers, limits: limits, next: auth,
		// Limits are per app and tenant: one source of tokens is one app in
		// one tenant.
		key: fmt.Sprintf("%s|%s|%p", baseURL, tenant, src)}
	t := &transport{api: string(api), base: base, rt: paced, auth: auth, maxBody: o.MaxResponseBytes, attempts: o.MaxAttempts,
		retryBase: o.RetryBase, log: o.Logger, prefer: prefer, userAgent: "defender-functions/" + Version + " (+https://github.com/defender-functions/defender-functions)"}
	if api == XDR {
		return &xdr{t: t, tenant: tenant, base: baseURL}, nil
	}
	return &graph{t: t, base: baseURL}, nil
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
