package ticketwebhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/defender-functions/defender-functions/shared/awssecret"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

// Keys gives each provider's signing keys.
type Keys interface {
	// Keys returns a provider's keys, several during a rotation; none turns
	// the provider off.
	Keys(ctx context.Context, provider string) ([][]byte, error)
}

// Rereader is Keys that can read its keys again at once. A signature that
// fails may have been made with a key added since the keys were read: the
// receiver asks once before it rejects the delivery.
type Rereader interface {
	Reread(ctx context.Context) (changed bool, err error)
}

// StaticKeys are keys fixed at start (the app settings).
type StaticKeys map[string][][]byte

func (k StaticKeys) Keys(_ context.Context, provider string) ([][]byte, error) {
	return k[provider], nil
}

// ParseKeys reads a provider's secrets, separated by spaces: Jira's are plain
// shared secrets, the others Standard Webhooks secrets (whsec_…). The error
// never holds a secret.
func ParseKeys(provider, secrets string) ([][]byte, error) {
	if providers[provider].hub {
		return webhook.ParseSecrets(secrets)
	}
	return webhook.ParseStandardSecrets(secrets)
}

// Secret is a secret read at run time, cached by its holder (AWS Secrets
// Manager through awssecret.Source).
type Secret interface {
	Get(ctx context.Context) (awssecret.Value, error)
	Reread(ctx context.Context) (changed bool, err error)
}

// SecretKeys are every provider's keys in one JSON secret,
// {"jira": "…", "servicenow": "whsec_…", "generic": "whsec_…"}, each value
// as in ParseKeys; a provider absent from it is off. A new version of the
// secret is parsed once.
type SecretKeys struct {
	Secret Secret

	mu      sync.Mutex
	version string
	keys    map[string][][]byte
	err     error
}

func (k *SecretKeys) Keys(ctx context.Context, provider string) ([][]byte, error) {
	v, err := k.Secret.Get(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil && k.err == nil || v.Version != k.version {
		k.version = v.Version
		k.keys, k.err = parseSecretKeys(v.String)
	}
	if k.err != nil {
		return nil, k.err
	}
	return k.keys[provider], nil
}

func (k *SecretKeys) Reread(ctx context.Context) (bool, error) { return k.Secret.Reread(ctx) }

// ErrBadSecret is a webhook secret whose content is not what ParseKeys and
// SecretKeys expect: an operator's mistake, not a passing failure.
var ErrBadSecret = errors.New("webhook secrets")

func parseSecretKeys(s string) (map[string][][]byte, error) {
	var m map[string]string
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	if err := dec.Decode(&m); err != nil || dec.More() {
		// Not err's text: a decoding error may quote the value.
		return nil, fmt.Errorf("%w: the secret is not a JSON object of strings: store {\"jira\": \"…\", \"servicenow\": \"whsec_…\", \"generic\": \"whsec_…\"}", ErrBadSecret)
	}
	keys := map[string][][]byte{}
	for provider, v := range m {
		if _, ok := providers[provider]; !ok {
			return nil, fmt.Errorf("%w: the secret has a key %q: use %s", ErrBadSecret, truncate(provider, 32), providerList(""))
		}
		k, err := ParseKeys(provider, v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadSecret, provider, err)
		}
		keys[provider] = k
	}
	return keys, nil
}
