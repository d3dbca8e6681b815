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

func (k *checkup) federationFix(err error) string {
	cfg := k.cfg
	if cfg.Credential == config.ManagedIdentityFederation {
		if fix := k.netFix(err, "IDENTITY_ENDPOINT"); fix != "" {
			return fix
		}
		return advice.Say(advice.IdentityNotAssigned, advice.Vars{"identity": cfg.ManagedIdentityClientID})
	}
	return "" // the AWS errors say what to do
}

// vaultFix is the fix for a secret that could not be read: the app's
// credential, or the secret another setting names (the collector's token).
func (k *checkup) vaultFix(err error) string {
	var ve *credentials.VaultError
	if errors.As(err, &ve) {
		switch ve.StatusCode {
		case 0:
			if fix := k.netFix(err, config.EnvKeyVaultURL); fix != "" {
				return fix
			}
			return advice.Say(advice.VaultUnreachable, advice.Vars{"vault_url": k.cfg.KeyVaultURL, "vault_access": string(k.cfg.VaultAccess)})
		case 403:
			return advice.Say(advice.VaultForbidden, nil)
		case 404:
			return advice.Say(advice.VaultSecretNotFound, advice.Vars{"secret": ve.Secret, "secret_setting": ve.Setting})
		}
	}
	return seeAbove
}

func (k *checkup) tokenFix(err error) string {
	var ee *credentials.EntraError
	if errors.As(err, &ee) && ee.Advice() != "" {
		return ee.Advice()
	}
	if fix := k.netFix(err, config.EnvAuthorityHost); fix != "" {
		return fix
	}
	return advice.Say(advice.TokenFailed, advice.Vars{"authority": k.cfg.AuthorityHost})
}

// rolesFix is the fix for a token whose roles fall short; one with none at
// all is a tenant without admin consent, said as such.
func rolesFix(err error, granted []string) string {
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
	vars := advice.Vars{"roles": strings.Join(roles, ", "), "consent_url": pe.ConsentURL, "tenant": pe.Tenant}
	fix := advice.Say(advice.MissingRoles, vars)
	if len(granted) == 0 {
		fix = advice.Say(advice.NoConsent, vars)
	}
	if !strings.Contains(pe.ConsentURL, "redirect_uri=") {
		fix += " (" + advice.Say(advice.ConsentRedirect, nil) + ")"
	}
	return fix
}

func (k *checkup) apiFix(err error) string {
	var ae *defender.APIError
	switch {
	case errors.As(err, &ae) && ae.Advice != "":
		return ae.Advice
	case errors.As(err, &ae) && ae.StatusCode == 403:
		return advice.Say(advice.APIForbidden, nil)
	}
	if fix := k.netFix(err, config.EnvAPIURL); fix != "" {
		return fix
	}
	return advice.Say(advice.APIUnreachable, advice.Vars{"api_url": k.cfg.APIURL})
}

// netFix names what a transport failure means, or returns "": a server
// certificate this machine does not trust (a private CA, the devstack's),
// a host name that does not resolve, nothing listening where setting
// points, or no answer at all. Some SDK errors keep only the text of the
// transport's error, so the text is read where the chain ends.
func (k *checkup) netFix(err error, setting string) string {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknown) || errors.As(err, &verify) || strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		return advice.Say(advice.TLSUntrusted, nil)
	}
	if fix := k.dnsFix(err, setting); fix != "" {
		return fix
	}
	addr := ""
	var op *net.OpError
	switch isOp := errors.As(err, &op) && op.Op == "dial" && op.Addr != nil; {
	case isOp && errors.Is(err, syscall.ECONNREFUSED):
		addr = op.Addr.String()
	case isOp && op.Timeout():
		return advice.Say(advice.NoAnswer, advice.Vars{"addr": op.Addr.String(), "setting": setting})
	}
	if m := refused.FindStringSubmatch(err.Error()); addr == "" && m != nil {
		addr = m[1]
	} else if m := timedOut.FindStringSubmatch(err.Error()); addr == "" && m != nil {
		return advice.Say(advice.NoAnswer, advice.Vars{"addr": m[1], "setting": setting})
	}
	if addr == "" {
		return ""
	}
	vars := advice.Vars{"addr": addr, "setting": setting}
	if host, _, e := net.SplitHostPort(addr); e != nil || !net.ParseIP(host).IsLoopback() {
		return advice.Say(advice.NothingListens, vars)
	}
	// On this machine: the devstack is down, or the port is mistyped
	// while it runs, which another setting's service answering tells.
	if other, otherSetting := k.listening(addr); other != "" {
		vars["other"], vars["other_setting"], vars["service"] = other, otherSetting, services[setting]
		return advice.Say(advice.WrongPort, vars)
	}
	return advice.Say(advice.DevstackDown, vars)
}

var (
	refused  = regexp.MustCompile(`dial tcp ([^ ]+): connect: connection refused`)
	timedOut = regexp.MustCompile(`dial tcp ([^ ]+): (?:i/o timeout|connect: connection timed out)`)
	notFound = regexp.MustCompile(`lookup ([^ ]+)(?: on [^ ]+)?: no such host`)
)

// dnsFix is the fix for a name that does not resolve, or that could not
// be looked up.
func (k *checkup) dnsFix(err error, setting string) string {
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
	case errors.As(err, &de):
		return advice.Say(advice.DNSFailed, advice.Vars{"host": de.Name, "reason": de.Err, "setting": setting})
	default:
		m := notFound.FindStringSubmatch(err.Error())
		if m == nil {
			return ""
		}
		de = &net.DNSError{Name: m[1]}
	}
	return advice.Say(advice.NameNotResolved, advice.Vars{"host": de.Name, "setting": setting, "form": k.form(setting)})
}

// services name what each URL-shaped setting points at.
var services = map[string]string{
	config.EnvKeyVaultURL: "vault", config.EnvAuthorityHost: "Entra ID endpoint", config.EnvAPIURL: "API",
	config.EnvExportSink: "sink", config.EnvStateStore: "state store", "IDENTITY_ENDPOINT": "managed identity endpoint",
}

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
