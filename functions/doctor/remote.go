package doctor

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
)

// Remote is doctor run from the operator's machine against a deployed app:
// its settings exported from the platform, and the operator's own sign-in
// where the app's identity exists only where the app runs (the Function
// App's managed identity, the Lambda's role, a certificate in a layer).
type Remote struct {
	// SettingsFile is the deployed app's settings as exported (ReadSettings):
	// they alone are the app's settings, in place of the environment. Empty
	// reads the environment, as Run does.
	SettingsFile string
	// AsOperator reaches Key Vault and Azure Storage with the operator's
	// sign-in (KEY_VAULT_CREDENTIAL=developer: az login, else azd auth
	// login), and AWS as the SDK's chain finds it (AWS_PROFILE, after aws sso
	// login). The app's own credential (its secret or certificate from the
	// vault) is still what Entra ID and Defender see.
	AsOperator bool
}

// RunRemote is Run with the settings and the identity rm says. The Key
// Vault references in a settings file are read first, as the platform
// reads them before the app starts; each is a line of its own.
func RunRemote(ctx context.Context, env func(string) (string, bool), out io.Writer, rm Remote, opts *Options) bool {
	o := opts.withDefaults()
	r := &report{out: out}
	lookup := env
	var s *Settings
	if rm.SettingsFile != "" {
		var err error
		if s, err = ReadSettings(rm.SettingsFile); err != nil {
			r.fail("settings", err, "")
			return false
		}
		r.ok("settings", "%d from %s (%s), in place of the environment: %s", len(s.values), rm.SettingsFile, s.Source, strings.Join(s.Names(), ", "))
		lookup = s.Lookup
	}
	if rm.AsOperator {
		lookup = withSetting(lookup, config.EnvVaultAccess, string(config.VaultDeveloper))
		operatorNotes(r, lookup, os.LookupEnv)
	}
	if s != nil {
		resolveReferences(ctx, r, s, lookup, o)
	}
	pass := Run(ctx, lookup, out, &o)
	return pass && !r.failed
}

// withSetting is lookup with one setting replaced.
func withSetting(lookup func(string) (string, bool), name, value string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if k == name {
			return value, true
		}
		return lookup(k)
	}
}

// operatorNotes say whose identity reaches what, and which checks the
// operator's sign-in cannot pass for an app whose credential is its
// platform identity.
func operatorNotes(r *report, lookup, env func(string) (string, bool)) {
	aws := "the AWS SDK's default chain"
	if p, ok := env("AWS_PROFILE"); ok && p != "" {
		aws = "AWS profile " + p
		if k, ok := env("AWS_ACCESS_KEY_ID"); ok && k != "" {
			r.note("identity", "AWS_ACCESS_KEY_ID is set: the AWS SDK uses it before AWS_PROFILE; unset it to use the profile")
		}
	}
	r.note("identity", "your own sign-in reaches Key Vault and Azure Storage (az login, else azd auth login), and AWS (%s); Entra ID and Defender see the app's own credential", aws)
	cred, _ := lookup(config.EnvCredential)
	switch config.Credential(strings.ToLower(strings.TrimSpace(cred))) {
	case config.ManagedIdentityFederation:
		r.note("identity", "%s=%s: the app's credential is the Function App's managed identity, which exists only in Azure: from here the federation check fails and token, roles and api are skipped",
			config.EnvCredential, config.ManagedIdentityFederation)
	case config.AWSFederation:
		r.note("identity", "%s=%s: the token presented to Entra ID is your AWS identity's, not the function's execution role's: token, roles and api pass only with a profile that assumes the execution role",
			config.EnvCredential, config.AWSFederation)
	}
}

// resolveReferences reads each Key Vault reference in s with the identity
// the settings (and AsOperator) give, and keeps the value in s in its
// place. A reference that cannot be read stays, and the configuration
// check reports it unresolved.
func resolveReferences(ctx context.Context, r *report, s *Settings, lookup func(string) (string, bool), o Options) {
	var refs []string
	for _, name := range s.Names() {
		if strings.HasPrefix(strings.TrimSpace(s.values[name]), config.ReferencePrefix) {
			refs = append(refs, name)
		}
	}
	if len(refs) == 0 {
		return
	}
	// The identity comes from settings that are no references.
	cfg, _ := config.Load(func(k string) (string, bool) {
		if v, ok := lookup(k); ok && !strings.HasPrefix(strings.TrimSpace(v), config.ReferencePrefix) {
			return v, true
		}
		return "", false
	})
	if cfg == nil {
		return // the configuration check says what is wrong
	}
	reg := functions.Registration(cfg)
	for _, name := range refs {
		ref, _, err := credentials.ParseReference(s.values[name], cfg.AuthorityHost)
		if err == nil {
			c, cancel := context.WithTimeout(ctx, o.Timeout)
			var v config.Secret
			v, err = credentials.ResolveReference(c, reg, ref, name, &credentials.Options{HTTPClient: o.HTTPClient})
			cancel()
			if err == nil {
				s.values[name] = v.Reveal()
				r.ok("settings", "%s: Key Vault reference read (secret %q in %s)", name, ref.Name, ref.VaultURL)
				continue
			}
		}
		r.fail("settings", fmt.Errorf("%s: %w", name, err), "") // the error says what to do
	}
}
