package doctor

import (
	"fmt"
	"time"

	"github.com/defender-functions/defender-functions/shared/advice"
)

// certificateWarning is how long before its end a certificate is warned
// about: time to make the next version and upload it.
const certificateWarning = 30 * 24 * time.Hour

// certificate: 2. with keyvault-certificate, the certificate Key Vault
// holds now, how long it lasts, and whether the app registration has it
// (a token request signed with it). A Key Vault renewal makes a new one that
// Entra ID refuses until it is uploaded; the functions sign with an older
// one meanwhile, so this check is where it shows. It never fails the
// checks after it: the token check says whether a token comes.
func (k *checkup) certificate() {
	c, cancel := k.step()
	chk, used, err := k.creds.CheckCertificate(c)
	cancel()
	switch {
	case !used:
		return
	case err != nil:
		k.r.fail("certificate", err, advice.Say(advice.CertUnreadable, advice.Vars{"secret": k.cfg.SecretName}))
		return
	}
	cur, left := chk.Current, time.Until(chk.Current.NotAfter)
	what := fmt.Sprintf("version %s: %s, thumbprint %s (x5t#S256 %s), valid until %s (%s)", cur.Version, cur.Subject, cur.Thumbprint, cur.X5tS256,
		cur.NotAfter.UTC().Format(time.RFC3339), daysLeft(left))
	switch {
	case left <= 0:
		k.r.fail("certificate", fmt.Errorf("%s: Entra ID refuses an expired certificate", what), advice.Say(advice.CertExpired, nil))
	case chk.Unregistered && chk.Fallback != nil:
		old := chk.Fallback
		k.r.fail("certificate", fmt.Errorf("%s is not registered on app %s (AADSTS700027): until it is, the functions sign with the older version %s (thumbprint %s, valid until %s)",
			what, k.cfg.ClientID, old.Version, old.Thumbprint, old.NotAfter.UTC().Format(time.RFC3339)), advice.Say(advice.CertNotUploaded, advice.Vars{"upload": chk.Upload}))
	case chk.Unregistered:
		k.r.fail("certificate", fmt.Errorf("%s is not registered on app %s (AADSTS700027), nor is an older version that is still valid", what, k.cfg.ClientID),
			advice.Say(advice.CertNotUploaded, advice.Vars{"upload": chk.Upload}))
	case chk.Refused != nil:
		k.r.note("certificate", "%s; whether app %s has it is not known: the token request failed (see the token check)", what, k.cfg.ClientID)
	case left < certificateWarning:
		k.r.warn("certificate", fmt.Errorf("%s; app %s has it", what, k.cfg.ClientID),
			advice.Say(advice.CertExpiring, advice.Vars{"ttl": k.cfg.SecretTTL.String()}))
	default:
		k.r.ok("certificate", "%s; app %s has it", what, k.cfg.ClientID)
	}
	// Key Vault's default policy renews 90 days before the end, unannounced.
	if renewal := cur.NotAfter.Add(-90 * 24 * time.Hour); cur.Managed && chk.Accepted && time.Until(renewal) > 0 && time.Until(renewal) < certificateWarning {
		k.r.note("certificate", "if its policy auto-renews (Key Vault's default: 90 days before the end), a new version becomes current on %s: Entra ID refuses it until it is uploaded (docs/certificate-rotation.md)",
			renewal.UTC().Format(time.DateOnly))
	}
}

// daysLeft says a remaining validity in whole days.
func daysLeft(d time.Duration) string {
	switch n := int(d / (24 * time.Hour)); {
	case d <= 0:
		return "expired"
	case n == 1:
		return "1 day left"
	default:
		return fmt.Sprintf("%d days left", n)
	}
}
