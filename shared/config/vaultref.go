package config

import "strings"

// What to do about a Key Vault reference (@Microsoft.KeyVault(…)) that the
// platform left unresolved. These are entries of the advice table
// (shared/advice), which holds every other piece of advice; but the table
// imports this package for the settings' names, so this package cannot
// import it. The table's entries use these constants as their text instead,
// as they use the Env names: one copy, published on the troubleshooting
// page, and a test there checks that Load's problems carry it.
const (
	// UnresolvedReferenceAdvice is the advice-table entry
	// config-unresolved-reference.
	UnresolvedReferenceAdvice = "give the Function App's identity the 'Key Vault Secrets User' role on the vault, check the vault and secret the reference names, and restart the app"
	// UnresolvedClientSecretAdvice is the advice-table entry
	// config-unresolved-client-secret: with env-secret the reference is
	// better replaced by keyvault-secret, which reads the vault itself.
	UnresolvedClientSecretAdvice = "use " + EnvCredential + "=keyvault-secret, which reads the secret from the vault itself (" + EnvSecretName + " names it), " +
		"or give the Function App's identity the 'Key Vault Secrets User' role on the vault and restart the app"
)

// ReferencePrefix opens an App Service Key Vault reference,
// @Microsoft.KeyVault(SecretUri=…) or (VaultName=…;SecretName=…).
const ReferencePrefix = "@Microsoft.KeyVault("

// isReference reports whether v is a Key Vault reference: the platform
// passes one on as the value when it cannot read the secret.
func isReference(v string) bool { return strings.HasPrefix(v, ReferencePrefix) }

// unresolved is the problem of a setting whose reference was not resolved.
func unresolved(name, advice string) string {
	return name + " is an unresolved Key Vault reference: " + advice
}
