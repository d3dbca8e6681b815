package huntingquery_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/infra/build"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
)

func p99(d []time.Duration) time.Duration { return pct(d, 99) }

func pct(d []time.Duration, p int) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)*p/100]
}

// BenchmarkLatencyAdded compares a catalog query through the function (HTTP
// to the handler, binding, streaming) with the same KQL sent directly
// through the API client, at 1, 2, 10 and 50 concurrent callers. On two
// vCPUs shared by the callers, the function and the simulator, latency at
// 10 and 50 callers is queueing for a core; BenchmarkFunctionCPU says what
// the function path costs.
func BenchmarkLatencyAdded(b *testing.B) {
	s := devstack.Start(b, devstack.Options{})
	app := newApp(&testing.T{}, s, &devstack.LogBuffer{})
	srv := httptest.NewServer(customhandler.New(app, customhandler.Options{}))
	defer srv.Close()
	cfg := settingsFor(b, s)
	creds, _ := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	direct, _ := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), &defender.Options{HTTPClient: s.HTTPClient(), Limits: defender.NoLimits})
	kql := `DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "powershell.exe"
| project Timestamp, DeviceName, AccountName, FileName, ProcessCommandLine, InitiatingProcessFileName
| order by Timestamp desc`
	body := `{"name":"process-by-name","parameters":{"file":"powershell.exe"}}`
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	for _, conc := range []int{1, 2, 10, 50} {
		b.Run(fmt.Sprint(conc), func(b *testing.B) {
			directCall := func() error { return huntAll(direct, kql) }
			functionCall := func() error {
				resp, err := hc.Post(srv.URL+"/api/hunting-query", "application/json", strings.NewReader(body))
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			for b.Loop() {
				// Each worker alternates the two paths, so both meet the same load.
				var mu sync.Mutex
				var d, f []time.Duration
				var wg sync.WaitGroup
				for w := 0; w < conc; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < 200; i++ {
							call, into := directCall, &d
							if (i+w)%2 == 1 {
								call, into = functionCall, &f
							}
							t0 := time.Now()
							if err := call(); err != nil {
								b.Error(err)
								return
							}
							mu.Lock()
							*into = append(*into, time.Since(t0))
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(p99(d).Microseconds())/1000, "direct-p99-ms")
				b.ReportMetric(float64(p99(f).Microseconds())/1000, "function-p99-ms")
				b.ReportMetric(float64((p99(f)-p99(d)).Microseconds())/1000, "added-p99-ms")
				b.ReportMetric(float64((pct(f, 50)-pct(d, 50)).Microseconds())/1000, "added-p50-ms")
			}
		})
	}
}

// BenchmarkFunctionCPU is the CPU time the function path adds per request,
// beside the CPU time of one loopback HTTP round trip measured in the same
// run. The devstack runs as its own process, so this process's CPU time
// (getrusage: user and system) is the callers', the function's and the API
// client's. A catalog query through the function (the caller's request, the
// handler, binding, the API call, the rows re-encoded to the caller) less the
// same KQL sent directly through the API client is what the function adds;
// the hop is a request and a two-byte answer over loopback, client and
// server both in this process. Beside it: what the HTTP edge alone costs
// (a stub streaming the same answer), the floor of any function making the
// same call behind the handler (a stub that makes it, then streams), the
// function's own code (the function less that floor), and the whole path
// through the handler as it ships, in its own process, whose CPU time is
// counted too.
func BenchmarkFunctionCPU(b *testing.B) {
	env := devstackProcess(b)
	b.Setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
	b.Setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
	env["DEFENDER_RATE_LIMITS"] = "off"
	pem, _ := os.ReadFile(env["SSL_CERT_FILE"])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	apiClient := &http.Client{Transport: tr}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	app, err := functions.New(lookup, slog.New(slog.DiscardHandler), &functions.Options{HTTPClient: apiClient, Cache: credentials.NewCache(nil)})
	if err != nil {
		b.Fatal(err)
	}
	fn := httptest.NewServer(customhandler.New(app, customhandler.Options{}))
	defer fn.Close()
	hop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	defer hop.Close()
	cfg, err := config.Load(lookup)
	if err != nil {
		b.Fatal(err)
	}
	creds, _ := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: apiClient})
	direct, _ := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), &defender.Options{HTTPClient: apiClient, Limits: defender.NoLimits})
	kql := `DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "powershell.exe"
| project Timestamp, DeviceName, AccountName, FileName, ProcessCommandLine, InitiatingProcessFileName
| order by Timestamp desc`
	body := `{"name":"process-by-name","parameters":{"file":"powershell.exe"}}`
	hc := &http.Client{Transport: &http.Transport{}}
	post := func(url string) ([]byte, error) {
		resp, err := hc.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return answer, err
	}
	// What any function making this call behind the custom handler pays:
	// "edge" streams a canned copy of the real answer (the caller, the
	// server, the handler), "floor" makes the same API call first.
	canned, err := post(fn.URL + "/api/hunting-query")
	if err != nil {
		b.Fatal(err)
	}
	stub := func(call bool) *httptest.Server {
		a := &function.App{Logger: slog.New(slog.DiscardHandler)}
		a.HandleHTTP(function.Descriptor{Name: "hunting-query", HTTP: &function.HTTPBinding{Route: "hunting-query", Methods: []string{"post"}}},
			func(context.Context, *function.HTTPRequest) *function.HTTPResponse {
				if call {
					if err := huntAll(direct, kql); err != nil {
						return function.Text(502, err.Error())
					}
				}
				return &function.HTTPResponse{Status: 200, Header: http.Header{"Content-Type": {"application/json"}},
					Stream: func(w io.Writer) error { _, err := w.Write(canned); return err }}
			})
		return httptest.NewServer(customhandler.New(a, customhandler.Options{}))
	}
	edge, floor := stub(false), stub(true)
	defer edge.Close()
	defer floor.Close()
	calls := map[string]func() error{"direct": func() error { return huntAll(direct, kql) }}
	for name, url := range map[string]string{"hop": hop.URL + "/", "edge": edge.URL + "/api/hunting-query",
		"floor": floor.URL + "/api/hunting-query", "function": fn.URL + "/api/hunting-query"} {
		calls[name] = func() error { _, err := post(url); return err }
	}
	// "process": the function as it ships, the handler built as pack builds
	// it and run as its own process, as the Functions host runs it (the
	// in-process path above shares this process's two Ps with the caller).
	pid, url := startHandler(b, env)
	calls["process"] = func() error { _, err := post(url + "/api/hunting-query"); return err }
	// cpu is the CPU time per call of n calls, after a warm-up: this
	// process's and the handler process's.
	cpu := func(name string, n int) float64 {
		call := calls[name]
		for range 20 {
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		start, hstart := cpuTime(), processCPU(b, pid)
		for range n {
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
		return float64(cpuTime()-start+processCPU(b, pid)-hstart) / float64(n) / 1e3
	}
	for b.Loop() {
		// Interleaved rounds, so that all of them meet the same machine.
		us := map[string]float64{}
		const rounds = 5
		for range rounds {
			for _, name := range []string{"hop", "direct", "edge", "floor", "function", "process"} {
				us[name] += cpu(name, 100) / rounds
			}
		}
		b.ReportMetric(us["hop"], "hop-cpu-us")
		b.ReportMetric(us["direct"], "direct-cpu-us")
		b.ReportMetric(us["function"], "function-cpu-us")
		b.ReportMetric(us["function"]-us["direct"], "added-cpu-us")
		b.ReportMetric((us["function"]-us["direct"])/us["hop"], "added/hop")
		b.ReportMetric(us["edge"], "edge-cpu-us")
		b.ReportMetric(us["floor"]-us["direct"], "floor-added-cpu-us")
		b.ReportMetric(us["function"]-us["floor"], "own-cpu-us")
		b.ReportMetric(us["process"]-us["direct"], "process-added-cpu-us")
		b.ReportMetric((us["process"]-us["direct"])/us["hop"], "process-added/hop")
	}
}

// huntAll sends kql straight through the API client and reads every row.
func huntAll(c defender.Client, kql string) error {
	res, err := c.Hunt(context.Background(), defender.HuntQuery{Query: kql})
	if err != nil {
		return err
	}
	defer res.Close()
	for {
		if _, err := res.Next(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// startHandler starts the handler as it ships with the settings env, and
// returns its process ID and URL.
func startHandler(b *testing.B, env map[string]string) (int, string) {
	bin := filepath.Join(b.TempDir(), "handler")
	if err := build.Local(emulators.RepoRoot(b), bin, build.Handler, build.AzureTags); err != nil {
		b.Fatal(err)
	}
	proc, err := loopback.Start(func(port int) *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port))
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		return cmd
	}, func(port int) bool {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}, 20*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { proc.Cmd.Process.Kill(); <-proc.Exited })
	return proc.Cmd.Process.Pid, "http://127.0.0.1:" + strconv.Itoa(proc.Port)
}

// processCPU is another process's CPU time in nanoseconds: the sum of its
// threads' time on a CPU (/proc/<pid>/task/*/schedstat; /proc/<pid>/stat
// counts in 10 ms ticks, too coarse for a request).
func processCPU(b *testing.B, pid int) int64 {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("the handler's threads: %v", err)
	}
	var sum int64
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that ended meanwhile
		}
		f := strings.Fields(string(raw))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += ns
		}
	}
	return sum
}

// cpuTime is this process's user and system CPU time, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkStream100kRows streams 100,000 rows as NDJSON and reports how
// much the heap grows while doing so. The devstack runs as its own process,
// so the figure is the function's alone; it stays small because rows are
// never held.
func BenchmarkStream100kRows(b *testing.B) {
	env := devstackProcess(b, "-hunting-rows", "100000")
	b.Setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
	b.Setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
	env["HUNTING_ALLOW_ADHOC"], env["HUNTING_ADHOC_ROLE"], env["HUNTING_MAX_ROWS"], env["DEFENDER_RATE_LIMITS"] = "true", "Hunting.Adhoc", "100000", "off"
	pem, _ := os.ReadFile(env["SSL_CERT_FILE"])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	app, err := functions.New(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, slog.New(slog.DiscardHandler),
		&functions.Options{HTTPClient: &http.Client{Transport: tr}, Cache: credentials.NewCache(nil)})
	if err != nil {
		b.Fatal(err)
	}
	h := app.HTTP["hunting-query"].Func
	for b.Loop() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		req := &function.HTTPRequest{Method: "POST", Header: http.Header{"Accept": {"application/x-ndjson"}, "Content-Type": {"application/json"}},
			Principal: &function.Principal{Name: "bench", Roles: []string{"Hunting.Adhoc"}},
			Body:      []byte(`{"query":"DeviceProcessEvents | project Timestamp, DeviceName, FileName, ProcessCommandLine","timespan":"P30D"}`)}
		resp := h(context.Background(), req)
		if resp.Status != 200 {
			b.Fatalf("%d %s", resp.Status, resp.Body)
		}
		var peak uint64
		w := &peakWriter{every: 10000, sample: func() {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}}
		if err := resp.Stream(w); err != nil {
			b.Fatal(err)
		}
		if w.lines != 100_000 {
			b.Fatalf("%d rows", w.lines)
		}
		b.ReportMetric(float64(peak-min(peak, base))/(1<<20), "peak-heap-growth-MiB")
		b.ReportMetric(float64(w.bytes)/(1<<20), "streamed-MiB")
	}
}

// devstackProcess runs the devstack as its own process, with sink and state settings.
func devstackProcess(b *testing.B, flags ...string) map[string]string {
	env := devstack.StartProcess(b, append([]string{"-no-rate-limits"}, flags...)...)
	env["EXPORT_SINK"], env["STATE_STORE"] = "file://"+b.TempDir(), "file://"+b.TempDir()
	return env
}

type peakWriter struct {
	lines, every int
	bytes        int
	sample       func()
}

func (p *peakWriter) Write(b []byte) (int, error) {
	for _, c := range b {
		if c == '\n' {
			p.lines++
			if p.lines%p.every == 0 {
				p.sample()
			}
		}
	}
	p.bytes += len(b)
	return len(b), nil
}
