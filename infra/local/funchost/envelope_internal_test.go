package funchost

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
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
