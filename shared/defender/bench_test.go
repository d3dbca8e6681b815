package defender_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
)

// BenchmarkDecodePage measures decode-and-normalize of a Graph page of 50
// incidents with their alerts, as the devstack serves it, and an XDR page of
// 100; "-keys" decodes as ListOptions.KeysOnly does (the export).
func BenchmarkDecodePage(b *testing.B) {
	s := start(b, devstack.Options{Incidents: 500})
	for _, api := range []struct{ name, url string }{
		{"graph", s.GraphURL + "/v1.0/security/incidents?$top=50&$expand=alerts"},
		{"xdr", s.XDRURL + "/api/incidents?$top=100"},
	} {
		cfg := settings(b, s, api.name)
		creds, _ := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
		tok, err := creds.Source(cfg.Tenants[0]).Token(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		req, _ := http.NewRequest("GET", api.url, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := s.HTTPClient().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, mode := range []struct {
			suffix string
			decode func(api, tenant string, r io.Reader) ([]*defender.Incident, error)
		}{{"", defender.DecodePage}, {"-keys", defender.DecodeKeysPage}} {
			b.Run(api.name+mode.suffix, func(b *testing.B) {
				var per int
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					got, err := mode.decode(api.name, "t", bytes.NewReader(body))
					if err != nil {
						b.Fatal(err)
					}
					per = len(got)
				}
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "incidents/s")
				b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*per), "allocs/incident")
			})
		}
	}
}

// externalDevstack runs the devstack command as its own process, so the
// heap measured here is the client's alone.
func externalDevstack(b *testing.B, incidents int) (*config.Config, *http.Client) {
	env := devstack.StartProcess(b, "-incidents", fmt.Sprint(incidents), "-no-rate-limits")
	b.Setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
	b.Setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		b.Fatal(err)
	}
	pem, _ := os.ReadFile(env["SSL_CERT_FILE"])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	return cfg, &http.Client{Transport: tr}
}

// BenchmarkListHeap lists every incident (with alerts) and reports the peak
// heap in use: it must stay flat as the incident count grows tenfold.
func BenchmarkListHeap(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cfg, hc := externalDevstack(b, n)
			creds, err := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: hc, Cache: credentials.NewCache(nil)})
			if err != nil {
				b.Fatal(err)
			}
			c, err := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), &defender.Options{HTTPClient: hc, Limits: defender.NoLimits})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				runtime.GC()
				var ms runtime.MemStats
				var peak uint64
				count := 0
				start := time.Now()
				for p, err := range c.Incidents(context.Background(), defender.ListOptions{OrderByLastUpdate: true, WithAlerts: true}) {
					if err != nil {
						b.Fatal(err)
					}
					count += len(p.Incidents)
					// At every page: a peak sampled every 1,000 incidents
					// took 10 samples of 10k and 100 of 100k, and the larger
					// sample found the rarer highs.
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
				}
				if count != n {
					b.Fatalf("listed %d of %d", count, n)
				}
				b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
				b.ReportMetric(float64(count)/time.Since(start).Seconds(), "incidents/s")
			}
		})
	}
}
