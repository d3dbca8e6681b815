package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/defender-functions/defender-functions/shared/advice"
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

// thumbprintRe finds the thumbprint Entra ID names in an AADSTS700027;
// compiled when first used, not at every start.
var thumbprintRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`Thumbprint of key used by client: '([0-9A-Fa-f]+)'`)
})

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
	e.hint = adviceFor(e, cfg)
	return e
}

// adviceFor says what to check for the AADSTS codes an unattended app meets.
// The words are the advice table's; this picks the entry and fills it in.
func adviceFor(e *EntraError, cfg *Registration) string {
	where := fmt.Sprintf("the Key Vault secret %q", cfg.SecretName)
	if cfg.Credential == config.EnvSecret {
		where = config.EnvClientSecret
	}
	code := strconv.Itoa(e.AADSTS)
	switch e.AADSTS {
	case 7000215:
		return advice.Say(advice.SecretWrong, advice.Vars{"where": where})
	case 7000222:
		return advice.Say(advice.SecretExpired, advice.Vars{"where": where})
	case 7000218:
		return advice.Say(advice.NoCredential, nil)
	case 700016:
		return advice.Say(advice.NotInTenant, advice.Vars{"tenant": e.Tenant, "consent_url": AdminConsentURL(cfg.AuthorityHost, e.Tenant, cfg.ClientID, cfg.ConsentRedirectURI)})
	case 700027:
		if e.Unregistered() && cfg.Credential == config.KeyVaultCertificate {
			which := ""
			if m := thumbprintRe().FindStringSubmatch(e.Description); m != nil {
				which = ", thumbprint " + m[1]
			}
			return advice.Say(advice.CertUnregistered, advice.Vars{"which": which, "secret": strconv.Quote(cfg.SecretName), "upload": UploadCommand(*cfg, "")})
		}
		return advice.Say(advice.AssertionRejected, nil)
	case 70021, 700211, 700212, 700213:
		if cfg.Credential == config.AWSFederation {
			return advice.Say(advice.FederatedAWS, advice.Vars{"code": code, "description": e.Description, "audience": TokenExchangeAudience(cfg.AuthorityHost)})
		}
		return advice.Say(advice.FederatedMI, advice.Vars{"code": code, "authority": cfg.AuthorityHost, "audience": TokenExchangeAudience(cfg.AuthorityHost)})
	case 700024:
		return advice.Say(advice.FederatedClock, nil)
	case 90002:
		return advice.Say(advice.TenantNotFound, nil)
	case 500011:
		return advice.Say(advice.ResourceNotInTenant, nil)
	case 1002012, 70011:
		return advice.Say(advice.InvalidScope, advice.Vars{"code": code})
	case 900144:
		return advice.Say(advice.MissingParameter, advice.Vars{"description": e.Description})
	}
	if e.Transient() {
		return advice.Say(advice.EntraUnavailable, advice.Vars{"description": e.Description})
	}
	return ""
}
