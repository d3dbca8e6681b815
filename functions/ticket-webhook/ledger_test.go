package ticketwebhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/state"
)

// The ledger forgets a delivery after WEBHOOK_DEDUPE_TTL: a redelivery is
// then applied again, and finds nothing left to change.
func TestLedgerExpiry(t *testing.T) {
	r := newRig(t, "graph")
	r.reset(t, "1001")
	st, err := state.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	rc := &ticketwebhook.Receiver{Mapping: builtin(t), Keys: ticketwebhook.StaticKeys{"generic": {r.gen}},
		Clients: map[string]defender.Client{"contoso": r.client(t)}, DefaultTenant: "contoso", State: st,
		Tolerance: 5 * time.Minute, RetryWindow: time.Hour, DedupeTTL: 24 * time.Hour, Timeout: 5 * time.Second, MaxBody: 1 << 20,
		Now: func() time.Time { return clock }}
	body := fixture(t, "generic-resolved.json")
	send := func() string {
		d := standardDelivery("generic", r.gen, "msg_ttl", clock, body)
		resp := rc.Serve(context.Background(), &function.HTTPRequest{Method: "POST", Params: map[string]string{"provider": "generic"}, Header: d.header, Body: d.body})
		var o ticketwebhook.Outcome
		if err := json.Unmarshal(resp.Body, &o); err != nil || resp.Status != 200 {
			t.Fatalf("%d %s", resp.Status, resp.Body)
		}
		return o.Status + "/" + o.Comment
	}
	for _, step := range []struct {
		advance time.Duration
		want    string
	}{{0, "applied/added"}, {23 * time.Hour, "duplicate/"}, {2 * time.Hour, "unchanged/exists"}, {time.Minute, "duplicate/"}} {
		clock = clock.Add(step.advance)
		if got := send(); got != step.want {
			t.Fatalf("after %s: %s, want %s", step.advance, got, step.want)
		}
	}
}

// On Blob Storage (Azurite) the claim is exclusive across concurrent
// deliveries, as on files.
func TestLedgerOnAzurite(t *testing.T) {
	az := emulators.StartAzurite(t)
	c, _ := container.NewClientFromConnectionString(az.ConnectionString, "state", nil)
	if _, err := c.Create(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, "graph", "STATE_STORE", az.BlobURL+"/state", "AzureWebJobsStorage", az.ConnectionString)
	r.reset(t, "1001")
	d := r.jiraDelivery(t, "jira-comment-created.json", "9b1c5d7e-6001", time.Now())
	var wg sync.WaitGroup
	results := make([]answer, 6)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.send(t, delivery{d.provider, d.header.Clone(), bytes.Clone(d.body)})
		}()
	}
	wg.Wait()
	applied := 0
	for _, a := range results {
		switch {
		case a.Status == "applied":
			applied++
		case a.Status == "duplicate", a.status == http.StatusServiceUnavailable && a.code() == "InProgress":
		default:
			t.Fatalf("unexpected %d %+v", a.status, a)
		}
	}
	if applied != 1 {
		t.Fatalf("%d applied", applied)
	}
	if a := r.send(t, d); a.Status != "duplicate" {
		t.Fatalf("after: %+v", a)
	}
	var names []string
	pager := c.NewListBlobsFlatPager(nil)
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	// The body-hash record, the identifier record and the link.
	if len(names) != 3 || !strings.HasPrefix(strings.Join(names, " "), "webhook-deliveries/jira/") {
		t.Fatalf("blobs: %v", names)
	}
}
