package incidentexport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
)

// mirrorBlobs copies a container into a directory, for verify.
func mirrorBlobs(t *testing.T, c *container.Client) string {
	dir := t.TempDir()
	pager := c.NewListBlobsFlatPager(nil)
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			r, err := c.NewBlobClient(*b.Name).DownloadStream(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(r.Body)
			p := filepath.Join(dir, *b.Name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, data, 0o644)
		}
	}
	return dir
}

// The export on Azurite: Blob state and Blob sink, exactly once across
// changing runs; two concurrent runs on the same Blob state: one wins.
func TestExportOnAzurite(t *testing.T) {
	az := emulators.StartAzurite(t)
	ctx := context.Background()
	opts := state.BlobOptions{ConnectionString: az.ConnectionString}
	for _, name := range []string{"exports", "state"} {
		c, _ := container.NewClientFromConnectionString(az.ConnectionString, name, nil)
		if _, err := c.Create(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	s := devstack.Start(t, devstack.Options{Incidents: 1200})
	e := newEnv(t, s, "graph")
	bs, err := sink.Open(az.BlobURL+"/exports", sink.Options{Blob: opts})
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(az.BlobURL+"/state", opts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.run(t, e.exporter(t, bs, st)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(e.logs.String(), "Another run is exporting this tenant"); n != 1 {
		t.Fatalf("%d runs stopped as losers, want 1", n)
	}
	for round := 0; round < 3; round++ {
		s.Mutate(4)
		if err := e.run(t, e.exporter(t, bs, st)); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := container.NewClientFromConnectionString(az.ConnectionString, "exports", nil)
	verify(t, s, mirrorBlobs(t, c), devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// The export to s3rver: exactly once across changing runs.
func TestExportToS3(t *testing.T) {
	srv := emulators.StartS3(t, "exports")
	t.Setenv("AWS_ACCESS_KEY_ID", "S3RVER")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
	t.Setenv("AWS_REGION", "us-east-1")
	s := devstack.Start(t, devstack.Options{Incidents: 800})
	e := newEnv(t, s, "graph")
	sk, err := sink.Open("s3://exports/defender", sink.Options{S3: sink.S3Options{Endpoint: srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		if err := e.run(t, e.exporter(t, sk, nil)); err != nil {
			t.Fatal(err)
		}
		s.Mutate(3)
	}
	if err := e.run(t, e.exporter(t, sk, nil)); err != nil {
		t.Fatal(err)
	}
	dir := mirrorS3(t, srv.Endpoint)
	verify(t, s, dir, devstack.DefaultTenantID, devstack.DefaultTenantID, time.Now().Add(-40*24*time.Hour))
}

// mirrorS3 copies the bucket's defender/ prefix into a directory, for verify.
func mirrorS3(t *testing.T, endpoint string) string {
	ctx := context.Background()
	cfg, _ := awsconfig.LoadDefaultConfig(ctx)
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(endpoint); o.UsePathStyle = true })
	dir := t.TempDir()
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String("exports"), Prefix: aws.String("defender/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			r, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("exports"), Key: o.Key})
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(r.Body)
			r.Body.Close()
			f := filepath.Join(dir, strings.TrimPrefix(*o.Key, "defender/"))
			os.MkdirAll(filepath.Dir(f), 0o755)
			os.WriteFile(f, data, 0o644)
		}
	}
	return dir
}

// siemRow is a row or event a SIEM holds, as the export sent it.
type siemRow struct {
	VersionID, Tenant, IncidentID string
	Incident                      json.RawMessage
}

// logsVersions puts each version's rows together (the incident, its
// alerts from parts 0..Parts-1), as the README's query does, and counts the
// rows that were copies. A version with a part missing (a kill between two
// requests of one write, never sent again because the incident changed
// before the next run) is left out: the proof needs current versions whole.
func logsVersions(t *testing.T, s *devstack.Stack) ([]siemRow, int) {
	type part struct {
		row  map[string]any
		seen int
	}
	byID := map[string]map[int64]*part{}
	var order []string
	for _, r := range s.LogsRows() {
		id := fmt.Sprint(r["VersionId"])
		if byID[id] == nil {
			byID[id] = map[int64]*part{}
			order = append(order, id)
		}
		n, _ := r["Part"].(int64)
		if p := byID[id][n]; p != nil {
			p.seen++
			continue
		}
		byID[id][n] = &part{row: r, seen: 1}
	}
	var out []siemRow
	copies := 0
	for _, id := range order {
		parts := byID[id]
		first := parts[0]
		for _, p := range parts {
			copies += p.seen - 1
		}
		if first == nil || int64(len(parts)) != first.row["Parts"].(int64) {
			continue
		}
		var in map[string]json.RawMessage
		if err := json.Unmarshal(first.row["Incident"].(json.RawMessage), &in); err != nil {
			t.Fatalf("%s: Incident is not JSON: %v", id, err)
		}
		var alerts []json.RawMessage
		for n := range int64(len(parts)) {
			var as []json.RawMessage
			raw, ok := parts[n].row["Alerts"].(json.RawMessage)
			if !ok || json.Unmarshal(raw, &as) != nil {
				t.Fatalf("%s part %d: Alerts is not a JSON array (truncated by the service?)", id, n)
			}
			alerts = append(alerts, as...)
		}
		in["alerts"], _ = json.Marshal(alerts)
		b, _ := json.Marshal(in)
		r := first.row
		out = append(out, siemRow{id, fmt.Sprint(r["Tenant"]), fmt.Sprint(r["IncidentId"]), b})
	}
	return out, copies
}

func hecVersions(t *testing.T, s *devstack.Stack) []siemRow {
	var out []siemRow
	for _, raw := range s.HECEvents() {
		var ev sink.SplunkEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatalf("the collector holds an event that is not one: %v", err)
		}
		out = append(out, siemRow{ev.Fields.VersionID, ev.Fields.Tenant, ev.Fields.IncidentID, ev.Event})
	}
	return out
}

// mirrorRows writes each version a SIEM holds to a file named as the file
// sink names it, once: the query that keeps one row per version ID. It
// fails on a row whose version ID is not its incident's, and returns how
// many rows were copies of a version already seen.
func mirrorRows(t *testing.T, rows []siemRow) (string, int) {
	dir := t.TempDir()
	seen := map[string]bool{}
	copies := 0
	for _, r := range rows {
		var in struct {
			ID                 string      `json:"id"`
			IncidentID         json.Number `json:"incidentId"`
			LastUpdateDateTime time.Time   `json:"lastUpdateDateTime"`
			LastUpdateTime     time.Time   `json:"lastUpdateTime"`
		}
		if err := json.Unmarshal(r.Incident, &in); err != nil {
			t.Fatalf("row %s holds no incident: %v", r.VersionID, err)
		}
		id, lu := in.ID, in.LastUpdateDateTime
		if id == "" {
			id, lu = string(in.IncidentID), in.LastUpdateTime
		}
		if want := r.Tenant + "/" + id + "/" + lu.UTC().Format("2006-01-02T15:04:05.0000000Z"); r.VersionID != want || r.IncidentID != id {
			t.Fatalf("row %s (incident %s) holds version %s", r.VersionID, r.IncidentID, want)
		}
		if seen[r.VersionID] {
			copies++
			continue
		}
		seen[r.VersionID] = true
		p := filepath.Join(dir, r.Tenant, lu.UTC().Format("2006/01/02"), id+"_"+lu.UTC().Format("20060102T150405.0000000Z")+".json")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, r.Incident, 0o644)
	}
	return dir, copies
}
