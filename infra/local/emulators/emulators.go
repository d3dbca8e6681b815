// Package emulators starts the storage emulators that tests use as the real
// services: Azurite for Azure Blob Storage and Storage Queues, and s3rver
// for Amazon S3. Both are installed, pinned, by infra/local/install-tools.sh
// (make tools) into .tools/node; each test gets its own process, data
// directory and port. It also locates the repository's root and its other
// installed tools.
package emulators

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/loopback"
)

// AzuriteAccount and AzuriteKey are Azurite's documented, public development
// account: not a secret.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is a running Blob Storage emulator.
type Azurite struct {
	// ConnectionString is what AzureWebJobsStorage holds for it.
	ConnectionString string
	// BlobURL is the account's blob endpoint; containers are BlobURL + "/" + name.
	BlobURL string
	// QueueURL is the account's queue endpoint, when its queue service runs.
	QueueURL string
}

// S3 is a running S3 emulator; its credentials are s3rver's fixed S3RVER/S3RVER.
type S3 struct {
	Endpoint string
}

// RepoRoot is the module's root (where go.mod is), found from the test's
// working directory, so tests reach repository files without relative paths.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Tool is the path of a test tool installed under .tools by make tools.
// go test -short skips the test that asks for one: the emulators (Azurite,
// s3rver, the Lambda emulator) are the slow part of the inner loop, and
// make test runs every test.
func Tool(tb testing.TB, rel string) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("emulator-backed (" + rel + "): make test runs it")
	}
	p := filepath.Join(RepoRoot(tb), ".tools", filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("%s is not installed: run make tools (%v)", rel, err)
	}
	return p
}

// start starts a node tool on a free loopback port for a test, and stops
// it when the test ends.
func start(tb testing.TB, name string, args func(port int) []string) int {
	tb.Helper()
	Tool(tb, "node/node_modules/.bin/"+name)
	p, stop, err := launch(RepoRoot(tb), name, args)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return p
}

// launch starts a node tool installed under root/.tools on a free loopback
// port, args giving its arguments for a port, and returns the port once it
// accepts connections, and how to stop it.
func launch(root, name string, args func(port int) []string) (int, func(), error) {
	bin := filepath.Join(root, ".tools", "node", "node_modules", ".bin", name)
	if _, err := os.Stat(bin); err != nil {
		return 0, nil, fmt.Errorf("%s is not installed: run make tools (%v)", name, err)
	}
	var out bytes.Buffer
	p, err := loopback.Start(func(port int) *exec.Cmd {
		cmd := exec.Command(bin, args(port)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd
	}, loopback.Accepts, 30*time.Second)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %v\n%s", name, err, out.String())
	}
	return p.Port, func() { p.Cmd.Process.Kill(); <-p.Exited }, nil
}

// StartAzurite starts Azurite's blob service on loopback.
func StartAzurite(tb testing.TB) *Azurite {
	tb.Helper()
	return azurite(start(tb, "azurite-blob", azuriteBlobArgs))
}

// LaunchAzurite starts Azurite's blob service on loopback outside a test
// (make run SINK=blob), from the tools installed under root.
func LaunchAzurite(root string) (*Azurite, func(), error) {
	port, stop, err := launch(root, "azurite-blob", azuriteBlobArgs)
	if err != nil {
		return nil, nil, err
	}
	return azurite(port), stop, nil
}

func azuriteBlobArgs(port int) []string {
	return []string{"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--silent", "--skipApiVersionCheck", "--loose", "--inMemoryPersistence"}
}

func azurite(port int) *Azurite {
	url := fmt.Sprintf("http://127.0.0.1:%d/%s", port, AzuriteAccount)
	return &Azurite{BlobURL: url,
		ConnectionString: fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", AzuriteAccount, AzuriteKey, url)}
}

// StartAzuriteQueues starts Azurite's blob and queue services on loopback,
// one connection string for both (the Functions host's storage, whose
// queues trigger functions).
func StartAzuriteQueues(tb testing.TB) *Azurite {
	tb.Helper()
	a := StartAzurite(tb)
	port := start(tb, "azurite-queue", func(port int) []string {
		return []string{"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(port),
			"--silent", "--skipApiVersionCheck", "--loose", "--inMemoryPersistence"}
	})
	a.QueueURL = fmt.Sprintf("http://127.0.0.1:%d/%s", port, AzuriteAccount)
	a.ConnectionString += "QueueEndpoint=" + a.QueueURL + ";"
	return a
}

// StartS3 starts s3rver on loopback with the given buckets.
func StartS3(tb testing.TB, buckets ...string) *S3 {
	tb.Helper()
	return &S3{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", start(tb, "s3rver", s3rverArgs(tb.TempDir(), buckets)))}
}

// LaunchS3 starts s3rver on loopback outside a test (make run SINK=s3),
// keeping its objects in dir.
func LaunchS3(root, dir string, buckets ...string) (*S3, func(), error) {
	port, stop, err := launch(root, "s3rver", s3rverArgs(dir, buckets))
	if err != nil {
		return nil, nil, err
	}
	return &S3{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port)}, stop, nil
}

func s3rverArgs(dir string, buckets []string) func(port int) []string {
	return func(port int) []string {
		args := []string{"--directory", dir, "--port", strconv.Itoa(port), "--address", "127.0.0.1", "--silent"}
		for _, b := range buckets {
			args = append(args, "--configure-bucket", b)
		}
		return args
	}
}
