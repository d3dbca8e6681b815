package main_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/infra/build"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
)

// minimal is the baseline's package: a net/http server that answers GET /.
const minimal = "./functions/cmd/handler/testdata/minimal"

// BenchmarkStartToReady measures process start until GET / is answered, the
// host's readiness probe, for the handler and for a minimal net/http server
// built the same way, started alternately (so that whatever else the
// machine does falls on both), 30 starts each. It reports both medians,
// their ratio, and both stripped binaries' sizes. Absolute times belong to
// the machine; the ratio is what the goal is set on.
func BenchmarkStartToReady(b *testing.B) {
	root, dir := emulators.RepoRoot(b), b.TempDir()
	handler, base := filepath.Join(dir, "handler"), filepath.Join(dir, "minimal")
	if err := build.Local(root, handler, build.Handler, build.AzureTags); err != nil {
		b.Fatal(err)
	}
	if err := build.Local(root, base, minimal, build.AzureTags); err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), "DEFENDER_TENANT_ID=contoso.onmicrosoft.com",
		"DEFENDER_CLIENT_ID=2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84", "KEY_VAULT_URL=https://kv.vault.azure.net/",
		"EXPORT_SINK=file://"+b.TempDir(), "STATE_STORE=file://"+b.TempDir())
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for b.Loop() {
		var h, m []time.Duration
		for range 30 {
			h = append(h, startToReady(b, client, handler, env))
			m = append(m, startToReady(b, client, base, env))
		}
		hm, mm := median(h), median(m)
		b.ReportMetric(ms(hm), "median-ms")
		b.ReportMetric(ms(slices.Max(h)), "max-ms")
		b.ReportMetric(ms(mm), "minimal-median-ms")
		b.ReportMetric(float64(hm)/float64(mm), "ratio")
	}
	b.ReportMetric(megabytes(b, handler), "handler-MB")
	b.ReportMetric(megabytes(b, base), "minimal-MB")
}

// startToReady starts bin on a free port and returns the time until GET /
// answers; the probe's own cost is in it, as it is in the host's.
func startToReady(b *testing.B, client *http.Client, bin string, env []string) time.Duration {
	p, err := loopback.Port()
	if err != nil {
		b.Fatal(err)
	}
	port := strconv.Itoa(p)
	cmd := exec.Command(bin)
	cmd.Env = append(env, "FUNCTIONS_CUSTOMHANDLER_PORT="+port)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for {
		resp, err := client.Get("http://127.0.0.1:" + port + "/")
		if err == nil {
			resp.Body.Close()
			return time.Since(start)
		}
		if time.Since(start) > 10*time.Second {
			b.Fatalf("%s not ready in 10 s", filepath.Base(bin))
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(d))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// megabytes is a file's size in MB (10^6 bytes, as the size goals are stated).
func megabytes(b *testing.B, path string) float64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return float64(fi.Size()) / 1e6
}
