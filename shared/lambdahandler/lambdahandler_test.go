package lambdahandler_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/lambdahandler"
)

type seen struct {
	req   *function.HTTPRequest
	timer *function.Timer
	mu    sync.Mutex
	msgs  []function.Message
}

func app(s *seen) *function.App {
	h := func(ctx context.Context, r *function.HTTPRequest) *function.HTTPResponse {
		s.req = r
		return &function.HTTPResponse{Status: 201, Body: []byte("made"), Header: map[string][]string{"X-Test": {"a", "b"}}}
	}
	return &function.App{Logger: slog.New(slog.DiscardHandler),
		HTTP: map[string]function.HTTPRoute{
			"path": {Descriptor: function.Descriptor{HTTP: &function.HTTPBinding{Route: "my/path", Methods: []string{"get", "post"}}}, Func: h},
		},
		Timers: map[string]function.TimerRoute{"incident-export": {Func: func(ctx context.Context, t function.Timer) error {
			s.timer = &t
			if t.ScheduledTime.Year() == 1999 {
				return errors.New("export failed")
			}
			return nil
		}}},
		Queues: map[string]function.QueueRoute{"incident-export-tenant": {Func: func(ctx context.Context, m function.Message) error {
			s.mu.Lock()
			s.msgs = append(s.msgs, m)
			s.mu.Unlock()
			if strings.Contains(string(m.Body), "b7c1e2d3") {
				return errors.New("token refused")
			}
			return nil
		}}},
	}
}

// An SQS batch: every message is given to the queue function, and the
// answer names the failed ones, for the event source mapping to leave on
// the queue (and, past maxReceiveCount, to the dead-letter queue).
func TestSQSEvents(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		want    string
		msgs    []function.Message
	}{
		{"sqs-event-tasks.json", `{"batchItemFailures":[{"itemIdentifier":"9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"}]}`, []function.Message{
			{ID: "0c1f2a3b-4d5e-4f60-8172-93a4b5c6d7e8", Body: []byte(`{"tenant":"4d2a9e1c-6b7f-4c1e-9a52-0c3f8d7e1b10","round":"2026-11-26T13:05:00Z"}`), DequeueCount: 1, InsertedAt: time.UnixMilli(1764162300612).UTC()},
			{ID: "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a", Body: []byte(`{"tenant":"b7c1e2d3-0f4a-4b5c-8d6e-7f8091a2b3c4","round":"2026-11-26T13:05:00Z"}`), DequeueCount: 5, InsertedAt: time.UnixMilli(1764162300615).UTC(), LastAttempt: true},
		}},
		{"sqs-event.json", `{"batchItemFailures":[]}`, []function.Message{
			{ID: "MessageID_1", Body: []byte("Message Body"), DequeueCount: 2, InsertedAt: time.UnixMilli(1520621625029).UTC()},
		}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			s := &seen{}
			out, err := invoke(t, lambdahandler.New(app(s), lambdahandler.Options{}), tc.fixture)
			if err != nil || string(out) != tc.want {
				t.Fatalf("%s %v, want %s", out, err, tc.want)
			}
			slices.SortFunc(s.msgs, func(a, b function.Message) int { return strings.Compare(string(a.Body), string(b.Body)) })
			if !reflect.DeepEqual(s.msgs, tc.msgs) {
				t.Fatalf("messages %+v, want %+v", s.msgs, tc.msgs)
			}
		})
	}
}

func invoke(t *testing.T, h *lambdahandler.Handler, fixture string) ([]byte, error) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + fixture)
	if err != nil {
		t.Fatal(err)
	}
	return h.Invoke(context.Background(), b)
}

func TestHTTPEvents(t *testing.T) {
	for _, tc := range []struct {
		fixture, method string
		body            string
		principal       *function.Principal
	}{
		{"apigw-v2-request-jwt-authorizer.json", "GET", "{\r\n\t\"a\": 1\r\n}", &function.Principal{Source: "jwt-authorizer"}},
		// App-only Entra ID tokens for the API app, both token versions: the
		// calling app is named, its roles read.
		{"apigw-v2-request-entra-v1-token.json", "GET", "{\r\n\t\"a\": 1\r\n}", &function.Principal{Source: "jwt-authorizer", Name: "5b1a9d4e-3c2f-4e8a-9f70-1d2c3b4a5e6f", Roles: []string{"Hunting.Run", "Hunting.Adhoc"}}},
		{"apigw-v2-request-entra-v2-token.json", "GET", "{\r\n\t\"a\": 1\r\n}", &function.Principal{Source: "jwt-authorizer", Name: "5b1a9d4e-3c2f-4e8a-9f70-1d2c3b4a5e6f", Roles: []string{"Hunting.Run"}}},
		{"apigw-v2-request-lambda-authorizer.json", "GET", "{\r\n\t\"a\": 1\r\n}", &function.Principal{Source: "lambda-authorizer"}},
		{"lambda-urls-request.json", "POST", "Hello from client!", &function.Principal{Source: "iam", Name: "arn:aws:iam::111122223333:user/example-user"}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			s := &seen{}
			out, err := invoke(t, lambdahandler.New(app(s), lambdahandler.Options{}), tc.fixture)
			if err != nil {
				t.Fatal(err)
			}
			var resp events.APIGatewayV2HTTPResponse
			json.Unmarshal(out, &resp)
			if resp.StatusCode != 201 || resp.Body != "made" || resp.Headers["X-Test"] != "a, b" {
				t.Fatalf("response %s", out)
			}
			r := s.req
			if r.Method != tc.method || r.Path != "/api/my/path" || string(r.Body) != tc.body || r.Query.Get("parameter2") != "value" ||
				strings.Join(r.Query["parameter1"], ",") != "value1,value2" || r.Header.Get("Cookie") != "cookie1; cookie2" {
				t.Fatalf("request %+v", r)
			}
			if r.Principal == nil || r.Principal.Source != tc.principal.Source || r.Principal.Name != tc.principal.Name {
				t.Fatalf("principal %+v, want %+v", r.Principal, tc.principal)
			}
		})
	}
}

func TestScheduledEvents(t *testing.T) {
	s := &seen{}
	h := lambdahandler.New(app(s), lambdahandler.Options{})
	out, err := invoke(t, h, "eventbridge-scheduled-event.json")
	if err != nil || !s.timer.ScheduledTime.Equal(time.Date(2015, 10, 8, 16, 53, 6, 0, time.UTC)) || !strings.Contains(string(out), `"status":"completed"`) {
		t.Fatalf("scheduled event: %v %s %+v", err, out, s.timer)
	}
	out, err = invoke(t, h, "scheduler-input.json")
	if err != nil || !s.timer.ScheduledTime.Equal(time.Date(2026, 11, 26, 13, 5, 0, 0, time.UTC)) {
		t.Fatalf("scheduler: %v %s", err, out)
	}
	if _, err := h.Invoke(context.Background(), []byte(`{"source":"scheduler","function":"nope"}`)); err == nil || !strings.Contains(err.Error(), `no timer function "nope" (have incident-export)`) {
		t.Fatalf("unknown timer: %v", err)
	}
	if _, err := h.Invoke(context.Background(), []byte(`{"version":"0","detail-type":"Scheduled Event","source":"aws.events","time":"1999-01-01T00:00:00Z"}`)); err == nil || err.Error() != "export failed" {
		t.Fatalf("failing timer: %v", err)
	}
}

func TestUnsupportedEvents(t *testing.T) {
	h := lambdahandler.New(app(&seen{}), lambdahandler.Options{})
	for _, payload := range [][]byte{mustRead(t, "s3-event.json"), []byte(`[1,2]`), []byte(`"x"`)} {
		if _, err := h.Invoke(context.Background(), payload); err == nil {
			t.Fatalf("accepted %s", payload)
		}
	}
	// An oversized body is refused before the function runs.
	big := lambdahandler.New(app(&seen{}), lambdahandler.Options{MaxBody: 4})
	out, _ := invoke(t, big, "lambda-urls-request.json")
	if !strings.Contains(string(out), `"statusCode":413`) {
		t.Fatalf("oversized: %s", out)
	}
}

func mustRead(t *testing.T, f string) []byte {
	b, err := os.ReadFile("testdata/" + f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
