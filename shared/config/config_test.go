package config_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const (
	tenant = "4d2a9e1c-6b7f-4c1e-9a52-0c3f8d7e1b10"
	client = "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84"
)

func TestDefaults(t *testing.T) {
	c, err := config.Load(env("DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "KEY_VAULT_URL", "https://kv.vault.azure.net/"))
	if err != nil {
		t.Fatal(err)
	}
	if c.API != config.Graph || c.Credential != config.KeyVaultSecret || c.SecretName != "defender-client-secret" || c.TokenVersion != 2 ||
		c.AuthorityHost != "https://login.microsoftonline.com" || c.APIURL != "https://graph.microsoft.com" || c.Resource != "https://graph.microsoft.com" ||
		c.AssertionAlg != "PS256" || c.SecretTTL != time.Hour || c.VaultAccess != config.VaultManagedIdentity || c.VaultTenantID != tenant ||
		len(c.Tenants) != 1 || c.Tenants[0] != tenant {
		t.Fatalf("%+v", c)
	}
}

func TestResources(t *testing.T) {
	for _, tc := range []struct{ api, url, wantURL, wantRes string }{
		{"xdr", "", "https://api.security.microsoft.com", "https://api.security.microsoft.com"},
		{"xdr", "https://api-eu.security.microsoft.com/", "https://api-eu.security.microsoft.com", "https://api.security.microsoft.com"},
		{"graph", "https://graph.microsoft.us", "https://graph.microsoft.us", "https://graph.microsoft.us"},
		{"GRAPH", "https://127.0.0.1:8443", "https://127.0.0.1:8443", "https://graph.microsoft.com"},
	} {
		c, err := config.Load(env("DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret",
			"DEFENDER_CLIENT_SECRET", "x", "DEFENDER_API", tc.api, "DEFENDER_API_URL", tc.url))
		if err != nil {
			t.Fatal(err)
		}
		if c.APIURL != tc.wantURL || c.Resource != tc.wantRes {
			t.Errorf("%s %s: url %s resource %s", tc.api, tc.url, c.APIURL, c.Resource)
		}
	}
}

// Every problem is reported at once, each naming its setting.
func TestAllProblemsAtOnce(t *testing.T) {
	_, err := config.Load(env("DEFENDER_API", "mde", "DEFENDER_TENANT_ID", "not a tenant,"+tenant+","+tenant, "DEFENDER_CLIENT_ID", "my-app",
		"DEFENDER_CREDENTIAL", "password", "KEY_VAULT_URL", "http://kv", "DEFENDER_TOKEN_VERSION", "v3", "AZURE_AUTHORITY_HOST", "http://login",
		"DEFENDER_API_URL", "ftp://x", "DEFENDER_SECRET_TTL", "1s", "DEFENDER_ASSERTION_ALG", "HS256", "KEY_VAULT_CREDENTIAL", "default"))
	p, ok := err.(config.Problems)
	if !ok {
		t.Fatalf("err = %T %v", err, err)
	}
	for _, name := range []string{"DEFENDER_API=", "DEFENDER_TENANT_ID contains \"not a tenant\"", "lists \"" + tenant + "\" twice", "DEFENDER_CLIENT_ID=",
		"DEFENDER_CREDENTIAL=", "DEFENDER_TOKEN_VERSION=", "AZURE_AUTHORITY_HOST=", "DEFENDER_API_URL=", "DEFENDER_SECRET_TTL=",
		"DEFENDER_ASSERTION_ALG=", "KEY_VAULT_CREDENTIAL="} {
		found := false
		for _, line := range p {
			found = found || strings.Contains(line, name)
		}
		if !found {
			t.Errorf("no problem mentions %s in:\n%s", name, strings.Join(p, "\n"))
		}
	}
}

func TestRequiredAndReferences(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"nothing", nil, "DEFENDER_TENANT_ID is required"},
		{"no client", []string{"DEFENDER_TENANT_ID", tenant}, "DEFENDER_CLIENT_ID is required"},
		{"no vault", []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client}, "KEY_VAULT_URL is required"},
		{"unresolved reference", []string{"DEFENDER_TENANT_ID", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/tid/)", "DEFENDER_CLIENT_ID", client, "KEY_VAULT_URL", "https://kv.vault.azure.net/"},
			"DEFENDER_TENANT_ID is an unresolved Key Vault reference"},
		{"secret outside env-secret", []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "KEY_VAULT_URL", "https://kv.vault.azure.net/", "DEFENDER_CLIENT_SECRET", "s3cr3t"},
			"DEFENDER_CLIENT_SECRET is set but DEFENDER_CREDENTIAL=keyvault-secret"},
		{"env-secret without secret", []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret"}, "DEFENDER_CLIENT_SECRET is required"},
		{"certificate vault access incomplete", []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "KEY_VAULT_URL", "https://kv.vault.azure.net/", "KEY_VAULT_CREDENTIAL", "client-certificate"},
			"KEY_VAULT_CREDENTIAL=client-certificate needs KEY_VAULT_CLIENT_ID and KEY_VAULT_CERTIFICATE_PATH"},
		{"federation outside Azure", []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "managed-identity-federation", "KEY_VAULT_CREDENTIAL", "workload-identity"},
			"cannot be combined"},
		{"federation from a system-assigned identity", []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "managed-identity-federation"},
			"managed-identity-federation needs MANAGED_IDENTITY_CLIENT_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(env(tc.env...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatal("the error repeats the secret")
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c, err := config.Load(env("DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "s3cr3t-value"))
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c, "secret", c.ClientSecret)
	js, _ := json.Marshal(c)
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%+v %#v %s %q", c, c, c.ClientSecret, c.ClientSecret), string(js), logged.String()} {
		if strings.Contains(out, "s3cr3t") {
			t.Fatalf("secret printed: %s", out)
		}
	}
	if c.ClientSecret.Reveal() != "s3cr3t-value" {
		t.Fatal("Reveal lost the value")
	}
}

func TestWebhookSettings(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	c, err := config.Load(env(append(base, "WEBHOOK_SECRET_JIRA", " jira-s3cr3t-0123456789 ", "WEBHOOK_SECRET_GENERIC", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")...))
	if err != nil {
		t.Fatal(err)
	}
	if c.WebhookSecrets["jira"].Reveal() != "jira-s3cr3t-0123456789" || c.WebhookSecrets["generic"] == "" || c.WebhookSecrets["servicenow"] != "" ||
		c.WebhookTolerance != 5*time.Minute || c.WebhookDedupeTTL != 7*24*time.Hour || c.WebhookMaxBody != 1<<20 || c.WebhookTimeout != 25*time.Second {
		t.Fatalf("%+v", c)
	}
	if js, _ := json.Marshal(c); strings.Contains(string(js), "s3cr3t") || strings.Contains(fmt.Sprintf("%+v", c), "s3cr3t") {
		t.Fatal("a webhook secret prints")
	}
	_, err = config.Load(env(append(base, "WEBHOOK_TOLERANCE", "1h", "WEBHOOK_MAX_BODY", "10", "WEBHOOK_DEDUPE_TTL", "1m",
		"WEBHOOK_SECRET_SERVICENOW", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/sn/)")...))
	for _, want := range []string{"WEBHOOK_TOLERANCE=", "WEBHOOK_MAX_BODY=", "WEBHOOK_DEDUPE_TTL=", "WEBHOOK_SECRET_SERVICENOW is an unresolved Key Vault reference"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to mention %s", err, want)
		}
	}
}

// Raw KQL needs a role to gate it: the function key alone must not allow it.
func TestAdhocNeedsARole(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, tc := range []struct {
		kv   []string
		want string // "" loads
	}{
		{[]string{"HUNTING_ALLOW_ADHOC", "true"}, "HUNTING_ALLOW_ADHOC=true needs HUNTING_ADHOC_ROLE"},
		{[]string{"HUNTING_ALLOW_ADHOC", "true", "HUNTING_ADHOC_ROLE", "Hunting.Adhoc"}, ""},
		{[]string{"HUNTING_ALLOW_ADHOC", "false"}, ""},
		{[]string{"HUNTING_ADHOC_ROLE", "Hunting.Adhoc"}, ""},
	} {
		_, err := config.Load(env(append(base, tc.kv...)...))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: err = %v, want %q", tc.kv, err, tc.want)
		}
	}
}

// HUNTING_TENANT_ROLES pairs configured tenants with roles.
func TestHuntingTenantRoles(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant + ",Fabrikam.onmicrosoft.com", "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	c, err := config.Load(env(append(base, "HUNTING_TENANT_ROLES", " fabrikam.onmicrosoft.com = Hunting.Fabrikam ,"+tenant+"=Hunting.Home")...))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.HuntingTenantRoles) != 2 || c.HuntingTenantRoles["fabrikam.onmicrosoft.com"] != "Hunting.Fabrikam" || c.HuntingTenantRoles[strings.ToLower(tenant)] != "Hunting.Home" {
		t.Fatalf("%v", c.HuntingTenantRoles)
	}
	for v, want := range map[string]string{
		"fabrikam.onmicrosoft.com":            "use tenant=role pairs",
		"fabrikam.onmicrosoft.com=":           "use tenant=role pairs",
		"northwind.onmicrosoft.com=Hunting.N": `names "northwind.onmicrosoft.com", which is not in DEFENDER_TENANT_ID`,
		"fabrikam.onmicrosoft.com=A,=B":       "use tenant=role pairs",
	} {
		if _, err := config.Load(env(append(base, "HUNTING_TENANT_ROLES", v)...)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", v, err, want)
		}
	}
}

// The ledger remembers a delivery at least as long as a redelivery of it
// is accepted: the retry window plus the tolerance.
func TestDedupeOutlastsRedelivery(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, tc := range []struct {
		kv   []string
		want string
	}{
		{[]string{"WEBHOOK_DEDUPE_TTL", "2h"}, "WEBHOOK_DEDUPE_TTL=2h0m0s is shorter than WEBHOOK_RETRY_WINDOW + WEBHOOK_TOLERANCE (2h5m0s)"},
		{[]string{"WEBHOOK_DEDUPE_TTL", "3h", "WEBHOOK_RETRY_WINDOW", "3h"}, "use at least 3h5m0s"},
		{[]string{"WEBHOOK_DEDUPE_TTL", "2h5m"}, ""},
		{nil, ""},
	} {
		_, err := config.Load(env(append(base, tc.kv...)...))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: err = %v, want %q", tc.kv, err, tc.want)
		}
	}
}

// A problem with one function's own settings leaves a Config for the
// others, naming the function; a problem with a shared setting leaves none.
func TestProblemsBelongToTheirFunction(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, tc := range []struct {
		kv   []string
		want map[string]int // problems per function; nil: no Config
	}{
		{[]string{"WEBHOOK_SECRET_JIRA", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/j/)"}, map[string]int{config.WebhookSettings: 1}},
		{[]string{"EXPORT_LAG", "forever", "HUNTING_MAX_ROWS", "0", "HUNTING_TIMEOUT", "1h"}, map[string]int{config.ExportSettings: 1, config.HuntingSettings: 2}},
		{[]string{"EXPORT_SINK", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/)"}, map[string]int{config.ExportSettings: 1}},
		{[]string{"WEBHOOK_SECRETS_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hooks-AbCdEf", "WEBHOOK_SECRET_GENERIC", "whsec_x"}, map[string]int{config.WebhookSettings: 1}},
		{[]string{"WEBHOOK_SECRETS_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hooks-AbCdEf", "WEBHOOK_SECRETS_TTL", "10s"}, map[string]int{config.WebhookSettings: 1}},
		{[]string{"HUNTING_MAX_ROWS", "0", "DEFENDER_API", "mde"}, nil},
		{[]string{"DEFENDER_RATE_LIMITS", "fast"}, nil},
	} {
		c, err := config.Load(env(append(base, tc.kv...)...))
		if !config.IsProblems(err) {
			t.Fatalf("%v: err = %v", tc.kv, err)
		}
		if tc.want == nil {
			if c != nil {
				t.Errorf("%v: a Config despite a shared setting's problem", tc.kv)
			}
			continue
		}
		if c == nil {
			t.Fatalf("%v: no Config for the other functions: %v", tc.kv, err)
		}
		got := map[string]int{}
		for f, p := range c.GroupProblems {
			if len(p) > 0 {
				got[f] = len(p)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%v: problems by function %v, want %v", tc.kv, got, tc.want)
		}
	}
}

// The mapping is a file or the setting's value, not both.
func TestWebhookMappingSetting(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	c, err := config.Load(env(append(base, "WEBHOOK_MAPPING", ` {"generic": {"tenant": ""}} `)...))
	if err != nil || c.WebhookMapping != `{"generic": {"tenant": ""}}` {
		t.Fatalf("%v %q", err, c.WebhookMapping)
	}
	for _, kv := range [][]string{
		{"WEBHOOK_MAPPING", "{}", "WEBHOOK_MAPPING_FILE", "/etc/mapping.json"},
		{"WEBHOOK_MAPPING", "{" + strings.Repeat(" ", 64<<10) + "}"},
	} {
		c, err := config.Load(env(append(base, kv...)...))
		if c == nil || len(c.GroupProblems[config.WebhookSettings]) != 1 || !strings.Contains(err.Error(), "WEBHOOK_MAPPING") {
			t.Errorf("%.60v: %v", kv, err)
		}
	}
}

// DEFENDER_CONSENT_REDIRECT_URI is a redirect URI Entra ID accepts.
func TestConsentRedirectURI(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for v, ok := range map[string]bool{"https://portal.azure.com/": true, "http://localhost:8400/consent": true, "http://portal.azure.com/": false, "portal.azure.com": false} {
		c, err := config.Load(env(append(base, "DEFENDER_CONSENT_REDIRECT_URI", v)...))
		if ok != (err == nil) || ok && c.ConsentRedirectURI != v {
			t.Errorf("%s: err = %v", v, err)
		}
	}
}

// On Lambda, behind API Gateway's 30 s, hunting's default timeout leaves
// the rows time to stream; elsewhere it stays under Azure's 230 s.
func TestHuntingTimeoutDefault(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, tc := range []struct {
		kv   []string
		want time.Duration
	}{
		{nil, 200 * time.Second},
		{[]string{"AWS_LAMBDA_FUNCTION_NAME", "defender-functions"}, 25 * time.Second},
		{[]string{"AWS_LAMBDA_FUNCTION_NAME", "defender-functions", "HUNTING_TIMEOUT", "120s"}, 120 * time.Second},
	} {
		c, err := config.Load(env(append(base, tc.kv...)...))
		if err != nil || c.HuntingTimeout != tc.want {
			t.Errorf("%v: %v %v, want %s", tc.kv, err, c.HuntingTimeout, tc.want)
		}
	}
}

// aws-federation needs no vault and no secret: Azure resources (the state's
// Blob container) are reached with the same AWS token, as the Defender app
// unless KEY_VAULT_CLIENT_ID names another.
func TestAWSFederationSettings(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "aws-federation"}
	c, err := config.Load(env(base...))
	if err != nil {
		t.Fatal(err)
	}
	if c.Credential != config.AWSFederation || c.VaultAccess != config.VaultAWSFederation || c.VaultClientID != client || c.VaultTenantID != tenant {
		t.Fatalf("%+v", c)
	}
	other := "0b5e2f3a-1c4d-4e6f-8a7b-9c0d1e2f3a4b"
	c, err = config.Load(env(append(base, "KEY_VAULT_CLIENT_ID", other)...))
	if err != nil || c.VaultClientID != other {
		t.Fatalf("%v %+v", err, c)
	}
}

// EXPORT_QUEUE is an Azure Storage queue's name or an SQS queue's URL; the
// export's own problem otherwise.
func TestExportQueue(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, tc := range []struct {
		v   string
		sqs bool
		ok  bool
	}{
		{"incident-export", false, true},
		{"q01", false, true},
		{"https://sqs.eu-west-1.amazonaws.com/123456789012/defender-functions-incident-export", true, true},
		{"https://127.0.0.1:4566/123456789012/tasks", true, true},
		{"Incident-Export", false, false},
		{"incident--export", false, false},
		{"incident-export-poison", false, false},
		{"-export", false, false},
		{"ie", false, false},
		{"https://sqs.eu-west-1.amazonaws.com/", false, false},
		{"sqs://incident-export", false, false},
	} {
		c, err := config.Load(env(append(base, "EXPORT_QUEUE", tc.v)...))
		if c == nil {
			t.Fatalf("%s: %v", tc.v, err)
		}
		got := len(c.GroupProblems[config.ExportSettings]) == 0
		if got != tc.ok || config.ExportQueueIsSQS(tc.v) != tc.sqs || !tc.ok && !strings.Contains(err.Error(), "EXPORT_QUEUE=") {
			t.Errorf("%s: accepted %v (sqs %v), want %v (sqs %v): %v", tc.v, got, config.ExportQueueIsSQS(tc.v), tc.ok, tc.sqs, err)
		}
	}
}

// AzureWebJobsStorage__queueServiceUri is an https endpoint without path
// or SAS, kept without its trailing slash.
func TestStorageQueueURI(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, tc := range []struct{ v, want string }{
		{"https://acct.queue.core.chinacloudapi.cn", "https://acct.queue.core.chinacloudapi.cn"},
		{"https://acct.queue.core.usgovcloudapi.net/", "https://acct.queue.core.usgovcloudapi.net"},
		{"http://acct.queue.core.windows.net", ""},
		{"https://acct.queue.core.windows.net/incident-export", ""},
		{"https://acct.queue.core.windows.net?sv=2022-11-02&sig=x", ""},
		{"acct", ""},
	} {
		c, err := config.Load(env(append(base, config.EnvStorageQueueURI, tc.v)...))
		switch {
		case tc.want != "" && (err != nil || c.StorageQueueURI != tc.want):
			t.Errorf("%s: %v %q", tc.v, err, c.StorageQueueURI)
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), config.EnvStorageQueueURI+"=") || strings.Contains(err.Error(), "sig=x")):
			t.Errorf("%s: accepted, or the error does not name it (or shows the SAS): %v", tc.v, err)
		}
	}
}

// The SIEM settings: a Splunk sink needs its token's Key Vault secret (and
// the vault), the others are checked wherever they are set; each problem
// is the export's own and names its setting.
func TestSIEMSettings(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	hec := "https://splunk.example.com:8088/services/collector/event"
	for _, tc := range []struct {
		name    string
		kv      []string
		problem string // "" = accepted
	}{
		{"splunk", []string{"EXPORT_SINK", hec, "EXPORT_SPLUNK_TOKEN_SECRET", "splunk-hec-token", "KEY_VAULT_URL", "https://v.vault.azure.net/", "EXPORT_SPLUNK_ACK", "TRUE", "EXPORT_BATCH_BYTES", "524288"}, ""},
		{"logs ingestion", []string{"EXPORT_SINK", "https://dce-1.westeurope-1.ingest.monitor.azure.com/dataCollectionRules/dcr-0123456789abcdef0123456789abcdef/streams/Custom-DefenderIncidents"}, ""},
		{"splunk without its token", []string{"EXPORT_SINK", hec, "KEY_VAULT_URL", "https://v.vault.azure.net/"}, "set EXPORT_SPLUNK_TOKEN_SECRET to the Key Vault secret"},
		{"splunk without a vault", []string{"EXPORT_SINK", hec, "EXPORT_SPLUNK_TOKEN_SECRET", "splunk-hec-token"}, "whose token is read from Key Vault: set KEY_VAULT_URL"},
		{"a token secret that is no name", []string{"EXPORT_SINK", hec, "EXPORT_SPLUNK_TOKEN_SECRET", "splunk/token", "KEY_VAULT_URL", "https://v.vault.azure.net/"}, `EXPORT_SPLUNK_TOKEN_SECRET="splunk/token" is not a Key Vault secret name`},
		{"ack neither true nor false", []string{"EXPORT_SPLUNK_ACK", "yes"}, `EXPORT_SPLUNK_ACK="yes": use true`},
		{"batch too small", []string{"EXPORT_BATCH_BYTES", "100"}, `EXPORT_BATCH_BYTES="100": use a size in bytes from 1024`},
	} {
		c, err := config.Load(env(append(base, tc.kv...)...))
		if c == nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		p := strings.Join(c.GroupProblems[config.ExportSettings], "; ")
		if tc.problem == "" && p != "" || tc.problem != "" && !strings.Contains(p, tc.problem) {
			t.Errorf("%s: incident-export's problems %q, want %q", tc.name, p, tc.problem)
		}
		if tc.name == "splunk" && (!c.SplunkAck || c.SplunkTokenSecret != "splunk-hec-token" || c.ExportBatchBytes != 524288) {
			t.Errorf("splunk: read %+v", c)
		}
	}
}

// OpenTelemetry is on with an OTLP/HTTP endpoint; a bad one is the whole
// app's problem, and neither it nor the headers (an API key) are echoed.
func TestTelemetrySettings(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, tc := range []struct {
		name     string
		kv       []string
		endpoint string
		problem  string
	}{
		{"off", nil, "", ""},
		{"collector", []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t"}, "http://127.0.0.1:4318", ""},
		{"not a URL", []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"}, "", `OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318": use an OTLP/HTTP collector's base URL`},
		{"credentials in the URL", []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:s3cr3t@collector:4318"}, "", `OTEL_EXPORTER_OTLP_ENDPOINT="https://collector:4318"`},
		{"headers not pairs", []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS", "s3cr3t"}, "", "OTEL_EXPORTER_OTLP_HEADERS is not a list of key=value pairs"},
		// The exporters would log a value they cannot decode, whole.
		{"a bad escape", []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t%zz"}, "", "each value percent-encoded"},
		{"a bad key", []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS", "api key=s3cr3t"}, "", "each value percent-encoded"},
		{"escaped value", []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20s3cr3t,x-tenant=a"}, "http://127.0.0.1:4318", ""},
	} {
		c, err := config.Load(env(append(base, tc.kv...)...))
		msg, endpoint := "", ""
		if err != nil {
			msg = err.Error()
		}
		if c != nil {
			endpoint = c.OTLPEndpoint
		}
		if endpoint != tc.endpoint || tc.problem == "" && err != nil || tc.problem != "" && !strings.Contains(msg, tc.problem) {
			t.Errorf("%s: endpoint %q, problems %v; want %q, %q", tc.name, endpoint, err, tc.endpoint, tc.problem)
		}
		if strings.Contains(msg, "s3cr3t") {
			t.Errorf("%s: a secret is echoed: %s", tc.name, msg)
		}
	}
}

// One reading of a sink URL for configuration, the sink and doctor: what
// looks like a collector's or a stream's URL and is not one this product
// writes to is refused, never taken for a Blob container.
func TestClassifySink(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind config.SinkKind
		err  string
	}{
		{"file:///var/lib/export", config.SinkFile, ""},
		{"file://relative/export", 0, "use an absolute path"},
		{"s3://bucket/prefix", config.SinkS3, ""},
		{"s3:///prefix", 0, "names no bucket"},
		{"https://acct.blob.core.windows.net/exports", config.SinkBlob, ""},
		{"https://acct.blob.core.windows.net/exports/", config.SinkBlob, ""},
		{"https://acct.blob.core.windows.net/exports?sv=2024&sig=s3cr3t", 0, "carries a query (a SAS token?)"},
		{"http://127.0.0.1:10000/devstoreaccount1/exports", config.SinkBlob, ""},
		{"http://azurite:10000/devstoreaccount1/exports", config.SinkBlob, ""},
		{"https://acct.blob.core.windows.net/exports/deeper", 0, "is not an Azure Blob container URL"},
		{"https://acct.blob.core.windows.net/", 0, "is not an Azure Blob container URL"},
		{"https://hec.example.com:8088/services/collector/event", config.SinkSplunk, ""},
		{"https://hec.example.com:8088/services/collector", config.SinkSplunk, ""},
		{"https://hec.example.com:8088/services/collector/raw", 0, "a Splunk HTTP Event Collector endpoint this product does not write to"},
		{"https://hec.example.com:8088/Services/Collector/Raw", 0, "a Splunk HTTP Event Collector endpoint this product does not write to"},
		{"https://hec.example.com:8088/services/collector/event/1.0", 0, "does not write to"},
		{"http://hec.example.com:8088/services/collector/event", 0, "in the clear"},
		{"http://127.0.0.1:8088/services/collector/event", config.SinkSplunk, ""},
		{"https://dce.westeurope-1.ingest.monitor.azure.com/dataCollectionRules/dcr-1/streams/Custom-X", config.SinkLogs, ""},
		{"https://dce.westeurope-1.ingest.monitor.azure.com/dataCollectionRules/dcr-1/streams", 0, "is not a data collection rule's stream"},
		{"https://user:s3cr3t@acct.blob.core.windows.net/exports", 0, "carries credentials in the URL"},
		{"ftp://host/x", 0, "use file:///path"},
	} {
		kind, err := config.ClassifySink(tc.url)
		if kind != tc.kind || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ClassifySink(%q) = %v, %v; want %v, %q", tc.url, kind, err, tc.kind, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("ClassifySink(%q) echoes a secret: %v", tc.url, err)
		}
	}
}

// A URL as it may be shown: no SAS, no password.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://acct.blob.core.windows.net/exports?sv=2024&sig=s3cr3t": "https://acct.blob.core.windows.net/exports?…",
		"https://user:s3cr3t@api.example.com/v1":                        "https://user:…@api.example.com/v1",
		"https://user@api.example.com/v1":                               "https://user@api.example.com/v1",
		"https://api.example.com/v1#frag":                               "https://api.example.com/v1",
		"https://bad host/%zz?sig=s3cr3t":                               "https://bad host/%zz?…",
		"https://user:s3cr3t@bad host/%zz":                              "https://…@bad host/%zz",
		"file:///var/lib/export":                                        "file:///var/lib/export",
	} {
		if got := config.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A secret in a URL-shaped setting is not echoed by the problem it causes.
func TestURLSettingsNeverEchoSecrets(t *testing.T) {
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", "x"}
	for _, kv := range [][]string{
		{"EXPORT_SINK", "https://acct.blob.core.windows.net/exports/x/y?sv=2024&sig=s3cr3t", "STATE_STORE", "file:///tmp/state"},
		{"EXPORT_SINK", "file:///tmp/x", "STATE_STORE", "s3://state?sig=s3cr3t"},
		{"DEFENDER_API_URL", "https://user:s3cr3t@graph.microsoft.com"},
		{"AZURE_AUTHORITY_HOST", "https://user:s3cr3t@login.microsoftonline.com"},
		{"DEFENDER_CREDENTIAL", "keyvault-secret", "KEY_VAULT_URL", "https://user:s3cr3t@kv.vault.azure.net/"},
	} {
		_, err := config.Load(env(append(slices.Clone(base), kv...)...))
		if err == nil {
			t.Errorf("%v: accepted", kv)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%v: a secret is echoed: %v", kv, err)
		}
	}
}

// KEY_VAULT_CREDENTIAL=developer (doctor -as-me) needs no identity
// setting; it asks the first tenant unless KEY_VAULT_TENANT_ID says
// otherwise, and it may check a managed-identity-federation app's storage
// from outside Azure.
func TestDeveloperVaultAccess(t *testing.T) {
	other := "0b5e2f3a-1c4d-4e6f-8a7b-9c0d1e2f3a4b"
	base := []string{"DEFENDER_TENANT_ID", tenant, "DEFENDER_CLIENT_ID", client, "KEY_VAULT_URL", "https://kv.vault.azure.net/", "KEY_VAULT_CREDENTIAL", "developer"}
	for _, c := range []struct {
		name   string
		kv     []string
		tenant string
	}{
		{"vault secret", nil, tenant},
		{"vault tenant", []string{"KEY_VAULT_TENANT_ID", other}, other},
		{"managed-identity federation", []string{"DEFENDER_CREDENTIAL", "managed-identity-federation", "MANAGED_IDENTITY_CLIENT_ID", other}, tenant},
	} {
		c2, err := config.Load(env(append(slices.Clone(base), c.kv...)...))
		if err != nil || c2.VaultAccess != config.VaultDeveloper || c2.VaultTenantID != c.tenant {
			t.Errorf("%s: %v %+v", c.name, err, c2)
		}
	}
	_, err := config.Load(env(append(slices.Clone(base[:6]), "KEY_VAULT_CREDENTIAL", "az")...))
	want := `configuration: KEY_VAULT_CREDENTIAL="az": use managed-identity (Azure), workload-identity, client-certificate or aws-federation (hosts outside Azure), or developer (your own az login, on your machine)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}
