package credentials

import (
	"testing"

	"github.com/defender-functions/defender-functions/shared/config"
)

type adviceCase struct {
	name string
	e    *EntraError
	cfg  *Registration
}

func adviceCases() []adviceCase {
	kv := &Registration{ClientID: "app-1", AuthorityHost: "https://login.microsoftonline.com", Credential: config.KeyVaultSecret, SecretName: "defender-client-secret", KeyVaultURL: "https://kv-soc.vault.azure.net/"}
	env := &Registration{ClientID: "app-1", AuthorityHost: "https://login.microsoftonline.com", Credential: config.EnvSecret}
	cert := &Registration{ClientID: "app-1", AuthorityHost: "https://login.microsoftonline.com", Credential: config.KeyVaultCertificate, SecretName: "defender-cert", KeyVaultURL: "https://kv-soc.vault.azure.net/"}
	aws := &Registration{ClientID: "app-1", AuthorityHost: "https://login.microsoftonline.us", Credential: config.AWSFederation}
	mi := &Registration{ClientID: "app-1", AuthorityHost: "https://login.microsoftonline.com", Credential: config.ManagedIdentityFederation, ConsentRedirectURI: "https://example.org/consented"}
	ee := func(code int, status int, desc string) *EntraError {
		return &EntraError{AADSTS: code, StatusCode: status, Code: "invalid_client", Tenant: "contoso.onmicrosoft.com", ClientID: "app-1", Description: desc}
	}
	unregistered := "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: 'ABCDEF0123', Please visit the Azure Portal ...]"
	return []adviceCase{
		{"7000215 vault", ee(7000215, 401, "x"), kv},
		{"7000215 env", ee(7000215, 401, "x"), env},
		{"7000222", ee(7000222, 401, "x"), kv},
		{"7000218", ee(7000218, 400, "x"), kv},
		{"700016", ee(700016, 400, "x"), mi},
		{"700027 unregistered", ee(700027, 401, unregistered), cert},
		{"700027 unregistered, no thumbprint", ee(700027, 401, "AADSTS700027: ... is not registered on application."), cert},
		{"700027 other", ee(700027, 401, "AADSTS700027: Client assertion failed signature validation."), cert},
		{"70021 aws", ee(70021, 400, "AADSTS70021: No matching federated identity record found for presented assertion."), aws},
		{"700212 mi", ee(700212, 400, "x"), mi},
		{"700024", ee(700024, 400, "x"), mi},
		{"90002", ee(90002, 400, "x"), kv},
		{"500011", ee(500011, 400, "x"), kv},
		{"1002012", ee(1002012, 400, "x"), kv},
		{"70011", ee(70011, 400, "x"), kv},
		{"900144", ee(900144, 400, "AADSTS900144: The request body must contain the following parameter: 'grant_type'."), kv},
		{"503", ee(0, 503, "service busy"), kv},
		{"unknown", ee(12345, 400, "x"), kv},
	}
}

// The advice for each AADSTS code, word for word: the table's text filled
// in must say what the code said before the table (issue #29).
func TestAdviceWords(t *testing.T) {
	want := map[string]string{
		"7000215 vault":                      "the client secret is wrong (AADSTS7000215): the Key Vault secret \"defender-client-secret\" must hold a current secret's Value (not its Secret ID) from the app registration's Certificates & secrets page",
		"7000215 env":                        "the client secret is wrong (AADSTS7000215): DEFENDER_CLIENT_SECRET must hold a current secret's Value (not its Secret ID) from the app registration's Certificates & secrets page",
		"7000222":                            "the client secret has expired (AADSTS7000222): create a new client secret on the app registration and store its Value in the Key Vault secret \"defender-client-secret\"",
		"7000218":                            "no client credential was sent (AADSTS7000218): check DEFENDER_CREDENTIAL",
		"700016":                             "the application is not in this tenant (AADSTS700016): check DEFENDER_CLIENT_ID and DEFENDER_TENANT_ID, and have an administrator of tenant contoso.onmicrosoft.com grant consent: https://login.microsoftonline.com/contoso.onmicrosoft.com/adminconsent?client_id=app-1&redirect_uri=https%3A%2F%2Fexample.org%2Fconsented",
		"700027 unregistered":                "the certificate that signed the client assertion is not registered on the app (AADSTS700027, key not found, thumbprint ABCDEF0123): Key Vault's current version of \"defender-cert\" was never uploaded (did its policy renew it?): upload the certificate: az keyvault certificate download --vault-name kv-soc --name defender-cert --encoding PEM --file defender-cert.pem && az ad app credential reset --id app-1 --cert @defender-cert.pem --append (docs/certificate-rotation.md)",
		"700027 unregistered, no thumbprint": "the certificate that signed the client assertion is not registered on the app (AADSTS700027, key not found): Key Vault's current version of \"defender-cert\" was never uploaded (did its policy renew it?): upload the certificate: az keyvault certificate download --vault-name kv-soc --name defender-cert --encoding PEM --file defender-cert.pem && az ad app credential reset --id app-1 --cert @defender-cert.pem --append (docs/certificate-rotation.md)",
		"700027 other":                       "the client assertion was rejected (AADSTS700027): upload the certificate (public part) to the app registration's Certificates & secrets page, and check the machine's clock",
		"70021 aws":                          "no federated credential of the app matches the AWS token (AADSTS70021: AADSTS70021: No matching federated identity record found for presented assertion.): add one with the AWS account's issuer URL (aws iam get-outbound-web-identity-federation-info), subject the execution role's ARN (arn:aws:iam::<account>:role/<name>), audience api://AzureADTokenExchangeUSGov",
		"700212 mi":                          "no federated credential matches the managed identity's token (AADSTS700212): add a federated identity credential to the app registration with issuer https://login.microsoftonline.com/<tenant>/v2.0, subject the user-assigned identity's principal (object) ID, audience api://AzureADTokenExchange; check that the identity is the one MANAGED_IDENTITY_CLIENT_ID names",
		"700024":                             "the federated token was outside its valid time (AADSTS700024): check this host's clock (NTP); Entra ID compares it with its own",
		"90002":                              "the tenant was not found (AADSTS90002): check DEFENDER_TENANT_ID, and AZURE_AUTHORITY_HOST for national clouds",
		"500011":                             "the API's resource is not in the tenant (AADSTS500011): check DEFENDER_API and DEFENDER_API_URL; for the XDR API the tenant must have Microsoft Defender XDR",
		"1002012":                            "the scope is not valid for client credentials (AADSTS1002012): it must be the API's resource followed by /.default; check DEFENDER_API_URL",
		"70011":                              "the scope is not valid for client credentials (AADSTS70011): it must be the API's resource followed by /.default; check DEFENDER_API_URL",
		"900144":                             "the token request lacked a required parameter (AADSTS900144): AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
		"503":                                "Entra ID is unavailable right now; the request will be retried on the next call (service busy)",
		"unknown":                            "",
	}
	for _, c := range adviceCases() {
		if got := adviceFor(c.e, c.cfg); got != want[c.name] {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, want[c.name])
		}
	}
}
