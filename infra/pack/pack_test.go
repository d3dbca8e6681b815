package main

import (
	"archive/zip"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/infra/local/emulators"
)

// The zips hold exactly what the platforms need, with the exec bit.
func TestZipLayouts(t *testing.T) {
	out := t.TempDir()
	if err := pack(emulators.RepoRoot(t), out, true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		zip   string
		files []string
		exec  string
	}{
		{"azure.zip", []string{"handler", "host.json", "hunting-query/function.json", "incident-export/function.json", "ticket-webhook/function.json"}, "handler"},
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
}
