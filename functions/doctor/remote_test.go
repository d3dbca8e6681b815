package doctor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// azSignedIn is a stand-in az signed in to the devstack's tenant, whose
// token the devstack's Key Vault accepts (the vault-reader app's, as an
// operator with the vault role would have), and the command it expects.
func azSignedIn(t testing.TB, s *devstack.Stack, dir string) (token, command string) {
	t.Helper()
	tok := s.OperatorVaultToken(t)
	exp := time.Now().Add(time.Hour)
	out, _ := json.Marshal(map[string]any{"accessToken": tok, "expiresOn": exp.Format("2006-01-02 15:04:05.000000"), "expires_on": exp.Unix(),
		"subscription": "00000000-0000-0000-0000-000000000000", "tenant": devstack.DefaultTenantID, "tokenType": "Bearer"})
	command = "account get-access-token -o json --resource " + s.VaultResource() + " --tenant " + devstack.DefaultTenantID
	devstack.FakeAzureCLI(t, dir, "az", command, string(out), "ERROR: Please run 'az login' to setup account.")
	return tok, command
}

// writeSettings writes m in one of the shapes an operator exports.
func writeSettings(t testing.TB, shape string, m map[string]string) string {
	t.Helper()
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	var data []byte
	switch shape {
	case doctor.FromAzure:
		var list []map[string]any
		for _, k := range names {
			list = append(list, map[string]any{"name": k, "slotSetting": false, "value": m[k]})
		}
		data, _ = json.MarshalIndent(list, "", "  ")
	case doctor.FromLambda:
		data, _ = json.MarshalIndent(map[string]any{"FunctionName": "defender-functions", "Runtime": "provided.al2023",
			"FunctionArn": "arn:aws:lambda:" + devstack.AWSRegion + ":" + devstack.AWSAccountID + ":function:defender-functions",
			"Environment": map[string]any{"Variables": m}}, "", "    ")
	default:
		for _, k := range names {
			data = append(data, k+"="+m[k]+"\n"...)
		}
	}
	path := filepath.Join(t.TempDir(), "settings")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// From the operator's machine: the deployed app's settings from each
// shape of file (the environment's own are not read), a Key Vault
// reference in them read as the platform would, and the vault reached with
// the operator's az sign-in, never the managed identity. Every check
// passes, and no secret or token is printed.
func TestRemoteAsOperator(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	dir := t.TempDir()
	token, command := azSignedIn(t, s, dir)
	t.Setenv("PATH", dir)
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("DEFENDER_CLIENT_ID", "not-read-with-settings")
	const jira = "jira-webhook-secret-read-by-reference"
	s.PutSecret("jira-webhook-secret", jira)
	m := s.Settings()
	m["EXPORT_SINK"], m["STATE_STORE"], m["DEFENDER_RATE_LIMITS"] = "file://"+t.TempDir(), "file://"+t.TempDir(), "off"
	m["WEBHOOK_SECRET_JIRA"] = "@Microsoft.KeyVault(SecretUri=" + s.KeyVaultURL + "/secrets/jira-webhook-secret/)"
	for _, shape := range []string{doctor.FromAzure, doctor.FromLambda, doctor.FromEnvFile} {
		t.Run(shape, func(t *testing.T) {
			path := writeSettings(t, shape, m)
			msi := s.Counters().Get("msi.GET /msi/token", 0)
			var out strings.Builder
			pass := doctor.RunRemote(context.Background(), os.LookupEnv, &out, doctor.Remote{SettingsFile: path, AsOperator: true}, &doctor.Options{HTTPClient: s.HTTPClient()})
			if testing.Verbose() {
				t.Log(out.String())
			}
			rest := out.String()
			for _, w := range []string{
				"ok    settings     ", " from " + path + " (" + shape + "), in place of the environment: ",
				"note  identity     your own sign-in reaches Key Vault and Azure Storage (az login, else azd auth login), and AWS (the AWS SDK's default chain); Entra ID and Defender see the app's own credential\n",
				`ok    settings     WEBHOOK_SECRET_JIRA: Key Vault reference read (secret "jira-webhook-secret" in ` + s.KeyVaultURL + "/)\n",
				"ok    config       graph API at " + s.GraphURL + ", app " + devstack.DefaultClientID, "functions incident-export, hunting-query, ticket-webhook\n",
				`ok    key vault    secret "` + devstack.DefaultSecretName + `" readable at ` + s.KeyVaultURL,
				"ok    token", "ok    roles", "ok    api", "ok    state store", "ok    sink",
			} {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("no %q (in order) in:\n%s", w, out.String())
				}
				rest = rest[i+len(w):]
			}
			if !pass || strings.Contains(out.String(), "FAIL") {
				t.Fatalf("passed = %v:\n%s", pass, out.String())
			}
			for _, secret := range []string{token, jira, s.ClientSecret(devstack.DefaultClientID)} {
				if strings.Contains(out.String(), secret) {
					t.Fatalf("a secret or token printed:\n%s", out.String())
				}
			}
			if n := s.Counters().Get("msi.GET /msi/token", 0); n != msi {
				t.Fatalf("the managed identity was asked %d times", n-msi)
			}
			if log, _ := os.ReadFile(filepath.Join(dir, "az.log")); !strings.Contains(string(log), command+"\n") {
				t.Fatalf("az ran %q, want %q", log, command)
			}
		})
	}
}

// On AWS the operator's sign-in is a profile of the SDK's shared config
// (what `aws sso login` signs in, under AWS_PROFILE): here one holding the
// devstack's keys, with no key in the environment. doctor reads the
// webhook's keys from Secrets Manager with it, in the function's region
// (from its ARN).
func TestRemoteAWSProfile(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	s.UseAWS(t) // the endpoints and the CA; the keys go below
	keys := s.AWSSettings()
	dir := t.TempDir()
	config := filepath.Join(dir, "config")
	os.WriteFile(config, []byte("[profile operator]\nregion = "+devstack.AWSRegion+"\n"), 0o600)
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(creds, []byte(fmt.Sprintf("[operator]\naws_access_key_id = %s\naws_secret_access_key = %s\naws_session_token = %s\n",
		keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"], keys["AWS_SESSION_TOKEN"])), 0o600)
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_REGION": "",
		"AWS_CONFIG_FILE": config, "AWS_SHARED_CREDENTIALS_FILE": creds, "AWS_PROFILE": "operator"} {
		t.Setenv(k, v)
	}
	const jira = "jira-webhook-secret-from-secrets-manager"
	arn := s.PutAWSSecret("webhooks", `{"jira": "`+jira+`"}`)
	m := s.Settings()
	m["DEFENDER_CREDENTIAL"], m["DEFENDER_CLIENT_SECRET"], m["KEY_VAULT_URL"] = "env-secret", s.ClientSecret(devstack.DefaultClientID), ""
	m["WEBHOOK_SECRETS_ARN"], m["STATE_STORE"], m["DEFENDER_RATE_LIMITS"] = arn, "file://"+t.TempDir(), "off"
	path := writeSettings(t, doctor.FromLambda, m)
	var out strings.Builder
	pass := doctor.RunRemote(context.Background(), os.LookupEnv, &out, doctor.Remote{SettingsFile: path, AsOperator: true}, &doctor.Options{HTTPClient: s.HTTPClient()})
	for _, w := range []string{
		"note  identity     your own sign-in reaches Key Vault and Azure Storage (az login, else azd auth login), and AWS (AWS profile operator)",
		"ok    webhook keys " + arn + " is readable; providers on: jira (1)\n",
	} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("no %q in:\n%s", w, out.String())
		}
	}
	if !pass || strings.Contains(out.String(), jira) || strings.Contains(out.String(), keys["AWS_SECRET_ACCESS_KEY"]) {
		t.Fatalf("passed = %v, or a secret printed:\n%s", pass, out.String())
	}
}
