package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/defender-functions/defender-functions/shared/advice"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	"golang.org/x/sync/singleflight"
)

// secretValue is one version of a vault secret.
type secretValue struct {
	value       string
	contentType string
	version     string
	managed     bool // a Key Vault certificate's secret, which its policy may renew
	readAt      time.Time
}

// secretValueOf is a secret as the vault returned it.
func secretValueOf(s azsecrets.Secret, readAt time.Time) *secretValue {
	sv := &secretValue{value: *s.Value, readAt: readAt, managed: s.Managed != nil && *s.Managed}
	if s.ContentType != nil {
		sv.contentType = *s.ContentType
	}
	if s.ID != nil {
		sv.version = s.ID.Version()
	}
	return sv
}

// vaultSecret reads one Key Vault secret through azsecrets and keeps it in
// memory for a TTL. Concurrent readers share one read.
type vaultSecret struct {
	client  *azsecrets.Client
	name    string
	setting string // the setting that names it, for errors (default DEFENDER_SECRET_NAME)
	ttl     time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu  sync.Mutex
	cur *secretValue
	sf  singleflight.Group
}

// get returns the cached secret, reading it when absent or older than the TTL.
func (v *vaultSecret) get(ctx context.Context) (*secretValue, error) {
	v.mu.Lock()
	cur := v.cur
	v.mu.Unlock()
	if cur != nil && v.now().Sub(cur.readAt) < v.ttl {
		return cur, nil
	}
	return v.read(ctx, cur)
}

// reread reads the secret again unless someone already replaced stale: the
// rotation path, taken once when Entra ID rejects the cached secret.
func (v *vaultSecret) reread(ctx context.Context, stale *secretValue) (*secretValue, error) {
	v.mu.Lock()
	cur := v.cur
	v.mu.Unlock()
	if cur != stale && cur != nil {
		return cur, nil
	}
	return v.read(ctx, stale)
}

func (v *vaultSecret) read(ctx context.Context, seen *secretValue) (*secretValue, error) {
	ch := v.sf.DoChan("", func() (any, error) {
		v.mu.Lock()
		cur := v.cur
		v.mu.Unlock()
		if cur != seen && cur != nil {
			return cur, nil
		}
		resp, err := v.client.GetSecret(ctx, v.name, "", nil)
		telemetry.VaultRead(ctx, v.name, err)
		if err != nil {
			return nil, vaultError(v.name, v.setting, err)
		}
		if resp.Value == nil || *resp.Value == "" {
			if v.setting != "" {
				return nil, fmt.Errorf("key vault secret %q (%s) is empty: store the value in it", v.name, v.setting)
			}
			return nil, fmt.Errorf("key vault secret %q is empty: store the app's client secret (its Value) or certificate in it", v.name)
		}
		sv := secretValueOf(resp.Secret, v.now())
		v.mu.Lock()
		v.cur = sv
		v.mu.Unlock()
		v.log.InfoContext(ctx, "Secret read from Key Vault.", "secret", v.name, "version", sv.version)
		return sv, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*secretValue), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// VaultError is a failure to read a secret from Key Vault: the Defender
// app's credential, or a secret another setting names.
type VaultError struct {
	Secret  string
	Setting string // the setting that names the secret

	StatusCode int    // 0 when the vault was not reached
	Code       string // Key Vault's error code, e.g. SecretNotFound, Forbidden
	Err        error
}

// Error says what to do in the advice table's words, which doctor's fix
// lines and docs/TROUBLESHOOTING.md say too.
func (e *VaultError) Error() string {
	switch {
	case e.StatusCode == http.StatusNotFound:
		return fmt.Sprintf("key vault: secret %q not found: %s", e.Secret, advice.Say(advice.VaultSecretNotFound, advice.Vars{"secret": e.Secret, "secret_setting": e.Setting}))
	case e.StatusCode == http.StatusForbidden:
		return fmt.Sprintf("key vault: reading secret %q is forbidden (%s): %s", e.Secret, e.Code, advice.Say(advice.VaultForbidden, nil))
	case e.StatusCode == http.StatusUnauthorized:
		return fmt.Sprintf("key vault: the vault rejected the identity's token for secret %q (%s): %s", e.Secret, e.Code, advice.Say(advice.VaultUnauthorized, nil))
	case e.StatusCode != 0:
		return fmt.Sprintf("key vault: reading secret %q failed with HTTP %d %s", e.Secret, e.StatusCode, e.Code)
	}
	return fmt.Sprintf("key vault: reading secret %q failed: %v (check %s, the network path to the vault, and the identity used to reach it)", e.Secret, e.Err, config.EnvKeyVaultURL)
}

func (e *VaultError) Unwrap() error { return e.Err }

func vaultError(name, setting string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if setting == "" {
		setting = config.EnvSecretName
	}
	ve := &VaultError{Secret: name, Setting: setting, Err: err}
	var re *azcore.ResponseError
	var se *SignInError
	if errors.As(err, &re) {
		ve.StatusCode, ve.Code = re.StatusCode, re.ErrorCode
		// The SDK's message repeats the whole response; keep our own.
		ve.Err = fmt.Errorf("HTTP %d %s", re.StatusCode, re.ErrorCode)
	} else if errors.As(err, &se) {
		ve.Err = se // one line already, which says how to sign in
	} else {
		ve.Err = scrubAzError(err)
	}
	return ve
}

var aadstsRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`AADSTS\d+: [^\\"]*`) })

// scrubAzError shortens an azidentity error to its first line and Entra's
// AADSTS sentence: the SDK's multi-line errors carry raw response bodies.
func scrubAzError(err error) error {
	msg := err.Error()
	first := msg
	if i := strings.IndexByte(msg, '\n'); i > 0 {
		first = strings.TrimSpace(msg[:i])
	}
	if m := aadstsRe().FindString(msg); m != "" {
		first += " " + m
	}
	return errors.New(first)
}

// azClientOptions routes the SDK through our HTTP client, with a small retry budget.
func azClientOptions(cfg *Registration, hc *http.Client) azcore.ClientOptions {
	o := azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 2 * time.Second}}
	if hc != nil {
		o.Transport = SameOrigin(hc)
	}
	if cfg.AuthorityHost != config.DefaultAuthorityHost {
		o.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: cfg.AuthorityHost + "/", Services: map[cloud.ServiceName]cloud.ServiceConfiguration{}}
	}
	return o
}

// knownAuthority reports whether MSAL validates this host itself; for any
// other host (sovereign or private clouds, the devstack) instance discovery
// would call the public cloud, so it is turned off.
func knownAuthority(host string) bool {
	for _, h := range []string{"https://login.microsoftonline.com", "https://login.microsoftonline.us", "https://login.chinacloudapi.cn", "https://login.microsoft.com"} {
		if strings.EqualFold(strings.TrimRight(host, "/"), h) {
			return true
		}
	}
	return false
}

// VaultSecret is a secret of the app's own kept beside the Defender
// credential in KEY_VAULT_URL (the Splunk collector's token), read with the
// process's identity, kept for SecretTTL and read again when the service it
// is for refuses it.
type VaultSecret struct{ v *vaultSecret }

// NewVaultSecret prepares the secret name, which the setting names; it
// performs no I/O.
func NewVaultSecret(reg Registration, name, setting string, opts *Options) (*VaultSecret, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = DefaultHTTPClient()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if reg.KeyVaultURL == "" {
		return nil, fmt.Errorf("%s names a Key Vault secret, and %s is not set", setting, config.EnvKeyVaultURL)
	}
	cred, err := vaultCredential(&reg, o.HTTPClient)
	if err != nil {
		return nil, err
	}
	client, err := azsecrets.NewClient(reg.KeyVaultURL, cred, &azsecrets.ClientOptions{ClientOptions: azClientOptions(&reg, SameOrigin(o.HTTPClient))})
	if err != nil {
		return nil, fmt.Errorf("key vault client for %s: %w", reg.KeyVaultURL, err)
	}
	return &VaultSecret{&vaultSecret{client: client, name: name, setting: setting, ttl: reg.SecretTTL, now: o.Now, log: o.Logger}}, nil
}

// Value is the secret, read when absent or older than SecretTTL.
func (s *VaultSecret) Value(ctx context.Context) (string, error) {
	sv, err := s.v.get(ctx)
	if err != nil {
		return "", err
	}
	return sv.value, nil
}

// Rejected makes the next Value read the vault again, unless the value
// was already replaced.
func (s *VaultSecret) Rejected(value string) {
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	if s.v.cur != nil && s.v.cur.value == value {
		s.v.cur = nil
	}
}

// AzureCredential is the process's own identity for Azure resources (Key
// Vault, Blob Storage), as KEY_VAULT_CREDENTIAL says: the managed identity
// in Azure, a bootstrap app's certificate or federation elsewhere (Lambda).
func AzureCredential(reg Registration, hc *http.Client) (azcore.TokenCredential, error) {
	return vaultCredential(&reg, hc)
}

// vaultCredential is how this process reaches Key Vault. Never
// DefaultAzureCredential: its probing order (environment, CLI, IMDS) makes a
// production identity depend on what happens to be installed. The
// operator's sign-in (developer) is chosen by name, for doctor -as-me.
func vaultCredential(cfg *Registration, hc *http.Client) (azcore.TokenCredential, error) {
	opts := azClientOptions(cfg, hc)
	disco := !knownAuthority(cfg.AuthorityHost)
	switch cfg.VaultAccess {
	case config.VaultWorkloadIdentity:
		return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: opts, ClientID: cfg.VaultClientID, TenantID: cfg.VaultTenantID, TokenFilePath: cfg.FederatedTokenFile,
			DisableInstanceDiscovery: disco,
		})
	case config.VaultCertificate:
		data, err := readFile(cfg.VaultCertificatePath)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvVaultCertificatePath, err)
		}
		certs, key, err := azidentity.ParseCertificates(data, []byte(cfg.VaultCertificatePass.Reveal()))
		if err != nil {
			return nil, fmt.Errorf("%s: the file is not a PEM or PFX certificate with its private key (wrong %s?)", config.EnvVaultCertificatePath, config.EnvVaultCertificatePass)
		}
		return azidentity.NewClientCertificateCredential(cfg.VaultTenantID, cfg.VaultClientID, certs, key, &azidentity.ClientCertificateCredentialOptions{
			ClientOptions: opts, DisableInstanceDiscovery: disco,
		})
	case config.VaultDeveloper:
		return newDeveloperCredential(cfg.VaultTenantID)
	case config.VaultAWSFederation:
		src, err := awsIdentity(cfg, nil, nil)
		if err != nil {
			return nil, err
		}
		return azidentity.NewClientAssertionCredential(cfg.VaultTenantID, cfg.VaultClientID, src.Token, &azidentity.ClientAssertionCredentialOptions{
			ClientOptions: opts, DisableInstanceDiscovery: disco,
		})
	default:
		miOpts := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		if cfg.ManagedIdentityClientID != "" {
			miOpts.ID = azidentity.ClientID(cfg.ManagedIdentityClientID)
		}
		return azidentity.NewManagedIdentityCredential(miOpts)
	}
}
