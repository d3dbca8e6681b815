package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/uuid"

	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/sink"
)

// siemStack starts a devstack whose managed identity is this test's own
// (the SDK caches managed-identity tokens process-wide by identity).
func siemStack(t *testing.T, o devstack.SIEMOptions) (*devstack.Stack, credentials.Registration) {
	t.Helper()
	id := uuid.NewString()
	s := devstack.Start(t, devstack.Options{IdentityClientID: id, SIEM: o})
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	return s, credentials.Registration{VaultAccess: config.VaultManagedIdentity, ManagedIdentityClientID: id, AuthorityHost: s.EntraURL,
		KeyVaultURL: s.KeyVaultURL + "/", SecretTTL: time.Hour}
}

// versions are n versions of a Graph incident with its alerts expanded
// (testdata/graph-incident.json, as the devstack lists them), each with its
// own ID and last update, padded to about size bytes when size > 0.
func versions(t *testing.T, n, size int) []sink.Object {
	t.Helper()
	raw, err := os.ReadFile("testdata/graph-incident.json")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 30, 8, 0, 0, 123456700, time.UTC)
	out := make([]sink.Object, n)
	for i := range out {
		var m map[string]any
		json.Unmarshal(raw, &m)
		id := fmt.Sprint(1000 + i)
		lu := base.Add(time.Duration(i) * time.Second)
		m["id"], m["lastUpdateDateTime"] = id, lu.Format(time.RFC3339Nano)
		if size > 0 {
			m["description"] = strings.Repeat("d", size)
		}
		b, _ := json.Marshal(m)
		out[i] = sink.Object{Name: "contoso/" + id + ".json", Data: append(b, '\n'), Tenant: "contoso", ID: id, LastUpdate: lu}
	}
	return out
}

// The Logs Ingestion sink: rows with the version's identity, batches
// within the API's limit, a 413 halved, a 429 waited out, refusals that
// say what to fix and write nothing.
func TestLogsSink(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		siem    devstack.SIEMOptions
		n, size int
		// alerts of alertSize bytes of evidence each replace the sample's
		alerts, alertSize int
		omitted           bool // the alerts lose their evidence
		rows              int
		setup             func(s *devstack.Stack)
		url               func(s *devstack.Stack) string
		cred              func(t *testing.T, s *devstack.Stack, reg credentials.Registration) azcore.TokenCredential
		wantErr           string
		// requests the API accepted (204) and refused too large (413), throttled (429)
		ok, tooLarge, throttled int64
	}{
		{name: "rows", n: 3, ok: 1, rows: 3},
		{name: "batches under 1 MB", n: 300, size: 1000, ok: 3, rows: 300},
		{name: "413 halves the batch", siem: devstack.SIEMOptions{LogsMaxBytes: 200_000}, n: 60, size: 1000, ok: 4, tooLarge: 3, rows: 60},
		{name: "429 waits as Retry-After says", n: 5, setup: func(s *devstack.Stack) { s.ThrottleSink(2) }, ok: 1, throttled: 2, rows: 5},
		// Past 64 KB the service truncates a field: 40 alerts of 5 KB are
		// spread over rows, whole; an alert of 100 KB loses its evidence.
		{name: "alerts over several rows", n: 2, alerts: 40, alertSize: 5000, ok: 1, rows: 8},
		{name: "an alert larger than a field", n: 2, alerts: 1, alertSize: 100_000, omitted: true, ok: 1, rows: 2},
		{name: "an incident over a field's 64 KB", n: 1, size: 70_000, wantErr: "the incident without its alerts is 70605 bytes, more than a Log Analytics field holds"},
		{name: "identity without the role", n: 2, wantErr: "'Monitoring Metrics Publisher' role on data collection rule",
			cred: func(t *testing.T, s *devstack.Stack, _ credentials.Registration) azcore.TokenCredential {
				c, err := azidentity.NewClientSecretCredential(devstack.DefaultTenantID, devstack.DefaultClientID, s.ClientSecret(devstack.DefaultClientID),
					&azidentity.ClientSecretCredentialOptions{ClientOptions: policy.ClientOptions{Transport: s.HTTPClient(), Cloud: cloudOf(s)}, DisableInstanceDiscovery: true})
				if err != nil {
					t.Fatal(err)
				}
				return c
			}},
		{name: "unknown rule", n: 2, wantErr: "knows no data collection rule dcr-00000000000000000000000000000000",
			url: func(s *devstack.Stack) string {
				return s.LogsURL + "/dataCollectionRules/dcr-00000000000000000000000000000000/streams/" + devstack.LogsStream
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, reg := siemStack(t, tc.siem)
			var cred azcore.TokenCredential
			if tc.cred != nil {
				cred = tc.cred(t, s, reg)
			} else {
				c, err := credentials.AzureCredential(reg, s.HTTPClient())
				if err != nil {
					t.Fatal(err)
				}
				cred = c
			}
			u := s.LogsStreamURL()
			if tc.url != nil {
				u = tc.url(s)
			}
			sk, err := sink.Open(u, sink.Options{Logs: sink.LogsOptions{Credential: cred, HTTPClient: s.HTTPClient(), Now: func() time.Time { return now }}})
			if err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(s)
			}
			objs := versions(t, tc.n, tc.size)
			if tc.alerts > 0 {
				objs = withAlerts(t, objs, tc.alerts, tc.alertSize)
			}
			err = sk.Write(context.Background(), objs)
			rows := s.LogsRows()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Write = %v, want an error containing %q", err, tc.wantErr)
				}
				if len(rows) != 0 {
					t.Fatalf("%d rows ingested by a failed write", len(rows))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := s.Counters()
			if got := [3]int64{c.Get("logs.upload", 204), c.Get("logs.upload", 413), c.Get("logs.upload", 429)}; got != [3]int64{tc.ok, tc.tooLarge, tc.throttled} {
				t.Errorf("requests 204/413/429 = %v, want %v", got, [3]int64{tc.ok, tc.tooLarge, tc.throttled})
			}
			got := reassemble(t, rows)
			if len(got) != len(objs) || len(rows) != tc.rows {
				t.Fatalf("%d rows holding %d versions, want %d rows holding %d", len(rows), len(got), tc.rows, len(objs))
			}
			for _, o := range objs {
				id := "contoso/" + o.ID + "/" + o.LastUpdate.Format("2006-01-02T15:04:05.0000000Z")
				v, ok := got[id]
				if !ok {
					t.Fatalf("no row has VersionId %s", id)
				}
				if v.tenant != "contoso" || v.incident != o.ID || !v.lastUpdate.Equal(o.LastUpdate) || !v.generated.Equal(now) {
					t.Fatalf("%s's rows: %+v", id, v)
				}
				var want map[string]any
				json.Unmarshal(o.Data, &want)
				if tc.omitted {
					for _, a := range want["alerts"].([]any) {
						am := a.(map[string]any)
						delete(am, "evidence")
						am["evidenceOmitted"] = true
					}
				}
				if a, b := canon(v.json), canon(want); a != b {
					t.Fatalf("%s's rows put together are not the version:\n%.300s\nwant\n%.300s", id, a, b)
				}
			}
		})
	}
}

// withAlerts gives each version n copies of its first alert, each with
// evidence of about size bytes.
func withAlerts(t *testing.T, objs []sink.Object, n, size int) []sink.Object {
	for i, o := range objs {
		var m map[string]any
		json.Unmarshal(o.Data, &m)
		first := m["alerts"].([]any)[0].(map[string]any)
		var alerts []any
		for k := range n {
			a := map[string]any{}
			for key, v := range first {
				a[key] = v
			}
			a["id"] = fmt.Sprintf("da%d_%d", i, k)
			a["evidence"] = []any{map[string]any{"@odata.type": "#microsoft.graph.security.processEvidence", "processCommandLine": strings.Repeat("p", size)}}
			alerts = append(alerts, a)
		}
		m["alerts"] = alerts
		b, _ := json.Marshal(m)
		objs[i].Data = append(b, '\n')
	}
	return objs
}

// version is a version put together from its rows.
type version struct {
	tenant, incident      string
	lastUpdate, generated time.Time
	json                  map[string]any // the incident, its alerts back in
}

// reassemble puts each version's rows together, as the README's query
// does: one row per version and part, the alerts of parts 0..Parts-1 in
// order. It fails on a version with a part missing or a part twice.
func reassemble(t *testing.T, rows []map[string]any) map[string]*version {
	t.Helper()
	byID := map[string][]map[string]any{}
	for _, r := range rows {
		id := r["VersionId"].(string)
		byID[id] = append(byID[id], r)
	}
	out := map[string]*version{}
	for id, rs := range byID {
		parts := make([]map[string]any, rs[0]["Parts"].(int64))
		for _, r := range rs {
			p := r["Part"].(int64)
			if int(p) >= len(parts) || parts[p] != nil {
				t.Fatalf("%s: part %d of %d twice or out of range", id, p, len(parts))
			}
			parts[p] = r
		}
		v := &version{tenant: rs[0]["Tenant"].(string), incident: rs[0]["IncidentId"].(string),
			lastUpdate: rs[0]["LastUpdateDateTime"].(time.Time), generated: rs[0]["TimeGenerated"].(time.Time)}
		var alerts []any
		for i, p := range parts {
			if p == nil {
				t.Fatalf("%s: part %d of %d missing", id, i, len(parts))
			}
			raw, ok := p["Alerts"].(json.RawMessage)
			if !ok {
				t.Fatalf("%s part %d: Alerts is not JSON (truncated by the service?)", id, i)
			}
			var as []any
			json.Unmarshal(raw, &as)
			alerts = append(alerts, as...)
		}
		inc, ok := parts[0]["Incident"].(json.RawMessage)
		if !ok {
			t.Fatalf("%s: Incident is not JSON (truncated by the service?)", id)
		}
		json.Unmarshal(inc, &v.json)
		v.json["alerts"] = alerts
		out[id] = v
	}
	return out
}

func canon(v any) string { b, _ := json.Marshal(v); return string(b) }

func cloudOf(s *devstack.Stack) cloud.Configuration {
	return cloud.Configuration{ActiveDirectoryAuthorityHost: s.EntraURL + "/", Services: map[cloud.ServiceName]cloud.ServiceConfiguration{}}
}

// The Splunk sink: events with the version's identity, a 413 halved, a
// busy collector waited out, indexer acknowledgement awaited, a rotated
// token read again from Key Vault, a lost acknowledgement an error.
func TestSplunkSink(t *testing.T) {
	cases := []struct {
		name    string
		siem    devstack.SIEMOptions
		ack     bool
		n, size int
		setup   func(s *devstack.Stack)
		secret  string
		wantErr string
		// events the collector holds afterwards (default n)
		events int
		// requests answered 200, 413, 503
		ok, tooLarge, busy int64
	}{
		{name: "events", n: 3, ok: 1},
		{name: "batches under max_content_length", n: 300, size: 1000, ok: 3},
		{name: "413 halves the batch", siem: devstack.SIEMOptions{HECMaxBytes: 200_000}, n: 60, size: 1000, ok: 4, tooLarge: 3},
		{name: "busy collector waited out", n: 5, setup: func(s *devstack.Stack) { s.ThrottleSink(2) }, ok: 1, busy: 2},
		// A version larger than the request size configured here goes alone:
		// the collector's own limit decides (Splunk Enterprise's may be far
		// larger), and a 413 for it says what to raise.
		{name: "a version over the limit goes alone", siem: devstack.SIEMOptions{HECMaxBytes: 4 << 20}, n: 3, size: 1_500_000, ok: 3},
		{name: "a version over the collector's limit", n: 2, size: 1_500_000, wantErr: "the service refused one version of", events: 0},
		{name: "indexer acknowledgement", siem: devstack.SIEMOptions{HECAck: true, HECAckDelay: 300 * time.Millisecond}, ack: true, n: 120, size: 9000, ok: 2},
		{name: "ack on at the collector, off here", siem: devstack.SIEMOptions{HECAck: true}, n: 3, ok: 1},
		{name: "rotated token read again", n: 3, setup: func(s *devstack.Stack) { s.RotateHECToken() }, ok: 1},
		{name: "acknowledgement lost", siem: devstack.SIEMOptions{HECAck: true}, ack: true, n: 3, setup: func(s *devstack.Stack) { s.LoseHECAcks(1) },
			wantErr: "did not acknowledge 1 of 1 requests within 1s: they are sent again next run", events: 0},
		{name: "unknown token", n: 3, secret: "not-the-token", wantErr: `code 4 "Invalid token": the token is disabled or unknown`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, reg := siemStack(t, tc.siem)
			name := devstack.HECTokenSecret
			if tc.secret != "" {
				name = "other-token"
				s.PutSecret(name, tc.secret)
			}
			tok, err := credentials.NewVaultSecret(reg, name, config.EnvSplunkTokenSecret, &credentials.Options{HTTPClient: s.HTTPClient()})
			if err != nil {
				t.Fatal(err)
			}
			sk, err := sink.Open(s.HECEventURL(), sink.Options{Splunk: sink.SplunkOptions{Token: tok, HTTPClient: s.HTTPClient(), Ack: tc.ack,
				AckTimeout: time.Second, RetryBase: 50 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			// The token is read (and cached) before the collector's changes.
			if _, err := tok.Value(context.Background()); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(s)
			}
			objs := versions(t, tc.n, tc.size)
			err = sk.Write(context.Background(), objs)
			if err == nil && tc.ack {
				// Indexed once the tenant's writes are synced.
				if c := s.Counters().Get("hec.ack", 0); c != 0 {
					t.Fatalf("Write waited for acknowledgement (%d requests)", c)
				}
				err = sk.(sink.ScopeSyncer).SyncScope(context.Background(), "contoso")
			}
			events := s.HECEvents()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Write = %v, want an error containing %q", err, tc.wantErr)
				}
				if len(events) != tc.events {
					t.Fatalf("%d events indexed, want %d", len(events), tc.events)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := s.Counters()
			if got := [3]int64{c.Get("hec.event", 200), c.Get("hec.event", 413), c.Get("hec.event", 503)}; got != [3]int64{tc.ok, tc.tooLarge, tc.busy} {
				t.Errorf("requests 200/413/503 = %v, want %v", got, [3]int64{tc.ok, tc.tooLarge, tc.busy})
			}
			if tc.ack && c.Get("hec.ack", 200) == 0 {
				t.Error("Write returned without asking for acknowledgement")
			}
			if len(events) != len(objs) {
				t.Fatalf("%d events for %d versions", len(events), len(objs))
			}
			for i, o := range objs {
				var ev sink.SplunkEvent
				if err := json.Unmarshal(events[i], &ev); err != nil {
					t.Fatal(err)
				}
				want := sink.SplunkFields{VersionID: "contoso/" + o.ID + "/" + o.LastUpdate.Format("2006-01-02T15:04:05.0000000Z"), Tenant: "contoso", IncidentID: o.ID}
				if ev.Fields != want || ev.Sourcetype != "defender:incident" || ev.Time != float64(o.LastUpdate.UnixMicro())/1e6 {
					t.Fatalf("event %d = %+v, want fields %+v at %v", i, ev, want, o.LastUpdate)
				}
				if string(ev.Event) != strings.TrimSpace(string(o.Data)) {
					t.Fatalf("event %d is not the version's JSON:\n%.200s", i, ev.Event)
				}
			}
		})
	}
}

// Check shows a SIEM reachable and writable without writing a row.
func TestSIEMCheck(t *testing.T) {
	s, reg := siemStack(t, devstack.SIEMOptions{HECAck: true})
	cred, err := credentials.AzureCredential(reg, s.HTTPClient())
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := credentials.NewVaultSecret(reg, devstack.HECTokenSecret, config.EnvSplunkTokenSecret, &credentials.Options{HTTPClient: s.HTTPClient()})
	s.PutSecret("wrong", "0b1c9d2e-0000-4000-8000-000000000000")
	bad, _ := credentials.NewVaultSecret(reg, "wrong", config.EnvSplunkTokenSecret, &credentials.Options{HTTPClient: s.HTTPClient()})
	o := sink.Options{Logs: sink.LogsOptions{Credential: cred, HTTPClient: s.HTTPClient()}}
	cases := []struct {
		name, url string
		token     sink.Secret
		wantErr   string
	}{
		{"logs", s.LogsStreamURL(), nil, ""},
		{"logs, unknown stream", strings.Replace(s.LogsStreamURL(), devstack.LogsStream, "Custom-Other", 1), nil, "with stream Custom-Other"},
		{"splunk", s.HECEventURL(), tok, ""},
		{"splunk, unknown token", s.HECEventURL(), bad, "Invalid token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o.Splunk = sink.SplunkOptions{Token: tc.token, HTTPClient: s.HTTPClient(), RetryBase: 10 * time.Millisecond}
			sk, err := sink.Open(tc.url, o)
			if err != nil {
				t.Fatal(err)
			}
			err = sk.(sink.Checker).Check(context.Background())
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Check = %v, want error %q", err, tc.wantErr)
			}
		})
	}
	if n, m := len(s.LogsRows()), len(s.HECEvents()); n+m != 0 {
		t.Fatalf("Check wrote %d rows and %d events", n, m)
	}
}
