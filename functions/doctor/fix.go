package doctor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"regexp"
	"strings"
	"syscall"

	"github.com/defender-functions/defender-functions/shared/advice"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
)

// The fixes below pick an entry of the advice table for a failure and fill
// it in from the settings: the words are the table's, which
// docs/TROUBLESHOOTING.md publishes.

// seeAbove is the fix where the failure's own message says what to do.
const seeAbove = "see the message above"

func federationFix(cfg *config.Config, err error) string {
	if cfg.Credential == config.ManagedIdentityFederation {
		if fix := netFix(err, "IDENTITY_ENDPOINT"); fix != "" {
			return fix
		}
		return advice.Say(advice.IdentityNotAssigned, advice.Vars{"identity": cfg.ManagedIdentityClientID})
	}
	return "" // the AWS errors say what to do
}

func vaultFix(cfg *config.Config, err error) string {
	var ve *credentials.VaultError
	if errors.As(err, &ve) {
		switch ve.StatusCode {
		case 0:
			if fix := netFix(err, config.EnvKeyVaultURL); fix != "" {
				return fix
			}
			return advice.Say(advice.VaultUnreachable, advice.Vars{"vault_url": cfg.KeyVaultURL, "vault_access": string(cfg.VaultAccess)})
		case 403:
			return advice.Say(advice.VaultForbidden, nil)
		case 404:
			return advice.Say(advice.VaultSecretNotFound, advice.Vars{"secret": cfg.SecretName, "secret_setting": config.EnvSecretName})
		}
	}
	return seeAbove
}

func tokenFix(cfg *config.Config, tenant string, err error) string {
	var ee *credentials.EntraError
	if errors.As(err, &ee) && ee.Advice() != "" {
		return ee.Advice()
	}
	if fix := netFix(err, config.EnvAuthorityHost); fix != "" {
		return fix
	}
	return advice.Say(advice.TokenFailed, advice.Vars{"authority": cfg.AuthorityHost})
}

func rolesFix(err error) string {
	var pe *credentials.PermissionError
	if !errors.As(err, &pe) {
		return ""
	}
	if pe.WrongAudience != "" {
		return advice.Say(advice.WrongAudience, nil)
	}
	var roles []string
	for _, m := range pe.Missing {
		roles = append(roles, m.AnyOf[0])
	}
	fix := advice.Say(advice.MissingRoles, advice.Vars{"roles": strings.Join(roles, ", "), "consent_url": pe.ConsentURL})
	if !strings.Contains(pe.ConsentURL, "redirect_uri=") {
		fix += " (" + advice.Say(advice.ConsentRedirect, nil) + ")"
	}
	return fix
}

func apiFix(cfg *config.Config, err error) string {
	var ae *defender.APIError
	switch {
	case errors.As(err, &ae) && ae.Advice != "":
		return ae.Advice
	case errors.As(err, &ae) && ae.StatusCode == 403:
		return advice.Say(advice.APIForbidden, nil)
	}
	if fix := netFix(err, config.EnvAPIURL); fix != "" {
		return fix
	}
	return advice.Say(advice.APIUnreachable, advice.Vars{"api_url": cfg.APIURL})
}

// netFix names what a transport failure means, or returns "": a server
// certificate this machine does not trust (a private CA, the devstack's) or
// nothing listening where setting points. Some SDK errors keep only the
// text of the transport's error, so the text is read where the chain ends.
func netFix(err error, setting string) string {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknown) || errors.As(err, &verify) || strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		return advice.Say(advice.TLSUntrusted, nil)
	}
	addr := ""
	var op *net.OpError
	if errors.Is(err, syscall.ECONNREFUSED) && errors.As(err, &op) && op.Addr != nil {
		addr = op.Addr.String()
	} else if m := refused.FindStringSubmatch(err.Error()); m != nil {
		addr = m[1]
	}
	if addr == "" {
		return ""
	}
	vars := advice.Vars{"addr": addr, "setting": setting}
	if host, _, e := net.SplitHostPort(addr); e == nil && net.ParseIP(host).IsLoopback() {
		return advice.Say(advice.DevstackDown, vars)
	}
	return advice.Say(advice.NothingListens, vars)
}

var refused = regexp.MustCompile(`dial tcp ([^ ]+): connect: connection refused`)

// storageFix is the fix for a state store or sink that is not writable;
// value is the setting's, with any SAS redacted.
func storageFix(setting, value string) string {
	value = config.RedactURL(value) // a SAS is a secret
	vars := advice.Vars{"setting": setting, "value": value}
	if strings.HasPrefix(value, "file://") {
		return advice.Say(advice.DirectoryNotWritable, vars)
	}
	return advice.Say(advice.StoreNotWritable, vars)
}
