package devstack_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

type page struct {
	Context  string            `json:"@odata.context"`
	Count    *int              `json:"@odata.count"`
	Value    []json.RawMessage `json:"value"`
	NextLink string            `json:"@odata.nextLink"`
}

func listPage(t testing.TB, s *devstack.Stack, u, tok string) page {
	t.Helper()
	r := do(t, s, "GET", u, tok, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", u, r.status, r.body)
	}
	var p page
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func incidentID(t testing.TB, raw json.RawMessage) string {
	var m struct {
		ID         string `json:"id"`
		IncidentID int64  `json:"incidentId"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.ID != "" {
		return m.ID
	}
	return strconv.FormatInt(m.IncidentID, 10)
}

// Paging 10k incidents by nextLink (Graph) and by $skip (XDR) returns each exactly once.
func TestPaging10kExactlyOnce(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 10_000})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	xdr := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.XDRResource)

	seen := map[string]int{}
	u := s.GraphURL + "/v1.0/security/incidents?$top=50&$orderby=lastUpdateDateTime%20asc"
	pages := 0
	for u != "" {
		p := listPage(t, s, u, graph)
		for _, v := range p.Value {
			seen[incidentID(t, v)]++
		}
		u = p.NextLink
		pages++
	}
	if len(seen) != 10_000 || pages != 200 {
		t.Fatalf("graph: %d distinct incidents in %d pages, want 10000 in 200", len(seen), pages)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("graph: incident %s seen %d times", id, n)
		}
	}

	seen = map[string]int{}
	for skip := 0; ; skip += 100 {
		p := listPage(t, s, fmt.Sprintf("%s/api/incidents?$top=100&$skip=%d", s.XDRURL, skip), xdr)
		for _, v := range p.Value {
			seen[incidentID(t, v)]++
		}
		if len(p.Value) < 100 {
			break
		}
	}
	if len(seen) != 10_000 {
		t.Fatalf("xdr: %d distinct incidents, want 10000", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("xdr: incident %s seen %d times", id, n)
		}
	}
	if got := s.Counters().Get("graph.incidents.list", 200); got != 200 {
		t.Errorf("graph list requests counted = %d, want 200", got)
	}
}

func TestTopLimits(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	xdr := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.XDRResource)
	r := do(t, s, "GET", s.GraphURL+"/v1.0/security/incidents?$top=100", graph, nil)
	if r.status != 400 || errorMessage(t, r) != "The query specified in the URI is not valid. The limit of '50' for Top query has been exceeded. The value from the incoming request is '100'." {
		t.Fatalf("graph $top=100: %d %s", r.status, r.body)
	}
	if p := listPage(t, s, s.GraphURL+"/v1.0/security/incidents?$top=50", graph); len(p.Value) != 50 {
		t.Fatalf("graph $top=50 gave %d", len(p.Value))
	}
	r = do(t, s, "GET", s.XDRURL+"/api/incidents?$top=101", xdr, nil)
	if r.status != 400 || errorCode(t, r) != "ODataError" {
		t.Fatalf("xdr $top=101: %d %s", r.status, r.body)
	}
	if p := listPage(t, s, s.XDRURL+"/api/incidents?$top=100", xdr); len(p.Value) != 100 {
		t.Fatalf("xdr $top=100 gave %d", len(p.Value))
	}
}

func TestFiltersAndOrder(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 500})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	xdr := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.XDRResource)
	all := s.Incidents(devstack.DefaultTenantID)
	pivot := all[len(all)/2].LastUpdate
	wantGE := 0
	for _, v := range all {
		if !v.LastUpdate.Before(pivot) {
			wantGE++
		}
	}
	count := func(base, path, filter, tok string) int {
		n := 0
		u := base + path + "?$filter=" + url.QueryEscape(filter)
		for skip := 0; ; skip += 50 {
			p := listPage(t, s, u+"&$top=50&$skip="+strconv.Itoa(skip), tok)
			n += len(p.Value)
			if p.NextLink == "" {
				return n
			}
		}
	}
	stamp := pivot.Format(time.RFC3339Nano)
	if got := count(s.GraphURL, "/v1.0/security/incidents", "lastUpdateDateTime ge "+stamp, graph); got != wantGE {
		t.Errorf("graph ge: %d, want %d", got, wantGE)
	}
	if got := count(s.GraphURL, "/v1.0/security/incidents", "lastUpdateDateTime gt "+stamp, graph); got != wantGE-1 {
		t.Errorf("graph gt: %d, want %d", got, wantGE-1)
	}
	if got := count(s.XDRURL, "/api/incidents", "lastUpdateTime ge "+stamp, xdr); got != wantGE {
		t.Errorf("xdr ge: %d, want %d", got, wantGE)
	}
	lt := count(s.GraphURL, "/v1.0/security/incidents", "lastUpdateDateTime lt "+stamp, graph)
	if lt != len(all)-wantGE {
		t.Errorf("graph lt: %d, want %d", lt, len(all)-wantGE)
	}
	// Status in both spellings, joined with a time bound; $count.
	a := count(s.GraphURL, "/v1.0/security/incidents", "status eq 'active' and lastUpdateDateTime ge "+stamp, graph)
	b := count(s.XDRURL, "/api/incidents", "status eq 'Active' and lastUpdateTime ge "+stamp, xdr)
	if a != b || a == 0 {
		t.Errorf("status filter: graph %d xdr %d", a, b)
	}
	p := listPage(t, s, s.GraphURL+"/v1.0/security/incidents?$count=true&$top=1&$filter="+url.QueryEscape("lastUpdateDateTime ge "+stamp), graph)
	if p.Count == nil || *p.Count != wantGE {
		t.Errorf("$count = %v, want %d", p.Count, wantGE)
	}
	// Bad filters are 400 with the service's text.
	for _, f := range []string{"severity eq 'High'", "lastUpdateDateTime ge yesterday", "status eq 'sleeping'", "lastUpdateDateTime"} {
		r := do(t, s, "GET", s.XDRURL+"/api/incidents?$filter="+url.QueryEscape(f), xdr, nil)
		if r.status != 400 || errorCode(t, r) != "ODataError" || !strings.HasPrefix(errorMessage(t, r), "Invalid filter clause") {
			t.Errorf("xdr filter %q: %d %s", f, r.status, r.body)
		}
	}
}

func TestAPIAuthorization(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	xdr := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.XDRResource)
	readerGraph := token(t, s, devstack.DefaultTenantID, devstack.ReaderClientID, devstack.GraphResource)
	readerXDR := token(t, s, devstack.DefaultTenantID, devstack.ReaderClientID, devstack.XDRResource)
	hunt := strings.NewReader(`{"Query":"AlertInfo | take 1"}`)
	for _, tc := range []struct {
		name, method, url, tok string
		body                   io.Reader
		status                 int
		code, msg              string
	}{
		{"graph no token", "GET", s.GraphURL + "/v1.0/security/incidents", "", nil, 401, "InvalidAuthenticationToken", "Access token is empty."},
		{"graph garbage token", "GET", s.GraphURL + "/v1.0/security/incidents", "abc.def.ghi", nil, 401, "InvalidAuthenticationToken", "Access token validation failure."},
		{"graph wrong audience", "GET", s.GraphURL + "/v1.0/security/incidents", xdr, nil, 401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."},
		{"xdr no token", "GET", s.XDRURL + "/api/incidents", "", nil, 401, "Unauthorized", "Unauthorized"},
		{"xdr wrong audience", "GET", s.XDRURL + "/api/incidents", graph, nil, 403, "Forbidden", ""},
		{"graph hunting without role", "POST", s.GraphURL + "/v1.0/security/runHuntingQuery", readerGraph, hunt, 403, "Forbidden",
			"Missing application roles. API required roles: ThreatHunting.Read.All, application roles: SecurityIncident.Read.All."},
		{"graph patch without role", "PATCH", s.GraphURL + "/v1.0/security/incidents/1000", readerGraph, strings.NewReader(`{"status":"resolved"}`), 403, "Forbidden",
			"Missing application roles. API required roles: SecurityIncident.ReadWrite.All, application roles: SecurityIncident.Read.All."},
		{"xdr patch without role", "PATCH", s.XDRURL + "/api/incidents/1000", readerXDR, strings.NewReader(`{"status":"Resolved"}`), 403, "Forbidden",
			"Missing application roles. API required roles: Incident.ReadWrite.All, application roles: Incident.Read.All."},
		{"reader may list", "GET", s.XDRURL + "/api/incidents?$top=1", readerXDR, nil, 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, tc.method, tc.url, tc.tok, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.code != "" && errorCode(t, r) != tc.code {
				t.Fatalf("code %q, want %q", errorCode(t, r), tc.code)
			}
			if tc.msg != "" && errorMessage(t, r) != tc.msg {
				t.Fatalf("message %q, want %q", errorMessage(t, r), tc.msg)
			}
		})
	}
}

func TestPatchAndComments(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	xdr := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.XDRResource)
	before := listPage(t, s, s.GraphURL+"/v1.0/security/incidents?$top=1&$orderby=lastUpdateDateTime%20desc", graph)
	var newest struct{ LastUpdateDateTime string }
	json.Unmarshal(before.Value[0], &newest)

	// Graph accepts PascalCase values, as its own docs' sample sends.
	r := do(t, s, "PATCH", s.GraphURL+"/v1.0/security/incidents/1001", graph, strings.NewReader(`{"classification":"TruePositive","determination":"MultiStagedAttack","customTags":["Demo"],"status":"resolved","assignedTo":"secop2@contoso.com"}`))
	if r.status != 200 {
		t.Fatalf("graph patch: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["classification"] != "truePositive" || m["determination"] != "multiStagedAttack" || m["status"] != "resolved" || m["assignedTo"] != "secop2@contoso.com" ||
		m["lastModifiedBy"] != "API-App:"+devstack.DefaultClientID || m["lastUpdateDateTime"].(string) <= newest.LastUpdateDateTime {
		t.Fatalf("graph patch result: %v", m)
	}
	// XDR: the docs' sample body; the comment is appended.
	r = do(t, s, "PATCH", s.XDRURL+"/api/incidents/1002", xdr, strings.NewReader(`{"status":"Resolved","assignedTo":"secop2@contoso.com","classification":"TruePositive","determination":"Malware","tags":["Yossi's playground","Don't mess with the Zohan"],"comment":"pen testing"}`))
	if r.status != 200 {
		t.Fatalf("xdr patch: %d %s", r.status, r.body)
	}
	m = r.json(t)
	comments := m["comments"].([]any)
	last := comments[len(comments)-1].(map[string]any)
	if m["status"] != "Resolved" || m["determination"] != "Malware" || last["comment"] != "pen testing" || len(m["tags"].([]any)) != 2 {
		t.Fatalf("xdr patch result: %v", m)
	}
	// The other spelling of the same determination.
	if r := do(t, s, "PATCH", s.XDRURL+"/api/incidents/1003", xdr, strings.NewReader(`{"classification":"FalsePositive","determination":"NotMalicious"}`)); r.status != 200 || r.json(t)["determination"] != "Clean" {
		t.Fatalf("alias: %d %s", r.status, r.body)
	}
	// Bad input changes nothing.
	for _, tc := range []struct{ url, tok, body, code string }{
		{s.GraphURL + "/v1.0/security/incidents/1004", graph, `{"status":"sleeping"}`, "BadRequest"},
		{s.GraphURL + "/v1.0/security/incidents/1004", graph, `{"color":"red"}`, "BadRequest"},
		{s.GraphURL + "/v1.0/security/incidents/1004", graph, `not json`, "BadRequest"},
		{s.XDRURL + "/api/incidents/1004", xdr, `{"classification":"Maybe"}`, "InvalidInput"},
		{s.XDRURL + "/api/incidents/1004", xdr, `{"Status":"Active"}`, "InvalidRequestBody"},
	} {
		if r := do(t, s, "PATCH", tc.url, tc.tok, strings.NewReader(tc.body)); r.status != 400 || errorCode(t, r) != tc.code {
			t.Errorf("PATCH %s: %d %s", tc.body, r.status, r.body)
		}
	}
	if r := do(t, s, "GET", s.GraphURL+"/v1.0/security/incidents/1004", graph, nil); r.json(t)["lastModifiedBy"] != nil {
		t.Errorf("a rejected PATCH changed the incident")
	}
	if r := do(t, s, "PATCH", s.XDRURL+"/api/incidents/99", xdr, strings.NewReader(`{"status":"Active"}`)); r.status != 404 || errorCode(t, r) != "ResourceNotFound" {
		t.Errorf("unknown incident: %d %s", r.status, r.body)
	}
	// Graph comments answer the full list.
	r = do(t, s, "POST", s.GraphURL+"/v1.0/security/incidents/1005/comments", graph, strings.NewReader(`{"@odata.type":"microsoft.graph.security.alertComment","comment":"Demo for docs"}`))
	if r.status != 200 {
		t.Fatalf("comment: %d %s", r.status, r.body)
	}
	vals := r.json(t)["value"].([]any)
	if vals[len(vals)-1].(map[string]any)["comment"] != "Demo for docs" {
		t.Fatalf("comment list: %v", vals)
	}
}

func TestExpandAndAlertsV2(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 400})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	p := listPage(t, s, s.GraphURL+"/v1.0/security/incidents?$top=50&$expand=alerts", graph)
	if !strings.HasSuffix(p.Context, "incidents(alerts())") {
		t.Errorf("context %q", p.Context)
	}
	var inc struct {
		ID     string
		Alerts []struct{ ID, IncidentID string }
	}
	json.Unmarshal(p.Value[0], &inc)
	if len(inc.Alerts) == 0 || inc.Alerts[0].IncidentID != inc.ID {
		t.Fatalf("expanded alerts: %+v", inc)
	}
	v2 := listPage(t, s, s.GraphURL+"/v1.0/security/alerts_v2?$filter="+url.QueryEscape("incidentId eq '"+inc.ID+"'"), graph)
	if len(v2.Value) != len(inc.Alerts) {
		t.Fatalf("alerts_v2 gave %d alerts, $expand gave %d", len(v2.Value), len(inc.Alerts))
	}
	// Large incidents make $expand fail, as Graph does; the same pages without $expand work.
	s.SetFaults(devstack.Faults{ExpandFailAbove: 50})
	failed := 0
	for skip := 0; skip < 400; skip += 50 {
		q := fmt.Sprintf("%s/v1.0/security/incidents?$top=50&$skip=%d", s.GraphURL, skip)
		if r := do(t, s, "GET", q+"&$expand=alerts", graph, nil); r.status == 500 {
			failed++
		}
		if r := do(t, s, "GET", q, graph, nil); r.status != 200 {
			t.Fatalf("without $expand: %d", r.status)
		}
	}
	if failed == 0 {
		t.Fatal("no page with a large incident failed to expand")
	}
}

// The documented rate limit: 50 list calls per minute on XDR; a "minute" here lasts three seconds.
func TestRateLimit(t *testing.T) {
	s := start(t, devstack.Options{Limits: devstack.DocumentedLimits, TimeScale: 20})
	xdr := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.XDRResource)
	ok, limited := 0, 0
	var last response
	for i := 0; i < 60; i++ {
		r := do(t, s, "GET", s.XDRURL+"/api/incidents?$top=1", xdr, nil)
		switch r.status {
		case 200:
			ok++
		case 429:
			limited++
			last = r
		default:
			t.Fatalf("status %d", r.status)
		}
	}
	if ok != 50 || limited != 10 {
		t.Fatalf("%d passed and %d were limited, want 50 and 10 (did 60 requests take longer than 3 s?)", ok, limited)
	}
	if ra, err := strconv.Atoi(last.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", last.header.Get("Retry-After"))
	}
	if msg := errorMessage(t, last); msg != "API calls quota exceeded! maximum allowed 50 per 00:01:00" {
		t.Fatalf("message %q", msg)
	}
	// Other buckets and other apps are not affected.
	if r := do(t, s, "GET", s.XDRURL+"/api/incidents/1000", xdr, nil); r.status != 200 {
		t.Fatalf("get after list limit: %d", r.status)
	}
	// After the window the calls pass again.
	time.Sleep(3100 * time.Millisecond)
	if r := do(t, s, "GET", s.XDRURL+"/api/incidents?$top=1", xdr, nil); r.status != 200 {
		t.Fatalf("after the window: %d", r.status)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	s.SetFaults(devstack.Faults{ErrorRate: 1})
	for i := 0; i < 10; i++ {
		r := do(t, s, "GET", s.GraphURL+"/v1.0/security/incidents", graph, nil)
		if r.status != 500 && r.status != 503 && r.status != 504 {
			t.Fatalf("error fault: %d", r.status)
		}
	}
	s.SetFaults(devstack.Faults{TruncateRate: 1})
	resp, err := s.HTTPClient().Do(mustReq(t, "GET", s.GraphURL+"/v1.0/security/incidents", graph))
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncation: err = %v, want unexpected EOF", err)
	}
	s.SetFaults(devstack.Faults{TokenOutage: true, VaultOutage: true})
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {devstack.DefaultClientID}, "client_secret": {s.ClientSecret(devstack.DefaultClientID)}, "scope": {devstack.GraphResource + "/.default"}}
	if r := postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantID+"/oauth2/v2.0/token", form); r.status != 503 || r.json(t)["error"] != "temporarily_unavailable" {
		t.Fatalf("token outage: %d", r.status)
	}
	if r := do(t, s, "GET", s.KeyVaultURL+"/secrets/x?api-version=7.4", "", nil); r.status != 503 {
		t.Fatalf("vault outage: %d", r.status)
	}
	s.SetFaults(devstack.Faults{})
	if r := do(t, s, "GET", s.GraphURL+"/v1.0/security/incidents", graph, nil); r.status != 200 {
		t.Fatalf("after faults cleared: %d", r.status)
	}
	if n := s.Counters().Get("graph.incidents.list", 0); n != 12 {
		t.Errorf("counted %d list requests, want 12", n)
	}
}

func mustReq(t testing.TB, method, u, tok string) *http.Request {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return req
}

// Changes come in batches that share one timestamp, strictly after all earlier ones.
func TestMutationsShareTimestamps(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	before := s.Incidents(devstack.DefaultTenantID)
	maxBefore := before[len(before)-1].LastUpdate
	ids := s.Mutate(4)
	if len(ids) < 2 {
		t.Skip("batch collapsed")
	}
	after := s.Incidents(devstack.DefaultTenantID)
	stamps := map[time.Time]int{}
	for _, v := range after[len(after)-len(ids):] {
		stamps[v.LastUpdate]++
		if !v.LastUpdate.After(maxBefore) {
			t.Fatalf("update %v not after %v", v.LastUpdate, maxBefore)
		}
	}
	if len(stamps) != 1 {
		t.Fatalf("a batch of %d changes has %d timestamps, want 1", len(ids), len(stamps))
	}
}

func TestSettingsFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, devstack.Options{Dir: dir})
	env, err := readFile(dir + "/devstack.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"DEFENDER_API=graph", "DEFENDER_TENANT_ID=" + devstack.DefaultTenantID, "DEFENDER_CLIENT_ID=", "DEFENDER_CREDENTIAL=keyvault-secret",
		"KEY_VAULT_URL=" + s.KeyVaultURL + "/", "AZURE_AUTHORITY_HOST=" + s.EntraURL, "DEFENDER_API_URL=" + s.GraphURL, "IDENTITY_ENDPOINT=",
		"IDENTITY_HEADER=", "SSL_CERT_FILE=" + dir + "/devstack-ca.pem", "STATE_STORE=file://", "EXPORT_SINK=file://", "DEFENDER_TOKEN_VERSION=v2"} {
		if !strings.Contains(env, "\n"+k) {
			t.Errorf("devstack.env lacks %s", k)
		}
	}
	if strings.Contains(env, s.ClientSecret(devstack.DefaultClientID)) {
		t.Fatal("the client secret was written to the env file")
	}
	raw, err := readFile(dir + "/local.settings.json")
	if err != nil {
		t.Fatal(err)
	}
	var ls struct {
		IsEncrypted bool
		Values      map[string]string
	}
	if err := json.Unmarshal([]byte(raw), &ls); err != nil || ls.Values["FUNCTIONS_WORKER_RUNTIME"] != "custom" || ls.Values["KEY_VAULT_URL"] != s.KeyVaultURL+"/" {
		t.Fatalf("local.settings.json: %v %v", err, ls.Values)
	}
}

// listed is one listing of every incident: each one's ID, created and last
// update, in the order served, following nextLink.
type listed struct{ id, created, updated string }

func listAll(t *testing.T, s *devstack.Stack, first, tok string) []listed {
	t.Helper()
	var out []listed
	for u := first; u != ""; {
		p := listPage(t, s, u, tok)
		for _, v := range p.Value {
			var m struct{ ID, CreatedDateTime, LastUpdateDateTime string }
			json.Unmarshal(v, &m)
			out = append(out, listed{m.ID, m.CreatedDateTime, m.LastUpdateDateTime})
		}
		u = p.NextLink
	}
	return out
}

func sortedBy(l []listed, key func(listed) string, desc bool) bool {
	for i := 1; i < len(l); i++ {
		a, b := key(l[i-1]), key(l[i])
		if desc && a < b || !desc && a > b {
			return false
		}
	}
	return true
}

// Listings behave as a live tenant was observed to by default, and as
// documented behind DocumentedOrder (research: defender-api.md §6.1a).
func TestListingOrder(t *testing.T) {
	t.Parallel()
	created := func(l listed) string { return l.created }
	updated := func(l listed) string { return l.updated }
	base := "/v1.0/security/incidents?$top=50"
	for _, tc := range []struct {
		name       string
		documented bool
		query      string
		status     int
		check      func([]listed) bool
	}{
		{"observed: no order is newest first", false, "", 200, func(l []listed) bool { return !sortedBy(l, created, true) && !sortedBy(l, updated, false) }},
		{"observed: lastUpdate asc is ignored", false, "&$orderby=" + url.QueryEscape("lastUpdateDateTime asc"), 200, func(l []listed) bool { return !sortedBy(l, updated, false) }},
		{"observed: lastUpdate desc is ignored", false, "&$orderby=" + url.QueryEscape("lastUpdateDateTime desc"), 200, func(l []listed) bool { return !sortedBy(l, updated, true) }},
		{"observed: createdDateTime is honoured", false, "&$orderby=" + url.QueryEscape("createdDateTime desc"), 200, func(l []listed) bool { return sortedBy(l, created, true) }},
		{"observed: severity is a 400", false, "&$orderby=" + url.QueryEscape("severity desc"), 400, nil},
		{"documented: newest created first", true, "", 200, func(l []listed) bool { return sortedBy(l, created, true) }},
		{"documented: lastUpdate asc is honoured", true, "&$orderby=" + url.QueryEscape("lastUpdateDateTime asc"), 200, func(l []listed) bool { return sortedBy(l, updated, false) }},
		{"documented: severity is a 400", true, "&$orderby=" + url.QueryEscape("severity desc"), 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, devstack.Options{DocumentedOrder: tc.documented})
			tok := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
			if tc.status != 200 {
				r := do(t, s, "GET", s.GraphURL+base+tc.query, tok, nil)
				if r.status != tc.status || errorCode(t, r) != "BadRequest" {
					t.Fatalf("%d %s", r.status, r.body)
				}
				return
			}
			l := listAll(t, s, s.GraphURL+base+tc.query, tok)
			if len(l) != s.IncidentCount(devstack.DefaultTenantID) {
				t.Fatalf("listed %d of %d", len(l), s.IncidentCount(devstack.DefaultTenantID))
			}
			if !tc.check(l) {
				t.Fatalf("wrong order: %v …", l[:5])
			}
			// Stable: the unchanged set lists the same way twice, and its
			// pages neither repeat nor skip anyone.
			again := listAll(t, s, s.GraphURL+base+tc.query, tok)
			seen := map[string]bool{}
			for i := range l {
				if again[i] != l[i] || seen[l[i].id] {
					t.Fatalf("listing %d differs or repeats: %v / %v", i, l[i], again[i])
				}
				seen[l[i].id] = true
			}
		})
	}
	t.Run("rejectOrderBy fault", func(t *testing.T) {
		s := start(t, devstack.Options{Faults: devstack.Faults{RejectOrderBy: true}})
		tok := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
		if r := do(t, s, "GET", s.GraphURL+base+"&$orderby=createdDateTime", tok, nil); r.status != 400 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		listPage(t, s, s.GraphURL+base, tok)
	})
}

// With the replication-lag fault, a new version is listed only after the
// delay; until then listings show the one before, and GET the new one.
func TestReplicationLag(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Faults: devstack.Faults{LagShare: 1, LagMs: 3000}})
	tok := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	all := s.GraphURL + "/v1.0/security/incidents?$filter=" + url.QueryEscape("lastUpdateDateTime ge 2000-01-01T00:00:00Z")
	find := func(id string) string {
		for _, l := range listAll(t, s, all, tok) {
			if l.id == id {
				return l.updated
			}
		}
		return ""
	}
	before := find("1001")
	patched := time.Now()
	r := do(t, s, "PATCH", s.GraphURL+"/v1.0/security/incidents/1001", tok, strings.NewReader(`{"assignedTo":"late@contoso.com"}`))
	if r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	after := r.json(t)["lastUpdateDateTime"].(string)
	if got := find("1001"); got != before {
		t.Fatalf("listed %s at once, want the old %s", got, before)
	}
	if got := do(t, s, "GET", s.GraphURL+"/v1.0/security/incidents/1001", tok, nil).json(t)["lastUpdateDateTime"]; got != after {
		t.Fatalf("GET shows %v, want %s", got, after)
	}
	time.Sleep(time.Until(patched.Add(3100 * time.Millisecond)))
	if got := find("1001"); got != after {
		t.Fatalf("listed %s after the lag, want %s", got, after)
	}
}
