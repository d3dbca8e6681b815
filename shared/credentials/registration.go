package credentials

import (
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
)

// Registration is the app registration whose tokens the credentials get,
// and where its credential is kept: what this package needs, and nothing
// else of the settings. The app fills it from its settings
// (functions.Registration); the messages that say what to fix name the
// setting a field comes from.
type Registration struct {
	// API and Resource are the API the tokens are for and its resource URI.
	API      config.API
	Resource string
	ClientID string
	Tenants  []string
	// AuthorityHost is Entra ID's host (a national cloud's, where set).
	AuthorityHost string
	// ConsentRedirectURI is a redirect URI registered on the app, for the
	// admin-consent links the checks print.
	ConsentRedirectURI string
	// TokenVersion 2 asks for a token with scope=<resource>/.default, 1
	// with resource=<resource>.
	TokenVersion int

	// Credential says where the app's credential is kept.
	Credential config.Credential
	// ClientSecret is the env-secret mode's secret (local development).
	ClientSecret config.Secret
	// AssertionAlg signs a certificate's client assertion: PS256 or RS256.
	AssertionAlg string

	// KeyVaultURL and SecretName locate the secret or certificate; it is
	// read again after SecretTTL.
	KeyVaultURL, SecretName string
	SecretTTL               time.Duration
	// VaultAccess is how the process reaches Key Vault, with the identity
	// fields that mode needs.
	VaultAccess             config.VaultAccess
	ManagedIdentityClientID string
	VaultTenantID           string
	VaultClientID           string
	VaultCertificatePath    string
	VaultCertificatePass    config.Secret
	FederatedTokenFile      string
}
