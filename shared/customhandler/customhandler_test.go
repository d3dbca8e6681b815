package customhandler_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"

	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/function"
)

// recorderApp records what the functions received.
type recorderApp struct {
	timer    function.Timer
	req      *function.HTTPRequest
	timerErr error
	msg      function.Message
	msgErr   error
	logs     bytes.Buffer
}

func (a *recorderApp) app() *function.App {
	echo := func(ctx context.Context, r *function.HTTPRequest) *function.HTTPResponse {
		a.req = r
		function.Logger(ctx).Info("In the function.")
		return &function.HTTPResponse{Status: 202, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"ok":true}`)}
	}
	return &function.App{
		Logger: slog.New(slog.NewJSONHandler(io.MultiWriter(&a.logs, devstack.AuditLog()), nil)),
		HTTP: map[string]function.HTTPRoute{
			"hunting-query":  {Descriptor: function.Descriptor{HTTP: &function.HTTPBinding{Route: "hunting-query", Methods: []string{"get", "post"}}}, Func: echo},
			"ticket-webhook": {Descriptor: function.Descriptor{HTTP: &function.HTTPBinding{Route: "ticket-webhook/{provider}", Methods: []string{"post"}}}, Func: echo},
		},
		Timers: map[string]function.TimerRoute{"incident-export": {Func: func(ctx context.Context, t function.Timer) error { a.timer = t; return a.timerErr }}},
		Queues: map[string]function.QueueRoute{"incident-export-tenant": {Func: func(ctx context.Context, m function.Message) error { a.msg = m; return a.msgErr }}},
	}
}

func post(t *testing.T, h http.Handler, path, fixture string) *httptest.ResponseRecorder {
	t.Helper()
	body, err := os.ReadFile("testdata/" + fixture)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", "3f5e8c2a-1b4d-4e6f-8a9b-0c1d2e3f4a5b")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestTimerPayloads(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		want    function.Timer
	}{
		{"timer-first-run.json", function.Timer{ScheduledTime: mustTime("2026-11-26T13:05:00Z")}},
		{"timer-normal.json", function.Timer{ScheduledTime: mustTime("2026-11-26T13:05:00Z"), LastRun: mustTime("2026-11-26T13:00:00.0053318Z")}},
		{"timer-past-due.json", function.Timer{ScheduledTime: mustTime("2026-11-26T09:05:00Z"), LastRun: mustTime("2026-11-26T09:00:00.0061029Z"), PastDue: true}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			a := &recorderApp{}
			w := post(t, customhandler.New(a.app(), customhandler.Options{}), "/incident-export", tc.fixture)
			if w.Code != 200 || !a.timer.ScheduledTime.Equal(tc.want.ScheduledTime) || !a.timer.LastRun.Equal(tc.want.LastRun) || a.timer.PastDue != tc.want.PastDue {
				t.Fatalf("status %d, timer %+v, want %+v", w.Code, a.timer, tc.want)
			}
			var res struct {
				Outputs     map[string]any
				Logs        []string
				ReturnValue any
			}
			if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || res.Outputs == nil || len(res.Logs) != 1 || !strings.HasPrefix(res.Logs[0], "incident-export completed in ") || res.ReturnValue != nil {
				t.Fatalf("body %s", w.Body)
			}
		})
	}
	// Monitor off: ScheduleStatus is null; the run is dated now.
	a := &recorderApp{}
	before := time.Now()
	if w := post(t, customhandler.New(a.app(), customhandler.Options{}), "/incident-export", "timer-monitor-off.json"); w.Code != 200 ||
		a.timer.ScheduledTime.Before(before.Add(-time.Second)) || !a.timer.LastRun.IsZero() {
		t.Fatalf("monitor off: %d %+v", w.Code, a.timer)
	}
	// A failed run is a non-2xx answer: the host marks the invocation failed.
	a = &recorderApp{timerErr: errors.New("sink unreachable")}
	w := post(t, customhandler.New(a.app(), customhandler.Options{}), "/incident-export", "timer-normal.json")
	if w.Code != 500 || !strings.Contains(w.Body.String(), "incident-export failed: sink unreachable") {
		t.Fatalf("failure: %d %s", w.Code, w.Body)
	}
}

// A queue message as the host delivers it: the text in Data.msg JSON-encoded
// twice (queue-host.json, as ScriptInvocationContextExtensions writes it),
// once (as the docs' sample shows it) or as the object itself; the
// metadata's scalars JSON-encoded inside strings (as the host writes them)
// or plain (as the docs show them).
func TestQueuePayloads(t *testing.T) {
	const body = `{"tenant":"4d2a9e1c-6b7f-4c1e-9a52-0c3f8d7e1b10","round":"2026-11-26T13:05:00Z"}`
	for _, tc := range []struct {
		fixture string
		want    function.Message
	}{
		{"queue-host.json", function.Message{ID: "9a1c0e5e-53b5-4b5f-9d0a-7f3e2c1b4a69", Body: []byte(body), DequeueCount: 2, InsertedAt: mustTime("2026-11-26T13:05:00Z")}},
		{"queue-single-encoded.json", function.Message{ID: "9a1c0e5e-53b5-4b5f-9d0a-7f3e2c1b4a69", Body: []byte(body), DequeueCount: 2, InsertedAt: mustTime("2026-11-26T13:05:00Z")}},
		{"queue-object.json", function.Message{ID: "9a1c0e5e-53b5-4b5f-9d0a-7f3e2c1b4a69", Body: []byte(body), DequeueCount: 2, InsertedAt: mustTime("2026-11-26T13:05:00Z")}},
		{"queue-host-text.json", function.Message{ID: "3f0c2b1e-7a44-4d35-a0f9-2f6d1f0b9e11", Body: []byte("export tenant 4d2a9e1c"), DequeueCount: 1, InsertedAt: mustTime("2026-11-26T13:05:00Z")}},
		{"queue-last-attempt.json", function.Message{ID: "9a1c0e5e-53b5-4b5f-9d0a-7f3e2c1b4a69", Body: []byte(body), DequeueCount: 5, InsertedAt: mustTime("2026-11-26T13:05:00Z"), LastAttempt: true}},
		{"queue-docs.json", function.Message{ID: "800ae4b3-bdd2-4c08-badd-f08e5a34b865", Body: []byte(`{ message: "Message sent" }`), DequeueCount: 1, InsertedAt: mustTime("2019-10-09T17:58:31Z")}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			a := &recorderApp{}
			w := post(t, customhandler.New(a.app(), customhandler.Options{}), "/incident-export-tenant", tc.fixture)
			if w.Code != 200 || !reflect.DeepEqual(a.msg, tc.want) {
				t.Fatalf("status %d, message %+v (%s), want %+v (%s)", w.Code, a.msg, a.msg.Body, tc.want, tc.want.Body)
			}
		})
	}
	// A failed message is a non-2xx answer: the host makes it visible again.
	a := &recorderApp{msgErr: errors.New("token refused")}
	if w := post(t, customhandler.New(a.app(), customhandler.Options{}), "/incident-export-tenant", "queue-host.json"); w.Code != 500 || !strings.Contains(w.Body.String(), "token refused") {
		t.Fatalf("failure: %d %s", w.Code, w.Body)
	}
}

func TestHTTPEnvelopePayloads(t *testing.T) {
	for _, tc := range []struct {
		fixture, fn string
		method      string
		path        string
		params      map[string]string
		query       string
		body        []byte
		header      [2]string
	}{
		{"http-get-query.json", "hunting-query", "GET", "/api/hunting-query", map[string]string{}, "name=failed-logons&top=10", nil, [2]string{"Accept", "application/x-ndjson"}},
		{"http-post-json.json", "ticket-webhook", "POST", "/api/ticket-webhook/jira", map[string]string{"provider": "jira"}, "", []byte(`{"webhookEvent":"jira:issue_updated","x":1}`), [2]string{"X-Hub-Signature", "sha256=8f4c"}},
		{"http-post-text.json", "ticket-webhook", "POST", "/api/ticket-webhook/generic", map[string]string{"provider": "generic"}, "", []byte("hello world"), [2]string{"Content-Type", "text/plain; charset=utf-8"}},
		{"http-post-binary.json", "ticket-webhook", "POST", "/api/ticket-webhook/generic", map[string]string{"provider": "generic"}, "", []byte{0, 1, 2, 0xff, '\n'}, [2]string{"Content-Type", "application/octet-stream"}},
		{"http-no-body.json", "ticket-webhook", "POST", "/api/ticket-webhook/servicenow", map[string]string{"provider": "servicenow"}, "", nil, [2]string{"Content-Length", "0"}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			a := &recorderApp{}
			w := post(t, customhandler.New(a.app(), customhandler.Options{}), "/"+tc.fn, tc.fixture)
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			r := a.req
			if r.Method != tc.method || r.Path != tc.path || !reflect.DeepEqual(r.Params, tc.params) || r.Query.Encode() != tc.query ||
				!bytes.Equal(r.Body, tc.body) || r.Header.Get(tc.header[0]) != tc.header[1] {
				t.Fatalf("request %+v", r)
			}
			want := `{"Outputs":{"res":{"body":"{\"ok\":true}","headers":{"Content-Type":"application/json"},"statusCode":"202"}},"Logs":[],"ReturnValue":null}` + "\n"
			if w.Body.String() != want {
				t.Fatalf("answer\n%s\nwant\n%s", w.Body, want)
			}
		})
	}
}

func TestForwarded(t *testing.T) {
	a := &recorderApp{}
	h := customhandler.New(a.app(), customhandler.Options{MaxBody: 16})
	for _, tc := range []struct {
		method, path, body string
		status             int
		respBody           string
	}{
		{"GET", "/", "", 200, ""},
		{"GET", "/api/hunting-query?name=x", "", 202, `{"ok":true}`},
		{"POST", "/api/ticket-webhook/jira", `{"a":1}`, 202, `{"ok":true}`},
		{"GET", "/api/ticket-webhook/jira", "", 405, "method not allowed"},
		{"POST", "/api/nothing-here", "", 404, "no function at /api/nothing-here"},
		{"POST", "/api/ticket-webhook/jira", strings.Repeat("x", 17), 413, "request body larger than 16 bytes"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
		req.Header.Set("X-Azure-Functions-InvocationId", "inv-"+tc.method)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.status || w.Body.String() != tc.respBody {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, w.Code, w.Body, tc.status, tc.respBody)
		}
	}
	if a.req.Params["provider"] != "jira" || string(a.req.Body) != `{"a":1}` {
		t.Fatalf("request %+v", a.req)
	}
	// Every line logged during an invocation carries its ID.
	for _, line := range strings.Split(strings.TrimSpace(a.logs.String()), "\n") {
		var m map[string]any
		json.Unmarshal([]byte(line), &m)
		if id, _ := m["invocation_id"].(string); !strings.HasPrefix(id, "inv-") {
			t.Fatalf("log line without the invocation ID: %s", line)
		}
	}
}

func TestEasyAuthPrincipal(t *testing.T) {
	principal := base64.StdEncoding.EncodeToString([]byte(`{"auth_typ":"aad","claims":[{"typ":"name","val":"soar-playbook"},{"typ":"roles","val":"Hunting.Run"},{"typ":"roles","val":"Hunting.Admin"}],"name_typ":"name","role_typ":"roles"}`))
	for _, trust := range []bool{false, true} {
		a := &recorderApp{}
		h := customhandler.New(a.app(), customhandler.Options{TrustEasyAuth: trust})
		req := httptest.NewRequest("GET", "/api/hunting-query", nil)
		req.Header.Set("X-MS-CLIENT-PRINCIPAL", principal)
		h.ServeHTTP(httptest.NewRecorder(), req)
		if !trust && a.req.Principal != nil {
			t.Fatal("the principal header was trusted without Easy Auth")
		}
		if trust && (a.req.Principal == nil || a.req.Principal.Name != "soar-playbook" || !a.req.Principal.HasRole("Hunting.Admin")) {
			t.Fatalf("principal %+v", a.req.Principal)
		}
	}
}

func TestStreamedResponse(t *testing.T) {
	app := &function.App{HTTP: map[string]function.HTTPRoute{"s": {Descriptor: function.Descriptor{HTTP: &function.HTTPBinding{Route: "s", Methods: []string{"get"}}}, Func: func(context.Context, *function.HTTPRequest) *function.HTTPResponse {
		return &function.HTTPResponse{Status: 200, Stream: func(w io.Writer) error { io.WriteString(w, "a\n"); io.WriteString(w, "b\n"); return nil }}
	}}}, Logger: slog.New(slog.DiscardHandler)}
	w := httptest.NewRecorder()
	customhandler.New(app, customhandler.Options{}).ServeHTTP(w, httptest.NewRequest("GET", "/api/s", nil))
	if w.Body.String() != "a\nb\n" {
		t.Fatalf("%q", w.Body)
	}
}

// A broken envelope fails the invocation (500) with what is wrong, and the
// function does not run; names in another case are still understood.
func TestBrokenEnvelopes(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		status           int
		want             string // in the answer's Logs
	}{
		{"not JSON", "/hunting-query", `{"Data":`, 500, "hunting-query failed: the host's invocation request is not the expected JSON envelope"},
		{"not JSON (timer)", "/incident-export", `Data`, 500, "incident-export failed: the host's invocation request is not the expected JSON envelope"},
		{"no req binding", "/hunting-query", `{"Data":{},"Metadata":{}}`, 500, `hunting-query failed: Data has no "req" binding`},
		{"headers of the wrong type", "/hunting-query", `{"Data":{"req":{"Url":"http://x/api/hunting-query","Method":"GET","Headers":"x"}}}`, 500, "hunting-query failed: HTTP data:"},
		{"query of the wrong type", "/hunting-query", `{"Data":{"req":{"Url":"http://x/api/hunting-query","Method":"GET","Query":{"a":1}}}}`, 500, "hunting-query failed: HTTP data: Query:"},
		{"timer data of the wrong type", "/incident-export", `{"Data":{"timer":{"IsPastDue":"yes"}}}`, 500, "incident-export failed: timer data:"},
		{"unknown function", "/nothing", `{"Data":{}}`, 500, `nothing failed: no function named "nothing"`},
		{"names in another case", "/hunting-query", `{"data":{"REQ":{"url":"http://x/api/hunting-query","method":"GET","query":{"name":"x"}}}}`, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &recorderApp{}
			req := httptest.NewRequest("POST", tc.path, strings.NewReader(tc.body))
			w := httptest.NewRecorder()
			customhandler.New(a.app(), customhandler.Options{}).ServeHTTP(w, req)
			var res struct{ Logs []string }
			json.Unmarshal(w.Body.Bytes(), &res)
			if w.Code != tc.status || tc.want != "" && (len(res.Logs) != 1 || !strings.HasPrefix(res.Logs[0], tc.want)) {
				t.Fatalf("%d %s, want %d and a log starting %q", w.Code, w.Body, tc.status, tc.want)
			}
			if ran := a.req != nil || !a.timer.ScheduledTime.IsZero(); ran != (tc.status == 200) {
				t.Fatalf("the function ran: %v", ran)
			}
			if tc.status == 200 && (a.req.Method != "GET" || a.req.Query.Get("name") != "x") {
				t.Fatalf("request %+v", a.req)
			}
		})
	}
}

// maxDequeueCount is read as the host reads it, and a message on that
// delivery is the last.
func TestHostMaxDequeueCount(t *testing.T) {
	for _, tc := range []struct {
		name, hostJSON, env string
		want                int
		err                 string
	}{
		{name: "the repository's host.json", hostJSON: "../../host.json", want: 5},
		{name: "set", hostJSON: `{"version":"2.0","extensions":{"queues":{"maxDequeueCount":2}}}`, want: 2},
		{name: "keys in another case", hostJSON: `{"Extensions":{"Queues":{"MaxDequeueCount":3}}}`, want: 3},
		{name: "not set", hostJSON: `{"version":"2.0"}`, want: 0},
		{name: "no host.json", want: 0},
		{name: "the app setting overrides", hostJSON: `{"extensions":{"queues":{"maxDequeueCount":2}}}`, env: "7", want: 7},
		{name: "app setting not a number", env: "five", err: `AzureFunctionsJobHost__extensions__queues__maxDequeueCount="five" is not a positive number`},
		{name: "zero", hostJSON: `{"extensions":{"queues":{"maxDequeueCount":0}}}`, err: "maxDequeueCount is 0; the host needs a positive number"},
		{name: "host.json broken", hostJSON: `{"extensions":`, err: "host.json: unexpected end of JSON input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			switch {
			case strings.HasPrefix(tc.hostJSON, "../"):
				b, err := os.ReadFile(tc.hostJSON)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(dir, "host.json"), b, 0o644)
			case tc.hostJSON != "":
				os.WriteFile(filepath.Join(dir, "host.json"), []byte(tc.hostJSON), 0o644)
			}
			n, err := customhandler.HostMaxDequeueCount(dir, func(k string) string {
				if k == customhandler.EnvMaxDequeueCount {
					return tc.env
				}
				return ""
			})
			if n != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("%d %v, want %d %q", n, err, tc.want, tc.err)
			}
		})
	}
	// With maxDequeueCount 2, the second delivery is the last.
	a := &recorderApp{}
	post(t, customhandler.New(a.app(), customhandler.Options{MaxDequeueCount: 2}), "/incident-export-tenant", "queue-host.json")
	if a.msg.DequeueCount != 2 || !a.msg.LastAttempt {
		t.Fatalf("%+v", a.msg)
	}
}
