package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/shared/lambdahandler"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// A collector that accepts connections and never answers holds no
// invocation back more than lambdahandler.DefaultFlushTimeout: the app and
// handler built as main builds them, each invocation's flush is given that
// deadline and gives up on it (DeadlineExceeded, the collector having taken
// the export's connection), and the invocation answers. The second
// invocation, its predecessor's exports still hanging, is held no longer.
// The proof is the deadline the flush was given and the error it ended
// with, not a stopwatch: on a busy 2-CPU machine a timing bound near 500 ms
// would be flaky, and one far from it would not tell 500 ms from the 2 s
// this replaced.
func TestFlushBoundedOnHungCollector(t *testing.T) {
	hung := loopback.NewHung(t)
	for k, v := range map[string]string{
		"DEFENDER_TENANT_ID": "contoso.onmicrosoft.com", "DEFENDER_CLIENT_ID": "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84",
		"KEY_VAULT_URL": "https://kv.vault.azure.net/", "EXPORT_SINK": "file://" + t.TempDir(), "STATE_STORE": "file://" + t.TempDir(),
		"AWS_LAMBDA_FUNCTION_NAME": "defender-functions", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + hung.Addr().String(),
	} {
		t.Setenv(k, v)
	}
	var logs bytes.Buffer
	app := functions.FromEnv(slog.New(slog.NewJSONHandler(&logs, nil)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		telemetry.Installed().Shutdown(ctx)
	})
	if app.Flush == nil {
		t.Fatalf("telemetry did not start:\n%s", &logs)
	}
	type flush struct {
		given time.Duration // from the flush's start to its context's deadline
		err   error
	}
	var mu sync.Mutex
	var flushes []flush
	export := app.Flush
	app.Flush = func(ctx context.Context) error {
		start := time.Now()
		deadline, ok := ctx.Deadline()
		err := export(ctx)
		if !ok {
			deadline = start.Add(time.Hour)
		}
		mu.Lock()
		flushes = append(flushes, flush{deadline.Sub(start), err})
		mu.Unlock()
		return err
	}
	h := lambdahandler.New(app, lambdahandler.Options{})

	// The hunting catalog: an invocation (its span) that needs no network.
	ev := events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "$default", RawPath: "/hunting-query"}
	ev.RequestContext.HTTP.Method = "GET"
	ev.RequestContext.HTTP.Path = "/hunting-query"
	payload, _ := json.Marshal(ev)
	for i := range 2 {
		answered := make(chan error, 1)
		var out []byte
		go func() {
			var err error
			out, err = h.Invoke(context.Background(), payload)
			answered <- err
		}()
		select {
		case err := <-answered:
			var resp events.APIGatewayV2HTTPResponse
			if err != nil || json.Unmarshal(out, &resp) != nil || resp.StatusCode != 200 {
				t.Fatalf("invocation %d: %v %s", i+1, err, out)
			}
		case <-time.After(30 * time.Second): // not a bound: the test's guard against a hang
			t.Fatalf("invocation %d did not return", i+1)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(flushes) != 2 {
		t.Fatalf("%d flushes for 2 invocations", len(flushes))
	}
	for i, f := range flushes {
		if f.given > lambdahandler.DefaultFlushTimeout || !errors.Is(f.err, context.DeadlineExceeded) {
			t.Errorf("flush %d: given %s (the bound is %s), ended with %v", i+1, f.given, lambdahandler.DefaultFlushTimeout, f.err)
		}
	}
	if hung.Accepted() == 0 {
		t.Error("the collector took no connection: nothing was exported, the case proves nothing")
	}
	if n := strings.Count(logs.String(), `"msg":"Telemetry not exported.","invocation_id":`); n != 2 || !strings.Contains(logs.String(), `"err":"context deadline exceeded`) {
		t.Errorf("%d warnings for 2 flushes cut short:\n%s", n, &logs)
	}
}
