package devstack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

type apiKind int

const (
	apiGraph apiKind = iota
	apiXDR
)

// caller is the verified identity behind an API request.
type caller struct {
	tenant string
	appID  string
	roles  []string
	store  *store
	tables *tables
}

func (c *caller) label() string { return "API-App:" + c.appID }

// bufferedWriter holds an API response so a fault can cut it short.
type bufferedWriter struct {
	header http.Header
	status int
	body   *bytes.Buffer
}

// buffers are reused across responses: a Graph page with alerts is some
// 370 KB, and growing a fresh buffer for each cleared and faulted in that
// much memory twice a request, a third of the simulator's CPU in the
// export benchmark (perf), on cores the client under test shares.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer {
	b := buffers.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func (b *bufferedWriter) Header() http.Header { return b.header }
func (b *bufferedWriter) WriteHeader(s int) {
	if b.status == 0 {
		b.status = s
	}
}
func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = 200
	}
	return b.body.Write(p)
}

func (s *Stack) apiError(kind apiKind, w http.ResponseWriter, status int, code, msg string) {
	if kind == apiGraph {
		writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg, "innerError": map[string]any{
			"date": time.Now().UTC().Format("2006-01-02T15:04:05"), "request-id": uuid.NewString(), "client-request-id": uuid.NewString()}}})
		return
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg, "target": uuid.NewString()}})
}

var apiAudience = map[apiKind][]string{apiGraph: {GraphResource, GraphAppID}, apiXDR: {XDRResource, XDRAppID}}

// api wraps an operation with what the real services do before it runs:
// token validation, the role check, rate limits, and the injected faults.
func (s *Stack) api(kind apiKind, bucket string, roles []string, h func(http.ResponseWriter, *http.Request, *caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f := s.faults()
		if f.LatencyMs > 0 {
			sleepCtx(r.Context(), time.Duration(f.LatencyMs)*time.Millisecond)
		}
		c, ok := s.authorize(kind, w, r, roles)
		if !ok {
			return
		}
		if wait, lim := s.limiter.allow(bucket, c.tenant+"|"+c.appID, time.Now()); lim != nil {
			w.Header().Set("Retry-After", retryAfter(wait))
			if kind == apiGraph {
				s.apiError(kind, w, http.StatusTooManyRequests, "TooManyRequests", "Too many requests.")
			} else {
				s.apiError(kind, w, http.StatusTooManyRequests, "429", fmt.Sprintf("API calls quota exceeded! maximum allowed %d per %s", lim.Requests, fmtWindow(lim.Window)))
			}
			return
		}
		if f.ThrottleRate > 0 && s.faultRNG.Float64() < f.ThrottleRate {
			w.Header().Set("Retry-After", "1")
			s.apiError(kind, w, http.StatusTooManyRequests, "TooManyRequests", "Too many requests.")
			return
		}
		if f.ErrorRate > 0 && s.faultRNG.Float64() < f.ErrorRate {
			switch s.faultRNG.IntN(3) {
			case 0:
				s.apiError(kind, w, http.StatusInternalServerError, "InternalServerError", "")
			case 1:
				s.apiError(kind, w, http.StatusServiceUnavailable, "ServiceNotAvailable", "The service is temporarily unavailable.")
			default:
				s.apiError(kind, w, http.StatusGatewayTimeout, "UnknownError", "")
			}
			return
		}
		buf := &bufferedWriter{header: w.Header(), body: getBuffer()}
		defer buffers.Put(buf.body)
		h(buf, r, c)
		if buf.status == 0 {
			buf.status = 200
		}
		body := buf.body.Bytes()
		if buf.status == 200 && f.TruncateRate > 0 && len(body) > 2 && s.faultRNG.Float64() < f.TruncateRate {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(200)
			w.Write(body[:len(body)/2])
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(buf.status)
		w.Write(body)
	}
}

func (s *Stack) authorize(kind apiKind, w http.ResponseWriter, r *http.Request, roles []string) (*caller, bool) {
	unauth := func(msg string) (*caller, bool) {
		if kind == apiGraph {
			w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`)
			s.apiError(kind, w, http.StatusUnauthorized, "InvalidAuthenticationToken", msg)
		} else {
			s.apiError(kind, w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		}
		return nil, false
	}
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") || len(h) == len("Bearer ") {
		return unauth("Access token is empty.")
	}
	claims, err := s.verify(strings.TrimPrefix(h, "Bearer "))
	if err != nil {
		if strings.Contains(err.Error(), "expired") || strings.Contains(err.Error(), "not valid yet") {
			return unauth("Access token has expired or is not yet valid.")
		}
		return unauth("Access token validation failure.")
	}
	aud, _ := claims.GetAudience()
	if len(aud) != 1 || !slices.Contains(apiAudience[kind], aud[0]) {
		if kind == apiGraph {
			return unauth("Access token validation failure. Invalid audience.")
		}
		// Observed on the XDR family: a token for another audience is refused as forbidden.
		s.apiError(kind, w, http.StatusForbidden, "Forbidden", fmt.Sprintf("The token's audience '%s' is not valid for this API; request a token for %s.", strings.Join(aud, ","), XDRResource))
		return nil, false
	}
	c := &caller{}
	c.tenant, _ = claims["tid"].(string)
	c.appID, _ = claims["appid"].(string)
	if c.appID == "" {
		c.appID, _ = claims["azp"].(string)
	}
	c.roles = claimRoles(claims)
	c.store, c.tables = s.stores[c.tenant], s.tables[c.tenant]
	if c.store == nil {
		return unauth("Access token validation failure. Invalid tenant.")
	}
	for _, need := range roles {
		if slices.Contains(c.roles, need) {
			return c, true
		}
	}
	s.apiError(kind, w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Missing application roles. API required roles: %s, application roles: %s.", strings.Join(roles, ","), strings.Join(c.roles, ",")))
	return nil, false
}

func claimRoles(c jwt.MapClaims) []string {
	raw, _ := c["roles"].([]any)
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		if s, ok := r.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// --- Microsoft Graph security API ---

var (
	graphIncidentRead  = []string{"SecurityIncident.Read.All", "SecurityIncident.ReadWrite.All"}
	graphIncidentWrite = []string{"SecurityIncident.ReadWrite.All"}
	graphAlertRead     = []string{"SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"}
	graphHunting       = []string{"ThreatHunting.Read.All"}
	xdrIncidentRead    = []string{"Incident.Read.All", "Incident.ReadWrite.All"}
	xdrIncidentWrite   = []string{"Incident.ReadWrite.All"}
	xdrHunting         = []string{"AdvancedHunting.Read.All"}
)

const (
	graphMaxTop = 50
	xdrMaxTop   = 100
)

func (s *Stack) graphHandler() http.Handler {
	mux := http.NewServeMux()
	route(mux, "GET /v1.0/security/incidents", "graph.incidents.list", s.api(apiGraph, "graph.security", graphIncidentRead, func(w http.ResponseWriter, r *http.Request, c *caller) {
		s.list(apiGraph, w, r, c)
	}))
	route(mux, "GET /v1.0/security/incidents/{id}", "graph.incidents.get", s.api(apiGraph, "graph.security", graphIncidentRead, func(w http.ResponseWriter, r *http.Request, c *caller) {
		in := s.findIncident(apiGraph, w, r, c)
		if in == nil {
			return
		}
		expand, err := graphExpand(r.URL.Query())
		if err != nil {
			s.apiError(apiGraph, w, 400, "BadRequest", err.Error())
			return
		}
		s.writeEntity(w, "https://graph.microsoft.com/v1.0/$metadata#security/incidents/$entity", in.render(graphForm(r, expand)))
	}))
	route(mux, "PATCH /v1.0/security/incidents/{id}", "graph.incidents.update", s.api(apiGraph, "graph.security", graphIncidentWrite, func(w http.ResponseWriter, r *http.Request, c *caller) {
		s.patch(apiGraph, w, r, c)
	}))
	route(mux, "POST /v1.0/security/incidents/{id}/comments", "graph.incidents.comment", s.api(apiGraph, "graph.security", graphIncidentWrite, s.graphComment))
	route(mux, "GET /v1.0/security/alerts_v2", "graph.alerts.list", s.api(apiGraph, "graph.security", graphAlertRead, s.graphAlerts))
	route(mux, "POST /v1.0/security/runHuntingQuery", "graph.hunting", s.api(apiGraph, "graph.hunting", graphHunting, func(w http.ResponseWriter, r *http.Request, c *caller) {
		s.hunt(apiGraph, w, r, c)
	}))
	return s.counted("graph", mux)
}

func (s *Stack) xdrHandler() http.Handler {
	mux := http.NewServeMux()
	route(mux, "GET /api/incidents", "xdr.incidents.list", s.api(apiXDR, "xdr.list", xdrIncidentRead, func(w http.ResponseWriter, r *http.Request, c *caller) {
		s.list(apiXDR, w, r, c)
	}))
	route(mux, "GET /api/incidents/{id}", "xdr.incidents.get", s.api(apiXDR, "xdr.get", xdrIncidentRead, func(w http.ResponseWriter, r *http.Request, c *caller) {
		if in := s.findIncident(apiXDR, w, r, c); in != nil {
			s.writeEntity(w, "https://api.security.microsoft.com/api/$metadata#Incidents/$entity", in.render(formXDR))
		}
	}))
	route(mux, "PATCH /api/incidents/{id}", "xdr.incidents.update", s.api(apiXDR, "xdr.update", xdrIncidentWrite, func(w http.ResponseWriter, r *http.Request, c *caller) {
		s.patch(apiXDR, w, r, c)
	}))
	route(mux, "POST /api/advancedhunting/run", "xdr.hunting", s.api(apiXDR, "xdr.hunting", xdrHunting, func(w http.ResponseWriter, r *http.Request, c *caller) {
		s.hunt(apiXDR, w, r, c)
	}))
	return s.counted("xdr", mux)
}

func graphExpand(q url.Values) (bool, error) {
	switch v := q.Get("$expand"); v {
	case "":
		return false, nil
	case "alerts":
		return true, nil
	default:
		return false, fmt.Errorf("Could not find a property named '%s' on type 'microsoft.graph.security.incident'.", v)
	}
}

func graphForm(r *http.Request, expand bool) int {
	prefer := strings.Contains(r.Header.Get("Prefer"), "include-unknown-enum-members")
	switch {
	case prefer && expand:
		return formGraphPreferExpand
	case prefer:
		return formGraphPrefer
	case expand:
		return formGraphExpand
	}
	return formGraph
}

func (s *Stack) list(kind apiKind, w http.ResponseWriter, r *http.Request, c *caller) {
	q := r.URL.Query()
	fields, maxTop := graphFields, graphMaxTop
	if kind == apiXDR {
		fields, maxTop = xdrFields, xdrMaxTop
	}
	for k := range q {
		if strings.HasPrefix(k, "$") && !slices.Contains([]string{"$filter", "$orderby", "$top", "$skip", "$count", "$expand"}, k) {
			s.apiError(kind, w, 400, odataCode(kind), fmt.Sprintf("Query option '%s' is not supported.", k))
			return
		}
	}
	var lq listQuery
	var err error
	fail := func(err error) {
		s.apiError(kind, w, 400, odataCode(kind), err.Error())
	}
	if lq.top, err = parseInt(q.Get("$top"), maxTop, "$top"); err != nil {
		fail(err)
		return
	}
	if lq.top > maxTop {
		if kind == apiGraph {
			s.apiError(kind, w, 400, "", fmt.Sprintf("The query specified in the URI is not valid. The limit of '%d' for Top query has been exceeded. The value from the incoming request is '%d'.", maxTop, lq.top))
		} else {
			s.apiError(kind, w, 400, "ODataError", fmt.Sprintf("Invalid OData URI query: the maximum value of $top is %d; the request asked for %d.", maxTop, lq.top))
		}
		return
	}
	if lq.skip, err = parseInt(q.Get("$skip"), 0, "$skip"); err != nil {
		fail(err)
		return
	}
	if lq.preds, lq.after, lq.before, err = parseFilter(q.Get("$filter"), fields, s.faults().CreatedFilterIgnored); err != nil {
		fail(err)
		return
	}
	if s.faults().RejectOrderBy && q.Has("$orderby") {
		fail(fmt.Errorf("Order by '%s' is not supported.", q.Get("$orderby")))
		return
	}
	if lq.orderBy, lq.desc, err = parseOrderBy(q.Get("$orderby"), fields, s.opts.DocumentedOrder); err != nil {
		fail(err)
		return
	}
	lq.count = q.Get("$count") == "true"
	expand := false
	if kind == apiGraph {
		if expand, err = graphExpand(q); err != nil {
			fail(err)
			return
		}
	} else if q.Get("$expand") != "" {
		fail(fmt.Errorf("$expand is not supported; incidents always include their alerts"))
		return
	}
	items, more, total := c.store.page(lq, time.Now())
	form := formXDR
	ctxURL := "https://api.security.microsoft.com/api/$metadata#Incidents"
	if kind == apiGraph {
		form = graphForm(r, expand)
		ctxURL = "https://graph.microsoft.com/v1.0/$metadata#security/incidents"
		if expand {
			ctxURL += "(alerts())"
			if lim := s.faults().ExpandFailAbove; lim > 0 {
				for _, in := range items {
					if len(in.Alerts) > lim {
						s.apiError(kind, w, http.StatusInternalServerError, "UnknownError", "")
						return
					}
				}
			}
		}
	}
	b := getBuffer()
	defer buffers.Put(b)
	b.WriteString(`{"@odata.context":`)
	writeJSONString(b, ctxURL)
	if lq.count {
		if s.faults().CountEchoesTop {
			total = len(items)
		}
		fmt.Fprintf(b, `,"@odata.count":%d`, total)
	}
	b.WriteString(`,"value":[`)
	for i, in := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(in.render(form))
	}
	b.WriteByte(']')
	if more {
		next := *r.URL
		nq := r.URL.Query()
		nq.Set("$skip", strconv.Itoa(lq.skip+len(items)))
		next.RawQuery = nq.Encode()
		origin := "https://" + r.Host
		if f := s.faults().ForeignNextLink; f != "" {
			origin = f
		}
		b.WriteString(`,"@odata.nextLink":`)
		writeJSONString(b, origin+next.RequestURI())
	}
	b.WriteByte('}')
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8")
	w.WriteHeader(200)
	w.Write(b.Bytes())
}

func odataCode(kind apiKind) string {
	if kind == apiGraph {
		return "BadRequest"
	}
	return "ODataError"
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

func (s *Stack) writeEntity(w http.ResponseWriter, ctxURL string, body []byte) {
	var b bytes.Buffer
	b.WriteString(`{"@odata.context":`)
	writeJSONString(&b, ctxURL)
	b.WriteByte(',')
	b.Write(body[1:])
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal; charset=utf-8")
	w.WriteHeader(200)
	w.Write(b.Bytes())
}

func (s *Stack) findIncident(kind apiKind, w http.ResponseWriter, r *http.Request, c *caller) *incident {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	var in *incident
	if err == nil {
		in = c.store.get(id)
	}
	if in == nil {
		if kind == apiGraph {
			s.apiError(kind, w, 404, "NotFound", fmt.Sprintf("Incident with id '%s' was not found.", raw))
		} else {
			s.apiError(kind, w, 404, "ResourceNotFound", fmt.Sprintf("Incident %s was not found", raw))
		}
	}
	return in
}

const maxBody = 1 << 20

func (s *Stack) patch(kind apiKind, w http.ResponseWriter, r *http.Request, c *caller) {
	if s.findIncident(kind, w, r, c) == nil {
		return
	}
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	bad := func(msg string) {
		if kind == apiGraph {
			s.apiError(kind, w, 400, "BadRequest", msg)
		} else {
			s.apiError(kind, w, 400, "InvalidRequestBody", msg)
		}
	}
	if err != nil || len(raw) > maxBody {
		bad("Request body is incorrect")
		return
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil {
		bad("Request body is incorrect: " + err.Error())
		return
	}
	tagsKey := "customTags"
	allowed := []string{"status", "assignedTo", "classification", "determination", "customTags", "resolvingComment", "summary", "@odata.type"}
	if kind == apiXDR {
		tagsKey = "tags"
		allowed = []string{"status", "assignedTo", "classification", "determination", "tags", "comment"}
	}
	var changes []func(*incident)
	for k, v := range body {
		if !slices.Contains(allowed, k) {
			if kind == apiGraph {
				bad(fmt.Sprintf("The property '%s' does not exist on type 'microsoft.graph.security.incident'. Make sure to only use property names that are defined by the type or mark the type as open type.", k))
			} else {
				bad(fmt.Sprintf("Invalid request body: unknown property '%s'. Body parameters are case-sensitive.", k))
			}
			return
		}
		switch k {
		case "status", "classification", "determination":
			var str string
			if err := json.Unmarshal(v, &str); err != nil {
				bad(fmt.Sprintf("Invalid input %s: expected a string.", k))
				return
			}
			set := map[string][]string{"status": {"active", "inProgress", "resolved", "redirected", "awaitingAction"}, "classification": classifications, "determination": determinations}[k]
			e := parseEnum(str, set)
			if e == "" {
				if kind == apiGraph {
					bad(fmt.Sprintf("Requested value '%s' was not found.", str))
				} else {
					s.apiError(kind, w, 400, "InvalidInput", fmt.Sprintf("Invalid input %s: %s", k, str))
				}
				return
			}
			key := k
			changes = append(changes, func(in *incident) {
				switch key {
				case "status":
					in.Status = e
				case "classification":
					in.Classification = e
				default:
					in.Determination = e
				}
			})
		case "assignedTo", "comment", "resolvingComment", "summary":
			var str *string
			if err := json.Unmarshal(v, &str); err != nil {
				bad(fmt.Sprintf("Invalid input %s: expected a string.", k))
				return
			}
			val := ""
			if str != nil {
				val = *str
			}
			if len(val) > 30000 {
				bad(fmt.Sprintf("Invalid input %s: longer than 30000 characters.", k))
				return
			}
			key := k
			changes = append(changes, func(in *incident) {
				switch key {
				case "assignedTo":
					in.AssignedTo = val
				case "comment":
					if val != "" {
						in.Comments = append(in.Comments, comment{Text: val, CreatedBy: c.label(), Created: time.Now()})
					}
				}
			})
		case tagsKey:
			var tags []string
			if err := json.Unmarshal(v, &tags); err != nil {
				bad(fmt.Sprintf("Invalid input %s: expected a list of strings.", k))
				return
			}
			changes = append(changes, func(in *incident) { in.Tags = tags })
		}
	}
	in := c.store.update(id, time.Now(), func(in *incident) {
		for _, ch := range changes {
			ch(in)
		}
		in.LastModifiedBy = c.label()
		for i := range in.Comments {
			if in.Comments[i].Created.IsZero() || in.Comments[i].Created.After(time.Now().Add(-time.Second)) && in.Comments[i].CreatedBy == c.label() {
				in.Comments[i].Created = in.Comments[i].Created.Truncate(100 * time.Nanosecond)
			}
		}
	})
	if kind == apiGraph {
		s.writeEntity(w, "https://graph.microsoft.com/v1.0/$metadata#security/incidents/$entity", in.render(graphForm(r, false)))
	} else {
		s.writeEntity(w, "https://api.security.microsoft.com/api/$metadata#Incidents/$entity", in.render(formXDR))
	}
}

func (s *Stack) graphComment(w http.ResponseWriter, r *http.Request, c *caller) {
	if s.findIncident(apiGraph, w, r, c) == nil {
		return
	}
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	var body struct {
		Type    string `json:"@odata.type"`
		Comment string `json:"comment"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || strings.TrimSpace(body.Comment) == "" || len(body.Comment) > 30000 {
		s.apiError(apiGraph, w, 400, "BadRequest", "The request body must be an alertComment with a non-empty 'comment' of at most 30000 characters.")
		return
	}
	in := c.store.update(id, time.Now(), func(in *incident) {
		in.Comments = append(in.Comments, comment{Text: body.Comment, CreatedBy: c.label(), Created: time.Now()})
		in.LastModifiedBy = c.label()
	})
	out := make([]graphComment, 0, len(in.Comments))
	for _, cm := range in.Comments {
		out = append(out, graphComment{Comment: cm.Text, CreatedByDisplayName: cm.CreatedBy, CreatedDateTime: ts(cm.Created)})
	}
	writeJSON(w, 200, map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.security.alertComment)", "value": out})
}

// graphAlerts serves alerts_v2, filterable by incidentId: the per-incident
// fallback when $expand=alerts fails.
func (s *Stack) graphAlerts(w http.ResponseWriter, r *http.Request, c *caller) {
	q := r.URL.Query()
	top, err := parseInt(q.Get("$top"), 2000, "$top")
	if err == nil && top > 2000 {
		err = fmt.Errorf("The limit of '2000' for Top query has been exceeded. The value from the incoming request is '%d'.", top)
	}
	skip, err2 := parseInt(q.Get("$skip"), 0, "$skip")
	if err == nil {
		err = err2
	}
	if err != nil {
		s.apiError(apiGraph, w, 400, "BadRequest", err.Error())
		return
	}
	var only int64 = -1
	if f := strings.TrimSpace(q.Get("$filter")); f != "" {
		parts := strings.Fields(f)
		if len(parts) != 3 || parts[0] != "incidentId" || parts[1] != "eq" || len(parts[2]) < 3 || parts[2][0] != '\'' || parts[2][len(parts[2])-1] != '\'' {
			s.apiError(apiGraph, w, 400, "BadRequest", "Invalid filter clause: only incidentId eq '<id>' is supported by the devstack.")
			return
		}
		only, err = strconv.ParseInt(parts[2][1:len(parts[2])-1], 10, 64)
		if err != nil {
			only = -2
		}
	}
	var all []graphAlert
	if only >= 0 {
		if in := c.store.get(only); in != nil {
			for _, a := range in.Alerts {
				all = append(all, in.graphAlert(a))
			}
		}
	} else if only == -1 {
		c.store.mu.RLock()
		for _, in := range c.store.byCreated {
			for _, a := range in.Alerts {
				all = append(all, in.graphAlert(a))
			}
		}
		c.store.mu.RUnlock()
	}
	end := min(skip+top, len(all))
	page := []graphAlert{}
	if skip < len(all) {
		page = all[skip:end]
	}
	resp := map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#security/alerts_v2", "value": page}
	if end < len(all) {
		nq := r.URL.Query()
		nq.Set("$skip", strconv.Itoa(end))
		resp["@odata.nextLink"] = "https://" + r.Host + r.URL.Path + "?" + nq.Encode()
	}
	writeJSON(w, 200, resp)
}
