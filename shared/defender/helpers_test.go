package defender_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/google/uuid"
)

var start = devstack.Start

// settings point the product at the devstack; env-secret keeps these tests
// about the API client (the credentials package tests the vault paths).
func settings(t testing.TB, s *devstack.Stack, api string, kv ...string) *config.Config {
	t.Helper()
	m := s.Settings()
	m["DEFENDER_CREDENTIAL"] = "env-secret"
	m["DEFENDER_CLIENT_SECRET"] = s.ClientSecret(devstack.DefaultClientID)
	m["DEFENDER_API"] = api
	m["DEFENDER_API_URL"] = s.GraphURL
	if api == "xdr" {
		m["DEFENDER_API_URL"] = s.XDRURL
	}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	if m["DEFENDER_CLIENT_ID"] != devstack.DefaultClientID {
		m["DEFENDER_CLIENT_SECRET"] = s.ClientSecret(m["DEFENDER_CLIENT_ID"])
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func client(t testing.TB, s *devstack.Stack, cfg *config.Config, opts *defender.Options) defender.Client {
	t.Helper()
	creds, err := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	o := defender.Options{}
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = s.HTTPClient()
	}
	if o.Limits == nil {
		o.Limits = defender.NoLimits
	}
	if o.RetryBase == 0 {
		o.RetryBase = 5 * time.Millisecond
	}
	c, err := defender.New(defender.API(cfg.API), cfg.APIURL, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), &o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// listAll drains a listing, returning every incident and the requests it cost.
func listAll(t testing.TB, ctx context.Context, c defender.Client, o defender.ListOptions) ([]*defender.Incident, int, int, error) {
	var all []*defender.Incident
	requests, pages := 0, 0
	for p, err := range c.Incidents(ctx, o) {
		if err != nil {
			return all, requests, pages, err
		}
		all = append(all, p.Incidents...)
		requests += p.Requests
		pages++
	}
	return all, requests, pages, nil
}

// headerSpy records request headers on their way out.
type headerSpy struct {
	next    http.RoundTripper
	headers []http.Header
}

func (h *headerSpy) RoundTrip(r *http.Request) (*http.Response, error) {
	h.headers = append(h.headers, r.Header.Clone())
	return h.next.RoundTrip(r)
}

func newID() string { return uuid.NewString() }
