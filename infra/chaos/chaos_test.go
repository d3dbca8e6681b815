// Package chaos is the resilience suite: the HTTP functions and the shared
// credentials broken on purpose while they serve. make test runs it at its
// small size; make chaos at CHAOS_SCALE times that, with the export's kill
// matrix and every fuzz target for longer.
package chaos_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	huntingquery "github.com/defender-functions/defender-functions/functions/hunting-query"
	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

func scale() int {
	if n, err := strconv.Atoi(os.Getenv("CHAOS_SCALE")); err == nil && n > 1 {
		return n
	}
	return 1
}

// clock is the credentials' clock, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	s     *devstack.Stack
	app   *function.App
	hc    *http.Client // the app's client to the devstack
	clock *clock
	key   []byte // the generic webhook secret
	ids   []int  // incidents that were not merged into another: webhooks can update them
}

// newEnv is the app in its production credential mode (the secret read
// from Key Vault with the managed identity) over a devstack; kv changes
// settings (the secretless modes).
func newEnv(t *testing.T, s *devstack.Stack, kv ...string) *env {
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	// The Lambda execution role's variables, for aws-federation.
	s.UseAWS(t)
	e := &env{s: s, hc: s.HTTPClient(), clock: &clock{t: time.Now()}, key: []byte("chaos-generic-webhook-key-0123456789")}
	m := s.Settings()
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	m["STATE_STORE"] = "file://" + t.TempDir()
	m["DEFENDER_RATE_LIMITS"] = "off"
	m["WEBHOOK_SECRET_GENERIC"] = "whsec_" + base64.StdEncoding.EncodeToString(e.key)
	app, err := functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok },
		slog.New(slog.NewJSONHandler(devstack.AuditLog(), nil)),
		&functions.Options{HTTPClient: e.hc, Cache: credentials.NewCache(e.clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	e.app = app
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	creds, _ := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	c, _ := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), &defender.Options{HTTPClient: s.HTTPClient(), Limits: defender.NoLimits})
	for id := 1001; len(e.ids) < 40; id++ {
		in, err := c.Incident(context.Background(), strconv.Itoa(id))
		if err != nil {
			t.Fatal(err)
		}
		if in.RedirectID == "" {
			e.ids = append(e.ids, id)
		}
	}
	return e
}

func (e *env) incident(i int) int { return e.ids[i%len(e.ids)] }

const huntBody = `{"name":"failed-logons","parameters":{"threshold":1,"lookback":"30d"}}`

func (e *env) hunt() (int, string) {
	resp := e.app.HTTP[huntingquery.Function.Name].Func(function.WithInvocation(context.Background(), e.app.Log(), "chaos"), &function.HTTPRequest{Method: "POST", Path: "/api/hunting-query",
		Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(huntBody)})
	var body bytes.Buffer
	body.Write(resp.Body)
	if resp.Stream != nil {
		resp.Stream(&body)
	}
	return resp.Status, body.String()
}

func (e *env) delivery(id string, incident int) (http.Header, []byte) {
	body := fmt.Appendf(nil, `{"type":"ticket.updated","timestamp":"2026-11-26T14:00:00Z","data":{"incidentId":"%d","ticket":"CHAOS-%s","status":"inProgress","comment":{"id":"%s","text":"chaos delivery %s"}}}`, incident, id, id, id)
	h := http.Header{"Content-Type": {"application/json"}}
	now := time.Now()
	h.Set(webhook.HeaderID, id)
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(webhook.HeaderSignature, webhook.SignStandard(e.key, id, now, body))
	return h, body
}

func (e *env) deliver(id string, incident int) (int, string) {
	h, body := e.delivery(id, incident)
	resp := e.app.HTTP[ticketwebhook.Function.Name].Func(function.WithInvocation(context.Background(), e.app.Log(), "chaos"), &function.HTTPRequest{Method: "POST",
		Params: map[string]string{"provider": "generic"}, Header: h, Body: body})
	return resp.Status, string(resp.Body)
}

// What proves the app's identity goes down while the functions are warm
// (Entra ID and Key Vault; the managed identity; AWS STS): they keep serving
// from the cached token while it is valid, answer a clear 5xx once it is
// not, and recover by themselves.
func TestOutagesDuringWarmInvocations(t *testing.T) {
	for _, mode := range []struct {
		name   string
		kv     []string
		outage devstack.Faults
	}{
		{"keyvault-secret: Entra ID and Key Vault", nil, devstack.Faults{TokenOutage: true, VaultOutage: true}},
		{"managed-identity-federation: the identity endpoint and Entra ID", []string{"DEFENDER_CREDENTIAL", "managed-identity-federation", "KEY_VAULT_URL", "",
			"MANAGED_IDENTITY_CLIENT_ID", devstack.IdentityClientID}, devstack.Faults{TokenOutage: true}},
		{"aws-federation: AWS STS", []string{"DEFENDER_CREDENTIAL", "aws-federation", "KEY_VAULT_URL", ""}, devstack.Faults{STSOutage: true}},
	} {
		t.Run(mode.name, func(t *testing.T) { outageWhileWarm(t, mode.kv, mode.outage) })
	}
}

func outageWhileWarm(t *testing.T, kv []string, outage devstack.Faults) {
	s := devstack.Start(t, devstack.Options{})
	e := newEnv(t, s, kv...)
	if st, body := e.hunt(); st != 200 {
		t.Fatalf("warm-up: %d %s", st, body)
	}
	s.SetFaults(outage)
	e.clock.Advance(40 * time.Minute) // past the refresh point: refreshes fail, the token is still valid
	for i := range 10 * scale() {
		if st, body := e.hunt(); st != 200 {
			t.Fatalf("hunting %d during the outage: %d %s", i, st, body)
		}
		if st, body := e.deliver(fmt.Sprintf("outage-%d", i), e.incident(i)); st != 200 {
			t.Fatalf("webhook %d during the outage: %d %s", i, st, body)
		}
	}
	e.clock.Advance(25 * time.Minute) // the cached token has expired
	st, body := e.hunt()
	if st != 503 || !strings.Contains(body, "CredentialsUnavailable") || !strings.Contains(body, "is unavailable") {
		t.Fatalf("hunting after expiry: %d %s", st, body)
	}
	// Both functions read the outage the same way (failure.Classify).
	if st, body := e.deliver("after-expiry", e.incident(0)); st != 503 || !strings.Contains(body, "CredentialsUnavailable") {
		t.Fatalf("webhook after expiry: %d %s", st, body)
	}
	s.SetFaults(devstack.Faults{})
	if st, body := e.hunt(); st != 200 {
		t.Fatalf("after recovery: %d %s", st, body)
	}
	if st, body := e.deliver("after-expiry", e.incident(0)); st != 200 {
		t.Fatalf("the webhook's retry after recovery: %d %s", st, body)
	}
}

// The client secret is rotated (the old one revoked) while requests flow:
// the next token refresh is rejected, the secret is read again, and no
// request fails.
func TestSecretRotationUnderLoad(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	e := newEnv(t, s)
	if st, body := e.hunt(); st != 200 {
		t.Fatalf("warm-up: %d %s", st, body)
	}
	var failures, done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var st int
				var body string
				if i%2 == 0 {
					st, body = e.hunt()
				} else {
					st, body = e.deliver(fmt.Sprintf("rot-%d-%d", w, i), e.incident(w*7+i))
				}
				if st != 200 {
					failures.Add(1)
					t.Errorf("request failed during the rotation: %d %s", st, body)
				}
				done.Add(1)
			}
		}()
	}
	for round := range 2 * scale() {
		time.Sleep(300 * time.Millisecond)
		s.RotateSecret(devstack.RevokeOld)
		e.clock.Advance(31 * time.Minute) // past the refresh point: the next token needs the new secret
		time.Sleep(300 * time.Millisecond)
		t.Logf("rotation %d: %d requests so far", round+1, done.Load())
	}
	// Enough requests to mean something, however loaded the machine is.
	for deadline := time.Now().Add(time.Minute); done.Load() < 50 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	c := s.Counters()
	if failures.Load() != 0 || c.Get("entra.POST /{tenant}/oauth2/v2.0/token", 401) == 0 || done.Load() < 50 {
		t.Fatalf("%d of %d failed; %d rejected refreshes", failures.Load(), done.Load(), c.Get("entra.POST /{tenant}/oauth2/v2.0/token", 401))
	}
}

// The HTTP functions under a loopback load generator through the custom
// handler: a bounded number of requests, zero errors, and every goroutine
// gone afterwards.
func TestHTTPFunctionsUnderLoad(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	e := newEnv(t, s)
	srv := httptest.NewServer(customhandler.New(e.app, customhandler.Options{}))
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	send := func(i int) (int, error) {
		var req *http.Request
		if i%3 == 2 {
			h, body := e.delivery("load-"+strconv.Itoa(i), e.incident(i))
			req, _ = http.NewRequest("POST", srv.URL+"/api/ticket-webhook/generic", bytes.NewReader(body))
			req.Header = h
		} else {
			req, _ = http.NewRequest("POST", srv.URL+"/api/hunting-query", strings.NewReader(huntBody))
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := send(0); err != nil || st != 200 {
		t.Fatalf("warm-up: %d %v", st, err)
	}
	transport.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	total, workers := 600*scale(), 32
	var next, errs atomic.Int64
	deadline := time.Now().Add(90 * time.Second)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > total || time.Now().After(deadline) {
					return
				}
				if st, err := send(i); err != nil || st != 200 {
					errs.Add(1)
					t.Errorf("request %d: %d %v", i, st, err)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if n := next.Load() - 1; n < int64(total) {
		t.Fatalf("only %d of %d requests within the bound", n, total)
	}
	t.Logf("%d requests, %d workers, %s (%.0f/s), %d errors", total, workers, took.Round(time.Millisecond), float64(total)/took.Seconds(), errs.Load())
	transport.CloseIdleConnections()
	srv.Close()
	// The app keeps idle connections to the devstack as any client does; how
	// many depends on how the load overlapped. They are not the load's.
	e.hc.CloseIdleConnections()
	// Goroutines of the load are gone (the devstack's own remain).
	var now int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= baseline {
			break
		}
	}
	if now > baseline {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after the load, %d before:\n%s", now, baseline, buf[:runtime.Stack(buf, true)])
	}
}
