// Package doctor is the preflight of a deployment: run with the functions'
// own settings, it checks in order everything they depend on and prints one
// plain line per check, with the fix under each failure.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	huntingquery "github.com/defender-functions/defender-functions/functions/hunting-query"
	incidentexport "github.com/defender-functions/defender-functions/functions/incident-export"
	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
	"github.com/defender-functions/defender-functions/shared/advice"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/function"
)

// Options tune Run; the zero value is right for a deployment.
type Options struct {
	// HTTPClient carries every request; nil is the functions' default.
	HTTPClient *http.Client
	// Timeout bounds each check.
	Timeout time.Duration
}

type report struct {
	out    io.Writer
	failed bool
}

func (r *report) ok(check, format string, a ...any) {
	fmt.Fprintf(r.out, "ok    %-12s %s\n", check, fmt.Sprintf(format, a...))
}

// fail reports a failed check and its fix. A fix that the failure already
// says word for word (an Entra ID or API error carries its advice) is not
// printed twice.
func (r *report) fail(check string, err error, fix string) {
	r.failed = true
	fmt.Fprintf(r.out, "FAIL  %-12s %v\n", check, err)
	if fix != "" && !strings.Contains(err.Error(), fix) {
		fmt.Fprintf(r.out, "      %-12s fix: %s\n", "", fix)
	}
}

// note is a fact that is not a failure, said for what it means.
func (r *report) note(check, format string, a ...any) {
	fmt.Fprintf(r.out, "note  %-12s %s\n", check, fmt.Sprintf(format, a...))
}

// warn is a check that passes today and needs action soon: it does not
// fail the run.
func (r *report) warn(check string, err error, fix string) {
	fmt.Fprintf(r.out, "WARN  %-12s %v\n", check, err)
	if fix != "" {
		fmt.Fprintf(r.out, "      %-12s fix: %s\n", "", fix)
	}
}

func (r *report) skip(check, why string) {
	r.failed = true
	fmt.Fprintf(r.out, "skip  %-12s %s\n", check, why)
}

// withDefaults is a copy of o (nil: the zero value) with its defaults.
func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.HTTPClient == nil {
		c.HTTPClient = credentials.DefaultHTTPClient()
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	return c
}

// Run checks the deployment that lookup's settings describe and reports
// whether everything passed. The checks run in order, each a method of
// checkup below; one that needs a failed one is marked skip.
func Run(ctx context.Context, lookup func(string) (string, bool), out io.Writer, opts *Options) bool {
	k := &checkup{ctx: ctx, o: opts.withDefaults(), r: &report{out: out}}
	if !k.configuration(lookup) {
		return false
	}
	vaultOK := k.vault() && k.federation()
	if len(k.cfg.Tenants) == 1 {
		k.tenant(k.r, k.cfg.Tenants[0], vaultOK, true)
	} else {
		k.partner(vaultOK)
	}
	k.storage()
	k.queue()
	k.webhookKeys()
	return !k.r.failed
}

// checkup is one run of the checks.
type checkup struct {
	ctx     context.Context
	o       Options
	r       *report
	cfg     *config.Config
	creds   *credentials.Credentials
	enabled []string // the functions the settings turn on

	mu         sync.Mutex
	noIdentity bool // a check found no managed identity on this machine
}

// step bounds one check.
func (k *checkup) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(k.ctx, k.o.Timeout)
}

// configuration: 1. the settings parse, and the credentials can be built.
func (k *checkup) configuration(lookup func(string) (string, bool)) bool {
	r := k.r
	cfg, err := config.Load(lookup)
	if cfg == nil {
		var p config.Problems
		if errors.As(err, &p) {
			for _, line := range p {
				r.fail("config", errors.New(line), "")
			}
		} else {
			r.fail("config", err, "")
		}
		for _, check := range []string{"key vault", "token", "roles", "api", "state store", "sink"} {
			r.skip(check, "needs the configuration")
		}
		return false
	}
	// Problems with one function's own settings stop that function only:
	// each is a failure, and the checks go on for the others.
	// Functions that share a group (the export's two) report it once.
	reported := map[string]bool{}
	for _, d := range functions.Functions {
		if reported[d.Settings] {
			continue
		}
		reported[d.Settings] = true
		for _, line := range cfg.GroupProblems[d.Settings] {
			r.fail("config", fmt.Errorf("%s: %s", d.Name, line), "")
		}
	}
	k.cfg = cfg
	for _, on := range []struct {
		d  function.Descriptor
		on bool
	}{{incidentexport.Function, cfg.ExportSink != ""}, {huntingquery.Function, true}, {ticketwebhook.Function, len(cfg.WebhookSecrets) > 0 || cfg.WebhookSecretsARN != ""}} {
		if on.on && len(cfg.GroupProblems[on.d.Settings]) == 0 {
			k.enabled = append(k.enabled, on.d.Name)
		}
	}
	r.ok("config", "%s API at %s, app %s, tenant(s) %s, credential %s; functions %s", cfg.API, cfg.APIURL, cfg.ClientID,
		strings.Join(cfg.Tenants, ","), cfg.Credential, strings.Join(k.enabled, ", "))

	k.creds, err = credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: k.o.HTTPClient})
	if err != nil {
		r.fail("credentials", err, advice.Say(advice.CredentialsSettings, nil))
		return false
	}
	return true
}

// vault: 2. the app's credential is readable from Key Vault (where used).
func (k *checkup) vault() bool {
	c, cancel := k.step()
	version, used, err := k.creds.CheckVault(c)
	cancel()
	switch {
	case !used:
		k.r.ok("key vault", "not used (%s=%s)", config.EnvCredential, k.cfg.Credential)
	case k.identityFailure(k.r, "key vault", config.EnvKeyVaultURL, err):
	case err != nil:
		k.r.fail("key vault", err, k.vaultFix(err))
	default:
		k.r.ok("key vault", "secret %q readable at %s (version %s)", k.cfg.SecretName, k.cfg.KeyVaultURL, version)
		k.certificate()
	}
	return err == nil
}

// federation: 2. in a secretless mode, the token presented as the app's
// assertion: what Entra ID will match against the app's federated
// credentials, for the operator to compare with them.
func (k *checkup) federation() bool {
	c, cancel := k.step()
	claims, used, err := k.creds.CheckFederation(c)
	cancel()
	switch {
	case !used:
		return true
	case k.identityFailure(k.r, "federation", config.EnvCredential+"="+string(k.cfg.Credential), err):
		return false
	case err != nil:
		k.r.fail("federation", err, k.federationFix(err))
		return false
	}
	k.r.ok("federation", "%s: a token with issuer %s, subject %s, audience %s: the app needs a federated credential with exactly these",
		k.cfg.Credential, claims.Issuer, claims.Subject, claims.Audience)
	return true
}

// webhookKeys: 7. the webhook's keys, where they are read at run time
// (AWS Secrets Manager): readable by this identity, and well formed.
func (k *checkup) webhookKeys() {
	cfg := k.cfg
	if cfg.WebhookSecretsARN == "" || len(cfg.GroupProblems[ticketwebhook.Function.Settings]) > 0 {
		return
	}
	keys, err := functions.WebhookKeys(cfg, nil)
	if err != nil {
		k.r.fail("webhook keys", err, "")
		return
	}
	c, cancel := k.step()
	defer cancel()
	var on []string
	for _, p := range config.WebhookProviders {
		ks, err := keys.Keys(c, p)
		if err != nil {
			k.r.fail("webhook keys", err, "")
			return
		}
		if len(ks) > 0 {
			on = append(on, fmt.Sprintf("%s (%d)", p, len(ks)))
		}
	}
	if len(on) == 0 {
		k.r.fail("webhook keys", fmt.Errorf("%s names a secret that turns no provider on", config.EnvWebhookSecretsARN),
			advice.Say(advice.WebhookNoProvider, nil))
		return
	}
	k.r.ok("webhook keys", "%s is readable; providers on: %s", cfg.WebhookSecretsARN, strings.Join(on, ", "))
}
