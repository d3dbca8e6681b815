package awssecret_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/awssecret"
)

// clock is a settable time for the cache; the SDK signs with the real one.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock               { c := &clock{}; now := time.Now(); c.t.Store(&now); return c }
func (c *clock) now() time.Time      { return *c.t.Load() }
func (c *clock) add(d time.Duration) { t := c.now().Add(d); c.t.Store(&t) }

// env points the SDK's default chain at the devstack, as Lambda's
// variables point it at the execution role, with overrides.
func env(t *testing.T, s *devstack.Stack, override map[string]string) {
	s.UseAWS(t)
	for k, v := range override {
		t.Setenv(k, v)
	}
}

func reads(s *devstack.Stack) int64 { return s.Counters().Get("secretsmanager.GetSecretValue", 0) }

func TestGet(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 1})
	arn := s.PutAWSSecret("defender/webhooks", `{"jira":"one"}`)
	s.PutAWSSecret("denied", "x")
	s.DenyAWSSecret("denied", true)
	tests := []struct {
		name, id  string
		env       map[string]string
		value     string
		code      string // the error's Code
		says      string // in the error's message
		transient bool
	}{
		{name: "by ARN", id: arn, value: `{"jira":"one"}`},
		{name: "by name", id: "defender/webhooks", value: `{"jira":"one"}`},
		{name: "by ARN without its suffix", id: arn[:len(arn)-7], value: `{"jira":"one"}`},
		{name: "no such secret", id: arn + "x", code: "ResourceNotFoundException", says: "check the ARN and AWS_REGION"},
		{name: "role may not read it", id: "denied", code: "AccessDeniedException", says: "grant it secretsmanager:GetSecretValue on that ARN"},
		{name: "wrong secret key", id: arn, env: map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, code: "InvalidSignatureException", says: "credentials were refused"},
		{name: "expired session", id: arn, env: map[string]string{"AWS_SESSION_TOKEN": "stale"}, code: "UnrecognizedClientException", says: "check the execution role"},
		{name: "wrong region", id: arn, env: map[string]string{"AWS_REGION": "us-east-1"}, code: "InvalidSignatureException"},
		{name: "unreachable", id: arn, env: map[string]string{"AWS_ENDPOINT_URL_SECRETS_MANAGER": "https://127.0.0.1:1"}, says: "reading", transient: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env(t, s, tt.env)
			src, err := awssecret.New(tt.id, nil)
			if err != nil {
				t.Fatal(err)
			}
			v, err := src.Get(context.Background())
			if tt.value != "" {
				if err != nil || v.String != tt.value || v.Version == "" {
					t.Fatalf("Get = %+v, %v; want %q", v, err, tt.value)
				}
				return
			}
			var e *awssecret.Error
			if !errors.As(err, &e) || e.Code != tt.code || !strings.Contains(err.Error(), tt.says) || e.Transient() != tt.transient {
				t.Fatalf("Get error = %v (%#v); want code %q saying %q, transient %v", err, e, tt.code, tt.says, tt.transient)
			}
			if strings.Contains(err.Error(), "one") {
				t.Fatalf("the error holds the secret: %v", err)
			}
		})
	}
}

// A rotation is served once the TTL has passed, or at once by Reread; an
// outage while warm serves the version held and tries again only after
// Retry; concurrent callers share one read.
func TestCacheAndRotation(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 1})
	arn := s.PutAWSSecret("hooks", "v1")
	env(t, s, nil)
	c := newClock()
	var logs bytes.Buffer
	src, _ := awssecret.New(arn, &awssecret.Options{Now: c.now, TTL: 5 * time.Minute, Retry: 30 * time.Second,
		RereadEvery: 30 * time.Second, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx := context.Background()
	get := func(want string) {
		t.Helper()
		v, err := src.Get(ctx)
		if err != nil || v.String != want {
			t.Fatalf("Get = %q, %v; want %q", v.String, err, want)
		}
	}

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { src.Get(ctx) })
	}
	wg.Wait()
	if n := reads(s); n != 1 {
		t.Fatalf("20 concurrent cold callers made %d reads; want 1", n)
	}
	// The first Reread reads at once; the next must wait RereadEvery.
	if changed, err := src.Reread(ctx); changed || err != nil || reads(s) != 2 {
		t.Fatalf("Reread with no rotation = %v, %v (%d reads); want unchanged after 2 reads", changed, err, reads(s))
	}
	c.add(10 * time.Second)
	if changed, err := src.Reread(ctx); changed || err != nil || reads(s) != 2 {
		t.Fatalf("Reread 10 s after another = %v, %v (%d reads); want no read", changed, err, reads(s))
	}
	s.PutAWSSecret("hooks", "v2")
	c.add(4 * time.Minute)
	get("v1") // within the TTL
	c.add(2 * time.Minute)
	get("v2")
	if n := reads(s); n != 3 {
		t.Fatalf("%d reads; want 3", n)
	}

	s.PutAWSSecret("hooks", "v3")
	c.add(time.Minute)
	if changed, err := src.Reread(ctx); !changed || err != nil {
		t.Fatalf("Reread after a rotation = %v, %v; want changed", changed, err)
	}
	get("v3")
	if changed, _ := src.Reread(ctx); changed || reads(s) != 4 {
		t.Fatalf("a second Reread at once read again (%d reads)", reads(s))
	}

	s.SetFaults(devstack.Faults{SecretsManagerOutage: true})
	c.add(6 * time.Minute)
	get("v3") // served from the cache; the failed read is logged
	failed := reads(s)
	c.add(20 * time.Second)
	get("v3")
	if reads(s) != failed {
		t.Fatalf("a read was tried %v after a failed one; want none before Retry", 20*time.Second)
	}
	if !strings.Contains(logs.String(), "serving the version held") || strings.Contains(logs.String(), `"v3"`) {
		t.Fatalf("log: %s", logs.String())
	}
	s.SetFaults(devstack.Faults{})
	s.PutAWSSecret("hooks", "v4")
	c.add(11 * time.Second)
	get("v4") // recovered without a restart
}

// A caller that gives up does not fail the others waiting on the same read.
func TestCancelledCallerFailsNoOther(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 1})
	arn := s.PutAWSSecret("hooks", "v1")
	env(t, s, nil)
	s.SetFaults(devstack.Faults{LatencyMs: 0})
	src, _ := awssecret.New(arn, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var otherErr error
	wg.Go(func() { src.Get(ctx) })
	wg.Go(func() { _, otherErr = src.Get(context.Background()) })
	cancel()
	wg.Wait()
	if otherErr != nil {
		t.Fatalf("the other caller failed: %v", otherErr)
	}
}

func TestNew(t *testing.T) {
	if _, err := awssecret.New("", nil); err == nil || !strings.Contains(err.Error(), "give the secret's ARN") {
		t.Fatalf("New(\"\") = %v", err)
	}
}
