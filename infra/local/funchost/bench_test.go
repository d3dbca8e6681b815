package funchost_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/funchost"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/queue"
)

// BenchmarkFanOut is a partner app's round: 500 tenants of 200 incidents
// each on the devstack, exported by one instance's concurrent loop
// (EXPORT_CONCURRENCY 8), then through the Storage queue (Azurite's) by k
// instances of the host, each with its own handler process (k = 1, 2, 4),
// all on this machine's two cores beside the devstack and Azurite. It
// reports the round's time (the timer firing to the last tenant caught up),
// the staleness across tenants (how long after the round began a tenant
// was caught up: p50, p99), the handlers' peak RSS (500 tokens cached)
// and the share of the machine's CPU busy during the round.
func BenchmarkFanOut(b *testing.B) {
	tenants, incidents := 500, 200
	if testing.Short() {
		tenants, incidents = 20, 20
	}
	app := appDir(b)
	dir := b.TempDir()
	ts, ids := devstack.Customers(tenants, incidents)
	s := devstack.Start(b, devstack.Options{Tenants: ts, Dir: filepath.Join(dir, "local"), Limits: devstack.RateLimits{}})
	az := emulators.StartAzuriteQueues(b)
	round := 0
	run := func(b *testing.B, k int) {
		for range b.N {
			round++
			rdir := filepath.Join(dir, fmt.Sprint("round", round))
			env := settings(s, rdir, "DEFENDER_TENANT_ID="+strings.Join(ids, ","), "EXPORT_LOOKBACK=2160h", "DEFENDER_RATE_LIMITS=off",
				"DEFENDER_CREDENTIAL=env-secret", "DEFENDER_CLIENT_SECRET="+s.ClientSecret(devstack.DefaultClientID))
			if k > 0 {
				name := fmt.Sprint("round", round)
				q, _ := queue.NewAzure(name, queue.AzureOptions{ConnectionString: az.ConnectionString})
				if err := q.Create(context.Background()); err != nil {
					b.Fatal(err)
				}
				env = append(env, "EXPORT_QUEUE="+name, "AzureWebJobsStorage="+az.ConnectionString)
			}
			var hosts []*funchost.Host
			var logs []*devstack.LogBuffer
			for range max(k, 1) {
				l := &devstack.LogBuffer{}
				h, err := funchost.Start(funchost.Options{AppDir: app, NoTimers: true, Env: env, Stdout: io.MultiWriter(l, devstack.AuditLog()), Stderr: devstack.AuditLog()})
				if err != nil {
					b.Fatal(err)
				}
				hosts, logs = append(hosts, h), append(logs, l)
			}
			b.ResetTimer()
			busy0, total0 := loopback.CPUBusy()
			start := time.Now()
			if res, err := hosts[0].Run(context.Background(), "incident-export"); err != nil || res.Status != 200 {
				b.Fatalf("the timer: %v %+v", err, res)
			}
			var caught map[string]time.Time
			for deadline := time.Now().Add(15 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
				caught = caughtUp(logs)
				if len(caught) == tenants {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d tenants caught up", len(caught), tenants)
				}
			}
			b.StopTimer()
			busy1, total1 := loopback.CPUBusy()
			var stale []float64
			last := start
			for _, at := range caught {
				stale = append(stale, at.Sub(start).Seconds())
				if at.After(last) {
					last = at
				}
			}
			slices.Sort(stale)
			rss := 0.0
			for _, h := range hosts {
				rss = max(rss, loopback.PeakRSS(h.HandlerPID()))
			}
			for _, h := range hosts {
				h.Close()
			}
			b.ReportMetric(last.Sub(start).Seconds(), "s/round")
			b.ReportMetric(stale[len(stale)/2], "stale-p50-s")
			b.ReportMetric(stale[len(stale)*99/100], "stale-p99-s")
			b.ReportMetric(rss, "peak-rss-MiB")
			b.ReportMetric(float64(tenants*incidents)/last.Sub(start).Seconds(), "versions/s")
			if total1 > total0 {
				// Whether the machine ran out of CPU: the share busy, every
				// process (devstack, Azurite, hosts, handlers) counted.
				b.ReportMetric(100*float64(busy1-busy0)/float64(total1-total0), "cpu-busy-%")
			}
		}
	}
	b.Run("loop", func(b *testing.B) { run(b, 0) })
	for _, k := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("queue/k=%d", k), func(b *testing.B) { run(b, k) })
	}
}

// caughtUp reads, from the handlers' logs, when each tenant was first caught up.
func caughtUp(logs []*devstack.LogBuffer) map[string]time.Time {
	out := map[string]time.Time{}
	for _, l := range logs {
		sc := bufio.NewScanner(strings.NewReader(l.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if !strings.Contains(sc.Text(), `"msg":"Caught up."`) {
				continue
			}
			var line struct {
				Time   time.Time `json:"time"`
				Tenant string    `json:"tenant"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				if at, ok := out[line.Tenant]; !ok || line.Time.Before(at) {
					out[line.Tenant] = line.Time
				}
			}
		}
	}
	return out
}
