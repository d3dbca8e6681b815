package doctor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"syscall"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
)

func federationFix(cfg *config.Config, err error) string {
	if cfg.Credential == config.ManagedIdentityFederation {
		if fix := netFix(err, "IDENTITY_ENDPOINT"); fix != "" {
			return fix
		}
		return fmt.Sprintf("assign the user-assigned identity %s to the Function App (the Bicep does), or set %s to the client ID of one that is", cfg.ManagedIdentityClientID, config.EnvManagedIdentityClientID)
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
			return fmt.Sprintf("make %s (%s) reachable from here: its URI, DNS, the vault's firewall or private endpoint; and check %s=%s", config.EnvKeyVaultURL, cfg.KeyVaultURL, config.EnvVaultAccess, cfg.VaultAccess)
		case 403:
			return "assign the identity the 'Key Vault Secrets User' role on the vault (az role assignment create --role 'Key Vault Secrets User' --assignee <principal ID> --scope <vault ID>)"
		case 404:
			return fmt.Sprintf("store the app's client secret: az keyvault secret set --vault-name <vault> --name %s --value <secret Value>", cfg.SecretName)
		}
	}
	return "see the message above"
}

func tokenFix(cfg *config.Config, tenant string, err error) string {
	var ee *credentials.EntraError
	if errors.As(err, &ee) && ee.Advice() != "" {
		return ee.Advice()
	}
	if fix := netFix(err, config.EnvAuthorityHost); fix != "" {
		return fix
	}
	return fmt.Sprintf("check %s, %s and that Entra ID (%s) is reachable", config.EnvTenantID, config.EnvClientID, cfg.AuthorityHost)
}

func rolesFix(err error) string {
	var pe *credentials.PermissionError
	if !errors.As(err, &pe) {
		return ""
	}
	if pe.WrongAudience != "" {
		return fmt.Sprintf("set %s and %s for the same API", config.EnvAPI, config.EnvAPIURL)
	}
	var roles []string
	for _, m := range pe.Missing {
		roles = append(roles, m.AnyOf[0])
	}
	fix := fmt.Sprintf("add %s as application permissions, then have an administrator of the tenant open %s", strings.Join(roles, ", "), pe.ConsentURL)
	if !strings.Contains(pe.ConsentURL, "redirect_uri=") {
		fix += " (register a Web redirect URI on the app and set " + config.EnvConsentRedirectURI + " to it: Entra ID sends the administrator there after consent)"
	}
	return fix
}

func apiFix(cfg *config.Config, err error) string {
	var ae *defender.APIError
	switch {
	case errors.As(err, &ae) && ae.Advice != "":
		return ae.Advice
	case errors.As(err, &ae) && ae.StatusCode == 403:
		return "grant the app's permissions with admin consent, and check the tenant has Microsoft Defender XDR"
	}
	if fix := netFix(err, config.EnvAPIURL); fix != "" {
		return fix
	}
	return fmt.Sprintf("make %s reachable from here", cfg.APIURL)
}

// netFix names what a transport failure means, or returns "": a server
// certificate this machine does not trust (a private CA, the devstack's) or
// nothing listening where setting points. Some SDK errors keep only the
// text of the transport's error, so the text is read where the chain ends.
func netFix(err error, setting string) string {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknown) || errors.As(err, &verify) || strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		return "the server's TLS certificate is not trusted here: put the CA that issued it in the file SSL_CERT_FILE names " +
			"(for the devstack, its ca.pem: `source .local/devstack.env` sets SSL_CERT_FILE)"
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
	if host, _, e := net.SplitHostPort(addr); e == nil && net.ParseIP(host).IsLoopback() {
		return fmt.Sprintf("nothing listens at %s: if %s points at the devstack, it is not running (start it with make devstack, then source .local/devstack.env)", addr, setting)
	}
	return fmt.Sprintf("nothing listens at %s: check %s and that the service is up", addr, setting)
}

var refused = regexp.MustCompile(`dial tcp ([^ ]+): connect: connection refused`)
