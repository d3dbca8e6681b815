package incidentexport_test

import (
	"context"
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
	if n := strings.Count(e.logs.String(), "another run is exporting this tenant"); n != 1 {
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
