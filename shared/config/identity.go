package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// nationalGraph maps national-cloud Graph hosts to themselves: their tokens
// carry that host as audience. Every other host (regional XDR hosts, the
// devstack) keeps the public resource.
var nationalGraph = map[string]bool{"graph.microsoft.us": true, "dod-graph.microsoft.us": true, "microsoftgraph.chinacloudapi.cn": true}

// identity: the API, the tenants, the app and its credential, Entra ID.
func (r *reader) identity(c *Config) {
	switch api := strings.ToLower(r.get(EnvAPI, "graph")); api {
	case "graph", "xdr":
		c.API = API(api)
	default:
		r.problem(fmt.Sprintf("%s=%q is not an API: use graph (Microsoft Graph security API) or xdr (Defender XDR API, retired 2027-02-01)", EnvAPI, api))
	}

	r.tenants(c)
	c.ClientID = r.get(EnvClientID, "")
	switch {
	case c.ClientID == "":
		r.problem(EnvClientID + " is required: the application (client) ID of the app registration")
	case !guidRe().MatchString(c.ClientID):
		r.problem(fmt.Sprintf("%s=%q is not an application (client) ID: copy the GUID from the app registration's Overview page", EnvClientID, c.ClientID))
	}
	r.credential(c)
	r.entra(c)
	r.apiURL(c)
}

// tenants: DEFENDER_TENANT_ID, one tenant or several.
func (r *reader) tenants(c *Config) {
	if t := r.get(EnvTenantID, ""); t == "" {
		r.problem(EnvTenantID + " is required: the directory (tenant) ID of your Entra ID tenant, or a comma-separated list for a multi-tenant app")
	} else {
		seen := map[string]bool{}
		for _, one := range strings.Split(t, ",") {
			one = strings.TrimSpace(one)
			switch {
			case one == "":
			case !guidRe().MatchString(one) && !domainRe().MatchString(one):
				r.problem(fmt.Sprintf("%s contains %q, which is neither a tenant ID (GUID) nor a domain such as contoso.onmicrosoft.com", EnvTenantID, one))
			case seen[strings.ToLower(one)]:
				r.problem(fmt.Sprintf("%s lists %q twice", EnvTenantID, one))
			default:
				seen[strings.ToLower(one)] = true
				c.Tenants = append(c.Tenants, one)
			}
		}
	}
}

// credential: how the app proves who it is, and where its secret lives.
func (r *reader) credential(c *Config) {
	c.Credential = Credential(strings.ToLower(r.get(EnvCredential, string(KeyVaultSecret))))
	switch c.Credential {
	case KeyVaultSecret, KeyVaultCertificate, ManagedIdentityFederation, AWSFederation, EnvSecret:
	default:
		r.problem(fmt.Sprintf("%s=%q is not a credential mode: use keyvault-secret, keyvault-certificate, managed-identity-federation (Azure), aws-federation (AWS) or env-secret", EnvCredential, c.Credential))
	}

	c.SecretName = r.get(EnvSecretName, "defender-client-secret")
	if !nameRe().MatchString(c.SecretName) {
		r.problem(fmt.Sprintf("%s=%q is not a Key Vault secret name (1-127 letters, digits and dashes)", EnvSecretName, c.SecretName))
	}
	c.KeyVaultURL = r.get(EnvKeyVaultURL, "")
	usesVault := c.Credential == KeyVaultSecret || c.Credential == KeyVaultCertificate
	if usesVault {
		if c.KeyVaultURL == "" {
			r.problem(fmt.Sprintf("%s is required with %s=%s: the vault URI, https://<vault>.vault.azure.net/", EnvKeyVaultURL, EnvCredential, c.Credential))
		} else if u, err := url.Parse(c.KeyVaultURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
			r.problem(fmt.Sprintf("%s=%q is not a vault URI: use https://<vault>.vault.azure.net/", EnvKeyVaultURL, RedactURL(c.KeyVaultURL)))
		}
	}
	if secret, ok := r.lookup(EnvClientSecret); ok && secret != "" {
		if c.Credential != EnvSecret {
			r.problem(fmt.Sprintf("%s is set but %s=%s: remove the secret from the settings (keep it in Key Vault) or use env-secret for local development", EnvClientSecret, EnvCredential, c.Credential))
		} else if isReference(secret) {
			r.problem(unresolved(EnvClientSecret, UnresolvedClientSecretAdvice))
		}
		c.ClientSecret = Secret(secret)
	} else if c.Credential == EnvSecret {
		r.problem(fmt.Sprintf("%s is required with %s=env-secret (local development only)", EnvClientSecret, EnvCredential))
	}
}

// entra: the authority that issues the tokens, and their form.
func (r *reader) entra(c *Config) {
	c.AuthorityHost = strings.TrimRight(r.get(EnvAuthorityHost, DefaultAuthorityHost), "/")
	if u, err := url.Parse(c.AuthorityHost); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		r.problem(fmt.Sprintf("%s=%q is not an https URL such as %s", EnvAuthorityHost, RedactURL(c.AuthorityHost), DefaultAuthorityHost))
	}
	c.ConsentRedirectURI = r.get(EnvConsentRedirectURI, "")
	if v := c.ConsentRedirectURI; v != "" {
		if u, err := url.Parse(v); err != nil || u.Host == "" || u.Scheme != "https" && !(u.Scheme == "http" && u.Hostname() == "localhost") {
			r.problem(fmt.Sprintf("%s=%q is not a redirect URI Entra ID accepts: https://…, or http://localhost…, registered on the app as a Web redirect URI", EnvConsentRedirectURI, v))
		}
	}

	switch v := strings.ToLower(r.get(EnvTokenVersion, "v2")); v {
	case "v2", "2":
		c.TokenVersion = 2
	case "v1", "1":
		c.TokenVersion = 1
	default:
		r.problem(fmt.Sprintf("%s=%q: use v2 (scope) or v1 (resource)", EnvTokenVersion, v))
	}
}

// apiURL: where the API is, and the audience of its tokens.
func (r *reader) apiURL(c *Config) {
	def := GraphURL
	c.Resource = GraphURL
	if c.API == XDR {
		def, c.Resource = XDRURL, XDRURL
	}
	c.APIURL = strings.TrimRight(r.get(EnvAPIURL, def), "/")
	if u, err := url.Parse(c.APIURL); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.User != nil {
		// No credentials in the URL: the API's only credential is the token.
		r.problem(fmt.Sprintf("%s=%q is not an https base URL such as %s (no user or password in it)", EnvAPIURL, RedactURL(c.APIURL), def))
	} else if c.API == Graph && nationalGraph[u.Hostname()] {
		c.Resource = "https://" + u.Hostname()
	}
}

// vault: the Key Vault that holds the app's credential, and how it is reached.
func (r *reader) vault(c *Config) {
	c.AssertionAlg = strings.ToUpper(r.get(EnvAssertionAlg, "PS256"))
	if c.AssertionAlg != "PS256" && c.AssertionAlg != "RS256" {
		r.problem(fmt.Sprintf("%s=%q: use PS256 (x5t#S256, the current Entra ID form) or RS256 (x5t)", EnvAssertionAlg, c.AssertionAlg))
	}
	c.SecretTTL = time.Hour
	if v := r.get(EnvSecretTTL, ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute || d > 24*time.Hour {
			r.problem(fmt.Sprintf("%s=%q: use a duration between 1m and 24h, such as 1h", EnvSecretTTL, v))
		} else {
			c.SecretTTL = d
		}
	}

	// Azure resources (the vault, Blob Storage) are reached as the Defender
	// app is: with no secret on AWS in aws-federation mode.
	vaultDefault := VaultManagedIdentity
	if c.Credential == AWSFederation {
		vaultDefault = VaultAWSFederation
	}
	c.VaultAccess = VaultAccess(strings.ToLower(r.get(EnvVaultAccess, string(vaultDefault))))
	c.ManagedIdentityClientID = r.get(EnvManagedIdentityClientID, "")
	if c.ManagedIdentityClientID != "" && !guidRe().MatchString(c.ManagedIdentityClientID) {
		r.problem(fmt.Sprintf("%s=%q is not the client ID (GUID) of a user-assigned managed identity; leave it empty for the system-assigned identity", EnvManagedIdentityClientID, c.ManagedIdentityClientID))
	}
	c.VaultTenantID = r.get(EnvVaultTenantID, "")
	if c.VaultTenantID == "" && len(c.Tenants) > 0 {
		c.VaultTenantID = c.Tenants[0]
	}
	c.VaultClientID = r.get(EnvVaultClientID, "")
	c.VaultCertificatePath = r.get(EnvVaultCertificatePath, "")
	if v, ok := r.lookup(EnvVaultCertificatePass); ok {
		c.VaultCertificatePass = Secret(v)
	}
	c.FederatedTokenFile = r.get(EnvFederatedTokenFile, "")
	needsVaultAccess := c.Credential == KeyVaultSecret || c.Credential == KeyVaultCertificate
	switch c.VaultAccess {
	case VaultManagedIdentity:
	case VaultWorkloadIdentity:
		if needsVaultAccess && (c.VaultClientID == "" || c.FederatedTokenFile == "") {
			r.problem(fmt.Sprintf("%s=workload-identity needs %s (the app trusted by Key Vault) and %s (the federated token's path)", EnvVaultAccess, EnvVaultClientID, EnvFederatedTokenFile))
		}
	case VaultCertificate:
		if needsVaultAccess && (c.VaultClientID == "" || c.VaultCertificatePath == "") {
			r.problem(fmt.Sprintf("%s=client-certificate needs %s and %s (a PEM or PFX file with the certificate and its key)", EnvVaultAccess, EnvVaultClientID, EnvVaultCertificatePath))
		}
	case VaultAWSFederation:
		if c.VaultClientID == "" {
			c.VaultClientID = c.ClientID
		}
	case VaultDeveloper:
		// The operator's sign-in: no identity setting is needed; the tenant
		// (KEY_VAULT_TENANT_ID, else the first of DEFENDER_TENANT_ID) is the
		// one asked for a token where the resource names none.
	default:
		r.problem(fmt.Sprintf("%s=%q: use managed-identity (Azure), workload-identity, client-certificate or aws-federation (hosts outside Azure), or developer (your own az login, on your machine)", EnvVaultAccess, c.VaultAccess))
	}
	// The operator's sign-in checks a managed-identity-federation app's
	// storage from outside Azure; its token can only be had in Azure.
	if c.Credential == ManagedIdentityFederation && c.VaultAccess != VaultManagedIdentity && c.VaultAccess != VaultDeveloper {
		r.problem(fmt.Sprintf("%s=managed-identity-federation needs an Azure managed identity; it cannot be combined with %s=%s", EnvCredential, EnvVaultAccess, c.VaultAccess))
	}
	if c.Credential == ManagedIdentityFederation && c.ManagedIdentityClientID == "" {
		// A system-assigned identity cannot be an app's federated credential.
		r.problem(fmt.Sprintf("%s=managed-identity-federation needs %s: the client ID of the user-assigned identity the app trusts (Entra ID accepts no system-assigned identity as a federated credential)", EnvCredential, EnvManagedIdentityClientID))
	}
}
