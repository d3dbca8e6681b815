package incidentexport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"golang.org/x/sys/unix"
)

// devstackProcess runs the devstack as its own process with n incidents.
func devstackProcess(b *testing.B, incidents int, flags ...string) map[string]string {
	if flags == nil {
		flags = []string{"-no-rate-limits"}
	}
	return devstack.StartProcess(b, append([]string{"-incidents", strconv.Itoa(incidents)}, flags...)...)
}

// handlerEnv is the handler's environment for a benchmark run: the
// devstack's settings, a file sink and state under dir, a look-back covering
// every generated incident, and extra settings.
func handlerEnv(settings map[string]string, dir string, extra ...string) []string {
	env := os.Environ()
	for k, v := range settings {
		env = append(env, k+"="+v)
	}
	env = append(env, "EXPORT_SINK=file://"+filepath.Join(dir, "export"), "STATE_STORE=file://"+filepath.Join(dir, "state"),
		"EXPORT_LOOKBACK=960h", "EXPORT_MAX_RUN=30m")
	return append(env, extra...)
}

// BenchmarkExport measures the whole path on the real handler process:
// API → decode → file sink → checkpoint, without throttling; it reports
// incidents exported per second, the handler's peak RSS, and the listing
// requests it sent over the floor (versions ÷ page size).
//
// The exported trees are deleted only when the whole benchmark ends: this
// machine's ext4 has no journal, and without one the inode allocator passes
// over every inode freed in the last 30 s (dirty_expire_centisecs), so a
// run that starts just after the previous one's 10k files were deleted
// creates files at half the rate or less. That measures the benchmark's
// cleanup, not the export.
func BenchmarkExport(b *testing.B) {
	root := b.TempDir()
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			settings := devstackProcess(b, n)
			bin := buildHandler(b)
			for b.Loop() {
				dir, err := os.MkdirTemp(root, "run")
				if err != nil {
					b.Fatal(err)
				}
				p := startHandler(b, bin, handlerEnv(settings, dir, "DEFENDER_RATE_LIMITS=off"), io.Discard)
				// The export's syncfs flushes every dirty page of the file
				// system, its own and, without this, whatever the benchmarks
				// before it (and the builds) left in the page cache.
				unix.Sync()
				resetCounters(b, settings)
				start := time.Now()
				if st, err := p.runExport(); err != nil || st != 200 {
					b.Fatalf("export: %d %v", st, err)
				}
				took := time.Since(start)
				requests := listRequests(b, settings, "graph")
				rss := loopback.PeakRSS(p.cmd.Process.Pid)
				p.cmd.Process.Kill()
				<-p.done
				files := 0
				filepath.WalkDir(filepath.Join(dir, "export"), func(_ string, d fs.DirEntry, err error) error {
					if err == nil && !d.IsDir() {
						files++
					}
					return nil
				})
				if files != n {
					b.Fatalf("exported %d of %d", files, n)
				}
				b.ReportMetric(float64(n)/took.Seconds(), "incidents/s")
				b.ReportMetric(rss, "peak-rss-MiB")
				b.ReportMetric(float64(requests)/floor(n, 50), "requests/floor")
			}
		})
	}
}

// floor is the fewest listing requests that can read n versions.
func floor(n, pageSize int) float64 { return float64((n + pageSize - 1) / pageSize) }

func control(b *testing.B, settings map[string]string, method, path string) *http.Response {
	req, _ := http.NewRequest(method, settings["DEVSTACK_CONTROL_URL"]+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	return resp
}

func resetCounters(b *testing.B, settings map[string]string) {
	control(b, settings, "POST", "/control/counters/reset").Body.Close()
}

// listRequests is how many incident listings the devstack served an API
// since the counters were reset, whatever their answer.
func listRequests(b *testing.B, settings map[string]string, api string) int64 {
	resp := control(b, settings, "GET", "/control/counters")
	defer resp.Body.Close()
	var counters map[string]map[string]int64
	if err := json.NewDecoder(resp.Body).Decode(&counters); err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, v := range counters[api+".incidents.list"] {
		n += v
	}
	return n
}

// BenchmarkExportRequests counts what the export asks of the API, beside
// the floor of one request per page of versions read: a backlog of 10k
// incidents, then a steady-state run after 1 % of them changed (in batches
// of four sharing a timestamp, as the devstack's changes come), for both
// APIs (Graph pages of 50 under @odata.count; the XDR API, pages of 100
// without a count, one response per window).
func BenchmarkExportRequests(b *testing.B) {
	const n = 10_000
	for _, api := range []string{"graph", "xdr"} {
		b.Run(api, func(b *testing.B) {
			settings := devstackProcess(b, n)
			bin := buildHandler(b)
			pageSize := map[string]int{"graph": 50, "xdr": 100}[api]
			for b.Loop() {
				dir := b.TempDir()
				extra := []string{"DEFENDER_RATE_LIMITS=off", "DEFENDER_API=" + api}
				if api == "xdr" {
					extra = append(extra, "DEFENDER_API_URL="+settings["DEVSTACK_XDR_URL"])
				}
				env := handlerEnv(settings, dir, extra...)
				run := func() int64 {
					p := startHandler(b, bin, env, io.Discard)
					defer func() { p.cmd.Process.Kill(); <-p.done }()
					resetCounters(b, settings)
					if st, err := p.runExport(); err != nil || st != 200 {
						b.Fatalf("export: %d %v", st, err)
					}
					return listRequests(b, settings, api)
				}
				backlog := run()
				changed := map[string]bool{}
				for len(changed) < n/100 {
					resp := control(b, settings, "POST", "/control/mutate?n=4")
					var out struct{ Changed []int64 }
					json.NewDecoder(resp.Body).Decode(&out)
					resp.Body.Close()
					for _, id := range out.Changed {
						changed[strconv.FormatInt(id, 10)] = true
					}
				}
				steady := run()
				b.ReportMetric(float64(backlog)/floor(n, pageSize), "backlog-requests/floor")
				b.ReportMetric(float64(backlog), "backlog-requests")
				b.ReportMetric(float64(steady), "steady-requests")
				b.ReportMetric(floor(len(changed), pageSize), "steady-floor")
			}
		})
	}
}

// BenchmarkExportUnderRateLimit runs the export against the devstack's
// documented Graph limit, unscaled (150 requests a minute per app and
// tenant), with the client pacing at the same limit: about 80 s for 10k. It reports the share of the limit achieved (limit × page
// size) and the 429s the devstack served.
func BenchmarkExportUnderRateLimit(b *testing.B) {
	const scale = 1
	settings := devstackProcess(b, 10_000, "-time-scale", strconv.Itoa(scale))
	b.Logf("a minute lasts %s", time.Minute/scale)
	bin := buildHandler(b)
	for b.Loop() {
		dir := b.TempDir()
		p := startHandler(b, bin, handlerEnv(settings, dir, fmt.Sprintf("DEFENDER_RATE_LIMITS=security=150/%s", time.Minute/scale)), io.Discard)
		start := time.Now()
		if st, err := p.runExport(); err != nil || st != 200 {
			b.Fatalf("export: %d %v", st, err)
		}
		took := time.Since(start)
		p.cmd.Process.Kill()
		<-p.done
		resp, err := http.Get(settings["DEVSTACK_CONTROL_URL"] + "/control/counters")
		if err != nil {
			b.Fatal(err)
		}
		var counters map[string]map[string]int64
		json.NewDecoder(resp.Body).Decode(&counters)
		resp.Body.Close()
		limit := 150.0 / (time.Minute / scale).Seconds() * 50 // incidents per second the limit allows
		b.ReportMetric(10_000/took.Seconds()/limit*100, "%-of-limit")
		b.ReportMetric(float64(counters["graph.incidents.list"]["429"]), "429s")
	}
}

// BenchmarkExportSinks is the whole path of 10k versions into each sink
// the file sink is not (BenchmarkExport has it): the batched layout on
// files and on Azurite's Blob Storage, a Log Analytics stream and a Splunk
// collector (without and with indexer acknowledgement) on the devstack.
// It reports versions per second, and the objects or requests it took.
func BenchmarkExportSinks(b *testing.B) {
	const n = 10_000
	for _, tc := range []struct {
		name  string
		flags []string
		env   func(settings map[string]string, dir string) []string
		// count is what the sink received: objects or requests
		count func(b *testing.B, settings map[string]string, dir string) (float64, string)
	}{
		{name: "batches-file", env: func(_ map[string]string, dir string) []string {
			return []string{"EXPORT_LAYOUT=batches"}
		}, count: func(b *testing.B, _ map[string]string, dir string) (float64, string) {
			return float64(countFiles(filepath.Join(dir, "export"))), "objects"
		}},
		{name: "batches-blob", env: func(_ map[string]string, dir string) []string {
			az := emulators.StartAzurite(b)
			for _, name := range []string{"exports"} {
				c, _ := container.NewClientFromConnectionString(az.ConnectionString, name, nil)
				if _, err := c.Create(context.Background(), nil); err != nil && !strings.Contains(err.Error(), "ContainerAlreadyExists") {
					b.Fatal(err)
				}
			}
			return []string{"EXPORT_LAYOUT=batches", "EXPORT_SINK=" + az.BlobURL + "/exports", "AzureWebJobsStorage=" + az.ConnectionString}
		}, count: func(b *testing.B, _ map[string]string, dir string) (float64, string) {
			return -1, ""
		}},
		{name: "logs", env: func(s map[string]string, _ string) []string {
			return []string{"EXPORT_SINK=" + s["DEVSTACK_LOGS_SINK"]}
		}, count: func(b *testing.B, s map[string]string, _ string) (float64, string) {
			return float64(served(b, s, "logs.upload", "204")), "requests"
		}},
		{name: "splunk", env: func(s map[string]string, _ string) []string {
			return []string{"EXPORT_SINK=" + s["DEVSTACK_HEC_SINK"]}
		}, count: func(b *testing.B, s map[string]string, _ string) (float64, string) {
			return float64(served(b, s, "hec.event", "200")), "requests"
		}},
		{name: "splunk-ack", flags: []string{"-no-rate-limits", "-hec-ack"}, env: func(s map[string]string, _ string) []string {
			return []string{"EXPORT_SINK=" + s["DEVSTACK_HEC_SINK"], "EXPORT_SPLUNK_ACK=true"}
		}, count: func(b *testing.B, s map[string]string, _ string) (float64, string) {
			return float64(served(b, s, "hec.event", "200")), "requests"
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			settings := devstackProcess(b, n, tc.flags...)
			bin := buildHandler(b)
			for b.Loop() {
				dir := b.TempDir()
				logs := &devstack.LogBuffer{}
				p := startHandler(b, bin, handlerEnv(settings, dir, append([]string{"DEFENDER_RATE_LIMITS=off"}, tc.env(settings, dir)...)...), logs)
				unix.Sync()
				resetCounters(b, settings)
				start := time.Now()
				if st, err := p.runExport(); err != nil || st != 200 {
					b.Fatalf("export: %d %v\n%s", st, err, logs.String())
				}
				took := time.Since(start)
				rss := loopback.PeakRSS(p.cmd.Process.Pid)
				p.cmd.Process.Kill()
				<-p.done
				if !strings.Contains(logs.String(), fmt.Sprintf(`"msg":"Incident export finished.","invocation_id":`)) ||
					!strings.Contains(logs.String(), fmt.Sprintf(`"written":%d,`, n)) {
					b.Fatalf("the export did not write %d versions:\n%.3000s", n, logs.String())
				}
				b.ReportMetric(float64(n)/took.Seconds(), "incidents/s")
				b.ReportMetric(rss, "peak-rss-MiB")
				if v, unit := tc.count(b, settings, dir); v >= 0 {
					b.ReportMetric(v*10_000/n, unit+"/10k")
				}
				if strings.HasPrefix(tc.name, "batches") {
					b.ReportMetric(float64(strings.Count(logs.String(), `"msg":"Batch written."`))*10_000/n, "batches/10k")
				}
			}
		})
	}
}

// served is how many answers of a status the devstack gave an endpoint
// since the counters were reset.
func served(b *testing.B, settings map[string]string, endpoint, status string) int64 {
	resp := control(b, settings, "GET", "/control/counters")
	defer resp.Body.Close()
	var counters map[string]map[string]int64
	if err := json.NewDecoder(resp.Body).Decode(&counters); err != nil {
		b.Fatal(err)
	}
	return counters[endpoint][status]
}

func countFiles(dir string) int {
	files := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files++
		}
		return nil
	})
	return files
}
