package funchost

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// The request for a queue message is the one the host builds: the fixture
// the handler's tests read (shared/customhandler/testdata/queue-host.json,
// Data.msg encoded twice as GetHttpScriptInvocationContextValue does).
func TestQueueEnvelopeAsTheHostBuildsIt(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "customhandler", "testdata", "queue-host.json"))
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) *time.Time { v, _ := time.Parse(time.RFC3339Nano, s); return &v }
	id, pop, count := "9a1c0e5e-53b5-4b5f-9d0a-7f3e2c1b4a69", "AgAAAAMAAAAAAAAAwYwKzZ1G3QE=", int64(2)
	m := &azqueue.DequeuedMessage{MessageID: &id, PopReceipt: &pop, DequeueCount: &count,
		InsertionTime: at("2026-11-26T13:05:00.6185461Z"), ExpirationTime: at("2026-12-03T13:05:00.6185461Z"), TimeNextVisible: at("2026-11-26T13:15:01.2330912Z")}
	env := queueEnvelope("incident-export-tenant", "msg", `{"tenant":"4d2a9e1c-6b7f-4c1e-9a52-0c3f8d7e1b10","round":"2026-11-26T13:05:00Z"}`, m, *at("2026-11-26T13:05:01.2330912Z"))
	env["Metadata"].(map[string]any)["sys"].(map[string]any)["RandGuid"] = "5b6a1d3e-8f0c-4e2a-9b7d-1c2e3f4a5b6c"
	b, _ := json.Marshal(env)
	var got, exp any
	json.Unmarshal(b, &got)
	json.Unmarshal(want, &exp)
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("the envelope\n%s\nis not the host's\n%s", b, want)
	}
}

// An HTTP invocation's Data.req and Metadata as the host builds them: the
// query joined in Data and its last value in Metadata, a key per query
// parameter (not code), route value and JSON body property, route over
// query over body; a body only with a Content-Length.
func TestHTTPEnvelopeAsTheHostBuildsIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chunked bool
		ct      string
		want    any // Data.req.Body
	}{
		{"json", false, "application/json", `{"provider":"body","x":5,"ok":true,"at":"2026-11-26T13:05:00Z"}`},
		{"chunked", true, "application/json", nil},
		{"binary, any case", false, "Application/Octet-Stream", "eyJwcm92aWRlciI6ImJvZHkiLCJ4Ijo1LCJvayI6dHJ1ZSwiYXQiOiIyMDI2LTExLTI2VDEzOjA1OjAwWiJ9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"provider":"body","x":5,"ok":true,"at":"2026-11-26T13:05:00Z"}`
			r := httptest.NewRequest("POST", "http://localhost:7071/api/ticket-webhook/jira?a=1&a=2&code=k&provider=query", strings.NewReader(body))
			r.Header.Set("Content-Type", tc.ct)
			if tc.chunked {
				r.ContentLength = -1
			}
			req, meta := httpEnvelope(r, []byte(body), "ticket-webhook", map[string]string{"provider": "jira"})
			if req["Body"] != tc.want {
				t.Errorf("Body = %v, want %v", req["Body"], tc.want)
			}
			if q := req["Query"].(map[string]string); q["a"] != "1,2" || q["code"] != "k" {
				t.Errorf("Data's Query %v", q)
			}
			if q := meta["Query"].(map[string]string); q["a"] != "2" {
				t.Errorf("Metadata's Query %v", q)
			}
			wantMeta := map[string]any{"provider": `"jira"`, "a": `"2"`}
			if !tc.chunked {
				wantMeta["x"], wantMeta["ok"], wantMeta["at"] = `"5"`, `"True"`, `"11/26/2026 13:05:00"`
			}
			for k, v := range wantMeta {
				if meta[k] != v {
					t.Errorf("Metadata[%s] = %v, want %v", k, meta[k], v)
				}
			}
			if _, ok := meta["code"]; ok {
				t.Error("the function key is a metadata key")
			}
			if tc.chunked && meta["x"] != nil {
				t.Error("a dropped body's properties are metadata")
			}
		})
	}
}
