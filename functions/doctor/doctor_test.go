package doctor_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/queue"
	"github.com/google/uuid"
)

// doctor against the devstack: everything passing, then each failure the
// issue names, with the line and the fix an operator needs.
func TestDoctor(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	// The managed identity is found through the process environment, as on Azure.
	base := s.Settings()
	t.Setenv("IDENTITY_ENDPOINT", base["IDENTITY_ENDPOINT"])
	t.Setenv("IDENTITY_HEADER", base["IDENTITY_HEADER"])
	dir := t.TempDir()
	blocker := filepath.Join(dir, "a-file")
	os.WriteFile(blocker, []byte("x"), 0o600)
	port, err := loopback.Port() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	closed := "127.0.0.1:" + strconv.Itoa(port)

	cases := []struct {
		name   string
		env    []string
		before func()
		after  func()
		pass   bool
		want   []string // lines (or parts of lines) in order
	}{
		{name: "all good", pass: true, want: []string{
			"ok    config       graph API at " + s.GraphURL + ", app " + devstack.DefaultClientID,
			"functions incident-export, hunting-query, ticket-webhook",
			`ok    key vault    secret "` + devstack.DefaultSecretName + `" readable at ` + s.KeyVaultURL,
			"ok    token        tenant " + devstack.DefaultTenantID + ": app-only token for https://graph.microsoft.com",
			"ok    roles        tenant " + devstack.DefaultTenantID,
			"ok    api          tenant " + devstack.DefaultTenantID + ": " + s.GraphURL + " answered a one-incident read (1 returned)",
			"ok    state store  file://",
			"ok    sink         file://",
		}},
		{name: "wrong secret in Key Vault", before: func() { s.PutSecret(devstack.DefaultSecretName, "not-the-app-secret") },
			after: func() { s.PutSecret(devstack.DefaultSecretName, s.ClientSecret(devstack.DefaultClientID)) }, want: []string{
				"ok    key vault",
				"FAIL  token        tenant " + devstack.DefaultTenantID + ": entra id refused a token",
				// The failure carries its advice; no fix line repeats it.
				"the client secret is wrong (AADSTS7000215): the Key Vault secret \"" + devstack.DefaultSecretName + "\" must hold a current secret's Value",
				"\nskip  roles", "skip  api",
				"ok    state store", "ok    sink",
			}},
		{name: "missing role", env: []string{"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_ID", devstack.ReaderClientID,
			"DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.ReaderClientID)}, want: []string{
			"ok    key vault    not used (DEFENDER_CREDENTIAL=env-secret)",
			"ok    token",
			"FAIL  roles        app " + devstack.ReaderClientID + " lacks the application permission(s) ThreatHunting.Read.All (for hunting-query), SecurityIncident.ReadWrite.All (for ticket-webhook)",
			"fix: add ThreatHunting.Read.All, SecurityIncident.ReadWrite.All as application permissions, then have an administrator of the tenant open " + s.EntraURL + "/" + devstack.DefaultTenantID + "/adminconsent?client_id=" + devstack.ReaderClientID,
			"skip  api",
		}},
		{name: "unreachable Key Vault", env: []string{"KEY_VAULT_URL", "https://" + closed + "/"}, want: []string{
			"FAIL  key vault    key vault: reading secret",
			// The devstack runs: the port is wrong (TestDoctorFixLines has the devstack down too).
			"fix: nothing listens at " + closed + ", while AZURE_AUTHORITY_HOST answers at " + strings.TrimPrefix(s.EntraURL, "https://") + " on this machine (the devstack runs): check the port in KEY_VAULT_URL against the vault's",
			"skip  token",
		}},
		{name: "unwritable sink", env: []string{"EXPORT_SINK", "file://" + filepath.Join(blocker, "export")}, want: []string{
			"ok    api",
			"ok    state store",
			"FAIL  sink",
			"fix: EXPORT_SINK=file://" + filepath.Join(blocker, "export") + " must be a directory this process can create and write",
		}},
		{name: "batched layout", env: []string{"EXPORT_LAYOUT", "batches"}, pass: true, want: []string{"ok    sink         file://"}},
		// A SIEM is checked with an empty request: it keeps every row.
		{name: "log analytics sink", env: []string{"EXPORT_SINK", s.LogsStreamURL()}, pass: true, want: []string{
			"ok    sink         " + s.LogsStreamURL() + " takes this app's records (an empty request was accepted; nothing written)",
		}},
		{name: "log analytics stream unknown", env: []string{"EXPORT_SINK", strings.Replace(s.LogsStreamURL(), devstack.LogsStream, "Custom-Other", 1)}, want: []string{
			"FAIL  sink         sink: logs ingestion knows no data collection rule dcr-", "with stream Custom-Other at this endpoint (HTTP 404 NotFound): check EXPORT_SINK",
		}},
		{name: "splunk sink", env: []string{"EXPORT_SINK", s.HECEventURL()}, pass: true, want: []string{
			"ok    sink         " + s.HECEventURL() + " takes this app's records",
		}},
		{name: "splunk token unknown", env: []string{"EXPORT_SINK", s.HECEventURL(), "EXPORT_SPLUNK_TOKEN_SECRET", "other-token"},
			before: func() { s.PutSecret("other-token", "5a1d0c5e-0000-4000-8000-00000000beef") }, want: []string{
				`FAIL  sink         splunk HEC: HTTP 403, code 4 "Invalid token": the token is disabled or unknown to the collector`,
			}},
		{name: "one function's settings", env: []string{"WEBHOOK_SECRET_JIRA", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/jira/)"}, want: []string{
			"FAIL  config       ticket-webhook: WEBHOOK_SECRET_JIRA is an unresolved Key Vault reference",
			// The others are checked: the webhook's roles are not asked for.
			"ok    config       graph API at " + s.GraphURL, "functions incident-export, hunting-query\n",
			"ok    key vault", "ok    token", "ok    roles", "ok    api", "ok    state store", "ok    sink",
		}},
		{name: "configuration", env: []string{"DEFENDER_CLIENT_ID", "my-app"}, want: []string{
			`FAIL  config       DEFENDER_CLIENT_ID="my-app" is not an application (client) ID`,
			"\nskip  key vault    needs the configuration", "skip  token", "skip  roles", "skip  api", "skip  state store", "skip  sink",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runDoctor(t, s, c.env, c.before, c.after, c.pass, c.want)
		})
	}
}

// A client that does not trust the devstack's CA is told so, with the
// setting that fixes it, whichever service it reaches first.
func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{})
	m := s.Settings()
	m["EXPORT_SINK"], m["STATE_STORE"] = "file://"+t.TempDir(), "file://"+t.TempDir()
	var out strings.Builder
	// The system's roots: the devstack's CA is not among them.
	plain := &http.Client{Transport: &http.Transport{}}
	for _, env := range [][]string{nil, {"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID)}} {
		out.Reset()
		for i := 0; i < len(env); i += 2 {
			m[env[i]] = env[i+1]
		}
		if doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, io.MultiWriter(&out, devstack.AuditLog()), &doctor.Options{HTTPClient: plain}) {
			t.Fatalf("passed:\n%s", out.String())
		}
		fix := "fix: the server's TLS certificate is not trusted here: put the CA that issued it in the file SSL_CERT_FILE names"
		if !strings.Contains(out.String(), fix) || strings.Count(out.String(), "FAIL") != 1 {
			t.Errorf("with %v, no single failure with %q in:\n%s", env, fix, out.String())
		}
	}
}

// The listing probe says, read-only, how the tenant's listing behaves and
// what that means for the export: as a live tenant was observed to, as
// documented, and with every $orderby refused.
func TestListingProbe(t *testing.T) {
	t.Parallel()
	filter := "ok    listing      tenant " + devstack.DefaultTenantID + ": $filter on lastUpdateDateTime: ge and lt exact at 100 ns"
	top := "ok    listing      tenant " + devstack.DefaultTenantID + ": $top=50 served, $top=51 refused: pages of 50"
	count := "@odata.count under $filter is the true total"
	paging := "no repeats, no skips"
	created := "ok    listing      tenant " + devstack.DefaultTenantID + ": $filter on createdDateTime holds"
	for _, c := range []struct {
		name string
		opts devstack.Options
		env  []string
		want []string
	}{
		{"observed", devstack.Options{}, nil, []string{top, filter, created,
			"note  listing      tenant " + devstack.DefaultTenantID + ": $orderby=lastUpdateDateTime asc is accepted and ignored (as live tenants were seen to)", count, paging}},
		{"documented", devstack.Options{DocumentedOrder: true}, nil, []string{top, filter, created,
			"ok    listing      tenant " + devstack.DefaultTenantID + ": $orderby=lastUpdateDateTime asc is honoured (as documented)", count, paging}},
		{"orderby refused", devstack.Options{Faults: devstack.Faults{RejectOrderBy: true}}, nil, []string{top, filter,
			"note  listing      tenant " + devstack.DefaultTenantID + ": $orderby=lastUpdateDateTime is refused (400): the export sends no $orderby", count, paging}},
		{"count echoes the page", devstack.Options{Faults: devstack.Faults{CountEchoesTop: true}}, nil, []string{top, filter,
			"note  listing      tenant " + devstack.DefaultTenantID + ": @odata.count under $filter says 1 for a window of", "reads each window in one response", paging}},
		{"xdr", devstack.Options{}, []string{"DEFENDER_API", "xdr", "DEFENDER_API_URL", ""}, []string{
			"ok    listing      tenant " + devstack.DefaultTenantID + ": $top=100 served, $top=101 refused: pages of 100",
			"ok    listing      tenant " + devstack.DefaultTenantID + ": $filter on lastUpdateTime: ge and lt exact at 100 ns",
			"ok    listing      tenant " + devstack.DefaultTenantID + ": $filter on createdTime holds",
			"$orderby=lastUpdateTime asc is accepted and ignored",
			"the xdr API offers no @odata.count: the export reads each window in one response", paging}},
		{"created filter ignored", devstack.Options{Faults: devstack.Faults{CreatedFilterIgnored: true}}, nil, []string{top, filter,
			"note  listing      tenant " + devstack.DefaultTenantID + ": $filter on createdDateTime is accepted and does not hold: an instant of last update holding more than a page is paged", count, paging}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := devstack.Start(t, c.opts)
			env := slices.Clone(c.env)
			if len(env) > 0 && env[len(env)-1] == "" {
				env[len(env)-1] = s.XDRURL
			}
			env = append(env, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID))
			runDoctor(t, s, env, nil, nil, true, c.want)
		})
	}
}

// runDoctor runs doctor with the devstack's settings changed by env (name,
// value pairs) and checks that it passes or not, and prints want in order.
func runDoctor(t *testing.T, s *devstack.Stack, env []string, before, after func(), wantPass bool, want []string) {
	t.Helper()
	if before != nil {
		before()
	}
	if after != nil {
		defer after()
	}
	m := s.Settings()
	m["EXPORT_SINK"], m["STATE_STORE"] = "file://"+t.TempDir(), "file://"+t.TempDir()
	m["WEBHOOK_SECRET_JIRA"] = "jira-webhook-secret-for-the-doctor"
	m["DEFENDER_RATE_LIMITS"] = "off" // the probe reads a few pages; no need to pace them here
	for i := 0; i < len(env); i += 2 {
		m[env[i]] = env[i+1]
	}
	var out strings.Builder
	pass := doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, io.MultiWriter(&out, devstack.AuditLog()), &doctor.Options{HTTPClient: s.HTTPClient()})
	if testing.Verbose() {
		t.Log(out.String())
	}
	if pass != wantPass {
		t.Fatalf("passed = %v, want %v:\n%s", pass, wantPass, out.String())
	}
	rest := out.String()
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("no %q (in order) in:\n%s", w, out.String())
		}
		rest = rest[i+len(w):]
	}
	if strings.Contains(out.String(), "jira-webhook-secret-for-the-doctor") || strings.Contains(out.String(), s.ClientSecret(devstack.DefaultClientID)) {
		t.Fatalf("a secret printed:\n%s", out.String())
	}
}

// With WEBHOOK_SECRETS_ARN, doctor reads the webhook's keys as the function
// will (the execution role's variables) and says which providers they turn
// on, or what to fix.
func TestDoctorWebhookKeys(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	s.UseAWS(t)
	good := s.PutAWSSecret("good", `{"jira": "jira-webhook-secret-for-the-doctor", "generic": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}`)
	denied := s.PutAWSSecret("denied", `{"jira": "jira-webhook-secret-for-the-doctor"}`)
	s.DenyAWSSecret("denied", true)
	notJSON := s.PutAWSSecret("not-json", `jira=jira-webhook-secret-for-the-doctor`)
	empty := s.PutAWSSecret("empty", `{}`)
	for _, c := range []struct {
		name string
		arn  string
		pass bool
		want []string
	}{
		{"readable", good, true, []string{"ok    webhook keys " + good + " is readable; providers on: jira (1), generic (1)"}},
		{"denied", denied, false, []string{"FAIL  webhook keys secrets manager: the function's role may not read \"" + denied + "\": grant it secretsmanager:GetSecretValue on that ARN"}},
		{"not JSON", notJSON, false, []string{"FAIL  webhook keys webhook secrets: the secret is not a JSON object of strings"}},
		{"no provider", empty, false, []string{"FAIL  webhook keys WEBHOOK_SECRETS_ARN names a secret that turns no provider on", `fix: store {"jira"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			runDoctor(t, s, []string{"WEBHOOK_SECRET_JIRA", "", "WEBHOOK_SECRETS_ARN", c.arn,
				"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID)}, nil, nil, c.pass,
				append([]string{"functions incident-export, hunting-query, ticket-webhook", "ok    sink"}, c.want...))
		})
	}
}

// The secretless modes: doctor shows the token presented as the app's
// assertion (what the app's federated credential must match), and names
// the fix for each broken link.
func TestDoctorFederation(t *testing.T) {
	for _, c := range []struct {
		name    string
		mode    string
		opts    devstack.Options
		breakIt func(s *devstack.Stack)
		env     func(s *devstack.Stack, id string) []string
		pass    bool
		want    func(s *devstack.Stack) []string
	}{
		{name: "managed identity", mode: "managed-identity-federation", pass: true, want: func(s *devstack.Stack) []string {
			return []string{"ok    federation   managed-identity-federation: a token with issuer " + s.EntraURL + "/" + devstack.DefaultTenantID + "/v2.0, subject " + devstack.IdentityObjectID + ", audience api://AzureADTokenExchange",
				"ok    token", "ok    roles", "ok    api"}
		}},
		{name: "identity not assigned", mode: "managed-identity-federation", env: func(*devstack.Stack, string) []string {
			return []string{"MANAGED_IDENTITY_CLIENT_ID", "0d3c5e7a-1b2f-4a6c-9e8d-7f6a5b4c3d2e"}
		}, want: func(*devstack.Stack) []string {
			return []string{"FAIL  federation   managed identity 0d3c5e7a-1b2f-4a6c-9e8d-7f6a5b4c3d2e: no token for api://AzureADTokenExchange",
				"fix: assign the user-assigned identity 0d3c5e7a-1b2f-4a6c-9e8d-7f6a5b4c3d2e to the Function App", "skip  token"}
		}},
		{name: "AWS role", mode: "aws-federation", pass: true, want: func(s *devstack.Stack) []string {
			return []string{"ok    key vault    not used (DEFENDER_CREDENTIAL=aws-federation)",
				"ok    federation   aws-federation: a token with issuer " + s.AWSIssuer() + ", subject " + devstack.AWSRoleARN + ", audience api://AzureADTokenExchange",
				"ok    token", "ok    roles", "ok    api"}
		}},
		{name: "outbound federation off", mode: "aws-federation", breakIt: func(s *devstack.Stack) { s.SetOutboundFederation(false) },
			want: func(*devstack.Stack) []string {
				return []string{"FAIL  federation   aws sts: outbound identity federation is not enabled for this AWS account: run `aws iam enable-outbound-web-identity-federation` once", "skip  token"}
			}},
		{name: "no federated credential", mode: "aws-federation", breakIt: func(s *devstack.Stack) {
			s.TrustAWSRole(devstack.DefaultClientID, devstack.AWSRoleARN, devstack.TokenExchangeAudience, false)
		}, want: func(s *devstack.Stack) []string {
			return []string{"ok    federation", "FAIL  token", "no federated credential of the app matches the AWS token (AADSTS70021", "subject the execution role's ARN"}
		}},
		{name: "wrong audience", mode: "aws-federation", breakIt: func(s *devstack.Stack) {
			s.TrustAWSRole(devstack.DefaultClientID, devstack.AWSRoleARN, devstack.TokenExchangeAudience, false)
			s.TrustAWSRole(devstack.DefaultClientID, devstack.AWSRoleARN, "api://AzureADTokenExchangeChina", true)
		}, want: func(s *devstack.Stack) []string {
			return []string{"FAIL  token", "AADSTS700212"}
		}},
		{name: "clock skew", mode: "aws-federation", opts: devstack.Options{Now: func() time.Time { return time.Now().Add(time.Hour) }},
			want: func(s *devstack.Stack) []string {
				return []string{"FAIL  token", "the federated token was outside its valid time (AADSTS700024): check this host's clock"}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.IdentityClientID = uuid.NewString() // the SDK caches identity tokens per client ID
			s := devstack.Start(t, c.opts)
			t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
			t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
			s.UseAWS(t)
			if c.breakIt != nil {
				c.breakIt(s)
			}
			env := []string{"DEFENDER_CREDENTIAL", c.mode, "KEY_VAULT_URL", "", "MANAGED_IDENTITY_CLIENT_ID", c.opts.IdentityClientID}
			if c.env != nil {
				env = append(env, c.env(s, c.opts.IdentityClientID)...)
			}
			runDoctor(t, s, env, nil, nil, c.pass, c.want(s))
		})
	}
}

// partnerStack is a devstack of n customer tenants of the default app:
// those in unconsented have not consented, those in readOnly granted the
// read-only roles.
func partnerStack(t testing.TB, n int, unconsented, readOnly map[int]bool) (*devstack.Stack, []string) {
	tenants, ids := devstack.Customers(n, 3)
	for i := range tenants {
		switch {
		case unconsented[i]:
			tenants[i].Apps = nil
		case readOnly[i]:
			tenants[i].Apps[0].Roles = devstack.ReadOnlyRoles
		}
	}
	return devstack.Start(t, devstack.Options{Tenants: tenants, HuntingRows: 10}), ids
}

// A partner app's tenants, checked at once, in one table: consented or not,
// roles, token, API, and the consent link where one is needed; the home
// tenant's checks and each failing tenant's follow with their fixes.
func TestDoctorPartnerTable(t *testing.T) {
	s, ids := partnerStack(t, 40, map[int]bool{7: true, 21: true}, map[int]bool{30: true})
	env := []string{"DEFENDER_TENANT_ID", strings.Join(ids, ","), "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID)}
	link := func(i int) string {
		return s.EntraURL + "/" + ids[i] + "/adminconsent?client_id=" + devstack.DefaultClientID
	}
	row := func(i int, cells string) string { return "\n" + ids[i] + "  " + cells }
	runDoctor(t, s, env, nil, nil, false, []string{
		fmt.Sprintf("%-36s  consented token roles api   admin consent (where needed)", "tenant"),
		row(0, "yes       ok    ok    ok\n"),
		row(7, "no        FAIL  skip  skip  "+link(7)+"\n"),
		row(21, "no        FAIL  skip  skip  "+link(21)+"\n"),
		row(30, "yes       ok    FAIL  skip  "+link(30)+"\n"),
		row(39, "yes       ok    ok    ok\n"),
		"40 tenants: 38 consented, 3 failing",
		"ok    token        tenant " + ids[0], "ok    api          tenant " + ids[0], "ok    listing      tenant " + ids[0],
		"FAIL  token        tenant " + ids[7], "the application is not in this tenant (AADSTS700016)",
		"FAIL  token        tenant " + ids[21],
		"FAIL  roles        app " + devstack.DefaultClientID + " lacks the application permission(s)",
		"ok    state store",
	})
}

// BenchmarkDoctorPartners is doctor over 500 tenants, some not consented:
// seconds per run (the goal is under 10 s on the devstack).
func BenchmarkDoctorPartners(b *testing.B) {
	unconsented := map[int]bool{}
	for i := 50; i < 500; i += 50 {
		unconsented[i] = true
	}
	s, ids := partnerStack(b, 500, unconsented, nil)
	m := s.Settings()
	m["DEFENDER_TENANT_ID"], m["DEFENDER_CREDENTIAL"], m["DEFENDER_CLIENT_SECRET"] = strings.Join(ids, ","), "env-secret", s.ClientSecret(devstack.DefaultClientID)
	m["EXPORT_SINK"], m["STATE_STORE"], m["DEFENDER_RATE_LIMITS"] = "", "", "off"
	for b.Loop() {
		var out strings.Builder
		start := time.Now()
		doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, &out, &doctor.Options{HTTPClient: s.HTTPClient()})
		b.ReportMetric(time.Since(start).Seconds(), "s/500-tenants")
		if !strings.Contains(out.String(), "500 tenants: 491 consented, 9 failing") {
			b.Fatalf("%s", out.String())
		}
	}
}

// With the export's fan-out on, doctor reads the queue and its poison
// queue without taking anything: an empty poison queue passes; a task in
// it is a tenant no longer exported, named, with what to do.
func TestDoctorQueue(t *testing.T) {
	t.Parallel()
	s := devstack.Start(t, devstack.Options{Incidents: 20})
	az := emulators.StartAzuriteQueues(t)
	q, _ := queue.NewAzure("incident-export", queue.AzureOptions{ConnectionString: az.ConnectionString})
	if err := q.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	env := []string{"EXPORT_QUEUE", "incident-export", "AzureWebJobsStorage", az.ConnectionString,
		"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID)}
	runDoctor(t, s, env, nil, nil, true, []string{
		"ok    queue        incident-export is reachable: 0 tasks waiting",
		"ok    queue        incident-export-poison is empty: no tenant failed on every delivery"})

	poison, _ := queue.NewAzure("incident-export-poison", queue.AzureOptions{ConnectionString: az.ConnectionString})
	poison.Create(context.Background())
	if err := poison.Send(context.Background(), [][]byte{[]byte(`{"tenant":"fabrikam.onmicrosoft.com","round":"2026-11-26T13:05:00Z"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := q.Send(context.Background(), [][]byte{[]byte(`{"tenant":"contoso.onmicrosoft.com","round":"2026-11-26T13:05:00Z"}`)}); err != nil {
		t.Fatal(err)
	}
	runDoctor(t, s, env, nil, nil, false, []string{
		"ok    queue        incident-export is reachable: 1 task waiting",
		"FAIL  queue        1 task in incident-export-poison, no longer exported: tenant fabrikam.onmicrosoft.com, enqueued ",
		"the log line \"Tenant export failed on the message's last delivery\" names each cause"})
	// Nothing was taken.
	if left, _ := poison.Peek(context.Background(), 32); len(left) != 1 {
		t.Fatalf("%d tasks left in the poison queue", len(left))
	}
}

// The Lambda deployment's SQS queue: its redrive policy and its
// dead-letter queue's depth, read from the attributes without a receive.
func TestDoctorSQSQueue(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 20})
	s.UseAWS(t) // the process's AWS environment: not parallel
	s.CreateSQSQueue("incident-export-dlq", "", 0)
	url := s.CreateSQSQueue("incident-export", "incident-export-dlq", 5)
	bare := s.CreateSQSQueue("no-redrive", "", 0)
	dlq := s.SQSURL + "/" + devstack.AWSAccountID + "/incident-export-dlq"
	env := func(q string) []string {
		return []string{"EXPORT_QUEUE", q, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID)}
	}
	runDoctor(t, s, env(url), nil, nil, true, []string{
		"ok    queue        " + url + " is reachable: 0 tasks waiting; after 5 receives a task goes to " + dlq,
		"ok    queue        " + dlq + " is empty: no tenant failed on every delivery"})

	runDoctor(t, s, env(bare), nil, nil, false, []string{
		"ok    queue        " + bare + " is reachable: 0 tasks waiting",
		"FAIL  queue        " + bare + " has no redrive policy",
		"give the queue a dead-letter queue"})

	// Two tasks failed on every delivery, one waits.
	dead, _ := queue.NewSQS(dlq, "")
	if err := dead.Send(context.Background(), [][]byte{[]byte(`{"tenant":"a"}`), []byte(`{"tenant":"b"}`)}); err != nil {
		t.Fatal(err)
	}
	q, _ := queue.NewSQS(url, "")
	q.Send(context.Background(), [][]byte{[]byte(`{"tenant":"c"}`)})
	runDoctor(t, s, env(url), nil, nil, false, []string{
		"ok    queue        " + url + " is reachable: 1 task waiting",
		"FAIL  queue        2 tasks in " + dlq + ", no longer exported",
		"redrive the tasks to " + url})
	// Nothing was received.
	if c := s.Counters(); c.Get("sqs.ReceiveMessage", 200) != 0 || len(s.SQSMessages("incident-export-dlq")) != 2 {
		t.Fatalf("doctor received messages: %d", c.Get("sqs.ReceiveMessage", 200))
	}
	// A queue that does not exist, or credentials refused, is said.
	runDoctor(t, s, env(s.SQSURL+"/"+devstack.AWSAccountID+"/nope"), nil, nil, false, []string{
		"FAIL  queue        reading queue " + s.SQSURL + "/" + devstack.AWSAccountID + "/nope",
		"QueueDoesNotExist", "sqs:GetQueueAttributes on the queue and its dead-letter queue"})
}
