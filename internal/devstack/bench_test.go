package devstack_test

import (
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

// BenchmarkListThroughput measures incidents served per second by the list
// endpoints over real HTTPS, pages of the API's maximum size, with alerts
// (Graph $expand=alerts; XDR always includes them).
func BenchmarkListThroughput(b *testing.B) {
	s := start(b, devstack.Options{Incidents: 10_000})
	for _, api := range []struct{ name, url string }{
		{"graph", s.GraphURL + "/v1.0/security/incidents?$top=50&$expand=alerts&$orderby=lastUpdateDateTime%%20asc&$skip=%d"},
		{"xdr", s.XDRURL + "/api/incidents?$top=100&$skip=%d"},
	} {
		b.Run(api.name, func(b *testing.B) {
			res := devstack.GraphResource
			per := 50
			if api.name == "xdr" {
				res, per = devstack.XDRResource, 100
			}
			tok := token(b, s, devstack.DefaultTenantID, devstack.DefaultClientID, res)
			client := s.HTTPClient()
			var served, pageNo atomic.Int64
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					skip := (pageNo.Add(1) % int64(10_000/per)) * int64(per)
					resp, err := client.Do(mustReq(b, "GET", fmt.Sprintf(api.url, skip), tok))
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
					served.Add(int64(per))
				}
			})
			b.ReportMetric(float64(served.Load())/time.Since(start).Seconds(), "incidents/s")
		})
	}
}
