package credentials_test

import (
	"context"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/credentials"
)

// The two forms of a Key Vault reference App Service reads, in each cloud;
// anything else that starts like one is refused, naming both forms.
func TestParseReference(t *testing.T) {
	const bad = "not a Key Vault reference App Service reads: use @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/) or @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>)"
	public := "https://login.microsoftonline.com"
	for _, c := range []struct {
		v, authority string
		ok           bool
		want         credentials.Reference
		err          string
	}{
		{v: "plain value", authority: public},
		{v: "@Microsoft.KeyVault(SecretUri=https://kv-soc.vault.azure.net/secrets/jira-webhook-secret/)", authority: public, ok: true,
			want: credentials.Reference{VaultURL: "https://kv-soc.vault.azure.net/", Name: "jira-webhook-secret"}},
		{v: "@Microsoft.KeyVault(SecretUri=https://kv-soc.vault.azure.net/secrets/jira-webhook-secret/ec96f02080254f109c51a1f14cdb1931)", authority: public, ok: true,
			want: credentials.Reference{VaultURL: "https://kv-soc.vault.azure.net/", Name: "jira-webhook-secret", Version: "ec96f02080254f109c51a1f14cdb1931"}},
		{v: "@Microsoft.KeyVault(VaultName=kv-soc;SecretName=jira-webhook-secret)", authority: public, ok: true,
			want: credentials.Reference{VaultURL: "https://kv-soc.vault.azure.net/", Name: "jira-webhook-secret"}},
		{v: "@Microsoft.KeyVault(VaultName=kv-soc;SecretName=jira-webhook-secret;SecretVersion=ec96f02080254f109c51a1f14cdb1931)", authority: "https://login.microsoftonline.us", ok: true,
			want: credentials.Reference{VaultURL: "https://kv-soc.vault.usgovcloudapi.net/", Name: "jira-webhook-secret", Version: "ec96f02080254f109c51a1f14cdb1931"}},
		{v: "@Microsoft.KeyVault(VaultName=kv-soc;SecretName=s)", authority: "https://login.chinacloudapi.cn", ok: true,
			want: credentials.Reference{VaultURL: "https://kv-soc.vault.azure.cn/", Name: "s"}},
		{v: "@Microsoft.KeyVault(SecretUri=http://kv-soc.vault.azure.net/secrets/s/)", authority: public, ok: true, err: bad},
		{v: "@Microsoft.KeyVault(SecretUri=https://kv-soc.vault.azure.net/keys/s/)", authority: public, ok: true, err: bad},
		{v: "@Microsoft.KeyVault(VaultName=kv-soc)", authority: public, ok: true, err: bad},
		{v: "@Microsoft.KeyVault(VaultName=kv-soc;SecretName=s", authority: public, ok: true, err: bad},
	} {
		ref, ok, err := credentials.ParseReference(c.v, c.authority)
		if ok != c.ok || ref != c.want || (err == nil) != (c.err == "") || err != nil && err.Error() != c.err {
			t.Errorf("%s: got %+v, %v, %v; want %+v, %v, %q", c.v, ref, ok, err, c.want, c.ok, c.err)
		}
	}
}

// A reference is read as the platform reads it, with the process's
// identity: here the operator's sign-in. A secret that is not there is a
// VaultError naming the setting.
func TestResolveReference(t *testing.T) {
	s := start(t, devstack.Options{})
	dir := t.TempDir()
	devstack.FakeAzureCLI(t, dir, "az", "account get-access-token -o json --resource "+s.VaultResource()+" --tenant "+devstack.DefaultTenantID,
		azOutput(s.OperatorVaultToken(t), devstack.DefaultTenantID, time.Now().Add(time.Hour)), azSignedOut)
	t.Setenv("PATH", dir)
	const value = "jira-webhook-secret-resolved-here"
	version := s.PutSecret("jira-webhook-secret", value)
	s.PutSecret("jira-webhook-secret", "a-newer-one")
	reg := functions.Registration(settings(t, s, "", "KEY_VAULT_CREDENTIAL", "developer"))
	for _, c := range []struct {
		ref  credentials.Reference
		want string
		err  string
	}{
		{ref: credentials.Reference{VaultURL: s.KeyVaultURL + "/", Name: "jira-webhook-secret", Version: version}, want: value},
		{ref: credentials.Reference{VaultURL: s.KeyVaultURL + "/", Name: "jira-webhook-secret"}, want: "a-newer-one"},
		{ref: credentials.Reference{VaultURL: s.KeyVaultURL + "/", Name: "nope"},
			err: `key vault: secret "nope" not found: create it (az keyvault secret set --vault-name <vault> --name nope --value <its value>), or set WEBHOOK_SECRET_JIRA to the secret's name`},
	} {
		got, err := credentials.ResolveReference(context.Background(), reg, c.ref, "WEBHOOK_SECRET_JIRA", &credentials.Options{HTTPClient: s.HTTPClient()})
		if got.Reveal() != c.want || (err == nil) != (c.err == "") || err != nil && err.Error() != c.err {
			t.Errorf("%+v: got a value of %d bytes, %v; want %d bytes, %q", c.ref, len(got.Reveal()), err, len(c.want), c.err)
		}
		if err != nil && (contains(err.Error(), value) || !contains(err.Error(), "WEBHOOK_SECRET_JIRA")) {
			t.Errorf("%+v: %v", c.ref, err)
		}
	}
}
