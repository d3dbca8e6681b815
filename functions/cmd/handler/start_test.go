package main_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/infra/build"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
)

// BenchmarkStartToReady measures process start until GET / is answered, the
// host's readiness probe, over 20 starts; it reports the median.
func BenchmarkStartToReady(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "handler")
	if err := build.Local(emulators.RepoRoot(b), bin, build.Handler, build.AzureTags); err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for b.Loop() {
		var times []time.Duration
		for i := 0; i < 20; i++ {
			p, err := loopback.Port()
			if err != nil {
				b.Fatal(err)
			}
			port := strconv.Itoa(p)
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(), "FUNCTIONS_CUSTOMHANDLER_PORT="+port, "DEFENDER_TENANT_ID=contoso.onmicrosoft.com",
				"DEFENDER_CLIENT_ID=2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84", "KEY_VAULT_URL=https://kv.vault.azure.net/",
				"EXPORT_SINK=file://"+b.TempDir(), "STATE_STORE=file://"+b.TempDir())
			start := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			for {
				resp, err := client.Get("http://127.0.0.1:" + port + "/")
				if err == nil {
					resp.Body.Close()
					break
				}
				if time.Since(start) > 10*time.Second {
					b.Fatal("not ready in 10 s")
				}
				time.Sleep(200 * time.Microsecond)
			}
			times = append(times, time.Since(start))
			cmd.Process.Kill()
			cmd.Wait()
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
		b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "max-ms")
	}
}
