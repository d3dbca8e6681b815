package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/defender-functions/defender-functions/shared/config"
)

// Reference is an app setting's Key Vault reference, which App Service
// resolves with the app's identity before the process starts:
// @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>[/<version>])
// or @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>]).
// A settings file exported from the platform holds the reference itself;
// doctor reads what it names, as the platform would.
type Reference struct {
	VaultURL string // https://<vault host>/
	Name     string
	Version  string // empty: the current version
}

// ParseReference reads v as a reference: ok is false when it is none. A
// VaultName is a vault in the cloud of authorityHost (its DNS suffix).
func ParseReference(v, authorityHost string) (ref Reference, ok bool, err error) {
	inner, found := strings.CutPrefix(strings.TrimSpace(v), config.ReferencePrefix)
	if !found {
		return Reference{}, false, nil
	}
	inner, found = strings.CutSuffix(inner, ")")
	bad := errors.New("not a Key Vault reference App Service reads: use @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/) or @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>)")
	if !found {
		return Reference{}, true, bad
	}
	parts := map[string]string{}
	for _, p := range strings.Split(inner, ";") {
		k, val, _ := strings.Cut(p, "=")
		parts[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(val)
	}
	if uri := parts["secreturi"]; uri != "" {
		u, perr := url.Parse(uri)
		segs := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
		if perr != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || len(segs) < 2 || len(segs) > 3 || segs[0] != "secrets" {
			return Reference{}, true, bad
		}
		ref = Reference{VaultURL: "https://" + u.Host + "/", Name: segs[1]}
		if len(segs) == 3 {
			ref.Version = segs[2]
		}
		return ref, true, nil
	}
	vault, name := parts["vaultname"], parts["secretname"]
	if vault == "" || name == "" || strings.ContainsAny(vault, "./:") {
		return Reference{}, true, bad
	}
	return Reference{VaultURL: "https://" + vault + "." + vaultSuffix(authorityHost) + "/", Name: name, Version: parts["secretversion"]}, true, nil
}

// vaultSuffix is Key Vault's DNS suffix in the cloud of an Entra ID host.
func vaultSuffix(authorityHost string) string {
	switch h := strings.ToLower(strings.TrimPrefix(authorityHost, "https://")); {
	case strings.HasPrefix(h, "login.microsoftonline.us"):
		return "vault.usgovcloudapi.net"
	case strings.HasPrefix(h, "login.chinacloudapi.cn"), strings.HasPrefix(h, "login.partner.microsoftonline.cn"):
		return "vault.azure.cn"
	}
	return "vault.azure.net"
}

// ResolveReference reads the secret ref names with the process's identity
// (KEY_VAULT_CREDENTIAL's, as AzureCredential), for the setting that holds
// the reference; errors are VaultErrors naming it.
func ResolveReference(ctx context.Context, reg Registration, ref Reference, setting string, opts *Options) (config.Secret, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = DefaultHTTPClient()
	}
	cred, err := vaultCredential(&reg, o.HTTPClient)
	if err != nil {
		return "", err
	}
	client, err := azsecrets.NewClient(ref.VaultURL, cred, &azsecrets.ClientOptions{ClientOptions: azClientOptions(&reg, SameOrigin(o.HTTPClient))})
	if err != nil {
		return "", fmt.Errorf("key vault client for %s: %w", ref.VaultURL, err)
	}
	resp, err := client.GetSecret(ctx, ref.Name, ref.Version, nil)
	if err != nil {
		return "", vaultError(ref.Name, setting, err)
	}
	if resp.Value == nil || *resp.Value == "" {
		return "", fmt.Errorf("key vault secret %q (%s) is empty: store the value in it", ref.Name, setting)
	}
	return config.Secret(*resp.Value), nil
}
