package ticketwebhook_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/defender-functions/defender-functions/functions"
	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/lambdahandler"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

// rig is the app over a devstack, with fresh secrets for every provider.
type rig struct {
	s        *devstack.Stack
	app      *function.App
	stateDir string
	settings map[string]string
	jira     []byte // Jira's plain secret
	sn, gen  []byte // Standard Webhooks keys
	logs     *devstack.LogBuffer
}

func randomKey(t testing.TB) []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func newRig(t *testing.T, api string, kv ...string) *rig {
	t.Helper()
	s := devstack.Start(t, devstack.Options{})
	r := &rig{s: s, stateDir: t.TempDir(), logs: &devstack.LogBuffer{}, sn: randomKey(t), gen: randomKey(t)}
	r.jira = []byte(base64.RawURLEncoding.EncodeToString(randomKey(t)))
	m := s.Settings()
	m["DEFENDER_API"] = api
	if api == "xdr" {
		m["DEFENDER_API_URL"] = s.XDRURL
	}
	m["DEFENDER_CREDENTIAL"], m["DEFENDER_CLIENT_SECRET"] = "env-secret", s.ClientSecret(devstack.DefaultClientID)
	m["STATE_STORE"] = "file://" + r.stateDir
	m["DEFENDER_RATE_LIMITS"] = "off"
	m["WEBHOOK_SECRET_JIRA"] = string(r.jira)
	m["WEBHOOK_SECRET_SERVICENOW"] = "whsec_" + base64.StdEncoding.EncodeToString(r.sn)
	m["WEBHOOK_SECRET_GENERIC"] = "whsec_" + base64.StdEncoding.EncodeToString(r.gen)
	m["WEBHOOK_TIMEOUT"] = "5s"
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	if m[config.EnvWebhookSecretsARN] == secretsManager {
		m[config.EnvWebhookSecretsARN] = r.useSecretsManager(t, m)
	}
	m["DEFENDER_CLIENT_SECRET"] = s.ClientSecret(m["DEFENDER_CLIENT_ID"])
	r.settings = m
	app, err := functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, slog.New(slog.NewJSONHandler(io.MultiWriter(r.logs, devstack.AuditLog()), nil)),
		&functions.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	r.app = app
	return r
}

// client reads incidents the way a test checks them, outside the function.
func (r *rig) client(t testing.TB) defender.Client {
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := r.settings[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	creds, err := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: r.s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), &defender.Options{HTTPClient: r.s.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reset puts an incident back to active and unclassified.
func (r *rig) reset(t testing.TB, id string) {
	t.Helper()
	active, unknown := "active", "unknown"
	if _, err := r.client(t).UpdateIncident(context.Background(), id, defender.Update{Status: &active, Classification: &unknown, Determination: &unknown}); err != nil {
		t.Fatal(err)
	}
}

// apiCalls is how many requests the Defender APIs have answered.
func (r *rig) apiCalls() int64 {
	var n int64
	for ep, by := range r.s.Counters().Snapshot() {
		if strings.HasPrefix(ep, "graph.") || strings.HasPrefix(ep, "xdr.") {
			for _, c := range by {
				n += c
			}
		}
	}
	return n
}

// stateFiles is every document in the state store.
func (r *rig) stateFiles(t testing.TB) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(r.stateDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			out[p] = string(b)
		}
		return nil
	})
	return out
}

type delivery struct {
	provider string
	header   http.Header
	body     []byte
}

// jiraDelivery is a fixture as Jira sends it now: the body's timestamp is
// the event time, the signature covers the raw body.
func (r *rig) jiraDelivery(t testing.TB, name, id string, at time.Time, edit ...func(string) string) delivery {
	body := strings.Replace(string(fixture(t, name)), "1764165600000", strconv.FormatInt(at.UnixMilli(), 10), 1)
	for _, e := range edit {
		body = e(body)
	}
	h := http.Header{"Content-Type": {"application/json; charset=UTF-8"}, "X-Atlassian-Webhook-Identifier": {id}, "X-Atlassian-Webhook-Flow": {"Primary"}}
	h.Set(webhook.HeaderHubSignature, webhook.SignHub(r.jira, []byte(body)))
	return delivery{"jira", h, []byte(body)}
}

func standardDelivery(provider string, key []byte, id string, at time.Time, body []byte) delivery {
	h := http.Header{"Content-Type": {"application/json"}}
	h.Set(webhook.HeaderID, id)
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(webhook.HeaderSignature, webhook.SignStandard(key, id, at, body))
	return delivery{provider, h, body}
}

type answer struct {
	status int
	retry  string
	ticketwebhookOutcome
}

type ticketwebhookOutcome struct {
	Status   string   `json:"status"`
	Incident string   `json:"incident"`
	Updated  []string `json:"updated"`
	Comment  string   `json:"comment"`
	Reason   string   `json:"reason"`
	Notes    []string `json:"notes"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r *rig) send(t testing.TB, d delivery) answer {
	t.Helper()
	route := r.app.HTTP[ticketwebhook.Function.Name]
	resp := route.Func(function.WithInvocation(context.Background(), r.app.Log(), "test"), &function.HTTPRequest{Method: "POST",
		Path: "/api/ticket-webhook/" + d.provider, Params: map[string]string{"provider": d.provider}, Header: d.header, Body: d.body})
	var a answer
	a.status, a.retry = resp.Status, resp.Header.Get("Retry-After")
	if err := json.Unmarshal(resp.Body, &a.ticketwebhookOutcome); err != nil {
		t.Fatalf("answer is not JSON: %s", resp.Body)
	}
	return a
}

func (a answer) code() string {
	if a.Error == nil {
		return ""
	}
	return a.Error.Code
}

const fpComment = "[Jira SOC-17] Ana Analyst: Confirmed with the device owner: the PowerShell download was the approved inventory script. Closing as false positive."

// The issue's scenario, on both APIs: a Jira "Done" with resolution "False
// positive" resolves the incident with the mapped classification, and the
// comment is added once however often it is delivered.
func TestJiraDoneFalsePositiveEndToEnd(t *testing.T) {
	for _, api := range []string{"graph", "xdr"} {
		t.Run(api, func(t *testing.T) {
			r := newRig(t, api)
			r.reset(t, "1001")
			now := time.Now()
			done := r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-0001", now)
			comment := r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-0002", now)

			if a := r.send(t, done); a.status != 200 || a.Status != "applied" || a.Incident != "1001" ||
				strings.Join(a.Updated, ",") != "status,classification,determination" {
				t.Fatalf("done: %d %+v", a.status, a)
			}
			if a := r.send(t, comment); a.status != 200 || a.Status != "applied" || a.Comment != "added" {
				t.Fatalf("comment: %d %+v", a.status, a)
			}
			// Redeliveries: the same identifier, and the same signed body under
			// another identifier. Neither reaches Defender.
			before, beforeState := r.apiCalls(), r.stateFiles(t)
			for _, d := range []delivery{done, comment, r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-0003", now)} {
				d.body = append([]byte(nil), d.body...)
				if d.header.Get("X-Atlassian-Webhook-Identifier") == "9b1c5d7e-0003" {
					d.body = comment.body // identical bytes, new identifier
					d.header.Set(webhook.HeaderHubSignature, comment.header.Get(webhook.HeaderHubSignature))
				}
				d.header.Set("X-Atlassian-Webhook-Retry", "1")
				if a := r.send(t, d); a.status != 200 || a.Status != "duplicate" {
					t.Fatalf("redelivery: %d %+v", a.status, a)
				}
			}
			if n := r.apiCalls() - before; n != 0 {
				t.Fatalf("redeliveries made %d API calls", n)
			}
			if !reflect.DeepEqual(beforeState, r.stateFiles(t)) {
				t.Fatal("redeliveries changed the state store")
			}
			// The same comment in a new delivery (after the ledger forgot it,
			// or sent twice by Jira) finds it on the incident.
			again := r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-0004", now.Add(time.Second))
			if a := r.send(t, again); a.status != 200 || a.Status != "unchanged" || a.Comment != "exists" {
				t.Fatalf("comment again: %d %+v", a.status, a)
			}
			// Our own marker coming back from Jira is not applied.
			echo := r.jiraDelivery(t, "jira-comment-created-echo-adf.json", "9b1c5d7e-0005", now)
			if a := r.send(t, echo); a.status != 200 || a.Status != "ignored" || !strings.Contains(a.Reason, "synchronisation marker") {
				t.Fatalf("echo: %d %+v", a.status, a)
			}

			in, err := r.client(t).Incident(context.Background(), "1001")
			if err != nil {
				t.Fatal(err)
			}
			if in.Status != "resolved" || in.Classification != "falsePositive" || in.Determination != "clean" {
				t.Fatalf("incident: %s %s %s", in.Status, in.Classification, in.Determination)
			}
			n := 0
			for _, c := range in.Comments {
				if strings.HasPrefix(c.Text, "[Jira SOC-17]") {
					n++
					if c.Text != fpComment {
						t.Fatalf("comment %q", c.Text)
					}
				}
			}
			if n != 1 {
				t.Fatalf("%d Jira comments on the incident, want 1: %+v", n, in.Comments)
			}
		})
	}
}

// Every request that fails verification or validation: the right status,
// no call to Defender, nothing written to the state store.
func TestRejectedRequestsChangeNothing(t *testing.T) {
	r := newRig(t, "graph", "WEBHOOK_MAX_BODY", "65536")
	r.reset(t, "1001")
	now := time.Now()
	good := r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-1000", now)
	genBody := fixture(t, "generic-resolved.json")
	snBody := fixture(t, "servicenow-closed.json")
	with := func(d delivery, f func(*delivery)) delivery {
		c := delivery{d.provider, d.header.Clone(), append([]byte(nil), d.body...)}
		f(&c)
		return c
	}
	big := bytes.Repeat([]byte(" "), 70000)
	cases := []struct {
		name   string
		d      delivery
		status int
		code   string
	}{
		{"jira: forged signature", with(good, func(d *delivery) {
			d.header.Set(webhook.HeaderHubSignature, webhook.SignHub([]byte("not-the-secret-0123456789"), d.body))
		}), 401, "InvalidSignature"},
		{"jira: body changed after signing", with(good, func(d *delivery) {
			d.body = bytes.Replace(d.body, []byte("False positive"), []byte("True positive"), 1)
		}), 401, "InvalidSignature"},
		{"jira: unsigned", with(good, func(d *delivery) { d.header.Del(webhook.HeaderHubSignature) }), 400, "BadSignatureHeaders"},
		{"jira: sha1 signature", with(good, func(d *delivery) { d.header.Set(webhook.HeaderHubSignature, "sha1=0123") }), 400, "BadSignatureHeaders"},
		{"jira: stale event", r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-1001", now.Add(-6*time.Minute)), 401, "Stale"},
		{"jira: retry older than the retry window", with(r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-1002", now.Add(-3*time.Hour)),
			func(d *delivery) { d.header.Set("X-Atlassian-Webhook-Retry", "3") }), 401, "Stale"},
		{"jira: from the future", r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-1003", now.Add(6*time.Minute)), 401, "Stale"},
		{"jira: signed but malformed", r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-1004", now, func(b string) string { return b[:len(b)/2] }), 400, "BadPayload"},
		{"jira: signed, ambiguous incident", r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-1005", now,
			func(b string) string { return strings.Replace(b, `"xdr"`, `"defender-1002"`, 1) }), 400, "BadPayload"},
		{"jira: oversized", with(good, func(d *delivery) {
			d.body = append(d.body, big...)
			d.header.Set(webhook.HeaderHubSignature, webhook.SignHub(r.jira, d.body))
		}), 413, "TooLarge"},
		{"jira: form-encoded", with(good, func(d *delivery) { d.header.Set("Content-Type", "application/x-www-form-urlencoded") }), 415, "UnsupportedMediaType"},
		{"jira: no content type", with(good, func(d *delivery) { d.header.Del("Content-Type") }), 415, "UnsupportedMediaType"},
		{"generic: forged", standardDelivery("generic", randomKey(t), "msg_1", now, genBody), 401, "InvalidSignature"},
		{"generic: signed with the ServiceNow secret", standardDelivery("generic", r.sn, "msg_2", now, genBody), 401, "InvalidSignature"},
		{"generic: stale", standardDelivery("generic", r.gen, "msg_3", now.Add(-5*time.Minute-2*time.Second), genBody), 401, "Stale"},
		{"generic: no webhook-id", with(standardDelivery("generic", r.gen, "msg_4", now, genBody), func(d *delivery) { d.header.Del(webhook.HeaderID) }), 400, "BadSignatureHeaders"},
		{"generic: invalid status", standardDelivery("generic", r.gen, "msg_5", now, bytes.Replace(genBody, []byte(`"resolved"`), []byte(`"closed"`), 1)), 400, "BadPayload"},
		{"generic: unknown tenant", standardDelivery("generic", r.gen, "msg_6", now, bytes.Replace(genBody, []byte(`"incidentId"`), []byte(`"tenant": "fabrikam.example", "incidentId"`), 1)), 422, "UnknownTenant"},
		{"servicenow: forged", standardDelivery("servicenow", r.gen, "sn_1", now, snBody), 401, "InvalidSignature"},
		{"servicenow: not JSON", standardDelivery("servicenow", r.sn, "sn_2", now, []byte("state=Closed")), 400, "BadPayload"},
		{"unknown provider", with(good, func(d *delivery) { d.provider = "zendesk" }), 404, "UnknownProvider"},
	}
	beforeState := r.stateFiles(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := r.apiCalls()
			a := r.send(t, c.d)
			if a.status != c.status || a.code() != c.code || a.Status != "rejected" {
				t.Fatalf("got %d %s %+v, want %d %s", a.status, a.code(), a.Error, c.status, c.code)
			}
			if n := r.apiCalls() - before; n != 0 {
				t.Fatalf("%d API calls", n)
			}
		})
	}
	if after := r.stateFiles(t); len(after) != len(beforeState) {
		t.Fatalf("the state store changed: %d → %d documents", len(beforeState), len(after))
	}
	in, err := r.client(t).Incident(context.Background(), "1001")
	if err != nil || in.Status != "active" || in.Classification != "unknown" {
		t.Fatalf("the incident changed: %+v %v", in, err)
	}
	// A provider without a secret is off; an unsigned caller is not told
	// which setting turns it on.
	off := newRig(t, "graph", "WEBHOOK_SECRET_SERVICENOW", "")
	if a := off.send(t, standardDelivery("servicenow", r.sn, "sn_3", now, snBody)); a.status != 404 || a.code() != "ProviderDisabled" ||
		a.Error.Message != "the servicenow provider is off" {
		t.Fatalf("disabled provider: %d %+v", a.status, a.Error)
	}
	// Nothing a sender sends reaches the log beyond identifiers.
	if strings.Contains(r.logs.String(), "Confirmed with the device owner") || strings.Contains(r.logs.String(), string(r.jira)) {
		t.Fatal("the log holds a body or a secret")
	}
}

// ServiceNow and generic deliveries, a replay, and a rotation.
func TestServiceNowAndGeneric(t *testing.T) {
	r := newRig(t, "graph")
	r.reset(t, "1001")
	r.reset(t, "1003")
	now := time.Now()
	sn := standardDelivery("servicenow", r.sn, "4f1c2a9e1b2d0210a1c3e4f5a6b7c8d9-7", now, fixture(t, "servicenow-closed.json"))
	if a := r.send(t, sn); a.status != 200 || a.Status != "applied" || strings.Join(a.Updated, ",") != "status,classification,determination" || a.Comment != "added" {
		t.Fatalf("servicenow: %d %+v", a.status, a)
	}
	if a := r.send(t, sn); a.status != 200 || a.Status != "duplicate" {
		t.Fatalf("servicenow replay: %d %+v", a.status, a)
	}
	gen := bytes.Replace(fixture(t, "generic-resolved.json"), []byte(`"1001"`), []byte(`"1003"`), 1)
	if a := r.send(t, standardDelivery("generic", r.gen, "msg_g1", now, gen)); a.status != 200 || a.Status != "applied" ||
		strings.Join(a.Updated, ",") != "status,classification,determination,assignedTo" || a.Comment != "added" {
		t.Fatalf("generic: %d %+v", a.status, a)
	}
	// The same change under a new ID changes nothing either.
	if a := r.send(t, standardDelivery("generic", r.gen, "msg_g2", now, gen)); a.status != 200 || a.Status != "unchanged" || a.Comment != "exists" {
		t.Fatalf("generic again: %d %+v", a.status, a)
	}
	in, err := r.client(t).Incident(context.Background(), "1003")
	if err != nil || in.Status != "resolved" || in.AssignedTo != "ana.analyst@contoso.com" || in.Comments[len(in.Comments)-1].Text != "[Ticket OPS-7] Ana Analyst: Closed in the ops tracker: approved script." {
		t.Fatalf("generic incident: %+v %v", in, err)
	}
	// Rotation: the sender signs with the new secret while both are configured.
	newKey := randomKey(t)
	both := newRig(t, "graph", "WEBHOOK_SECRET_GENERIC", "whsec_"+base64.StdEncoding.EncodeToString(newKey)+" whsec_"+base64.StdEncoding.EncodeToString(r.gen))
	for i, k := range [][]byte{r.gen, newKey} {
		if a := both.send(t, standardDelivery("generic", k, "msg_rot"+strconv.Itoa(i), now, gen)); a.status != 200 {
			t.Fatalf("rotation key %d: %d %+v", i, a.status, a.Error)
		}
	}
}

// A comment event carries no labels: the link learned from the issue's
// creation finds the incident.
func TestJiraCommentUsesRememberedLink(t *testing.T) {
	r := newRig(t, "graph")
	now := time.Now()
	noSummary := func(b string) string { return strings.Replace(b, "[Defender 1001] ", "", -1) }
	c := r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-2001", now, noSummary)
	if a := r.send(t, c); a.status != 200 || a.Status != "ignored" || a.Reason != "the ticket names no Defender incident" {
		t.Fatalf("before the link: %d %+v", a.status, a)
	}
	created := r.jiraDelivery(t, "jira-issue-created.json", "9b1c5d7e-2002", now, noSummary)
	if a := r.send(t, created); a.status != 200 || a.Status != "ignored" || a.Incident != "1001" {
		t.Fatalf("created: %d %+v", a.status, a)
	}
	// The earlier comment was not recorded as done: its retry applies it.
	c.header.Set("X-Atlassian-Webhook-Retry", "1")
	if a := r.send(t, c); a.status != 200 || a.Status != "applied" || a.Incident != "1001" || a.Comment != "added" {
		t.Fatalf("after the link: %d %+v", a.status, a)
	}
}

// Upstream trouble answers 5xx with Retry-After and releases the delivery,
// so the sender's retry applies it; the comment still lands once.
func TestUpstreamFailureIsRetried(t *testing.T) {
	r := newRig(t, "graph")
	r.reset(t, "1001")
	now := time.Now()
	comment := r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-3001", now)
	r.s.SetFaults(devstack.Faults{ErrorRate: 1})
	a := r.send(t, comment)
	if a.status != 503 || a.code() != "UpstreamUnavailable" || a.retry == "" {
		t.Fatalf("during the outage: %d %s retry %q", a.status, a.code(), a.retry)
	}
	r.s.SetFaults(devstack.Faults{})
	comment.header.Set("X-Atlassian-Webhook-Retry", "1")
	if a := r.send(t, comment); a.status != 200 || a.Status != "applied" || a.Comment != "added" {
		t.Fatalf("retry: %d %+v", a.status, a)
	}
	// A missing incident is not worth retrying.
	gone := r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-3002", now, func(b string) string { return strings.Replace(b, "defender-1001", "defender-999999", 1) })
	if a := r.send(t, gone); a.status != 422 || a.code() != "IncidentNotFound" {
		t.Fatalf("missing incident: %d %+v", a.status, a.Error)
	}
	// The app lacking the write permission is the operator's to fix: 500,
	// no Retry-After (a retry cannot help).
	ro := newRig(t, "graph", "DEFENDER_CLIENT_ID", devstack.ReaderClientID)
	done := ro.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-3003", now)
	if a := ro.send(t, done); a.status != 500 || a.code() != "NotPermitted" || a.retry != "" || !strings.Contains(a.Error.Message, "SecurityIncident.ReadWrite.All") {
		t.Fatalf("read-only app: %d %+v retry %q", a.status, a.Error, a.retry)
	}
}

// The raw body reaches the verifier unchanged through the Functions host's
// forwarding (real HTTP), through its JSON envelope, and through Lambda
// (API Gateway / Function URL, base64 or not).
func TestThroughTheAdapters(t *testing.T) {
	r := newRig(t, "graph")
	r.reset(t, "1001")
	now := time.Now()
	srv := httptest.NewServer(customhandler.New(r.app, customhandler.Options{}))
	defer srv.Close()

	d := r.jiraDelivery(t, "jira-issue-updated-done.json", "9b1c5d7e-4001", now)
	req, _ := http.NewRequest("POST", srv.URL+"/api/ticket-webhook/jira", bytes.NewReader(d.body))
	req.Header = d.header.Clone()
	req.Header.Set("X-Azure-Functions-InvocationId", "inv-forwarded-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"applied"`) {
		t.Fatalf("forwarded: %d %s", resp.StatusCode, b)
	}
	// Every line this first invocation logged carries its ID, the shared
	// services' lines too (Key Vault is not used here; the token is).
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(r.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["invocation_id"] != "inv-forwarded-1" {
			t.Fatalf("log line without the invocation ID: %s", line)
		}
		msgs = append(msgs, m["msg"].(string))
	}
	if strings.Join(msgs, ",") != "Token acquired.,Delivery answered.,HTTP function answered." {
		t.Fatalf("log lines: %v", msgs)
	}

	// The envelope: headers are arrays, the body is the raw text.
	c := r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-4002", now)
	hdrs := map[string][]string{}
	for k, v := range c.header {
		hdrs[k] = v
	}
	env, _ := json.Marshal(map[string]any{"Data": map[string]any{"req": map[string]any{"Url": "http://localhost:7071/api/ticket-webhook/jira", "Method": "POST",
		"Query": map[string]string{}, "Headers": hdrs, "Params": map[string]string{"provider": "jira"}, "Body": string(c.body)}},
		"Metadata": map[string]any{"sys": map[string]string{"MethodName": "ticket-webhook"}}})
	w := httptest.NewRecorder()
	customhandler.New(r.app, customhandler.Options{}).ServeHTTP(w, httptest.NewRequest("POST", "/ticket-webhook", bytes.NewReader(env)))
	if !strings.Contains(w.Body.String(), `\"comment\":\"added\"`) || !strings.Contains(w.Body.String(), `"statusCode":"200"`) {
		t.Fatalf("envelope: %s", w.Body)
	}

	// Lambda: a Function URL event with a base64 body, then a plain one.
	for i, b64 := range []bool{true, false} {
		g := standardDelivery("generic", r.gen, "msg_l"+strconv.Itoa(i), now, fixture(t, "generic-resolved.json"))
		ev := events.APIGatewayV2HTTPRequest{Version: "2.0", RawPath: "/ticket-webhook/generic", Headers: map[string]string{}, IsBase64Encoded: b64, Body: string(g.body)}
		if b64 {
			ev.Body = base64.StdEncoding.EncodeToString(g.body)
		}
		for k := range g.header {
			ev.Headers[strings.ToLower(k)] = g.header.Get(k)
		}
		ev.RequestContext.HTTP.Method = "POST"
		ev.RequestContext.Stage = "$default"
		payload, _ := json.Marshal(ev)
		out, err := lambdahandler.New(r.app, lambdahandler.Options{}).Invoke(context.Background(), payload)
		var res events.APIGatewayV2HTTPResponse
		if err != nil || json.Unmarshal(out, &res) != nil || res.StatusCode != 200 {
			t.Fatalf("lambda (base64 %v): %v %s", b64, err, out)
		}
	}
}

// The same delivery at once from many senders: one applies it, the others
// see a duplicate or are told to retry; the comment lands once.
func TestConcurrentDeliveries(t *testing.T) {
	r := newRig(t, "graph")
	r.reset(t, "1001")
	d := r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-5001", time.Now())
	var wg sync.WaitGroup
	results := make([]answer, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.send(t, d)
		}()
	}
	wg.Wait()
	applied := 0
	for _, a := range results {
		switch {
		case a.status == 200 && a.Status == "applied":
			applied++
		case a.status == 200 && a.Status == "duplicate", a.status == 503 && a.code() == "InProgress" && a.retry != "":
		default:
			t.Fatalf("unexpected answer %d %+v", a.status, a)
		}
	}
	if applied != 1 {
		t.Fatalf("%d applied, want 1", applied)
	}
	in, _ := r.client(t).Incident(context.Background(), "1001")
	n := 0
	for _, c := range in.Comments {
		if c.Text == fpComment {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d comments", n)
	}
}

// A provider that the mapping pins to a tenant cannot reach another one by
// naming it in the payload: its secret writes the pinned tenant's incidents
// alone. Unpinned, a multi-tenant app routes by the payload's tenant.
func TestPinnedTenant(t *testing.T) {
	mapping := filepath.Join(t.TempDir(), "mapping.json")
	os.WriteFile(mapping, []byte(`{"generic": {"tenant": "`+devstack.DefaultTenantID+`"}}`), 0o600)
	tenants := devstack.DefaultTenantID + "," + devstack.PartnerTenantName
	pinned := newRig(t, "graph", "DEFENDER_TENANT_ID", tenants, "WEBHOOK_MAPPING_FILE", mapping)
	// The same mapping as a deployed app carries it: the setting's value.
	inline := newRig(t, "graph", "DEFENDER_TENANT_ID", tenants, "WEBHOOK_MAPPING", `{"generic": {"tenant": "`+devstack.DefaultTenantID+`"}}`)
	open := newRig(t, "graph", "DEFENDER_TENANT_ID", tenants)
	genBody := fixture(t, "generic-resolved.json")
	naming := func(tenant string) []byte {
		return bytes.Replace(genBody, []byte(`"incidentId"`), []byte(`"tenant": "`+tenant+`", "incidentId"`), 1)
	}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		r       *rig
		body    []byte
		refused bool
	}{
		{"pinned, naming another tenant", pinned, naming(devstack.PartnerTenantName), true},
		{"pinned, naming another tenant by ID", pinned, naming(devstack.PartnerTenantID), true},
		{"pinned, naming its own tenant", pinned, naming(devstack.DefaultTenantID), false},
		{"pinned, naming none", pinned, genBody, false},
		{"pinned by WEBHOOK_MAPPING, naming another tenant", inline, naming(devstack.PartnerTenantName), true},
		{"pinned by WEBHOOK_MAPPING, naming its own", inline, naming(devstack.DefaultTenantID), false},
		{"unpinned, naming the partner", open, naming(devstack.PartnerTenantName), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, files := tc.r.apiCalls(), len(tc.r.stateFiles(t))
			a := tc.r.send(t, standardDelivery("generic", tc.r.gen, "msg_"+strings.ReplaceAll(tc.name, " ", "_"), now, tc.body))
			if got := a.code() == "TenantNotAllowed"; got != tc.refused {
				t.Fatalf("refused = %v (%d %s %+v), want %v", got, a.status, a.Status, a.Error, tc.refused)
			}
			if tc.refused && (a.status != 403 || tc.r.apiCalls() != before || len(tc.r.stateFiles(t)) != files) {
				t.Fatalf("a refused delivery answered %d, made %d API calls, changed the state", a.status, tc.r.apiCalls()-before)
			}
		})
	}
}

// The ticket → incident link follows the newest event: an older delivery
// that arrives late (a retry) does not replace it.
func TestLinkKeepsTheNewestEvent(t *testing.T) {
	r := newRig(t, "graph")
	body := fixture(t, "servicenow-closed.json")
	for _, id := range []string{"1001", "1002", "1003"} {
		r.reset(t, id)
	}
	now := time.Now()
	link := func() string {
		for p, content := range r.stateFiles(t) {
			if strings.Contains(filepath.ToSlash(p), "webhook-links/servicenow/") {
				var k struct{ Incident string }
				json.Unmarshal([]byte(content), &k)
				return k.Incident
			}
		}
		return ""
	}
	for i, step := range []struct {
		incident string
		at       time.Duration
		want     string
	}{
		{"1001", 0, "1001"},
		{"1002", -time.Minute, "1001"}, // older: the link stays
		{"1003", time.Minute, "1003"},  // newer: it moves
	} {
		b := bytes.Replace(body, []byte(`"correlation_id": "1001"`), []byte(`"correlation_id": "`+step.incident+`"`), 1)
		a := r.send(t, standardDelivery("servicenow", r.sn, fmt.Sprintf("sn_link_%d", i), now.Add(step.at), b))
		if a.status != 200 || a.Incident != step.incident {
			t.Fatalf("step %d: %d %s %+v", i, a.status, a.Status, a.Error)
		}
		if got := link(); got != step.want {
			t.Fatalf("step %d: the link names %q, want %q", i, got, step.want)
		}
	}
}
