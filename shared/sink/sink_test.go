package sink_test

import (
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
)

// Each sink stores objects under their names, a rewrite overwrites, and a
// name that could escape the root is refused.
func TestSinks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	az := emulators.StartAzurite(t)
	cc, _ := container.NewClientFromConnectionString(az.ConnectionString, "exports", nil)
	if _, err := cc.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	s3srv := emulators.StartS3(t, "exports")
	t.Setenv("AWS_ACCESS_KEY_ID", "S3RVER")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
	t.Setenv("AWS_REGION", "us-east-1")

	s3client := func() *s3.Client {
		cfg, _ := awsconfig.LoadDefaultConfig(ctx)
		return s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(s3srv.Endpoint); o.UsePathStyle = true })
	}()
	read := map[string]func(name string) string{
		"file": func(n string) string { b, _ := os.ReadFile(filepath.Join(dir, n)); return string(b) },
		"blob": func(n string) string {
			r, err := cc.NewBlobClient(n).DownloadStream(ctx, nil)
			if err != nil {
				return ""
			}
			b, _ := io.ReadAll(r.Body)
			return string(b)
		},
		"s3": func(n string) string {
			r, err := s3client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("exports"), Key: aws.String("defender/" + n)})
			if err != nil {
				return ""
			}
			b, _ := io.ReadAll(r.Body)
			return string(b)
		},
	}
	urls := map[string]string{"file": "file://" + dir, "blob": az.BlobURL + "/exports", "s3": "s3://exports/defender"}
	for name, u := range urls {
		t.Run(name, func(t *testing.T) {
			s, err := sink.Open(u, sink.Options{Blob: state.BlobOptions{ConnectionString: az.ConnectionString}, S3: sink.S3Options{Endpoint: s3srv.Endpoint}})
			if err != nil {
				t.Fatal(err)
			}
			objs := []sink.Object{{Name: "t/2026/11/26/1_a.json", Data: []byte("{\"v\":1}\n")}, {Name: "t/2026/11/26/2_b.json", Data: []byte("{\"v\":2}\n")}}
			if err := s.Write(ctx, objs); err != nil {
				t.Fatal(err)
			}
			objs[0].Data = []byte("{\"v\":3}\n")
			if err := s.Write(ctx, objs[:1]); err != nil {
				t.Fatal(err)
			}
			// Only the file sink defers durability to a Sync; the cloud
			// sinks' writes are durable when they return.
			sy, ok := s.(sink.Syncer)
			if ok != (name == "file") {
				t.Fatalf("%s: Syncer = %v", name, ok)
			}
			if ok {
				if err := sy.Sync(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if got := read[name]("t/2026/11/26/1_a.json"); got != "{\"v\":3}\n" {
				t.Fatalf("overwrite: %q", got)
			}
			if got := read[name]("t/2026/11/26/2_b.json"); got != "{\"v\":2}\n" {
				t.Fatalf("second object: %q", got)
			}
			if name == "file" {
				// Incidents are for the sink's owner alone.
				fi, err := os.Stat(filepath.Join(dir, "t/2026/11/26/2_b.json"))
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("file mode %v (%v), want 0600", fi.Mode(), err)
				}
			}
			for _, bad := range []string{"../escape.json", "/abs.json", `a\b.json`} {
				if err := s.Write(ctx, []sink.Object{{Name: bad, Data: []byte("x")}}); err == nil {
					t.Errorf("name %q accepted", bad)
				}
			}
			// The batched layout asks whether an object landed: written is
			// there, never written is not, an escaping name is refused.
			ex := s.(sink.Exister)
			for n, want := range map[string]bool{"t/2026/11/26/2_b.json": true, "t/2026/11/26/3_c.ndjson.gz": false, "t/2026/11/27/1_a.json": false} {
				if got, err := ex.Exists(ctx, n); err != nil || got != want {
					t.Errorf("Exists(%s) = %v, %v; want %v", n, got, err, want)
				}
			}
			if _, err := ex.Exists(ctx, "../escape.json"); err == nil {
				t.Error("Exists of an escaping name was asked")
			}
		})
	}
	if _, err := sink.Open("ftp://x/y", sink.Options{}); err == nil {
		t.Fatal("an ftp sink was accepted")
	}
}

// A file that cannot be written is an error naming it, and leaves nothing
// behind: no temporary file, and the objects before it stay written.
func TestFileSinkFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		prepare func(dir string) // puts something in the way
		obj     string
	}{
		{"a directory where the object goes", func(dir string) { os.MkdirAll(filepath.Join(dir, "t/2026/11/26/2_b.json/x"), 0o750) }, "t/2026/11/26/2_b.json"},
		{"a file where its directory goes", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "t/2026/11"), 0o750)
			os.WriteFile(filepath.Join(dir, "t/2026/11/27"), nil, 0o640)
		}, "t/2026/11/27/2_b.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := sink.NewFileSink(dir)
			if err != nil {
				t.Fatal(err)
			}
			tc.prepare(dir)
			err = s.Write(context.Background(), []sink.Object{{Name: "t/2026/11/26/1_a.json", Data: []byte("{}\n")}, {Name: tc.obj, Data: []byte("{}\n")}})
			if err == nil || !strings.Contains(err.Error(), "sink: write "+tc.obj) {
				t.Fatalf("error %v, want one naming %s", err, tc.obj)
			}
			t.Log(err)
			var files []string
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && d.Name() != "27" {
					files = append(files, strings.TrimPrefix(p, dir+"/"))
				}
				return nil
			})
			if strings.Join(files, ",") != "t/2026/11/26/1_a.json" {
				t.Fatalf("files after the failure: %q", files)
			}
		})
	}
}

// A URL that is a collector's but not an endpoint the Splunk sink writes to
// is refused: once, it opened as a Blob container, and every export sent
// the storage token and the incidents to the collector.
func TestOpenNeverMistakesACollectorForAContainer(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	o := sink.Options{Blob: state.BlobOptions{Credential: staticToken{}, HTTPClient: srv.Client()}}
	for _, p := range []string{"/services/collector/raw", "/services/collector/raw/1.0", "/Services/Collector/Health"} {
		s, err := sink.Open(srv.URL+p, o)
		if err == nil {
			s.Write(context.Background(), []sink.Object{{Name: "t/1.json", Data: []byte("{}")}})
			t.Errorf("%s opened as %s", p, s)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the collector received %d requests", n)
	}
	// A SAS in a container URL is refused, and not shown.
	_, err := sink.Open("https://acct.blob.core.windows.net/exports?sv=2024-08-04&sig=c2VjcmV0", o)
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatalf("a container URL with a SAS: %v", err)
	}
}

type staticToken struct{}

func (staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "storage-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}
