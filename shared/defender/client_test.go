package defender_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
)

func TestList10kExactlyOnce(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 10_000})
	for _, api := range []string{"graph", "xdr"} {
		t.Run(api, func(t *testing.T) {
			c := client(t, s, settings(t, s, api), nil)
			before := s.Counters().Get(api+".incidents.list", 0)
			all, requests, pages, err := listAll(t, context.Background(), c, defender.ListOptions{OrderByLastUpdate: true, WithAlerts: true})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, in := range all {
				if seen[in.ID] {
					t.Fatalf("incident %s twice", in.ID)
				}
				seen[in.ID] = true
				if len(in.Alerts) == 0 {
					t.Fatalf("incident %s without alerts", in.ID)
				}
			}
			served := int(s.Counters().Get(api+".incidents.list", 0) - before)
			wantPages := map[string]int{"graph": 200, "xdr": 101}[api] // XDR learns the end from a short (here empty) page
			if len(seen) != 10_000 || requests != pages || served != pages || pages != wantPages {
				t.Fatalf("%d incidents, %d requests, %d served, %d pages (want 10000 and %d pages, one request each)", len(seen), requests, served, pages, wantPages)
			}
		})
	}
}

// 30 % of requests fail with 5xx, bodies are sometimes cut, and the rate
// limit is tight: the listing is still complete, and our pacing causes at
// most one 429.
func TestListUnderFaultsAndRateLimit(t *testing.T) {
	t.Parallel()
	const scale = 20 // a "minute" lasts 3 s: Graph allows 150 per 3 s
	s := start(t, devstack.Options{Incidents: 3000, Limits: devstack.DocumentedLimits, TimeScale: scale,
		Faults: devstack.Faults{ErrorRate: 0.3, TruncateRate: 0.05}})
	scaled := defender.Limits{"security": {{150, time.Minute / scale}}}
	c := client(t, s, settings(t, s, "graph"), &defender.Options{Limits: scaled, MaxAttempts: 12})
	all, _, _, err := listAll(t, context.Background(), c, defender.ListOptions{OrderByLastUpdate: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, in := range all {
		seen[in.ID] = true
	}
	if len(seen) != 3000 || len(all) != 3000 {
		t.Fatalf("%d incidents (%d distinct), want 3000", len(all), len(seen))
	}
	if n := s.Counters().Get("graph.incidents.list", 429); n > 1 {
		t.Fatalf("%d responses were 429: our pacing overran the limit", n)
	}
	if s.Counters().Get("graph.incidents.list", 500)+s.Counters().Get("graph.incidents.list", 503)+s.Counters().Get("graph.incidents.list", 504) == 0 {
		t.Fatal("no fault was injected")
	}
}

func TestListStopsAtDeadline(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 2000})
	slow := defender.Limits{"security": {{10, time.Second}}}
	c := client(t, s, settings(t, s, "graph"), &defender.Options{Limits: slow})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	all, _, pages, err := listAll(t, ctx, c, defender.ListOptions{OrderByLastUpdate: true})
	var ie *defender.IncompleteError
	if !errors.As(err, &ie) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, defender.ErrIncompleteListing) {
		t.Fatalf("err = %v", err)
	}
	if ie.Pages != pages || ie.Incidents != len(all) || pages == 0 || ie.Through != all[len(all)-1].LastUpdate {
		t.Fatalf("progress %+v, delivered %d pages and %d incidents", ie, pages, len(all))
	}
	if !strings.Contains(err.Error(), "incident listing stopped after") {
		t.Fatalf("message %q", err)
	}
}

func TestForeignNextLinkRefused(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer evil.Close()
	s := start(t, devstack.Options{Incidents: 200, Faults: devstack.Faults{ForeignNextLink: evil.URL}})
	c := client(t, s, settings(t, s, "graph"), nil)
	all, _, pages, err := listAll(t, context.Background(), c, defender.ListOptions{})
	if !errors.Is(err, defender.ErrForeignNextLink) || pages != 1 || len(all) != 50 {
		t.Fatalf("err = %v after %d pages", err, pages)
	}
	if hits.Load() != 0 {
		t.Fatalf("the foreign host received %d requests", hits.Load())
	}
}

// $expand=alerts fails for large incidents: the page is read without it and
// alerts come from alerts_v2, spliced into the raw JSON.
func TestExpandFallback(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 400, Faults: devstack.Faults{ExpandFailAbove: 50}})
	c := client(t, s, settings(t, s, "graph"), &defender.Options{MaxAttempts: 2})
	fallbacks, large := 0, 0
	for p, err := range c.Incidents(context.Background(), defender.ListOptions{WithAlerts: true, OrderByLastUpdate: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if p.AlertsFallback {
			fallbacks++
		}
		for _, in := range p.Incidents {
			var raw struct{ Alerts []map[string]any }
			if err := json.Unmarshal(in.Raw, &raw); err != nil {
				t.Fatalf("raw JSON of %s broken: %v", in.ID, err)
			}
			if len(raw.Alerts) == 0 || len(raw.Alerts) != len(in.Alerts) {
				t.Fatalf("incident %s: %d raw alerts, %d normalized", in.ID, len(raw.Alerts), len(in.Alerts))
			}
			if len(in.Alerts) > 50 {
				large++
			}
		}
	}
	if fallbacks == 0 || large == 0 || s.Counters().Get("graph.alerts.list", 200) == 0 {
		t.Fatalf("fallbacks %d, large incidents %d", fallbacks, large)
	}
}

// flakySource hands out a token the API rejects once, like one revoked early.
type flakySource struct {
	credentials.Source
	bad         *credentials.Token
	invalidated atomic.Int32
}

func (f *flakySource) Token(ctx context.Context) (*credentials.Token, error) {
	if f.invalidated.Load() == 0 {
		return f.bad, nil
	}
	return f.Source.Token(ctx)
}

func (f *flakySource) Invalidate(t *credentials.Token) {
	if t == f.bad {
		f.invalidated.Add(1)
	}
	f.Source.Invalidate(t)
}

func TestUnauthorizedInvalidatesAndRetriesOnce(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	cfg := settings(t, s, "graph")
	creds, _ := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	src := &flakySource{Source: creds.Source(cfg.Tenants[0]), bad: &credentials.Token{AccessToken: "eyJhbGciOiJub25lIn0.e30.x", Expiry: time.Now().Add(time.Hour)}}
	c, _ := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], src, &defender.Options{HTTPClient: s.HTTPClient(), Limits: defender.NoLimits})
	in, err := c.Incident(context.Background(), "1000")
	if err != nil || in.ID != "1000" || src.invalidated.Load() != 1 {
		t.Fatalf("err %v, invalidated %d", err, src.invalidated.Load())
	}
	if s.Counters().Get("graph.incidents.get", 401) != 1 || s.Counters().Get("graph.incidents.get", 200) != 1 {
		t.Fatal("want exactly one 401 then one success")
	}
	// A token for the wrong API is rejected twice: the error says so, once.
	xcfg := settings(t, s, "xdr")
	xcreds, _ := credentials.New(functions.Registration(xcfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	wrong, _ := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], xcreds.Source(xcfg.Tenants[0]), &defender.Options{HTTPClient: s.HTTPClient(), Limits: defender.NoLimits})
	_, err = wrong.Incident(context.Background(), "1000")
	if !errors.Is(err, defender.ErrUnauthorized) || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("wrong audience: %v", err)
	}
}

func TestTypedErrors(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	for _, api := range []string{"graph", "xdr"} {
		c := client(t, s, settings(t, s, api), nil)
		reader := client(t, s, settings(t, s, api, "DEFENDER_CLIENT_ID", devstack.ReaderClientID), nil)
		_, err := c.Incident(context.Background(), "999999999")
		if !errors.Is(err, defender.ErrNotFound) {
			t.Errorf("%s not found: %v", api, err)
		}
		_, err = reader.Hunt(context.Background(), defender.HuntQuery{Query: "AlertInfo | take 1"})
		var ae *defender.APIError
		want := map[string]string{"graph": "ThreatHunting.Read.All", "xdr": "AdvancedHunting.Read.All"}[api]
		if !errors.As(err, &ae) || !errors.Is(err, defender.ErrForbidden) || len(ae.MissingRoles) != 1 || ae.MissingRoles[0] != want {
			t.Errorf("%s forbidden: %v", api, err)
		}
		_, err = c.Hunt(context.Background(), defender.HuntQuery{Query: "NoSuchTable | take 1"})
		if !errors.As(err, &ae) || !errors.Is(err, defender.ErrBadRequest) || !strings.Contains(ae.Message, "Failed to resolve table or column expression named 'NoSuchTable'") {
			t.Errorf("%s KQL error: %v", api, err)
		}
	}
	s.SetFaults(devstack.Faults{ThrottleRate: 1})
	c := client(t, s, settings(t, s, "graph"), nil)
	_, err := c.Hunt(context.Background(), defender.HuntQuery{Query: "AlertInfo | take 1"})
	var ae *defender.APIError
	if !errors.As(err, &ae) || !errors.Is(err, defender.ErrThrottled) || ae.RetryAfter != time.Second {
		t.Fatalf("throttled hunting: %v", err)
	}
}

func TestUpdateAndComment(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	for i, api := range []string{"graph", "xdr"} {
		c := client(t, s, settings(t, s, api), nil)
		id := []string{"1010", "1011"}[i]
		status, class, det, owner, tags := "Resolved", "FalsePositive", "NotMalicious", "secop2@contoso.com", []string{"Ticket ABC-1"}
		in, err := c.UpdateIncident(context.Background(), id, defender.Update{Status: &status, Classification: &class, Determination: &det, AssignedTo: &owner, Tags: &tags})
		if err != nil {
			t.Fatalf("%s: %v", api, err)
		}
		if in.Status != "resolved" || in.Classification != "falsePositive" || in.Determination != "clean" || in.AssignedTo != owner || len(in.Tags) != 1 {
			t.Fatalf("%s: %+v", api, in)
		}
		if err := c.AddComment(context.Background(), id, "[Jira ABC-1] closed as false positive"); err != nil {
			t.Fatal(err)
		}
		got, err := c.Incident(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if last := got.Comments[len(got.Comments)-1]; last.Text != "[Jira ABC-1] closed as false positive" || !got.LastUpdate.After(in.LastUpdate.Add(-time.Nanosecond)) {
			t.Fatalf("%s: comments %+v", api, got.Comments)
		}
	}
}

func TestHuntStreams(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	for _, api := range []string{"graph", "xdr"} {
		c := client(t, s, settings(t, s, api), nil)
		res, err := c.Hunt(context.Background(), defender.HuntQuery{Query: "DeviceProcessEvents | project Timestamp, DeviceName, FileName | take 1234", Timespan: "P30D"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Schema) != 3 || res.Schema[0] != (defender.Column{Name: "Timestamp", Type: "DateTime"}) {
			t.Fatalf("%s schema %+v", api, res.Schema)
		}
		if (api == "xdr") != (res.Stats != nil) {
			t.Fatalf("%s stats %s", api, res.Stats)
		}
		n := 0
		for {
			row, err := res.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if json.Unmarshal(row, &m) != nil || m["DeviceName"] == nil {
				t.Fatalf("row %s", row)
			}
			n++
		}
		res.Close()
		if n != 1234 {
			t.Fatalf("%s: %d rows", api, n)
		}
	}
}

// Requests name the product and ask Graph for evolvable enum members.
func TestHeaders(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	spy := &headerSpy{next: s.Transport()}
	c := client(t, s, settings(t, s, "graph"), &defender.Options{HTTPClient: &http.Client{Transport: spy}})
	if _, err := c.Incident(context.Background(), "1000"); err != nil {
		t.Fatal(err)
	}
	h := spy.headers[len(spy.headers)-1]
	if !strings.HasPrefix(h.Get("User-Agent"), "defender-functions/"+defender.Version) || h.Get("Prefer") != "include-unknown-enum-members" {
		t.Fatalf("headers %v", h)
	}
}

// The docs' sample responses decode to the expected values, and each
// incident's raw JSON is exactly the API's.
func TestDocSamples(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file   string
		api    string
		want   []defender.Incident
		alerts []int
	}{
		{"testdata/graph-incidents-list.json", "graph", []defender.Incident{{ID: "29", TenantID: "cfcdbe43-297b-4c6b-ac7e-8d7f6befb514", Status: "active", Severity: "high",
			Classification: "truePositive", Determination: "multiStagedAttack", AssignedTo: "admin@contoso.com", Tags: []string{"Demo"},
			Name:    "Multi-stage incident involving Execution & Command and control on one endpoint",
			Created: mustTime("2026-01-22T12:09:23.1433333Z"), LastUpdate: mustTime("2026-02-25T16:29:33.1Z")}}, []int{0}},
		{"testdata/xdr-incidents-list.json", "xdr", []defender.Incident{
			{ID: "924565", TenantID: "t", Status: "active", Severity: "medium", Classification: "unknown", Determination: "unknown", Name: "Ransomware activity",
				Created: mustTime("2020-09-06T14:46:57.0733333Z"), LastUpdate: mustTime("2020-09-06T14:46:57.29Z")},
			{ID: "924521", TenantID: "t", Status: "active", Severity: "low", Classification: "unknown", Determination: "unknown", Name: "'Mimikatz' hacktool was detected on one endpoint",
				Created: mustTime("2020-09-06T12:18:03.6266667Z"), LastUpdate: mustTime("2020-09-06T12:18:03.81Z")}}, []int{1, 1}},
	} {
		data, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ Value []json.RawMessage }
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		got, err := defender.DecodePage(tc.api, "t", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %d incidents", tc.file, len(got))
		}
		for i, w := range tc.want {
			g := got[i]
			if g.ID != w.ID || g.TenantID != w.TenantID || g.Status != w.Status || g.Severity != w.Severity || g.Classification != w.Classification ||
				g.Determination != w.Determination || g.AssignedTo != w.AssignedTo || g.Name != w.Name || !g.Created.Equal(w.Created) ||
				!g.LastUpdate.Equal(w.LastUpdate) || strings.Join(g.Tags, ",") != strings.Join(w.Tags, ",") || len(g.Alerts) != tc.alerts[i] {
				t.Errorf("%s #%d:\n got %+v\nwant %+v", tc.file, i, g, w)
			}
			if !bytes.Equal(g.Raw, doc.Value[i]) {
				t.Errorf("%s #%d: raw JSON changed", tc.file, i)
			}
		}
	}
	// The XDR sample's alert, device and comment come through.
	data, _ := os.ReadFile("testdata/xdr-incidents-list.json")
	got, _ := defender.DecodePage("xdr", "t", bytes.NewReader(data))
	if a := got[1].Alerts[0]; a.ID != "da637349914833441527_393341063" || a.ServiceSource != "MicrosoftDefenderATP" || a.Status != "new" {
		t.Errorf("alert %+v", a)
	}
	if c := got[0].Comments[0]; c.Text != "test comment for docs" || c.CreatedBy != "secop123@contoso.com" {
		t.Errorf("comment %+v", c)
	}
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// DEFENDER_RATE_LIMITS replaces the documented pacing (the app maps it to
// the client's Limits).
func TestRateLimitsSetting(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 400})
	for _, tc := range []struct {
		setting string
		slow    bool
	}{{"off", false}, {"security=2/1s", true}} {
		cfg := settings(t, s, "graph", "DEFENDER_RATE_LIMITS", tc.setting)
		creds, _ := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
		cl, _ := functions.NewClient(cfg, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), &defender.Options{HTTPClient: s.HTTPClient()})
		start := time.Now()
		if _, _, pages, err := listAll(t, context.Background(), cl, defender.ListOptions{PageSize: 50}); err != nil || pages != 8 {
			t.Fatalf("%s: %d pages, %v", tc.setting, pages, err)
		}
		// 8 requests at 2 per second cannot take less than 3.5 s (a guarantee
		// of the pacing, not a speed measurement).
		if took := time.Since(start); tc.slow && took < 3500*time.Millisecond {
			t.Fatalf("%s: 8 pages took only %s", tc.setting, took)
		}
	}
}

// A response larger than the client's limit is refused, not buffered.
func TestResponseSizeLimit(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 100})
	c := client(t, s, settings(t, s, "graph"), &defender.Options{MaxResponseBytes: 4096})
	_, _, _, err := listAll(t, context.Background(), c, defender.ListOptions{WithAlerts: true})
	if !errors.Is(err, defender.ErrResponseTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

// Adding a comment is not idempotent: after a 5xx the client does not send
// it again (the API may have stored it); a field-only PATCH is retried.
func TestCommentNotResentAfterServerError(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		api, endpoint, patchEndpoint string
	}{{"graph", "graph.incidents.comment", "graph.incidents.update"}, {"xdr", "xdr.incidents.update", "xdr.incidents.update"}} {
		s := start(t, devstack.Options{})
		cl := client(t, s, settings(t, s, c.api), nil)
		s.SetFaults(devstack.Faults{ErrorRate: 1})
		err := cl.AddComment(context.Background(), "1012", "[Jira ABC-2] once")
		if !errors.Is(err, defender.ErrUnavailable) {
			t.Fatalf("%s: %v", c.api, err)
		}
		if n := s.Counters().Get(c.endpoint, 0); n != 1 {
			t.Fatalf("%s: the comment was sent %d times, want 1", c.api, n)
		}
		s.Counters().Reset()
		status := "inProgress"
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = cl.UpdateIncident(ctx, "1012", defender.Update{Status: &status})
		cancel()
		if err == nil || s.Counters().Get(c.patchEndpoint, 0) < 2 {
			t.Fatalf("%s: a field-only PATCH was sent %d times (%v), want retries", c.api, s.Counters().Get(c.patchEndpoint, 0), err)
		}
	}
}

// KeysOnly lists the same incidents with the same raw documents; only the
// identity, version and creation time are decoded.
func TestKeysOnly(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 300})
	for _, api := range []string{"graph", "xdr"} {
		t.Run(api, func(t *testing.T) {
			c := client(t, s, settings(t, s, api), nil)
			full, _, _, err := listAll(t, context.Background(), c, defender.ListOptions{OrderByLastUpdate: true, WithAlerts: true})
			if err != nil {
				t.Fatal(err)
			}
			keys, _, _, err := listAll(t, context.Background(), c, defender.ListOptions{OrderByLastUpdate: true, WithAlerts: true, KeysOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 300 || len(full) != 300 {
				t.Fatalf("%d and %d incidents", len(full), len(keys))
			}
			for i, k := range keys {
				f := full[i]
				if k.ID != f.ID || !k.LastUpdate.Equal(f.LastUpdate) || !k.Created.Equal(f.Created) || f.Created.IsZero() || !bytes.Equal(k.Raw, f.Raw) {
					t.Fatalf("#%d: %s@%s, want %s@%s (raw equal %v)", i, k.ID, k.LastUpdate, f.ID, f.LastUpdate, bytes.Equal(k.Raw, f.Raw))
				}
				if k.Name != "" || len(k.Alerts) != 0 || len(f.Alerts) == 0 {
					t.Fatalf("#%d: keys-only decoded %q with %d alerts", i, k.Name, len(k.Alerts))
				}
			}
		})
	}
}

// Each page says whether the listing goes on and, when asked where the API
// offers it, the filtered set's @odata.count.
func TestListCountAndMore(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 230})
	for _, tc := range []struct {
		api       string
		count     bool
		wantCount int64
		pages     []int
	}{
		{"graph", true, 230, []int{50, 50, 50, 50, 30}},
		{"graph", false, -1, []int{50, 50, 50, 50, 30}},
		{"xdr", true, -1, []int{100, 100, 30}}, // the XDR API documents no $count: not sent
	} {
		t.Run(fmt.Sprintf("%s/count=%v", tc.api, tc.count), func(t *testing.T) {
			c := client(t, s, settings(t, s, tc.api), nil)
			if got := c.Capabilities().Count; got != (tc.api == "graph") {
				t.Fatalf("Capabilities().Count = %v", got)
			}
			var sizes []int
			for p, err := range c.Incidents(context.Background(), defender.ListOptions{Count: tc.count, KeysOnly: true}) {
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(p.Incidents))
				if p.Count != tc.wantCount {
					t.Fatalf("page %d: Count = %d, want %d", len(sizes), p.Count, tc.wantCount)
				}
				if last := len(sizes) == len(tc.pages); p.More == last {
					t.Fatalf("page %d of %d: More = %v", len(sizes), len(tc.pages), p.More)
				}
			}
			if !slices.Equal(sizes, tc.pages) {
				t.Fatalf("pages %v, want %v", sizes, tc.pages)
			}
		})
	}
}

// New refuses what is not a backend or not a base URL, saying what it wants.
func TestNewRefusesBadArguments(t *testing.T) {
	for _, tc := range []struct {
		api  defender.API
		url  string
		want string
	}{
		{"mde", "https://graph.microsoft.com", `API "mde": use defender.Graph or defender.XDR`},
		{defender.Graph, "graph.microsoft.com", `"graph.microsoft.com" is not the API's base URL`},
		{defender.XDR, "", `"" is not the API's base URL`},
	} {
		if _, err := defender.New(tc.api, tc.url, "contoso.onmicrosoft.com", nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %q) = %v, want %q", tc.api, tc.url, err, tc.want)
		}
	}
	if c, err := defender.New(defender.XDR, "https://api.security.microsoft.com/", "contoso.onmicrosoft.com", nil, nil); err != nil || c.API() != "xdr" {
		t.Fatalf("a good XDR client: %v", err)
	}
}

// A creation-time range lists exactly the incidents created in it, on both
// APIs, with or without a last-update range beside it.
func TestListCreatedRange(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Incidents: 400})
	for _, api := range []string{"graph", "xdr"} {
		t.Run(api, func(t *testing.T) {
			c := client(t, s, settings(t, s, api), nil)
			all, _, _, err := listAll(t, context.Background(), c, defender.ListOptions{KeysOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			created := make([]time.Time, 0, len(all))
			for _, in := range all {
				created = append(created, in.Created)
			}
			slices.SortFunc(created, time.Time.Compare)
			lo, hi := created[100], created[300]
			for _, tc := range []struct {
				name string
				o    defender.ListOptions
				in   func(*defender.Incident) bool
			}{
				{"from", defender.ListOptions{CreatedSince: lo}, func(in *defender.Incident) bool { return !in.Created.Before(lo) }},
				{"before", defender.ListOptions{CreatedBefore: hi}, func(in *defender.Incident) bool { return in.Created.Before(hi) }},
				{"both", defender.ListOptions{CreatedSince: lo, CreatedBefore: hi}, func(in *defender.Incident) bool { return !in.Created.Before(lo) && in.Created.Before(hi) }},
				{"with updates", defender.ListOptions{Since: lo, CreatedSince: lo, CreatedBefore: hi}, func(in *defender.Incident) bool {
					return !in.Created.Before(lo) && in.Created.Before(hi) && !in.LastUpdate.Before(lo)
				}},
			} {
				tc.o.KeysOnly = true
				got, _, _, err := listAll(t, context.Background(), c, tc.o)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				want := map[string]bool{}
				for _, in := range all {
					if tc.in(in) {
						want[in.ID] = true
					}
				}
				if len(got) != len(want) || len(want) == 0 {
					t.Fatalf("%s: %d incidents, want %d", tc.name, len(got), len(want))
				}
				for _, in := range got {
					if !want[in.ID] {
						t.Fatalf("%s: incident %s (created %s) is outside the range", tc.name, in.ID, in.Created)
					}
				}
			}
		})
	}
}
