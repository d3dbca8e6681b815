package credentials_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/google/uuid"
)

// Every log line of this package's tests goes here; TestMain proves that no
// secret or token the devstacks issued appears in it.
var (
	logMu  sync.Mutex
	logBuf bytes.Buffer
	stacks []*devstack.Stack
	logger = slog.New(slog.NewJSONHandler(io.MultiWriter(syncWriter{}, devstack.AuditLog()), &slog.HandlerOptions{Level: slog.LevelDebug}))
)

type syncWriter struct{}

func (syncWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return logBuf.Write(p)
}

func TestMain(m *testing.M) {
	code := m.Run()
	logMu.Lock()
	out := logBuf.String()
	logMu.Unlock()
	leaks := 0
	for _, s := range stacks {
		for _, secret := range s.Issued() {
			if strings.Contains(out, secret) {
				leaks++
			}
		}
	}
	if leaks > 0 {
		fmt.Printf("FAIL: %d secrets or tokens issued by the devstack appear in the log output\n", leaks)
		code = 1
	}
	if !strings.Contains(out, "Token acquired.") {
		fmt.Println("FAIL: the log audit saw no log output at all")
		code = 1
	}
	os.Exit(code)
}

const (
	tokenEndpoint = "entra.POST /{tenant}/oauth2/v2.0/token"
	v1Endpoint    = "entra.POST /{tenant}/oauth2/token"
	vaultEndpoint = "keyvault.GET /secrets/{name}/{$}"
)

func start(t testing.TB, opts devstack.Options) *devstack.Stack {
	t.Helper()
	if opts.IdentityClientID == "" {
		opts.IdentityClientID = uuid.NewString()
	}
	s := devstack.Start(t, opts)
	stacks = append(stacks, s)
	// The managed identity endpoint, as App Service sets it.
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	// The Lambda execution role's variables, for aws-federation.
	s.UseAWS(t)
	return s
}

// settings are the devstack's own settings, with overrides.
func settings(t testing.TB, s *devstack.Stack, identityClientID string, kv ...string) *config.Config {
	t.Helper()
	m := s.Settings()
	m["MANAGED_IDENTITY_CLIENT_ID"] = identityClientID
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type fixture struct {
	s     *devstack.Stack
	cfg   *config.Config
	cache *credentials.Cache
	clock *fakeClock
	creds *credentials.Credentials
}

func newFixture(t testing.TB, kv ...string) *fixture {
	t.Helper()
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	return fixtureOn(t, s, id, kv...)
}

func fixtureOn(t testing.TB, s *devstack.Stack, id string, kv ...string) *fixture {
	f := &fixture{s: s, clock: &fakeClock{t: time.Now()}}
	f.cfg = settings(t, s, id, kv...)
	f.cache = credentials.NewCache(f.clock.Now)
	var err error
	f.creds, err = credentials.New(functions.Registration(f.cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: f.cache, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) source() credentials.Source { return f.creds.Source(f.cfg.Tenants[0]) }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustClaims(t testing.TB, tok *credentials.Token) *credentials.Claims {
	t.Helper()
	c, err := credentials.ParseClaims(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noSecretIn fails if a message carries anything the devstack issued.
func noSecretIn(t testing.TB, s *devstack.Stack, msg string) {
	t.Helper()
	for _, secret := range s.Issued() {
		if strings.Contains(msg, secret) {
			t.Fatal("an error message carries a secret or token")
		}
	}
}

// 1000 concurrent callers on a cold cache: one token request and one Key
// Vault read; then 10k warm calls cause none.
func TestColdCacheConcurrency(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	toks := make([]*credentials.Token, 1000)
	errs := make([]error, 1000)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = f.source().Token(context.Background())
		}()
	}
	wg.Wait()
	for i := range toks {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if toks[i] != toks[0] {
			t.Fatal("callers got different tokens")
		}
	}
	if n := f.s.Counters().Get(tokenEndpoint, 0); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
	if n := f.s.Counters().Get(vaultEndpoint, 200); n != 1 {
		t.Fatalf("key vault reads = %d, want 1", n)
	}
	for i := 0; i < 10_000; i++ {
		if _, err := f.source().Token(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if tokens, reads := f.s.Counters().Get(tokenEndpoint, 0), f.s.Counters().Get(vaultEndpoint, 200); tokens != 1 || reads != 1 {
		t.Fatalf("warm calls reached the devstack: %d token requests, %d vault reads", tokens, reads)
	}
}

// The secret is rotated in Key Vault and the old one revoked: the next
// refresh recovers with exactly one extra vault read and one extra token
// request, and no error reaches the caller.
func TestRotationRecovers(t *testing.T) {
	f := newFixture(t)
	first, err := f.source().Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.s.RotateSecret(devstack.RevokeOld)
	f.clock.Advance(31 * time.Minute) // past the token's refresh point, inside the secret's TTL
	tok, err := f.source().Token(context.Background())
	if err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if tok == first {
		t.Fatal("the old token was served: the rotation was not picked up")
	}
	c := f.s.Counters()
	if reads, ok, rejected := c.Get(vaultEndpoint, 200), c.Get(tokenEndpoint, 200), c.Get(tokenEndpoint, 401); reads != 2 || ok != 2 || rejected != 1 {
		t.Fatalf("vault reads %d, tokens %d, rejections %d; want 2, 2, 1", reads, ok, rejected)
	}
}

func TestRefreshSchedule(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, err := f.source().Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(20 * time.Minute)
	if tok, _ := f.source().Token(ctx); tok != a || f.s.Counters().Get(tokenEndpoint, 0) != 1 {
		t.Fatal("refreshed a fresh token")
	}
	f.clock.Advance(11 * time.Minute) // 31 min: past half-life
	b, err := f.source().Token(ctx)
	if err != nil || b == a || f.s.Counters().Get(tokenEndpoint, 200) != 2 {
		t.Fatalf("no refresh at half-life: %v", err)
	}
	// Entra ID goes down while b is valid: b is served, and retries are spaced.
	f.s.SetFaults(devstack.Faults{TokenOutage: true})
	f.clock.Advance(31 * time.Minute)
	for i := 0; i < 5; i++ {
		tok, err := f.source().Token(ctx)
		if err != nil || tok != b {
			t.Fatalf("a failing refresh did not serve the valid token: %v", err)
		}
	}
	if n := f.s.Counters().Get(tokenEndpoint, 503); n != 1 {
		t.Fatalf("%d refresh attempts within the back-off, want 1", n)
	}
	// Past the point where b may be handed out, the error comes back, readable.
	f.clock.Advance(26 * time.Minute)
	_, err = f.source().Token(ctx)
	var ee *credentials.EntraError
	if !errors.As(err, &ee) || !ee.Transient() || ee.StatusCode != 503 || !strings.Contains(err.Error(), "Entra ID is unavailable") {
		t.Fatalf("after expiry: %v", err)
	}
	noSecretIn(t, f.s, err.Error())
	f.s.SetFaults(devstack.Faults{})
	if _, err := f.source().Token(ctx); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

// slowTokens delays token responses so a caller can give up mid-fetch.
type slowTokens struct{ next http.RoundTripper }

func (s slowTokens) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/oauth2/") {
		time.Sleep(300 * time.Millisecond)
	}
	return s.next.RoundTrip(r)
}

func TestCancelledCallerDoesNotFailOthers(t *testing.T) {
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	cfg := settings(t, s, id)
	creds, err := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: &http.Client{Transport: slowTokens{s.Transport()}}, Cache: credentials.NewCache(nil), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	src := creds.Source(cfg.Tenants[0])
	impatient, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	var cancelledErr error
	var others atomic.Int32
	wg.Add(1)
	go func() { defer wg.Done(); _, cancelledErr = src.Token(impatient) }()
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := src.Token(context.Background()); err == nil {
				others.Add(1)
			}
		}()
	}
	wg.Wait()
	if !errors.Is(cancelledErr, context.DeadlineExceeded) {
		t.Fatalf("the impatient caller got %v", cancelledErr)
	}
	if others.Load() != 10 || s.Counters().Get(tokenEndpoint, 0) != 1 {
		t.Fatalf("%d of 10 others succeeded with %d token requests", others.Load(), s.Counters().Get(tokenEndpoint, 0))
	}
}

// Every credential mode gets a token for both APIs on both endpoints.
func TestEveryCredentialMode(t *testing.T) {
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	secret := s.ClientSecret(devstack.DefaultClientID)
	modes := []struct {
		name string
		kv   []string
	}{
		{"keyvault-secret", nil},
		{"keyvault-certificate PS256", []string{"DEFENDER_CREDENTIAL", "keyvault-certificate", "DEFENDER_SECRET_NAME", devstack.CertificateSecretName}},
		{"keyvault-certificate RS256", []string{"DEFENDER_CREDENTIAL", "keyvault-certificate", "DEFENDER_SECRET_NAME", devstack.CertificateSecretName, "DEFENDER_ASSERTION_ALG", "RS256"}},
		{"managed-identity-federation", []string{"DEFENDER_CREDENTIAL", "managed-identity-federation"}},
		{"aws-federation", []string{"DEFENDER_CREDENTIAL", "aws-federation", "KEY_VAULT_URL", ""}},
		{"env-secret", []string{"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", secret}},
	}
	for _, mode := range modes {
		for _, api := range []struct{ name, url, aud string }{{"graph", s.GraphURL, devstack.GraphResource}, {"xdr", s.XDRURL, devstack.XDRResource}} {
			for _, ver := range []string{"v1", "v2"} {
				t.Run(mode.name+"/"+api.name+"/"+ver, func(t *testing.T) {
					kv := append([]string{"DEFENDER_API", api.name, "DEFENDER_API_URL", api.url, "DEFENDER_TOKEN_VERSION", ver}, mode.kv...)
					f := fixtureOn(t, s, id, kv...)
					tok, err := f.source().Token(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					c := mustClaims(t, tok)
					wantVer := map[string]string{"v1": "1.0", "v2": "2.0"}[ver]
					if c.Audience != api.aud || c.Version != wantVer || c.AppID != devstack.DefaultClientID || c.TenantID != devstack.DefaultTenantID {
						t.Fatalf("claims %+v", c)
					}
					if err := credentials.CheckRoles(functions.Registration(f.cfg), devstack.DefaultTenantID, c, functions.Requirements(f.cfg.API, "incident-export", "hunting-query", "ticket-webhook")); err != nil {
						t.Fatal(err)
					}
				})
			}
		}
	}
}

// A multi-tenant app gets one token per tenant, each with that tenant's roles.
func TestMultiTenant(t *testing.T) {
	f := newFixture(t, "DEFENDER_TENANT_ID", devstack.DefaultTenantID+","+devstack.PartnerTenantName)
	for _, tenant := range f.creds.Tenants() {
		tok, err := f.creds.Source(tenant).Token(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		want := devstack.DefaultTenantID
		if tenant == devstack.PartnerTenantName {
			want = devstack.PartnerTenantID
		}
		if c := mustClaims(t, tok); c.TenantID != want {
			t.Fatalf("%s: tid %s", tenant, c.TenantID)
		}
	}
	if f.creds.Source("other.onmicrosoft.com") != nil {
		t.Fatal("a source for an unconfigured tenant")
	}
}

func TestMissingRoleNamedWithConsentLink(t *testing.T) {
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	f := fixtureOn(t, s, id, "DEFENDER_CLIENT_ID", devstack.ReaderClientID, "DEFENDER_CREDENTIAL", "env-secret",
		"DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.ReaderClientID))
	tok, err := f.source().Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := mustClaims(t, tok)
	if err := credentials.CheckRoles(functions.Registration(f.cfg), devstack.DefaultTenantID, c, functions.Requirements(f.cfg.API, "incident-export")); err != nil {
		t.Fatalf("read is granted: %v", err)
	}
	err = credentials.CheckRoles(functions.Registration(f.cfg), devstack.DefaultTenantID, c, functions.Requirements(f.cfg.API, "incident-export", "hunting-query", "ticket-webhook"))
	var pe *credentials.PermissionError
	if !errors.As(err, &pe) || len(pe.Missing) != 2 {
		t.Fatalf("err = %v", err)
	}
	want := fmt.Sprintf("app %s lacks the application permission(s) ThreatHunting.Read.All (for hunting-query), SecurityIncident.ReadWrite.All (for ticket-webhook) of Microsoft Graph in tenant %s: add ThreatHunting.Read.All, SecurityIncident.ReadWrite.All as application permissions, then have an administrator of the tenant open %s/%s/adminconsent?client_id=%s (or %s/%s/v2.0/adminconsent?client_id=%s&scope=https%%3A%%2F%%2Fgraph.microsoft.com%%2F.default)",
		devstack.ReaderClientID, devstack.DefaultTenantID, s.EntraURL, devstack.DefaultTenantID, devstack.ReaderClientID, s.EntraURL, devstack.DefaultTenantID, devstack.ReaderClientID)
	if err.Error() != want {
		t.Fatalf("message:\n%s\nwant:\n%s", err, want)
	}
	// A token for the other API is named as such.
	xdr := settings(t, s, id, "DEFENDER_API", "xdr")
	err = credentials.CheckRoles(functions.Registration(xdr), devstack.DefaultTenantID, c, functions.Requirements(xdr.API, "incident-export"))
	if !errors.As(err, &pe) || pe.WrongAudience != devstack.GraphResource || !strings.Contains(err.Error(), `needs a token for "https://api.security.microsoft.com"`) {
		t.Fatalf("wrong audience: %v", err)
	}
}

func TestEntraErrorsAreActionable(t *testing.T) {
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	for _, tc := range []struct {
		name   string
		kv     []string
		aadsts int
		says   string
	}{
		{"wrong secret", []string{"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "not-the-secret"}, 7000215, "DEFENDER_CLIENT_SECRET must hold a current secret's Value"},
		{"app not in tenant", []string{"DEFENDER_CLIENT_ID", uuid.NewString()}, 700016, "/adminconsent?client_id="},
		{"reader not consented in partner", []string{"DEFENDER_TENANT_ID", devstack.PartnerTenantID, "DEFENDER_CLIENT_ID", devstack.ReaderClientID,
			"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.ReaderClientID)}, 700016, "grant consent"},
		{"unknown tenant", []string{"DEFENDER_TENANT_ID", "nosuch.onmicrosoft.com"}, 90002, "check DEFENDER_TENANT_ID"},
		{"certificate not registered", []string{"DEFENDER_CREDENTIAL", "keyvault-certificate", "DEFENDER_SECRET_NAME", "other-cert"}, 700027, "upload the certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "certificate not registered" {
				other, err := devstack.New(devstack.Options{Limits: devstack.NoLimits})
				if err != nil {
					t.Fatal(err)
				}
				s.PutSecret("other-cert", other.ClientCertificatePEM(devstack.DefaultClientID))
				other.Close()
			}
			f := fixtureOn(t, s, id, tc.kv...)
			_, err := f.source().Token(context.Background())
			var ee *credentials.EntraError
			if !errors.As(err, &ee) || ee.AADSTS != tc.aadsts || !strings.Contains(err.Error(), tc.says) || ee.TraceID == "" {
				t.Fatalf("err = %v, want AADSTS%d saying %q", err, tc.aadsts, tc.says)
			}
			noSecretIn(t, s, err.Error())
		})
	}
}

func TestVaultErrors(t *testing.T) {
	f := newFixture(t, "DEFENDER_SECRET_NAME", "missing-secret")
	_, err := f.source().Token(context.Background())
	var ve *credentials.VaultError
	if !errors.As(err, &ve) || ve.StatusCode != 404 || err.Error() != `key vault: secret "missing-secret" not found: create it (az keyvault secret set --vault-name <vault> --name missing-secret --value <its value>), or set DEFENDER_SECRET_NAME to the secret's name` {
		t.Fatalf("missing: %v", err)
	}
	g := newFixture(t)
	g.s.DenyIdentityVaultAccess(true)
	_, err = g.source().Token(context.Background())
	if !errors.As(err, &ve) || ve.StatusCode != 403 || !strings.Contains(err.Error(), "'Key Vault Secrets User' role") {
		t.Fatalf("denied: %v", err)
	}
	g.s.DenyIdentityVaultAccess(false)
	g.s.SetFaults(devstack.Faults{VaultOutage: true})
	_, err = g.source().Token(context.Background())
	if !errors.As(err, &ve) || ve.StatusCode != 503 {
		t.Fatalf("outage: %v", err)
	}
	noSecretIn(t, g.s, err.Error())
}

func TestInvalidate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, _ := f.source().Token(ctx)
	stale := &credentials.Token{AccessToken: "stale"}
	f.source().Invalidate(stale)
	if tok, _ := f.source().Token(ctx); tok != a {
		t.Fatal("invalidating a stale token dropped the current one")
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ { // 50 callers all got 401 with a
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.source().Invalidate(a)
			f.source().Token(ctx)
		}()
	}
	wg.Wait()
	b, _ := f.source().Token(ctx)
	if b == a {
		t.Fatal("the rejected token is still served")
	}
	if n := f.s.Counters().Get(tokenEndpoint, 200); n != 2 {
		t.Fatalf("token requests after 50 invalidations of one token = %d, want 2", n)
	}
}

func newGet(u string) (*http.Request, error) { return http.NewRequest("GET", u, nil) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

const stsEndpoint = "sts.GetWebIdentityToken"

// aws-federation: the execution role's JWT from STS is the client
// assertion. One JWT serves every tenant's token while it is fresh; each
// broken link fails with Entra's or STS's code and what to do.
func TestAWSFederation(t *testing.T) {
	aws := []string{"DEFENDER_CREDENTIAL", "aws-federation", "KEY_VAULT_URL", "", "DEFENDER_TENANT_ID", devstack.DefaultTenantID + "," + devstack.PartnerTenantID}
	f := newFixture(t, aws...)
	for _, tenant := range f.creds.Tenants() {
		tok, err := f.creds.Source(tenant).Token(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		if c := mustClaims(t, tok); c.TenantID != tenant || c.AppID != devstack.DefaultClientID {
			t.Fatalf("%s: claims %+v", tenant, c)
		}
	}
	if n := f.s.Counters().Get(stsEndpoint, 200); n != 1 {
		t.Fatalf("two tenants' tokens took %d JWTs from STS; want 1", n)
	}
	f.clock.Advance(9 * time.Minute) // the 10-minute JWT has less than its fifth left
	held, _ := f.source().Token(context.Background())
	f.source().Invalidate(held) // as a 401 from the API would
	if _, err := f.source().Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f.s.Counters().Get(stsEndpoint, 200); n != 2 {
		t.Fatalf("%d JWTs; want a new one once the held one is nearly spent", n)
	}

	for _, tc := range []struct {
		name        string
		opts        devstack.Options
		breakIt     func(s *devstack.Stack)
		code        int    // AADSTS; 0 for an STS failure
		says        string // in the error
		entraCalled bool
	}{
		{name: "outbound federation off", breakIt: func(s *devstack.Stack) { s.SetOutboundFederation(false) },
			says: "outbound identity federation is not enabled for this AWS account: run `aws iam enable-outbound-web-identity-federation`"},
		{name: "role lacks sts:GetWebIdentityToken", breakIt: func(s *devstack.Stack) { s.DenyWebIdentityToken(true) },
			says: "may not call sts:GetWebIdentityToken"},
		{name: "no federated credential", breakIt: func(s *devstack.Stack) {
			s.TrustAWSRole(devstack.DefaultClientID, devstack.AWSRoleARN, devstack.TokenExchangeAudience, false)
		}, code: 70021, says: "no federated credential of the app matches the AWS token (AADSTS70021", entraCalled: true},
		{name: "another role trusted", breakIt: func(s *devstack.Stack) {
			s.TrustAWSRole(devstack.DefaultClientID, devstack.AWSRoleARN, devstack.TokenExchangeAudience, false)
			s.TrustAWSRole(devstack.DefaultClientID, "arn:aws:iam::"+devstack.AWSAccountID+":role/other", devstack.TokenExchangeAudience, true)
		}, code: 70021, says: "subject the execution role's ARN", entraCalled: true},
		{name: "wrong audience", breakIt: func(s *devstack.Stack) {
			s.TrustAWSRole(devstack.DefaultClientID, devstack.AWSRoleARN, devstack.TokenExchangeAudience, false)
			s.TrustAWSRole(devstack.DefaultClientID, devstack.AWSRoleARN, "api://AzureADTokenExchangeUSGov", true)
		}, code: 700212, says: "audience api://AzureADTokenExchange", entraCalled: true},
		{name: "clock skew", opts: devstack.Options{Now: func() time.Time { return time.Now().Add(20 * time.Minute) }},
			code: 700024, says: "check this host's clock", entraCalled: true},
		{name: "STS down", breakIt: func(s *devstack.Stack) { s.SetFaults(devstack.Faults{STSOutage: true}) }, says: "503 ServiceUnavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.IdentityClientID = uuid.NewString()
			s := start(t, tc.opts)
			if tc.breakIt != nil {
				tc.breakIt(s)
			}
			f := fixtureOn(t, s, tc.opts.IdentityClientID, aws...)
			_, err := f.source().Token(context.Background())
			var ee *credentials.EntraError
			switch {
			case err == nil:
				t.Fatal("a token")
			case tc.code != 0 && (!errors.As(err, &ee) || ee.AADSTS != tc.code):
				t.Fatalf("err = %v; want AADSTS%d", err, tc.code)
			case !strings.Contains(err.Error(), tc.says):
				t.Fatalf("err = %v; want it to say %q", err, tc.says)
			}
			if called := s.Counters().Get(tokenEndpoint, 0) > 0; called != tc.entraCalled {
				t.Fatalf("Entra ID called: %v", called)
			}
		})
	}
}

// A partner app without a secret: the one federated credential, in the
// app's home tenant, serves every consented tenant.
func TestMultiTenantFederation(t *testing.T) {
	for _, mode := range []string{"managed-identity-federation", "aws-federation"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, "DEFENDER_CREDENTIAL", mode, "KEY_VAULT_URL", "", "DEFENDER_TENANT_ID", devstack.DefaultTenantID+","+devstack.PartnerTenantID)
			for _, tenant := range f.creds.Tenants() {
				tok, err := f.creds.Source(tenant).Token(context.Background())
				if err != nil {
					t.Fatalf("%s: %v", tenant, err)
				}
				if c := mustClaims(t, tok); c.TenantID != tenant || c.AppID != devstack.DefaultClientID || len(c.Roles) == 0 {
					t.Fatalf("%s: claims %+v", tenant, c)
				}
			}
		})
	}
}
