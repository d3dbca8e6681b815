// Package credentials gives every function its app-only token for the
// Defender API. It reads the app's secret (or certificate) from Azure Key
// Vault with azsecrets, exchanges it at Entra ID for a client-credentials
// token, and caches both in the process, so warm invocations pay nothing:
//
//	creds, err := credentials.New(cfg, nil)
//	tok, err := creds.Source(tenant).Token(ctx)
//
// It starts no goroutine and does no I/O until the first Token call.
package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/defender-functions/defender-functions/shared/awsidentity"
	"github.com/defender-functions/defender-functions/shared/config"
	"golang.org/x/sync/singleflight"
)

// Options tune New. The zero value is right for production.
type Options struct {
	// HTTPClient carries every request (Entra ID, Key Vault, managed
	// identity). Nil means a client with timeouts that trusts the system roots.
	HTTPClient *http.Client
	// Cache holds the tokens; nil makes one for these credentials. Tests
	// give their own, on a fake clock.
	Cache *Cache
	// Logger receives what happened (never a secret or token); nil discards.
	Logger *slog.Logger
	// Now is the clock of the secret's TTL and the token schedule (tests).
	Now func() time.Time
}

// Credentials are built once per process from the configuration.
type Credentials struct {
	cfg     *Registration
	m       *material
	sources map[string]*source
}

// TokenExchangeAudience is the audience Entra ID expects of a federated
// token in the cloud of an authority host: api://AzureADTokenExchange, with
// the national clouds' own.
func TokenExchangeAudience(authorityHost string) string {
	switch h := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(authorityHost, "https://"), "http://")); {
	case strings.HasPrefix(h, "login.microsoftonline.us"):
		return "api://AzureADTokenExchangeUSGov"
	case strings.HasPrefix(h, "login.chinacloudapi.cn"), strings.HasPrefix(h, "login.partner.microsoftonline.cn"):
		return "api://AzureADTokenExchangeChina"
	}
	return "api://AzureADTokenExchange"
}

// awsIdentity is the execution role's JWT for Entra ID's token exchange.
func awsIdentity(cfg *Registration, log *slog.Logger, now func() time.Time) (*awsidentity.Source, error) {
	src, err := awsidentity.New(awsidentity.Options{Audience: TokenExchangeAudience(cfg.AuthorityHost), Logger: log, Now: now})
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", config.EnvCredential, cfg.Credential, err)
	}
	return src, nil
}

// New prepares the credentials; it performs no I/O.
func New(reg Registration, opts *Options) (*Credentials, error) {
	cfg := &reg
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = DefaultHTTPClient()
	}
	o.HTTPClient = SameOrigin(o.HTTPClient)
	if o.Cache == nil {
		o.Cache = NewCache(nil)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = o.Cache.now
	}
	m := &material{cfg: cfg, hc: o.HTTPClient, log: o.Logger, now: o.Now}
	switch cfg.Credential {
	case config.KeyVaultSecret, config.KeyVaultCertificate:
		cred, err := vaultCredential(cfg, o.HTTPClient)
		if err != nil {
			return nil, err
		}
		client, err := azsecrets.NewClient(cfg.KeyVaultURL, cred, &azsecrets.ClientOptions{ClientOptions: azClientOptions(cfg, o.HTTPClient)})
		if err != nil {
			return nil, fmt.Errorf("key vault client for %s: %w", cfg.KeyVaultURL, err)
		}
		m.vault = &vaultSecret{client: client, name: cfg.SecretName, ttl: cfg.SecretTTL, now: o.Now, log: o.Logger}
	case config.AWSFederation:
		src, err := awsIdentity(cfg, o.Logger, o.Now)
		if err != nil {
			return nil, err
		}
		m.aws = src
	case config.ManagedIdentityFederation:
		miOpts := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: azClientOptions(cfg, o.HTTPClient)}
		if cfg.ManagedIdentityClientID != "" {
			miOpts.ID = azidentity.ClientID(cfg.ManagedIdentityClientID)
		}
		mi, err := azidentity.NewManagedIdentityCredential(miOpts)
		if err != nil {
			return nil, err
		}
		m.identity = mi
	}
	c := &Credentials{cfg: cfg, m: m, sources: map[string]*source{}}
	for _, t := range cfg.Tenants {
		x := newExchanger(cfg, t, o.HTTPClient, o.Now)
		s := &source{tenant: t, m: m, x: x, log: o.Logger}
		e, err := o.Cache.source(Key{Authority: cfg.AuthorityHost, Tenant: t, ClientID: cfg.ClientID, Scope: x.scope()}, c, s.fetch)
		if err != nil {
			return nil, err
		}
		s.entry = e
		c.sources[t] = s
	}
	return c, nil
}

// Source returns the token source of one configured tenant, or nil.
func (c *Credentials) Source(tenant string) Source {
	if s, ok := c.sources[tenant]; ok {
		return s.entry
	}
	return nil
}

// CheckFederation gets the token a secretless mode presents as the app's
// client assertion (the managed identity's, or the AWS execution role's
// JWT) and returns what Entra ID matches against the app's federated
// credentials: issuer, subject, audience. used is false in the other modes.
func (c *Credentials) CheckFederation(ctx context.Context) (claims *Claims, used bool, err error) {
	switch c.cfg.Credential {
	case config.ManagedIdentityFederation, config.AWSFederation:
	default:
		return nil, false, nil
	}
	assertion, err := c.m.federated(ctx)
	if err != nil {
		return nil, true, err
	}
	claims, err = ParseClaims(assertion)
	return claims, true, err
}

// federated is the token a secretless mode presents as the app's client
// assertion: the managed identity's for Entra ID's token exchange, or the
// AWS execution role's JWT.
func (m *material) federated(ctx context.Context) (string, error) {
	if m.aws != nil {
		return m.aws.Token(ctx)
	}
	aud := TokenExchangeAudience(m.cfg.AuthorityHost)
	at, err := m.identity.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{aud + "/.default"}})
	if err != nil {
		return "", fmt.Errorf("managed identity %s: no token for %s: %w (is the identity %s names assigned to the Function App?)",
			m.cfg.ManagedIdentityClientID, aud, scrubAzError(err), config.EnvManagedIdentityClientID)
	}
	return at.Token, nil
}

// CheckVault reads the app's credential from Key Vault (or returns the copy
// read within the TTL) and returns its version, for a preflight check.
// used is false when the credential mode does not use Key Vault.
func (c *Credentials) CheckVault(ctx context.Context) (version string, used bool, err error) {
	if c.m.vault == nil {
		return "", false, nil
	}
	sv, err := c.m.vault.get(ctx)
	if err != nil {
		return "", true, err
	}
	return sv.version, true, nil
}

// Tenants are the configured tenants, home tenant first.
func (c *Credentials) Tenants() []string { return c.cfg.Tenants }

// DefaultHTTPClient has the timeouts an unattended process needs.
func DefaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 60 * time.Second
	return &http.Client{Transport: t, Timeout: 5 * time.Minute}
}

// material is what proves the app's identity: a secret or certificate from
// Key Vault, the environment's secret, or a managed identity's assertion.
type material struct {
	cfg      *Registration
	hc       *http.Client
	log      *slog.Logger
	now      func() time.Time
	vault    *vaultSecret
	identity azcore.TokenCredential
	aws      *awsidentity.Source

	mu      sync.Mutex
	signers map[*secretValue]*signer
	pin     *fallback // the older certificate signed with meanwhile (renewal.go)
	warned  string    // the current version whose refusal was warned about
	search  singleflight.Group
}

// source fetches tokens for one tenant.
type source struct {
	tenant string
	m      *material
	x      *exchanger
	log    *slog.Logger
	entry  *entry
}

// fetch is the cache's miss path: credential, exchange, and on a rejected
// credential one re-read from Key Vault (rotation) and one retry.
func (s *source) fetch(ctx context.Context) (*Token, error) {
	cfg := s.m.cfg
	var (
		tok *Token
		err error
	)
	switch cfg.Credential {
	case config.EnvSecret:
		tok, err = s.x.exchange(ctx, cfg.ClientSecret.Reveal(), "")
	case config.ManagedIdentityFederation, config.AWSFederation:
		var a string
		if a, err = s.m.federated(ctx); err != nil {
			return nil, err
		}
		tok, err = s.x.exchange(ctx, "", a)
	default:
		tok, err = s.fromVault(ctx)
	}
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "Token acquired.", "tenant", s.tenant, "scope", s.x.scope(), "expires", tok.Expiry.UTC().Format(time.RFC3339))
	return tok, nil
}

// fromVault exchanges the credential read from Key Vault. A rejected one is
// read again once (a rotated secret); a certificate Entra ID does not know
// (a renewal nobody uploaded yet) gives way to the newest older version it
// accepts (renewal.go).
func (s *source) fromVault(ctx context.Context) (*Token, error) {
	m, cfg := s.m, s.m.cfg
	sv, err := m.vault.get(ctx)
	if err != nil {
		return nil, err
	}
	var ee *EntraError
	if old := m.pinned(sv); old != nil {
		tok, err := m.exchange(ctx, s.x, old)
		if !errors.As(err, &ee) || !ee.Rejected() {
			return tok, err
		}
		m.unpin(ctx, "entra id no longer accepts the older certificate version either; trying the current one")
	}
	tok, err := m.exchange(ctx, s.x, sv)
	if errors.As(err, &ee) && ee.Rejected() {
		s.log.WarnContext(ctx, "Entra ID rejected the credential from Key Vault; reading it again.", "tenant", s.tenant, "aadsts", ee.AADSTS, "secret", cfg.SecretName, "version", sv.version)
		nu, rerr := m.vault.reread(ctx, sv)
		if rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		if nu.value != sv.value {
			sv = nu
			tok, err = m.exchange(ctx, s.x, nu)
		}
	}
	if err == nil {
		m.settled(ctx, sv)
		return tok, nil
	}
	if errors.As(err, &ee) && ee.Unregistered() && cfg.Credential == config.KeyVaultCertificate {
		r, ferr := m.olderAccepted(ctx, s.x, sv)
		if ferr == nil && r.tenant == s.tenant {
			return r.tok, nil
		}
		if ferr == nil {
			return m.exchange(ctx, s.x, r.sv)
		}
		s.log.WarnContext(ctx, "No older certificate version to sign with.", "tenant", s.tenant, "secret", cfg.SecretName, "version", sv.version, "err", ferr)
	}
	return nil, err
}

// exchange gets a token from x with one version of the vault's credential:
// the client secret, or an assertion signed with the certificate.
func (m *material) exchange(ctx context.Context, x *exchanger, sv *secretValue) (*Token, error) {
	if m.cfg.Credential == config.KeyVaultSecret {
		return x.exchange(ctx, sv.value, "")
	}
	sg, err := m.signer(sv)
	if err != nil {
		return nil, err
	}
	a, err := sg.assertion(m.cfg.ClientID, x.tokenURL, m.cfg.AssertionAlg, time.Now())
	if err != nil {
		return nil, fmt.Errorf("signing the client assertion: %w", err)
	}
	return x.exchange(ctx, "", a)
}

func (m *material) signer(sv *secretValue) (*signer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sg := m.signers[sv]; sg != nil {
		return sg, nil
	}
	sg, err := parseCertificate(sv.value, sv.contentType, nil)
	if err != nil {
		return nil, fmt.Errorf("key vault secret %q: %w", m.cfg.SecretName, err)
	}
	// Two versions at most: the current one, and an older one while Entra
	// ID does not know the current one.
	if len(m.signers) >= 2 {
		m.signers = nil
	}
	if m.signers == nil {
		m.signers = map[*secretValue]*signer{}
	}
	m.signers[sv] = sg
	return sg, nil
}
