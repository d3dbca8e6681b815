package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Goal is one figure an issue promised, and how to judge it.
type Goal struct {
	Area, What  string
	Bench, Unit string
	Goal        string                          // as the issue states it; "" for a reference figure
	Met         func(v float64, r Results) bool // nil: no goal
	Format      func(v float64) string
	Issue       int
}

func num(v float64) string {
	switch {
	case v == math.Trunc(v) && v < 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 1000:
		return commas(int64(math.Round(v)))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func ms(v float64) string { return num(v/1e6) + " ms" }
func us(v float64) string { return num(v/1e3) + " µs" }
func ns(v float64) string { return num(v) + " ns" }
func unit(u string) func(float64) string {
	return func(v float64) string { return num(v) + " " + u }
}

func atMost(limit float64) func(float64, Results) bool {
	return func(v float64, _ Results) bool { return v <= limit }
}
func below(limit float64) func(float64, Results) bool {
	return func(v float64, _ Results) bool { return v < limit }
}
func atLeast(limit float64) func(float64, Results) bool {
	return func(v float64, _ Results) bool { return v >= limit }
}

// flat: the value at 100k is within 1.5× of the value at 10k.
func flat(prefix, u string) func(float64, Results) bool {
	return func(v float64, r Results) bool {
		small, ok := r.Get(prefix+"/10000", u)
		return ok && v <= 1.5*small
	}
}

// steadyGoal: at most 3 requests besides the pages the changes fill.
func steadyGoal(name string) func(float64, Results) bool {
	return func(v float64, r Results) bool {
		f, ok := r.Get(name, "steady-floor")
		return ok && v <= 3+f
	}
}

// hopGoal: at most k times the loopback round trip measured in the same run.
func hopGoal(k float64) func(float64, Results) bool {
	return func(v float64, r Results) bool {
		h, ok := r.Get("FunctionCPU", "hop-cpu-us")
		return ok && v <= k*h
	}
}

var goals = []Goal{
	{"Devstack", "Graph incidents served per second (TLS, with alerts)", "ListThroughput/graph", "incidents/s", "≥ 20,000/s", atLeast(20000), unit("/s"), 2},
	{"Devstack", "XDR incidents served per second", "ListThroughput/xdr", "incidents/s", "≥ 20,000/s", atLeast(20000), unit("/s"), 2},

	{"Tokens", "cache hit, serial", "CacheHit/serial", "ns/op", "≤ 30 ns", atMost(30), ns, 3},
	{"Tokens", "cache hit, serial: allocations", "CacheHit/serial", "allocs/op", "0", atMost(0), unit("allocs"), 3},
	{"Tokens", "cache hit, parallel", "CacheHit/parallel", "ns/op", "≤ 30 ns", atMost(30), ns, 3},
	{"Tokens", "cache hit, parallel: allocations", "CacheHit/parallel", "allocs/op", "0", atMost(0), unit("allocs"), 3},
	{"Tokens", "x/oauth2 ReuseTokenSource hit, serial (reference)", "ReuseTokenSource/serial", "ns/op", "", nil, ns, 3},
	{"Tokens", "x/oauth2 ReuseTokenSource hit, parallel (reference)", "ReuseTokenSource/parallel", "ns/op", "", nil, ns, 3},
	{"Tokens", "cache hit without a deadline, which reads the clock (reference)", "CacheHit/serial-no-deadline", "ns/op", "", nil, ns, 3},
	{"Tokens", "one monotonic clock read (reference)", "ClockRead/serial", "ns/op", "", nil, ns, 3},
	{"Tokens", "baseline: a token request per call, client secret (the guide's samples)", "TokenPerCall/client-secret", "ns/op", "", nil, ms, 10},
	{"Tokens", "baseline: Key Vault read and token request per call", "TokenPerCall/keyvault-secret", "ns/op", "", nil, ms, 10},

	{"API client", "Graph page decode and normalize", "DecodePage/graph", "incidents/s", "", nil, unit("/s"), 4},
	{"API client", "Graph allocations per incident", "DecodePage/graph", "allocs/incident", "", nil, unit("allocs"), 4},
	{"API client", "XDR page decode and normalize", "DecodePage/xdr", "incidents/s", "", nil, unit("/s"), 4},
	{"API client", "Graph page decode, ID and last update only (the export's KeysOnly)", "DecodePage/graph-keys", "incidents/s", "", nil, unit("/s"), 4},
	{"API client", "XDR page decode, ID and last update only (the export's KeysOnly)", "DecodePage/xdr-keys", "incidents/s", "", nil, unit("/s"), 4},
	{"API client", "peak heap listing 1k incidents", "ListHeap/1000", "peak-heap-MiB", "", nil, unit("MiB"), 4},
	{"API client", "peak heap listing 10k incidents", "ListHeap/10000", "peak-heap-MiB", "", nil, unit("MiB"), 4},
	{"API client", "peak heap listing 100k incidents", "ListHeap/100000", "peak-heap-MiB", "flat (≤ 1.5× the 10k figure)", flat("ListHeap", "peak-heap-MiB"), unit("MiB"), 4},

	{"Runtime", "handler start until GET / answers, over a minimal net/http server's (medians of 30 starts each, alternated)", "StartToReady", "ratio", "≤ 1.2×", atMost(1.2), unit("×"), 29},
	{"Runtime", "handler start until GET / answers (median of 30)", "StartToReady", "median-ms", "", nil, unit("ms"), 5},
	{"Runtime", "minimal net/http server start until GET / answers, same run (median of 30)", "StartToReady", "minimal-median-ms", "", nil, unit("ms"), 29},
	{"Runtime", "invocation overhead, timer envelope", "InvocationOverhead/timer-envelope", "ns/op", "< 50 µs", below(50000), us, 5},
	{"Runtime", "invocation overhead, HTTP envelope", "InvocationOverhead/http-envelope", "ns/op", "< 50 µs", below(50000), us, 5},
	{"Runtime", "invocation overhead, forwarded HTTP", "InvocationOverhead/http-forwarded", "ns/op", "< 50 µs", below(50000), us, 5},
	{"Runtime", "Lambda cold start under the emulator, over a minimal aws-lambda-go handler's (medians of 12 each, alternated)", "ColdStart", "ratio", "≤ 1.2×", atMost(1.2), unit("×"), 29},
	{"Runtime", "Lambda cold start under the emulator (median of 12)", "ColdStart", "cold-ms", "", nil, unit("ms"), 10},
	{"Runtime", "minimal aws-lambda-go handler's cold start under the emulator, same run (median of 12)", "ColdStart", "minimal-cold-ms", "", nil, unit("ms"), 29},
	{"Runtime", "Lambda warm invocation under the emulator", "ColdStart", "warm-ms", "", nil, unit("ms"), 10},

	{"Size", "Azure handler, stripped, as pack builds it", "StartToReady", "handler-MB", "≤ 18 MB", atMost(18), unit("MB"), 29},
	{"Size", "minimal net/http server, built the same way", "StartToReady", "minimal-MB", "", nil, unit("MB"), 29},
	{"Size", "Lambda bootstrap, stripped, as pack builds it", "ColdStart", "bootstrap-MB", "≤ 22 MB", atMost(22), unit("MB"), 29},
	{"Size", "minimal aws-lambda-go handler, built the same way", "ColdStart", "minimal-MB", "", nil, unit("MB"), 29},

	{"Export", "whole path to the file sink, 1k incidents", "Export/1000", "incidents/s", "", nil, unit("/s"), 6},
	{"Export", "whole path to the file sink, 10k incidents", "Export/10000", "incidents/s", "≥ 5,000/s", atLeast(5000), unit("/s"), 6},
	{"Export", "whole path to the file sink, 100k incidents", "Export/100000", "incidents/s", "≥ 5,000/s", atLeast(5000), unit("/s"), 6},
	{"Export", "handler peak RSS, 10k incidents", "Export/10000", "peak-rss-MiB", "< 64 MB", below(64), unit("MiB"), 6},
	{"Export", "handler peak RSS, 100k incidents", "Export/100000", "peak-rss-MiB", "< 64 MB, flat in N", func(v float64, r Results) bool { return v < 64 && flat("Export", "peak-rss-MiB")(v, r) }, unit("MiB"), 6},
	{"Export", "listing requests over the floor (versions ÷ page size), 10k backlog, Graph", "ExportRequests/graph", "backlog-requests/floor", "≤ 1.25", atMost(1.25), unit("×"), 16},
	{"Export", "listing requests, steady-state run after 1 % of 10k changed, Graph", "ExportRequests/graph", "steady-requests", "≤ 3 + the pages its changes fill", steadyGoal("ExportRequests/graph"), unit(""), 16},
	{"Export", "pages the steady-state run's changes fill, Graph (its floor)", "ExportRequests/graph", "steady-floor", "", nil, unit(""), 16},
	{"Export", "listing requests over the floor, 10k backlog, XDR API (no @odata.count: one response per window)", "ExportRequests/xdr", "backlog-requests/floor", "≤ 1.25", atMost(1.25), unit("×"), 16},
	{"Export", "listing requests, steady-state run after 1 % of 10k changed, XDR API", "ExportRequests/xdr", "steady-requests", "≤ 3 + the pages its changes fill", steadyGoal("ExportRequests/xdr"), unit(""), 16},
	{"Export", "pages the steady-state run's changes fill, XDR API (its floor)", "ExportRequests/xdr", "steady-floor", "", nil, unit(""), 16},
	{"Export", "listing requests over the floor, whole path, 100k incidents", "Export/100000", "requests/floor", "", nil, unit("×"), 16},
	{"Export", "under the documented rate limit: share of limit × page size", "ExportUnderRateLimit", "%-of-limit", "≥ 95 %", atLeast(95), unit("%"), 6},
	{"Export", "under the documented rate limit: 429s served", "ExportUnderRateLimit", "429s", "none after the first", atMost(1), unit(""), 6},
	{"Sinks", "10k versions, batched layout (gzip NDJSON + manifest), files", "ExportSinks/batches-file", "incidents/s", "", nil, unit("/s"), 21},
	{"Sinks", "objects written per 10k versions, batched layout, files (batches and their manifests)", "ExportSinks/batches-file", "objects/10k", "", nil, unit(""), 21},
	{"Sinks", "handler peak RSS, batched layout, 10k versions", "ExportSinks/batches-file", "peak-rss-MiB", "< 128 MB", below(128), unit("MiB"), 21},
	{"Sinks", "10k versions, batched layout, Blob Storage (Azurite)", "ExportSinks/batches-blob", "incidents/s", "", nil, unit("/s"), 21},
	{"Sinks", "batch objects per 10k versions, Blob Storage", "ExportSinks/batches-blob", "batches/10k", "", nil, unit(""), 21},
	{"Sinks", "10k versions into Log Analytics (Logs Ingestion API on the devstack)", "ExportSinks/logs", "incidents/s", "", nil, unit("/s"), 21},
	{"Sinks", "Logs Ingestion requests per 10k versions", "ExportSinks/logs", "requests/10k", "", nil, unit(""), 21},
	{"Sinks", "10k versions into Splunk HEC (devstack)", "ExportSinks/splunk", "incidents/s", "", nil, unit("/s"), 21},
	{"Sinks", "HEC requests per 10k versions", "ExportSinks/splunk", "requests/10k", "", nil, unit(""), 21},
	{"Sinks", "10k versions into Splunk HEC with indexer acknowledgement (100 ms to index)", "ExportSinks/splunk-ack", "incidents/s", "", nil, unit("/s"), 21},

	{"Hunting", "CPU time the function path adds per request, over a direct API call", "FunctionCPU", "added-cpu-us", "≤ 3 × one loopback HTTP round trip", hopGoal(3), unit("µs"), 29},
	{"Hunting", "of which any function behind the custom handler adds: a stub making the same API call, then streaming a canned answer, over the direct call", "FunctionCPU", "floor-added-cpu-us", "", nil, unit("µs"), 29},
	{"Hunting", "the HTTP edge alone: a stub streaming the canned answer (caller, server, handler)", "FunctionCPU", "edge-cpu-us", "", nil, unit("µs"), 29},
	{"Hunting", "hunting-query's own code: the function less the stub that makes the same call", "FunctionCPU", "own-cpu-us", "", nil, unit("µs"), 29},
	{"Hunting", "the same added CPU through the handler as it ships, its own process (both processes' CPU)", "FunctionCPU", "process-added-cpu-us", "", nil, unit("µs"), 29},
	{"Hunting", "CPU time of one loopback HTTP round trip, same run", "FunctionCPU", "hop-cpu-us", "", nil, unit("µs"), 17},
	{"Hunting", "CPU time of the direct API call (client side), same run", "FunctionCPU", "direct-cpu-us", "", nil, unit("µs"), 17},
	{"Hunting", "latency added over a direct API call, p99, 1 concurrent", "LatencyAdded/1", "added-p99-ms", "< 1 ms", below(1), unit("ms"), 17},
	{"Hunting", "latency added over a direct API call, p99, 2 concurrent", "LatencyAdded/2", "added-p99-ms", "< 1 ms", below(1), unit("ms"), 17},
	{"Hunting", "latency added over a direct API call, p99, 10 concurrent (queueing for 2 vCPUs)", "LatencyAdded/10", "added-p99-ms", "", nil, unit("ms"), 7},
	{"Hunting", "latency added over a direct API call, p99, 50 concurrent (queueing for 2 vCPUs)", "LatencyAdded/50", "added-p99-ms", "", nil, unit("ms"), 7},
	{"Hunting", "latency added, p50, 50 concurrent", "LatencyAdded/50", "added-p50-ms", "", nil, unit("ms"), 7},
	{"Hunting", "heap growth while streaming 100k rows", "Stream100kRows", "peak-heap-growth-MiB", "flat (growth < 8 MiB)", below(8), unit("MiB"), 7},

	{"Partners", "doctor's table of 500 tenants (9 not consented), checked 16 at a time", "DoctorPartners", "s/500-tenants", "< 10 s", below(10), unit("s"), 20},
	{"Partners", "a round of 500 tenants × 200 incidents, one instance's concurrent loop (8 at once)", "FanOut/loop", "s/round", "within one EXPORT_SCHEDULE period (300 s)", atMost(300), unit("s"), 20},
	{"Partners", "the same round through the Storage queue, 1 instance (host and handler)", "FanOut/queue/k=1", "s/round", "", nil, unit("s"), 20},
	{"Partners", "the same round through the Storage queue, 2 instances on the 2 cores", "FanOut/queue/k=2", "s/round", "", nil, unit("s"), 20},
	{"Partners", "the same round through the Storage queue, 4 instances on the 2 cores", "FanOut/queue/k=4", "s/round", "", nil, unit("s"), 20},
	{"Partners", "staleness at the round's end, p50 across tenants, the loop", "FanOut/loop", "stale-p50-s", "", nil, unit("s"), 20},
	{"Partners", "staleness at the round's end, p99 across tenants, the loop", "FanOut/loop", "stale-p99-s", "", nil, unit("s"), 20},
	{"Partners", "staleness, p99 across tenants, the queue with 4 instances", "FanOut/queue/k=4", "stale-p99-s", "", nil, unit("s"), 20},
	{"Partners", "machine CPU busy during the round (all processes, 2 cores), the loop", "FanOut/loop", "cpu-busy-%", "", nil, unit("%"), 20},
	{"Partners", "machine CPU busy during the round, the queue with 1 instance: k > 1 cannot go faster than this allows", "FanOut/queue/k=1", "cpu-busy-%", "", nil, unit("%"), 20},
	{"Partners", "machine CPU busy during the round, the queue with 4 instances", "FanOut/queue/k=4", "cpu-busy-%", "", nil, unit("%"), 20},
	{"Partners", "handler's peak RSS, 500 tenants' tokens cached, the loop", "FanOut/loop", "peak-rss-MiB", "< 128 MB", below(128), unit("MiB"), 20},
	{"Partners", "largest handler's peak RSS, the queue with 1 instance", "FanOut/queue/k=1", "peak-rss-MiB", "< 128 MB", below(128), unit("MiB"), 20},

	{"Webhooks", "Standard Webhooks verification, 9 KB body", "Verify/standard", "ns/op", "", nil, us, 8},
	{"Webhooks", "X-Hub-Signature verification, 9 KB body", "Verify/hub", "ns/op", "", nil, us, 8},
	{"Webhooks", "Jira payload parse and mapping", "ParseJira", "ns/op", "", nil, us, 8},
}

// Write renders benchmarks.md and its charts.
func Write(dir string, r Results, machine string, at time.Time) error {
	if err := os.MkdirAll(filepath.Join(dir, "benchmarks"), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nGenerated by `make bench` on %s.\n\nMachine: %s. Absolute figures belong to this machine; "+
		"the benchmarks that start processes share its CPUs with the devstack they talk to. "+
		"The export benchmarks write under the temporary directory: on ext4 mounted without a journal, "+
		"creating files takes about three times the CPU for minutes after thousands were deleted (the kernel passes over "+
		"recently freed inodes), so run `make bench` when nothing was deleted on that disk in the last 6 minutes "+
		"(`make test` deletes its test trees when it ends).\n\n", at.UTC().Format("2006-01-02 15:04 MST"), machine)
	met, missed, missing := 0, 0, 0
	area := ""
	var unmet []string
	for _, g := range goals {
		if g.Area != area {
			area = g.Area
			fmt.Fprintf(&b, "\n## %s\n\n| measure | figure | goal | |\n|---|---:|---|---|\n", area)
		}
		v, ok := r.Get(g.Bench, g.Unit)
		fig, mark := "not measured", ""
		switch {
		case !ok:
			missing++
			if g.Met != nil {
				mark = "**not measured**"
				unmet = append(unmet, g.What+" (not measured)")
			}
		default:
			fig = g.Format(v)
			if g.Met != nil {
				if g.Met(v, r) {
					mark, met = "met", met+1
				} else {
					mark, missed = "**not met**", missed+1
					unmet = append(unmet, fmt.Sprintf("%s: %s against %s (#%d)", g.What, fig, g.Goal, g.Issue))
				}
			}
		}
		goal := g.Goal
		if goal == "" {
			goal = "reference"
		}
		fmt.Fprintf(&b, "| %s (`%s`) | %s | %s | %s |\n", g.What, g.Bench, fig, goal, mark)
	}
	fmt.Fprintf(&b, "\n## Summary\n\n%d goals met, %d not met, %d figures not measured in this run.\n", met, missed, missing)
	if len(unmet) > 0 {
		b.WriteString("\nNot met yet:\n\n")
		for _, u := range unmet {
			fmt.Fprintf(&b, "- %s\n", u)
		}
	}

	charts := []chart{
		{file: "throughput.svg", title: "Incidents per second against incidents listed", unit: "incidents/s", series: []series{
			{"export, whole path (handler process)", "Export", "incidents/s"},
			{"API client listing with alerts", "ListHeap", "incidents/s"},
		}},
		{file: "memory.svg", title: "Memory against incidents listed", unit: "MiB", series: []series{
			{"export handler peak RSS", "Export", "peak-rss-MiB"},
			{"API client peak heap", "ListHeap", "peak-heap-MiB"},
		}},
	}
	b.WriteString("\n## Charts\n\n")
	for _, c := range charts {
		svg := c.render(r)
		if err := os.WriteFile(filepath.Join(dir, "benchmarks", c.file), []byte(svg), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&b, "![%s](benchmarks/%s)\n\n", c.title, c.file)
	}
	b.WriteString("The raw `go test -bench` output of this run is [benchmarks/raw.txt](benchmarks/raw.txt).\n")
	return os.WriteFile(filepath.Join(dir, "benchmarks.md"), []byte(b.String()), 0o644)
}
