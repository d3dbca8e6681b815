package huntingquery_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/lambdahandler"
)

func newApp(t *testing.T, s *devstack.Stack, logs *devstack.LogBuffer, kv ...string) *function.App {
	t.Helper()
	m := s.Settings()
	m["DEFENDER_CREDENTIAL"], m["DEFENDER_CLIENT_SECRET"] = "env-secret", s.ClientSecret(devstack.DefaultClientID)
	m["EXPORT_SINK"], m["STATE_STORE"] = "file://"+t.TempDir(), "file://"+t.TempDir()
	m["DEFENDER_RATE_LIMITS"] = "off"
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	app, err := functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, slog.New(slog.NewJSONHandler(io.MultiWriter(logs, devstack.AuditLog()), nil)),
		&functions.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func principal(roles ...string) string {
	claims := []map[string]string{{"typ": "name", "val": "soar-playbook"}}
	for _, r := range roles {
		claims = append(claims, map[string]string{"typ": "roles", "val": r})
	}
	b, _ := json.Marshal(map[string]any{"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"})
	return base64.StdEncoding.EncodeToString(b)
}

func TestHuntingQuery(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	logs := &devstack.LogBuffer{}
	h := customhandler.New(newApp(t, s, logs, "HUNTING_MAX_ROWS", "7"), customhandler.Options{})
	adhoc := customhandler.New(newApp(t, s, logs, "HUNTING_ALLOW_ADHOC", "true", "HUNTING_ADHOC_ROLE", "Hunting.Adhoc"), customhandler.Options{TrustEasyAuth: true})
	roleGated := customhandler.New(newApp(t, s, logs, "HUNTING_REQUIRED_ROLE", "Hunting.Run"), customhandler.Options{TrustEasyAuth: true})
	// A multi-tenant app: the partner tenant is queried only with its role.
	tenants := devstack.DefaultTenantID + "," + devstack.PartnerTenantName
	multi := customhandler.New(newApp(t, s, logs, "DEFENDER_TENANT_ID", tenants), customhandler.Options{TrustEasyAuth: true})
	perTenant := customhandler.New(newApp(t, s, logs, "DEFENDER_TENANT_ID", tenants, "HUNTING_TENANT_ROLES", devstack.PartnerTenantName+"=Hunting.Fabrikam"),
		customhandler.Options{TrustEasyAuth: true})
	partner := `{"name":"failed-logons","tenant":"` + devstack.PartnerTenantName + `"}`
	type tc struct {
		name       string
		h          http.Handler
		method     string
		body       string
		accept, ct string
		principal  string
		status     int
		contains   string
		upstream   bool // whether the API was called
	}
	for _, c := range []tc{
		{"catalog", h, "GET", "", "", "", "", 200, `"name":"failed-logons"`, false},
		{"catalog query", h, "POST", `{"name":"failed-logons","parameters":{"threshold":1,"lookback":"30d"}}`, "", "application/json", "", 200, `"schema":[{"name":"AccountName","type":"String"}`, true},
		{"truncated", h, "POST", `{"name":"process-by-name","parameters":{"file":"powershell.exe","lookback":"30d"}}`, "application/json", "", "", 200, `],"truncated":true,"stats":{"rows":7,"maxRows":7}}`, true},
		{"ndjson", h, "POST", `{"name":"encoded-powershell"}`, "application/x-ndjson", "", "", 200, `"ProcessCommandLine":"powershell.exe -nop -w hidden -enc SQBFAFgA"`, true},
		{"csv", h, "POST", `{"name":"lolbin-downloads","parameters":{"lookback":"30d"}}`, "text/csv", "", "", 200, "Timestamp,DeviceName,AccountName,FileName,ProcessCommandLine\n", true},
		{"bad parameter", h, "POST", `{"name":"failed-logons","parameters":{"threshold":"5 or 1==1"}}`, "", "", "", 400, `"threshold\": \"5 or 1==1\" is not an integer`, false},
		{"missing parameter", h, "POST", `{"name":"process-by-name"}`, "", "", "", 400, `parameter \"file\" (string) is required`, false},
		{"undeclared parameter", h, "POST", `{"name":"encoded-powershell","parameters":{"x":"1"}}`, "", "", "", 400, `has no parameter \"x\"`, false},
		{"unknown query", h, "POST", `{"name":"nope"}`, "", "", "", 404, "no catalog query", false},
		{"adhoc disabled", h, "POST", `{"query":"AlertInfo | take 1"}`, "", "", "", 403, "HUNTING_ALLOW_ADHOC=true", false},
		{"both", h, "POST", `{"query":"AlertInfo","name":"failed-logons"}`, "", "", "", 400, "not both", false},
		{"malformed", h, "POST", `{"name":`, "", "", "", 400, "must be a JSON object", false},
		{"unknown field", h, "POST", `{"name":"failed-logons","limit":5}`, "", "", "", 400, `unknown field \"limit\"`, false},
		{"content type", h, "POST", `{"name":"failed-logons"}`, "", "text/plain", "", 415, "application/json", false},
		{"accept", h, "POST", `{"name":"failed-logons"}`, "application/xml", "", "", 406, "text/csv", false},
		{"timespan too long", h, "POST", `{"name":"failed-logons","timespan":"P90D"}`, "", "", "", 400, "BadTimespan", false},
		{"unknown tenant", h, "POST", `{"name":"failed-logons","tenant":"other.onmicrosoft.com"}`, "", "", "", 400, "not configured", false},
		{"adhoc without role", adhoc, "POST", `{"query":"AlertInfo | take 1"}`, "", "", principal("Hunting.Run"), 403, "Hunting.Adhoc", false},
		{"adhoc", adhoc, "POST", `{"query":"AlertInfo | project Title | take 2","timespan":"P7D"}`, "", "", principal("Hunting.Adhoc"), 200, `"stats":{"rows":2,`, true},
		{"kql error", adhoc, "POST", `{"query":"NoSuchTable | take 1"}`, "", "", principal("Hunting.Adhoc"), 400, "Failed to resolve table or column expression named 'NoSuchTable'", true},
		{"no principal", roleGated, "GET", "", "", "", "", 401, "Hunting.Run", false},
		{"wrong role", roleGated, "GET", "", "", "", principal("Other"), 403, "Hunting.Run", false},
		{"right role", roleGated, "GET", "", "", "", principal("Hunting.Run"), 200, "failed-logons", false},
		{"another tenant, no role set for it", multi, "POST", partner, "", "", principal("Hunting.Run"), 403, "TenantNotAllowed", false},
		{"the home tenant, no role needed", multi, "POST", `{"name":"failed-logons"}`, "", "", "", 200, `"schema"`, true},
		{"another tenant, without its role", perTenant, "POST", partner, "", "", principal("Hunting.Contoso"), 403, "needs the role Hunting.Fabrikam", false},
		{"another tenant, anonymous", perTenant, "POST", partner, "", "", "", 403, "TenantNotAllowed", false},
		{"another tenant, with its role", perTenant, "POST", partner, "", "", principal("Hunting.Fabrikam"), 200, `"schema"`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := s.Counters().Get("graph.hunting", 0)
			req := httptest.NewRequest(c.method, "/api/hunting-query", strings.NewReader(c.body))
			if c.accept != "" {
				req.Header.Set("Accept", c.accept)
			}
			if c.ct != "" {
				req.Header.Set("Content-Type", c.ct)
			}
			if c.principal != "" {
				req.Header.Set("X-MS-CLIENT-PRINCIPAL", c.principal)
			}
			w := httptest.NewRecorder()
			c.h.ServeHTTP(w, req)
			if w.Code != c.status || !strings.Contains(w.Body.String(), c.contains) {
				t.Fatalf("%d %.400s\nwant %d containing %s", w.Code, w.Body, c.status, c.contains)
			}
			if called := s.Counters().Get("graph.hunting", 0) > before; called != c.upstream {
				t.Fatalf("upstream called: %v, want %v", called, c.upstream)
			}
		})
	}
	// Throttling passes through with Retry-After.
	s.SetFaults(devstack.Faults{ThrottleRate: 1})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/api/hunting-query", strings.NewReader(`{"name":"encoded-powershell"}`)))
	if w.Code != 429 || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("throttled: %d %s %v", w.Code, w.Body, w.Header())
	}
	s.SetFaults(devstack.Faults{})
	// One audit line per request: caller, query, tenant, rows; never a row or a token.
	out := logs.String()
	var adhocLine, catalogLine bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		json.Unmarshal([]byte(line), &m)
		if m["msg"] != "Hunting query answered." || m["invocation_id"] == nil {
			continue
		}
		q, _ := m["query"].(string)
		adhocLine = adhocLine || m["caller"] == "soar-playbook" && strings.HasPrefix(q, "adhoc:") && m["status"] == 200.0 && m["rows"] == 2.0
		catalogLine = catalogLine || q == "failed-logons" && m["tenant"] == devstack.DefaultTenantID && m["status"] == 200.0
	}
	if !adhocLine || !catalogLine {
		t.Fatalf("audit lines missing:\n%s", out)
	}
	for _, secret := range s.Issued() {
		if strings.Contains(out, secret) {
			t.Fatal("a secret or token reached the log")
		}
	}
	if strings.Contains(out, "SQBFAFgA") {
		t.Fatal("result data reached the log")
	}
}

// The same function through the host's envelope and through Lambda.
func TestHuntingQueryEnvelopeAndLambda(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	app := newApp(t, s, &devstack.LogBuffer{})
	env := `{"Data":{"req":{"Url":"http://localhost:7071/api/hunting-query","Method":"POST","Query":{},"Headers":{"Content-Type":["application/json"],"Accept":["application/x-ndjson"]},"Params":{},"Body":"{\"name\":\"encoded-powershell\"}"}},"Metadata":{"sys":{"MethodName":"hunting-query"}}}`
	w := httptest.NewRecorder()
	customhandler.New(app, customhandler.Options{}).ServeHTTP(w, httptest.NewRequest("POST", "/hunting-query", strings.NewReader(env)))
	var res struct {
		Outputs struct {
			Res struct {
				StatusCode string            `json:"statusCode"`
				Headers    map[string]string `json:"headers"`
				Body       string            `json:"body"`
			} `json:"res"`
		}
	}
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || res.Outputs.Res.StatusCode != "200" || res.Outputs.Res.Headers["Content-Type"] != "application/x-ndjson" ||
		!strings.Contains(res.Outputs.Res.Body, "-enc SQBFAFgA") {
		t.Fatalf("envelope: %s", w.Body)
	}
	ev := events.APIGatewayV2HTTPRequest{Version: "2.0", RawPath: "/hunting-query", Body: `{"name":"failed-logons","parameters":{"threshold":1,"lookback":"30d"}}`,
		Headers: map[string]string{"content-type": "application/json"}}
	ev.RequestContext.HTTP.Method = "POST"
	ev.RequestContext.Stage = "$default"
	payload, _ := json.Marshal(ev)
	out, err := lambdahandler.New(app, lambdahandler.Options{}).Invoke(context.Background(), payload)
	var resp events.APIGatewayV2HTTPResponse
	if err != nil || json.Unmarshal(out, &resp) != nil || resp.StatusCode != 200 || !strings.Contains(resp.Body, `"truncated":false`) {
		t.Fatalf("lambda: %v %s", err, out)
	}
}

func settingsFor(tb testing.TB, s *devstack.Stack) *config.Config {
	m := s.Settings()
	m["DEFENDER_CREDENTIAL"], m["DEFENDER_CLIENT_SECRET"] = "env-secret", s.ClientSecret(devstack.DefaultClientID)
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// A caller that goes away mid-stream ends the stream at the failed write:
// the error is returned and logged, and the rest of the rows are not read.
func TestStreamStopsAtAFailedWrite(t *testing.T) {
	s := devstack.Start(t, devstack.Options{HuntingRows: 5000})
	logs := &devstack.LogBuffer{}
	app := newApp(t, s, logs, "HUNTING_ALLOW_ADHOC", "true", "HUNTING_ADHOC_ROLE", "Hunting.Adhoc", "HUNTING_MAX_ROWS", "5000")
	rows := regexp.MustCompile(`"rows":(\d+)`)
	for _, format := range []string{"application/json", "application/x-ndjson", "text/csv"} {
		t.Run(format, func(t *testing.T) {
			stream := func(w io.Writer) (error, int) {
				logs.Reset()
				resp := app.HTTP["hunting-query"].Func(function.WithInvocation(context.Background(), app.Log(), "t"), &function.HTTPRequest{Method: "POST",
					Header:    http.Header{"Accept": {format}, "Content-Type": {"application/json"}},
					Principal: &function.Principal{Name: "analyst", Roles: []string{"Hunting.Adhoc"}},
					Body:      []byte(`{"query":"DeviceProcessEvents | project Timestamp, DeviceName, FileName, ProcessCommandLine","timespan":"P30D"}`)})
				if resp.Status != 200 || resp.Stream == nil {
					t.Fatalf("%d %s", resp.Status, resp.Body)
				}
				err := resp.Stream(w)
				m := rows.FindStringSubmatch(logs.String())
				if m == nil {
					t.Fatalf("no rows logged:\n%s", logs.String())
				}
				n, _ := strconv.Atoi(m[1])
				return err, n
			}
			err, all := stream(io.Discard)
			if err != nil || all < 1000 {
				t.Fatalf("the whole stream: %v, %d rows", err, all)
			}
			w := &failingWriter{left: 64 << 10}
			err, n := stream(w)
			if !errors.Is(err, errGone) {
				t.Fatalf("err = %v, want the write's", err)
			}
			if w.calls > 1 {
				t.Errorf("%d writes after the failure", w.calls-1)
			}
			if !strings.Contains(logs.String(), `"outcome":"stream failed: the caller went away"`) {
				t.Errorf("no failure logged:\n%s", logs.String())
			}
			if n >= all/2 {
				t.Errorf("%d of %d rows read: the stream went on past the failed write", n, all)
			}
		})
	}
}

var errGone = errors.New("the caller went away")

// failingWriter accepts left bytes, then fails every write.
type failingWriter struct {
	left, calls int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.left <= 0 {
		w.calls++
		return 0, errGone
	}
	n := min(len(p), w.left)
	w.left -= n
	if n < len(p) {
		w.calls++
		return n, errGone
	}
	return n, nil
}
