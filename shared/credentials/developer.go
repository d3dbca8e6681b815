package credentials

import (
	"context"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// developerCredential is the operator's own sign-in on their machine
// (KEY_VAULT_CREDENTIAL=developer, which doctor -as-me sets): the Azure
// CLI's (`az login`), else the Azure Developer CLI's (`azd auth login`).
//
// Not DefaultAzureCredential: it tries a service principal from the
// environment, workload identity and a managed identity before the CLIs,
// so on an Azure VM or with AZURE_CLIENT_* set it would quietly be someone
// else's identity. Not ChainedTokenCredential either: it moves on only from
// a credential that is unavailable (az not installed), so a signed-out az
// would hide a signed-in azd. This tries both, in order, and says what each
// answered.
type developerCredential struct {
	tenant  string
	sources []developerSource
}

type developerSource struct {
	name, login string // the tool, and how to sign in to it (without the tenant)
	tenantFlag  string
	cred        azcore.TokenCredential
}

// newDeveloperCredential asks for tokens in tenant where the resource names
// none (Blob Storage), and in the tenant a Key Vault challenge names.
func newDeveloperCredential(tenant string) (*developerCredential, error) {
	// The vault's challenge names its own tenant: any is allowed.
	anyTenant := []string{"*"}
	cli, err := azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{TenantID: tenant, AdditionallyAllowedTenants: anyTenant})
	if err != nil {
		return nil, fmt.Errorf("KEY_VAULT_TENANT_ID=%q: %w", tenant, err)
	}
	azd, err := azidentity.NewAzureDeveloperCLICredential(&azidentity.AzureDeveloperCLICredentialOptions{TenantID: tenant, AdditionallyAllowedTenants: anyTenant})
	if err != nil {
		return nil, fmt.Errorf("KEY_VAULT_TENANT_ID=%q: %w", tenant, err)
	}
	return &developerCredential{tenant: tenant, sources: []developerSource{
		{name: "Azure CLI", login: "az login", tenantFlag: " --tenant ", cred: cli},
		{name: "Azure Developer CLI", login: "azd auth login", tenantFlag: " --tenant-id ", cred: azd},
	}}, nil
}

// GetToken is the first signed-in tool's token. The tools' own messages
// are kept to their first line: they say what to run.
func (d *developerCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	var said []string
	for _, s := range d.sources {
		tok, err := s.cred.GetToken(ctx, opts)
		if err == nil {
			return tok, nil
		}
		if ctx.Err() != nil {
			return azcore.AccessToken{}, ctx.Err()
		}
		msg := strings.Replace(scrubAzError(err).Error(), ": ERROR: ", ": ", 1)
		msg, _, _ = strings.Cut(msg, " To troubleshoot, visit") // a link to the SDK's page, not ours
		said = append(said, s.name+": "+msg)
	}
	tenant := opts.TenantID
	if tenant == "" {
		tenant = d.tenant
	}
	return azcore.AccessToken{}, &SignInError{Tenant: tenant, Scopes: opts.Scopes, Said: said, logins: d.logins(tenant)}
}

func (d *developerCredential) logins(tenant string) []string {
	var l []string
	for _, s := range d.sources {
		if tenant != "" {
			l = append(l, "`"+s.login+s.tenantFlag+tenant+"`")
		} else {
			l = append(l, "`"+s.login+"`")
		}
	}
	return l
}

// SignInError is the operator's own sign-in giving no token: neither tool
// is installed and signed in to the tenant.
type SignInError struct {
	Tenant string
	Scopes []string
	// Said is what each tool answered, a line each.
	Said   []string
	logins []string
}

// Error is one line, which says how to sign in.
func (e *SignInError) Error() string {
	return fmt.Sprintf("your own sign-in gave no token for %s: sign in with %s (%s)",
		strings.Join(e.Scopes, " "), strings.Join(e.logins, " or "), strings.Join(e.Said, "; "))
}
