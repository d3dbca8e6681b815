package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/defender-functions/defender-functions/shared/config"
	"golang.org/x/oauth2"
)

// EntraError is Entra ID refusing a token request. Its message says what to
// check; it never holds a secret, an assertion or a token.
type EntraError struct {
	StatusCode    int
	Code          string // OAuth error, e.g. invalid_client
	AADSTS        int    // e.g. 7000215
	Description   string // Entra's own first line
	TraceID       string
	CorrelationID string
	Tenant        string
	ClientID      string
	hint          string
}

func (e *EntraError) Error() string {
	var b strings.Builder
	b.WriteString("entra id refused a token for app ")
	b.WriteString(e.ClientID)
	b.WriteString(" in tenant ")
	b.WriteString(e.Tenant)
	b.WriteString(": ")
	if e.hint != "" {
		b.WriteString(e.hint)
	} else {
		b.WriteString(e.Description)
	}
	fmt.Fprintf(&b, " (HTTP %d %s", e.StatusCode, e.Code)
	if e.AADSTS != 0 {
		fmt.Fprintf(&b, ", AADSTS%d", e.AADSTS)
	}
	if e.TraceID != "" {
		fmt.Fprintf(&b, ", trace ID %s, correlation ID %s", e.TraceID, e.CorrelationID)
	}
	b.WriteString(")")
	return b.String()
}

// Advice says what to do about the failure, when something is known.
func (e *EntraError) Advice() string { return e.hint }

// Rejected reports whether Entra ID rejected the client's credential itself
// (a wrong, expired or rotated secret or certificate): the case where the
// credential is re-read from Key Vault once.
func (e *EntraError) Rejected() bool {
	switch e.AADSTS {
	case 7000215, 7000222, 700027:
		return true
	}
	return false
}

// Unregistered reports whether Entra ID refused a client assertion because
// the certificate that signed it is not registered on the app (AADSTS700027
// "[Reason - The key was not found., ..."): the state after Key Vault
// renews a certificate that nobody uploaded.
func (e *EntraError) Unregistered() bool {
	return e.AADSTS == 700027 && (strings.Contains(e.Description, "The key was not found") || strings.Contains(e.Description, "is not registered on application"))
}

// thumbprintRe finds the thumbprint Entra ID names in an AADSTS700027.
var thumbprintRe = regexp.MustCompile(`Thumbprint of key used by client: '([0-9A-Fa-f]+)'`)

// Transient reports whether retrying later may succeed.
func (e *EntraError) Transient() bool {
	return e.StatusCode == 429 || e.StatusCode >= 500 || e.Code == "temporarily_unavailable"
}

// entraError turns an x/oauth2 error into an EntraError with advice.
func entraError(err error, cfg *Registration, tenant string) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("entra id: token request to %s failed: %w", cfg.AuthorityHost, err)
	}
	e := &EntraError{Code: re.ErrorCode, Tenant: tenant, ClientID: cfg.ClientID}
	if re.Response != nil {
		e.StatusCode = re.Response.StatusCode
	}
	var body struct {
		Error         string `json:"error"`
		Description   string `json:"error_description"`
		Codes         []int  `json:"error_codes"`
		TraceID       string `json:"trace_id"`
		CorrelationID string `json:"correlation_id"`
	}
	if json.Unmarshal(re.Body, &body) == nil {
		if len(body.Codes) > 0 {
			e.AADSTS = body.Codes[0]
		}
		e.TraceID, e.CorrelationID = body.TraceID, body.CorrelationID
		e.Description = strings.SplitN(body.Description, "\r\n", 2)[0]
		if e.Code == "" {
			e.Code = body.Error
		}
	}
	if e.Description == "" {
		e.Description = "no error description"
	}
	e.hint = advice(e, cfg)
	return e
}

// advice says what to check for the AADSTS codes an unattended app meets.
func advice(e *EntraError, cfg *Registration) string {
	where := fmt.Sprintf("the Key Vault secret %q", cfg.SecretName)
	if cfg.Credential == config.EnvSecret {
		where = config.EnvClientSecret
	}
	switch e.AADSTS {
	case 7000215:
		return fmt.Sprintf("the client secret is wrong (AADSTS7000215): %s must hold a current secret's Value (not its Secret ID) from the app registration's Certificates & secrets page", where)
	case 7000222:
		return fmt.Sprintf("the client secret has expired (AADSTS7000222): create a new client secret on the app registration and store its Value in %s", where)
	case 7000218:
		return fmt.Sprintf("no client credential was sent (AADSTS7000218): check %s", config.EnvCredential)
	case 700016:
		return fmt.Sprintf("the application is not in this tenant (AADSTS700016): check %s and %s, and have an administrator of tenant %s grant consent: %s", config.EnvClientID, config.EnvTenantID, e.Tenant, AdminConsentURL(cfg.AuthorityHost, e.Tenant, cfg.ClientID, cfg.ConsentRedirectURI))
	case 700027:
		if e.Unregistered() && cfg.Credential == config.KeyVaultCertificate {
			which := ""
			if m := thumbprintRe.FindStringSubmatch(e.Description); m != nil {
				which = ", thumbprint " + m[1]
			}
			return fmt.Sprintf("the certificate that signed the client assertion is not registered on the app (AADSTS700027, key not found%s): "+
				"Key Vault's current version of %q was never uploaded (did its policy renew it?): "+
				"upload the certificate: %s (docs/certificate-rotation.md)", which, cfg.SecretName, UploadCommand(*cfg, ""))
		}
		return "the client assertion was rejected (AADSTS700027): upload the certificate (public part) to the app registration's Certificates & secrets page, and check the machine's clock"
	case 70021, 700211, 700212, 700213:
		if cfg.Credential == config.AWSFederation {
			return fmt.Sprintf("no federated credential of the app matches the AWS token (AADSTS%d: %s): add one with the AWS account's issuer URL (aws iam get-outbound-web-identity-federation-info), subject the execution role's ARN (arn:aws:iam::<account>:role/<name>), audience %s", e.AADSTS, e.Description, TokenExchangeAudience(cfg.AuthorityHost))
		}
		return fmt.Sprintf("no federated credential matches the managed identity's token (AADSTS%d): add a federated identity credential to the app registration with issuer %s/<tenant>/v2.0, subject the user-assigned identity's principal (object) ID, audience %s; check that the identity is the one %s names", e.AADSTS, cfg.AuthorityHost, TokenExchangeAudience(cfg.AuthorityHost), config.EnvManagedIdentityClientID)
	case 700024:
		return "the federated token was outside its valid time (AADSTS700024): check this host's clock (NTP); Entra ID compares it with its own"
	case 90002:
		return fmt.Sprintf("the tenant was not found (AADSTS90002): check %s, and %s for national clouds", config.EnvTenantID, config.EnvAuthorityHost)
	case 500011:
		return fmt.Sprintf("the API's resource is not in the tenant (AADSTS500011): check %s and %s; for the XDR API the tenant must have Microsoft Defender XDR", config.EnvAPI, config.EnvAPIURL)
	case 1002012, 70011:
		return fmt.Sprintf("the scope is not valid for client credentials (AADSTS%d): it must be the API's resource followed by /.default; check %s", e.AADSTS, config.EnvAPIURL)
	case 900144:
		return "the token request lacked a required parameter (AADSTS900144): " + e.Description
	}
	if e.Transient() {
		return "Entra ID is unavailable right now; the request will be retried on the next call (" + e.Description + ")"
	}
	return ""
}
