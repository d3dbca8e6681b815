package doctor_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
)

// Each shape an operator exports (testdata/settings/README.md says where
// each comes from) gives the settings by name, and the configuration they
// make; and doctor, run on them with every service out of reach, prints
// none of their values.
func TestSettingsFiles(t *testing.T) {
	offline(t)
	for _, c := range []struct {
		file, source string
		names        []string
		check        func(*config.Config) bool
		secrets      []string
	}{
		{file: "azure-appsettings.json", source: doctor.FromAzure, names: []string{"APPLICATIONINSIGHTS_CONNECTION_STRING", "AZURE_AUTHORITY_HOST",
			"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "DEFENDER_API", "DEFENDER_API_URL", "DEFENDER_ASSERTION_ALG", "DEFENDER_CLIENT_ID",
			"DEFENDER_CONSENT_REDIRECT_URI", "DEFENDER_CREDENTIAL", "DEFENDER_RATE_LIMITS", "DEFENDER_SECRET_NAME", "DEFENDER_SECRET_TTL", "DEFENDER_TENANT_ID",
			"DEFENDER_TOKEN_VERSION", "EXPORT_QUEUE", "EXPORT_SCHEDULE", "EXPORT_SINK", "HUNTING_TIMEOUT", "KEY_VAULT_CREDENTIAL", "KEY_VAULT_URL",
			"MANAGED_IDENTITY_CLIENT_ID", "STATE_STORE", "WEBHOOK_SECRET_GENERIC", "WEBHOOK_SECRET_JIRA"},
			check: func(c *config.Config) bool {
				return c.Credential == config.KeyVaultSecret && c.VaultAccess == config.VaultManagedIdentity && c.KeyVaultURL == "https://soc-kv-q7d3kx2m4vbfo.vault.azure.net/" &&
					c.StorageAccount == "socstq7d3kx2m4vbfo" && c.ExportQueue == "incident-export" &&
					slices.Equal(c.GroupProblems[config.WebhookSettings], config.Problems{"WEBHOOK_SECRET_JIRA is an unresolved Key Vault reference: " + config.UnresolvedReferenceAdvice})
			},
			secrets: []string{"QXp1cmVGaXh0dXJlU2VjcmV0U2hvdWxkTmV2ZXJQcmludA", "7c1e4a52-93d0-4b6f-a8e2-5d0f3c9b1e74"}},
		{file: "lambda-configuration.json", source: doctor.FromLambda, names: []string{"AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "AZURE_AUTHORITY_HOST",
			"DEFENDER_API", "DEFENDER_API_URL", "DEFENDER_ASSERTION_ALG", "DEFENDER_CLIENT_ID", "DEFENDER_CREDENTIAL", "DEFENDER_RATE_LIMITS", "DEFENDER_SECRET_NAME",
			"DEFENDER_SECRET_TTL", "DEFENDER_TENANT_ID", "DEFENDER_TOKEN_VERSION", "EXPORT_CONCURRENCY", "EXPORT_LAG", "EXPORT_LAYOUT", "EXPORT_LOOKBACK",
			"EXPORT_MAX_RUN", "EXPORT_QUEUE", "EXPORT_SCHEDULE", "EXPORT_SINK", "EXPORT_SPLUNK_TOKEN_SECRET", "HUNTING_MAX_ROWS", "HUNTING_TIMEOUT",
			"KEY_VAULT_CERTIFICATE_PATH", "KEY_VAULT_CLIENT_ID", "KEY_VAULT_CREDENTIAL", "KEY_VAULT_TENANT_ID", "KEY_VAULT_URL", "OTEL_EXPORTER_OTLP_ENDPOINT",
			"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME", "STATE_STORE", "WEBHOOK_SECRETS_ARN", "WEBHOOK_SECRETS_TTL"},
			check: func(c *config.Config) bool {
				return c.Credential == config.KeyVaultCertificate && c.VaultAccess == config.VaultCertificate && c.S3Region == "eu-west-1" &&
					c.HuntingTimeout == 25*time.Second && c.ExportSink == "s3://defender-functions-exportbucket-1r3k5m7n9p2q/incidents" && c.GroupProblems == nil
			},
			secrets: []string{"LambdaFixtureOtlpKeyShouldNeverPrint0042"}},
		{file: "app.env", source: doctor.FromEnvFile, names: []string{"AZURE_AUTHORITY_HOST", "DEFENDER_API", "DEFENDER_CLIENT_ID", "DEFENDER_CLIENT_SECRET",
			"DEFENDER_CREDENTIAL", "DEFENDER_TENANT_ID", "EXPORT_SINK", "STATE_STORE", "WEBHOOK_SECRET_JIRA"},
			check: func(c *config.Config) bool {
				return c.Credential == config.EnvSecret && c.ClientSecret.Reveal() == "Env~FixtureClientSecret.ShouldNeverPrint_77" &&
					c.ExportSink == "https://socstq7d3kx2m4vbfo.blob.core.windows.net/exports" && c.WebhookSecrets["jira"].Reveal() == "EnvFixtureJiraSecretShouldNeverPrint"
			},
			secrets: []string{"Env~FixtureClientSecret.ShouldNeverPrint_77", "EnvFixtureJiraSecretShouldNeverPrint"}},
		{file: "local.settings.json", source: doctor.FromCoreTools, names: []string{"AzureWebJobsStorage", "DEFENDER_CLIENT_ID", "DEFENDER_CREDENTIAL",
			"DEFENDER_TENANT_ID", "FUNCTIONS_WORKER_RUNTIME", "KEY_VAULT_URL"},
			check:   func(c *config.Config) bool { return c.StorageConnStr.Reveal() == "UseDevelopmentStorage=true" },
			secrets: []string{"UseDevelopmentStorage=true"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			path := filepath.Join("testdata", "settings", c.file)
			s, err := doctor.ReadSettings(path)
			if err != nil {
				t.Fatal(err)
			}
			if s.Source != c.source || !slices.Equal(s.Names(), c.names) {
				t.Fatalf("source %q, names %q", s.Source, s.Names())
			}
			cfg, err := config.Load(s.Lookup)
			if cfg == nil || !c.check(cfg) {
				t.Fatalf("configuration %+v, %v", cfg, err)
			}
			var out strings.Builder
			pass := doctor.RunRemote(context.Background(), func(string) (string, bool) { return "", false }, &out,
				doctor.Remote{SettingsFile: path, AsOperator: true}, &doctor.Options{HTTPClient: refusing(), Timeout: 10 * time.Second})
			if testing.Verbose() {
				t.Log(out.String())
			}
			want := fmt.Sprintf("ok    settings     %d from %s (%s), in place of the environment: %s\n", len(c.names), path, c.source, strings.Join(c.names, ", "))
			if pass || !strings.HasPrefix(out.String(), want) {
				t.Fatalf("passed = %v; want it to fail and start with %q:\n%s", pass, want, out.String())
			}
			for _, secret := range c.secrets {
				if strings.Contains(out.String(), secret) {
					t.Fatalf("a value printed (%d bytes):\n%s", len(secret), out.String())
				}
			}
		})
	}
}

// A file that is not one app's settings is refused with what to do, and
// without a value from it.
func TestBadSettingsFiles(t *testing.T) {
	const how = "export the app's settings with `az functionapp config appsettings list -g <group> -n <app> -o json > FILE` (Azure) " +
		"or `aws lambda get-function-configuration --function-name <function> --output json > FILE` (AWS), or write NAME=VALUE lines"
	const secret = "BadFileSecretShouldNeverPrint"
	utf16File := []byte{0xff, 0xfe}
	for _, r := range utf16.Encode([]rune(`[{"name": "DEFENDER_API", "value": "graph", "slotSetting": false}]`)) {
		utf16File = append(utf16File, byte(r), byte(r>>8))
	}
	for _, c := range []struct {
		name, content string
		err           string // empty: read
	}{
		{"too large", "A=" + strings.Repeat(secret, doctor.MaxSettingsFile/len(secret)+1), "the file is larger than 1024 KiB: it is not one app's settings; " + how},
		{"empty", " \n", "the file is empty: " + how},
		{"bad JSON", "[\n  {\"name\": \"A\", \"value\": \"" + secret + "\",\n  \"slotSetting\": fals }\n]", "not valid JSON (line 3): export it again, unchanged"},
		{"cut short", `[{"name": "A", "value": "` + secret + `"`, "not valid JSON (it ends too soon): export it again, unchanged"},
		{"two values", `{"Values": {}} {"Values": {}}`, "not valid JSON (more follows the first value): export one app's settings per file"},
		{"another az list", `[{"name": "soc-func", "location": "westeurope", "state": "Running"}]`,
			`unknown field "location" (a JSON array must be the output of az functionapp config appsettings list -o json)`},
		{"value not a string", `[{"name": "A", "value": 42, "slotSetting": false}]`,
			"value is a JSON number where a string belongs (a JSON array must be the output of az functionapp config appsettings list -o json)"},
		{"no name", `[{"value": "` + secret + `", "slotSetting": false}]`, "entry 1 has no name: a JSON array must be the output of az functionapp config appsettings list -o json"},
		{"appsettings set output", `[{"name": "A", "value": null, "slotSetting": false}]`,
			"no setting has a value (the output of `appsettings set` hides them): export with az functionapp config appsettings list -g <group> -n <app> -o json"},
		{"unknown object", `{"properties": {"A": "` + secret + `"}}`,
			"a JSON object that is neither the output of aws lambda get-function-configuration (FunctionArn, Environment.Variables) nor a local.settings.json (Values): " + how},
		{"lambda cannot decrypt", `{"FunctionName": "f", "Environment": {"Error": {"ErrorCode": "KMSAccessDeniedException", "Message": "Lambda was unable to decrypt"}}}`,
			"lambda could not read the function's environment variables (KMSAccessDeniedException): fix the function's KMS key or its access to it, then export again"},
		{"lambda without variables", `{"FunctionName": "f", "FunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f"}`,
			`function "f" has no environment variables: export the configuration of the function the SAM template made (its FunctionName output)`},
		{"encrypted", `{"IsEncrypted": true, "Values": {"A": "` + secret + `"}}`,
			"the local.settings.json is encrypted (IsEncrypted: true): run `func settings decrypt` in its folder first"},
		{"not NAME=VALUE", "# settings\nA=1\n" + secret + "\n", "line 3 is not NAME=VALUE, and the file is not JSON: " + how},
		{"set twice", "A=" + secret + "\nexport A=2\n", "line 2: A is set twice: keep one"},
		{"only comments", "# nothing\n", "the file holds no NAME=VALUE line: " + how},
		{"UTF-16 from Windows PowerShell", string(utf16File), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "settings")
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := doctor.ReadSettings(path)
			if c.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := "settings file " + path + ": " + c.err; err == nil || err.Error() != want {
				t.Fatalf("err = %v\nwant %s", err, want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatal("the error carries a value")
			}
		})
	}
	_, err := doctor.ReadSettings(filepath.Join(t.TempDir(), "nope.json"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "settings file: open ") {
		t.Fatalf("missing file: %v", err)
	}
}

// offline makes every service unreachable to the process: the AWS SDK's
// endpoints point at a closed port, and az and azd are signed out.
func offline(t *testing.T) {
	port, err := loopback.Port()
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://127.0.0.1:" + strconv.Itoa(port)
	dir := t.TempDir()
	devstack.FakeAzureCLI(t, dir, "az", "", "", "ERROR: Please run 'az login' to setup account.")
	devstack.FakeAzureCLI(t, dir, "azd", "", "", "ERROR: not logged in, run `azd auth login` to login")
	for k, v := range map[string]string{"PATH": dir, "AWS_ENDPOINT_URL": closed, "AWS_ACCESS_KEY_ID": "AKIAOFFLINE", "AWS_SECRET_ACCESS_KEY": "offline",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_REGION": "eu-west-1", "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"), "IDENTITY_ENDPOINT": "", "IDENTITY_HEADER": ""} {
		t.Setenv(k, v)
	}
}

// refusing is an HTTP client that reaches nothing, not even DNS.
func refusing() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("offline test: no network")
	}}}
}
