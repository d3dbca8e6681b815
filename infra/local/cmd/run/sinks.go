package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// A sink is where make run's export goes (SINK=…), the settings that
// point the app at it, and how to count what it holds.
type sink struct {
	name     string
	settings map[string]string
	// objects lists what an object store holds (nil for a SIEM).
	objects func(ctx context.Context) ([]object, error)
	// rows counts what a SIEM indexed (nil for an object store).
	rows  func() int
	close func()
}

// An object is one stored object, opened on demand.
type object struct {
	name string
	open func(ctx context.Context) (io.ReadCloser, error)
}

// The export's bucket and container on the emulators.
const bucket = "exports"

// openSink starts what the sink needs and says how the app reaches it.
// settings are the devstack's.
func openSink(kind, layout, dir string, s *devstack.Stack, settings map[string]string) (*sink, error) {
	set := map[string]string{"EXPORT_LAYOUT": layout}
	k := &sink{name: kind, settings: set, close: func() {}}
	switch kind {
	case "file":
		root := strings.TrimPrefix(settings["EXPORT_SINK"], "file://")
		k.objects = func(context.Context) ([]object, error) { return fileObjects(root) }
	case "logs":
		set["EXPORT_SINK"] = settings["DEVSTACK_LOGS_SINK"]
		k.rows = func() int { return len(s.LogsRows()) }
	case "splunk":
		set["EXPORT_SINK"] = settings["DEVSTACK_HEC_SINK"]
		k.rows = func() int { return len(s.HECEvents()) }
	case "blob":
		return k, blobSink(k, dir)
	case "s3":
		return k, s3Sink(k, dir)
	}
	return k, nil
}

// checkSink refuses a sink or layout make run does not have, before
// anything starts.
func checkSink(kind, layout string) error {
	switch kind {
	case "file", "blob", "s3", "logs", "splunk":
	default:
		return fmt.Errorf("SINK=%s: use file, blob, s3, logs or splunk", kind)
	}
	if layout != "versions" && layout != "batches" {
		return fmt.Errorf("LAYOUT=%s: use versions (one object per incident version) or batches (one compressed object per batch)", layout)
	}
	if layout == "batches" && (kind == "logs" || kind == "splunk") {
		return fmt.Errorf("LAYOUT=batches writes objects, and SINK=%s is a SIEM, which takes rows: use SINK=file, blob or s3 with it", kind)
	}
	return nil
}

// blobSink starts Azurite and creates the export's container in it.
func blobSink(k *sink, dir string) error {
	az, stop, err := emulators.LaunchAzurite(repoRoot())
	if err != nil {
		return err
	}
	k.close = stop
	svc, err := azblob.NewClientFromConnectionString(az.ConnectionString, nil)
	if err != nil {
		return err
	}
	if _, err := svc.CreateContainer(context.Background(), bucket, nil); err != nil {
		return fmt.Errorf("Azurite: creating the container: %w", err)
	}
	k.settings["AzureWebJobsStorage"] = az.ConnectionString
	k.settings["EXPORT_SINK"] = az.BlobURL + "/" + bucket
	k.objects = func(ctx context.Context) ([]object, error) {
		var objs []object
		for p := svc.NewListBlobsFlatPager(bucket, nil); p.More(); {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, b := range page.Segment.BlobItems {
				name := *b.Name
				objs = append(objs, object{name, func(ctx context.Context) (io.ReadCloser, error) {
					r, err := svc.DownloadStream(ctx, bucket, name, nil)
					if err != nil {
						return nil, err
					}
					return r.Body, nil
				}})
			}
		}
		return objs, nil
	}
	return nil
}

// s3Sink starts s3rver, its objects under dir/s3, with the export's bucket.
func s3Sink(k *sink, dir string) error {
	data := filepath.Join(dir, "s3")
	os.RemoveAll(data)
	srv, stop, err := emulators.LaunchS3(repoRoot(), data, bucket)
	if err != nil {
		return err
	}
	k.close = stop
	// s3rver's fixed development credentials: not a secret.
	for key, v := range map[string]string{"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_REGION": "us-east-1",
		"EXPORT_SINK": "s3://" + bucket + "/defender", "EXPORT_S3_ENDPOINT": srv.Endpoint} {
		k.settings[key] = v
	}
	k.objects = func(ctx context.Context) ([]object, error) {
		cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion("us-east-1"),
			awsconfig.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{AccessKeyID: "S3RVER", SecretAccessKey: "S3RVER"}, nil
			})))
		if err != nil {
			return nil, err
		}
		c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(srv.Endpoint); o.UsePathStyle = true })
		var objs []object
		for p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}); p.HasMorePages(); {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, o := range page.Contents {
				key := *o.Key
				objs = append(objs, object{strings.TrimPrefix(key, "defender/"), func(ctx context.Context) (io.ReadCloser, error) {
					r, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
					if err != nil {
						return nil, err
					}
					return r.Body, nil
				}})
			}
		}
		return objs, nil
	}
	return nil
}

func fileObjects(root string) ([]object, error) {
	var objs []object
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		objs = append(objs, object{filepath.ToSlash(rel), func(context.Context) (io.ReadCloser, error) { return os.Open(p) }})
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return objs, err
}

// holds counts the incident versions the sink holds, and names one place
// they are: an object per version, or a line per version in a batch's
// compressed object. Manifests and doctor's write check are not versions.
func (k *sink) holds(ctx context.Context) (int, string, error) {
	if k.rows != nil {
		return k.rows(), "", nil
	}
	objs, err := k.objects(ctx)
	if err != nil {
		return 0, "", err
	}
	n, sample := 0, ""
	for _, o := range objs {
		if strings.HasPrefix(o.name, "_") { // _manifests/, _doctor/
			continue
		}
		switch path.Ext(o.name) {
		case ".json":
			n++
		case ".gz":
			lines, err := countLines(ctx, o)
			if err != nil {
				return 0, "", fmt.Errorf("%s: %w", o.name, err)
			}
			n += lines
		default:
			continue
		}
		if sample == "" {
			sample = o.name
		}
	}
	return n, sample, nil
}

func countLines(ctx context.Context, o object) (int, error) {
	r, err := o.open(ctx)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	zr, err := gzip.NewReader(r)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	n := 0
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

// repoRoot is where make run runs: the repository, whose .tools hold the
// emulators.
func repoRoot() string {
	wd, _ := os.Getwd()
	return wd
}
