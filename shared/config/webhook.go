package config

import (
	"fmt"
	"strings"
	"time"
)

// webhook: ticket-webhook.
func (r *reader) webhook(c *Config) {
	c.WebhookSecrets = map[string]Secret{}
	for _, prov := range WebhookProviders {
		name := EnvWebhookSecretPrefix + strings.ToUpper(prov)
		v, ok := r.lookup(name)
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			continue
		}
		if isReference(v) {
			r.problem(unresolved(name, UnresolvedReferenceAdvice))
			continue
		}
		c.WebhookSecrets[prov] = Secret(v)
	}
	// On Lambda the secrets are read at run time, so that a rotation needs
	// no redeploy; the secret's value is the providers' secrets as JSON.
	c.WebhookSecretsARN = r.get(EnvWebhookSecretsARN, "")
	c.WebhookSecretsTTL = r.duration(EnvWebhookSecretsTTL, 5*time.Minute, 30*time.Second, time.Hour)
	if c.WebhookSecretsARN != "" && len(c.WebhookSecrets) > 0 {
		r.problem(fmt.Sprintf("%s and %s* are both set: keep one (the ARN's secret holds every provider's)", EnvWebhookSecretsARN, EnvWebhookSecretPrefix))
	}
	c.WebhookMappingFile = r.get(EnvWebhookMappingFile, "")
	// A deployed app has no place for a file of its own: the mapping can be
	// the setting's value (or a Key Vault reference the platform resolves).
	c.WebhookMapping = r.get(EnvWebhookMapping, "")
	switch {
	case c.WebhookMapping != "" && c.WebhookMappingFile != "":
		r.problem(fmt.Sprintf("%s and %s are both set: keep one", EnvWebhookMapping, EnvWebhookMappingFile))
	case len(c.WebhookMapping) > 64<<10:
		r.problem(fmt.Sprintf("%s is larger than 64 KiB", EnvWebhookMapping))
	}
	c.WebhookTolerance = r.duration(EnvWebhookTolerance, 5*time.Minute, 30*time.Second, 15*time.Minute)
	c.WebhookRetryWindow = r.duration(EnvWebhookRetryWindow, 2*time.Hour, time.Minute, 48*time.Hour)
	c.WebhookDedupeTTL = r.duration(EnvWebhookDedupeTTL, 7*24*time.Hour, time.Hour, 90*24*time.Hour)
	c.WebhookTimeout = r.duration(EnvWebhookTimeout, 25*time.Second, time.Second, 225*time.Second)
	if min := c.WebhookRetryWindow + c.WebhookTolerance; c.WebhookDedupeTTL < min {
		// A delivery still accepted after the ledger forgot it would be
		// applied again (undoing what an analyst changed since).
		r.problem(fmt.Sprintf("%s=%s is shorter than %s + %s (%s): a redelivery after it would be applied again; use at least %s",
			EnvWebhookDedupeTTL, c.WebhookDedupeTTL, EnvWebhookRetryWindow, EnvWebhookTolerance, min, min))
	}
	c.WebhookMaxBody = r.integer(EnvWebhookMaxBody, 1<<20, 1024, 16<<20, "use a size in bytes from 1024 to 16777216, such as 1048576")
}
