package main

import (
	"archive/zip"
	"context"
	"debug/buildinfo"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/infra/build"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/funchost"
)

// The zips hold exactly what the platforms need, with the exec bit.
func TestZipLayouts(t *testing.T) {
	out := t.TempDir()
	if err := pack(emulators.RepoRoot(t), out, options{Zip: true}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		zip   string
		files []string
		exec  string
	}{
		{"azure.zip", []string{"handler", "host.json", "hunting-query/function.json", "incident-export-tenant/function.json", "incident-export/function.json", "ticket-webhook/function.json"}, "handler"},
		{"lambda.zip", []string{"bootstrap"}, "bootstrap"},
		{"lambda-amd64.zip", []string{"bootstrap"}, "bootstrap"},
	} {
		zr, err := zip.OpenReader(filepath.Join(out, tc.zip))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range zr.File {
			names = append(names, f.Name)
			mode := f.Mode()
			if f.Name == tc.exec && mode&0o111 == 0 {
				t.Errorf("%s: %s is not executable (%v)", tc.zip, f.Name, mode)
			}
			if f.Name != tc.exec && mode&0o111 != 0 {
				t.Errorf("%s: %s is executable", tc.zip, f.Name)
			}
		}
		zr.Close()
		sort.Strings(names)
		if strings.Join(names, ",") != strings.Join(tc.files, ",") {
			t.Errorf("%s holds %v, want %v", tc.zip, names, tc.files)
		}
	}
	// The binaries are for the platforms: Linux, amd64 for Functions, arm64 for Lambda.
	for p, arch := range map[string]string{"azure/handler": "x86-64", "lambda/arm64/bootstrap": "aarch64", "lambda/amd64/bootstrap": "x86-64"} {
		if got := elfMachine(t, filepath.Join(out, p)); got != arch {
			t.Errorf("%s is %s, want %s", p, got, arch)
		}
	}
	// The Azure handler leaves the AWS SDK out (it starts faster); the
	// Lambda bootstrap has it, for the S3 sink.
	for p, wantAWS := range map[string]bool{"azure/handler": false, "lambda/arm64/bootstrap": true, "lambda/amd64/bootstrap": true} {
		info, err := buildinfo.ReadFile(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		hasAWS := false
		for _, d := range info.Deps {
			hasAWS = hasAWS || strings.HasPrefix(d.Path, "github.com/aws/aws-sdk-go-v2")
		}
		if hasAWS != wantAWS {
			t.Errorf("%s: AWS SDK linked in: %v, want %v", p, hasAWS, wantAWS)
		}
	}
	// Asked for an S3 sink, the Azure handler's export says what to do.
	if runtime.GOARCH == "amd64" {
		h, err := funchost.Start(funchost.Options{AppDir: filepath.Join(out, "azure"), NoTimers: true, Stdout: io.Discard, Stderr: io.Discard,
			Env: []string{"DEFENDER_TENANT_ID=contoso.onmicrosoft.com", "DEFENDER_CLIENT_ID=2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84",
				"KEY_VAULT_URL=https://kv.vault.azure.net/", "EXPORT_SINK=s3://exports/defender", "STATE_STORE=file://" + t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		res, err := h.Run(context.Background(), "incident-export")
		if res == nil || res.Status != 500 || !strings.Contains(strings.Join(res.Logs, "\n"), "built without Amazon S3") {
			t.Fatalf("%+v %v", res, err)
		}
	}
}

// What ships links nothing made for tests or for the local stack: no
// devstack, no local host or emulator starter, no package testing. Each
// binary is listed as pack builds it (its OS, architecture and tags).
func TestShippedBinariesLeaveTheTestPartsOut(t *testing.T) {
	const module = "github.com/defender-functions/defender-functions/"
	for _, b := range []struct{ pkg, goarch, tags string }{
		{build.Handler, "amd64", build.AzureTags},
		{build.Bootstrap, "arm64", build.LambdaTags},
		{build.Bootstrap, "amd64", build.LambdaTags},
		{"./functions/cmd/doctor", "amd64", ""},
	} {
		cmd := exec.Command("go", "list", "-deps", "-tags", b.tags, b.pkg)
		cmd.Dir = emulators.RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+b.goarch)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", b.pkg, err)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, module+"shared/function") {
			t.Fatalf("%s: the listing misses the product's own packages: %v", b.pkg, deps)
		}
		for _, d := range deps {
			if d == "testing" || strings.HasPrefix(d, module+"internal/") || strings.HasPrefix(d, module+"infra/") {
				t.Errorf("%s (%s, tags %q) links %s", b.pkg, b.goarch, b.tags, d)
			}
		}
	}
}

// make run's layout: the Function App only, its handler for this machine.
func TestLocalLayout(t *testing.T) {
	out := t.TempDir()
	if err := pack(emulators.RepoRoot(t), out, options{Local: true}); err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(out, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	want := []string{"azure/handler", "azure/host.json", "azure/hunting-query/function.json", "azure/incident-export/function.json", "azure/incident-export-tenant/function.json", "azure/ticket-webhook/function.json"}
	if !slices.Equal(files, want) {
		t.Fatalf("files %v, want %v", files, want)
	}
	if runtime.GOOS == "linux" {
		want := map[string]string{"amd64": "x86-64", "arm64": "aarch64"}[runtime.GOARCH]
		if got := elfMachine(t, filepath.Join(out, "azure", "handler")); want != "" && got != want {
			t.Errorf("the handler is %s, this machine %s", got, want)
		}
	}
}
