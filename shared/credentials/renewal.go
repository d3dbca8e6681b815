package credentials

// A Key Vault certificate's policy may renew it: the default policy does, 90
// days before expiry, with a new certificate (a new thumbprint; a new key
// pair unless the policy reuses the key). The new version is the current
// one at once, and Entra ID refuses it (AADSTS700027, "The key was not
// found") until someone uploads it to the app registration, which may hold
// several certificates at once. Until then the credentials sign with the
// newest older version that Entra ID still accepts, say once in the log
// what to run, and try the current version again every SecretTTL.

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Certificate is one version of the app's certificate in Key Vault, as an
// operator compares it with the app registration's Certificates & secrets
// page. It holds no key material.
type Certificate struct {
	Version string // the Key Vault version (the certificate's and its secret's)
	// Managed is a Key Vault certificate's secret, which the certificate's
	// policy may renew; false for a certificate stored as a plain secret.
	Managed bool
	Subject string
	// Thumbprint is the SHA-1 thumbprint in hex: what the portal, `az ad app
	// credential list --cert` (customKeyIdentifier) and AADSTS700027 show.
	Thumbprint string
	// X5tS256 is the base64url SHA-256 thumbprint, a PS256 assertion's x5t#S256.
	X5tS256             string
	NotBefore, NotAfter time.Time
}

func describe(sv *secretValue, c *x509.Certificate) Certificate {
	s1, s256 := sha1.Sum(c.Raw), sha256.Sum256(c.Raw)
	return Certificate{Version: sv.version, Managed: sv.managed, Subject: c.Subject.String(), Thumbprint: fmt.Sprintf("%X", s1),
		X5tS256: base64.RawURLEncoding.EncodeToString(s256[:]), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
}

// CertificateCheck is the certificate Key Vault holds now and whether Entra
// ID accepts it.
type CertificateCheck struct {
	Current Certificate
	// Accepted: a token request signed with the current version succeeded.
	Accepted bool
	// Unregistered: Entra ID answered that the current version is not
	// registered on the app (a renewal nobody uploaded).
	Unregistered bool
	// Refused is Entra ID's answer (an *EntraError) or the failure of the
	// request, when it did not accept the current version.
	Refused error
	// Fallback is the older version the credentials sign with meanwhile, when
	// Entra ID accepts one.
	Fallback *Certificate
	// Upload registers the current version on the app.
	Upload string
}

// CheckCertificate reads the app's certificate from Key Vault (or takes the
// copy read within SecretTTL) and asks Entra ID, in the first tenant, for a
// token signed with it: whether the app registration has it. An app without
// Application.Read.All cannot read its own registration, so this is how it
// can tell. used is false unless the credential is keyvault-certificate.
func (c *Credentials) CheckCertificate(ctx context.Context) (check *CertificateCheck, used bool, err error) {
	if c.cfg.Credential != config.KeyVaultCertificate {
		return nil, false, nil
	}
	m := c.m
	sv, err := m.vault.get(ctx)
	if err != nil {
		return nil, true, err
	}
	sg, err := m.signer(sv)
	if err != nil {
		return nil, true, err
	}
	check = &CertificateCheck{Current: describe(sv, sg.cert), Upload: UploadCommand(*c.cfg, sv.version)}
	x := c.sources[c.cfg.Tenants[0]].x
	_, err = m.exchange(ctx, x, sv)
	var ee *EntraError
	switch {
	case err == nil:
		check.Accepted = true
	case errors.As(err, &ee) && ee.Unregistered():
		check.Unregistered, check.Refused = true, err
		if r, ferr := m.olderAccepted(ctx, x, sv); ferr == nil {
			old, _ := m.signer(r.sv)
			d := describe(r.sv, old.cert)
			check.Fallback = &d
		}
	default:
		check.Refused = err
	}
	return check, true, nil
}

// UploadCommand is what registers a version of the certificate in Key Vault
// on the app ("" is the current version): its public part downloaded, and
// added beside the app's other certificates. Without --append the Azure CLI
// replaces them all, and whatever still signs with another one breaks.
func UploadCommand(reg Registration, version string) string {
	file, v := reg.SecretName+".pem", ""
	if version != "" {
		file, v = reg.SecretName+"-"+version+".pem", " --version "+version
	}
	return fmt.Sprintf("az keyvault certificate download --vault-name %s --name %s%s --encoding PEM --file %s && az ad app credential reset --id %s --cert @%s --append",
		vaultName(reg.KeyVaultURL), reg.SecretName, v, file, reg.ClientID, file)
}

// vaultName is the vault's name in its URI (https://<name>.vault.azure.net/),
// or a placeholder for a host that does not name it.
func vaultName(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "<vault>"
	}
	name, rest, ok := strings.Cut(u.Hostname(), ".")
	if !ok || !strings.HasPrefix(rest, "vault.") {
		return "<vault>"
	}
	return name
}

// fallback is the older version signed with while Entra ID refuses the
// current one as unregistered.
type fallback struct {
	rejected string       // the current version Entra ID refused
	since    time.Time    // when: after SecretTTL the current version is tried again
	use      *secretValue // the older version Entra ID accepts
}

// pinned is the older version to sign with instead of sv, or nil: no
// fallback, another current version, or time to try sv again.
func (m *material) pinned(sv *secretValue) *secretValue {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.pin; p != nil && p.rejected == sv.version && m.now().Sub(p.since) < m.cfg.SecretTTL {
		return p.use
	}
	return nil
}

// unpin drops the fallback, saying why once.
func (m *material) unpin(ctx context.Context, why string) {
	m.mu.Lock()
	p := m.pin
	m.pin = nil
	m.mu.Unlock()
	if p != nil {
		m.log.InfoContext(ctx, why, "secret", m.cfg.SecretName, "version", p.rejected, "older_version", p.use.version)
	}
}

// rescue is what a search for an older version found, with the token its
// test request got for the tenant that searched.
type rescue struct {
	sv     *secretValue
	tenant string
	tok    *Token
}

// maxOlderTries bounds the token requests one search makes: Key Vault keeps
// every version a certificate ever had.
const maxOlderTries = 3

// olderAccepted finds the newest older version of the certificate that is
// still valid and that Entra ID accepts, once it refused current as not
// registered on the app, and signs with it until SecretTTL has passed. The
// callers of the moment (one per tenant) share one search, made with x.
func (m *material) olderAccepted(ctx context.Context, x *exchanger, current *secretValue) (*rescue, error) {
	if old := m.pinned(current); old != nil {
		return &rescue{sv: old}, nil // a search that ended while this caller was refused
	}
	ch := m.search.DoChan(current.version, func() (any, error) { return m.searchOlder(ctx, x, current) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*rescue), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (m *material) searchOlder(ctx context.Context, x *exchanger, current *secretValue) (*rescue, error) {
	versions, err := m.vault.olderVersions(ctx, current.version)
	if err != nil {
		return nil, err
	}
	tried := 0
	for _, v := range versions {
		if tried == maxOlderTries {
			break
		}
		old, err := m.vault.version(ctx, v)
		if err != nil {
			m.log.DebugContext(ctx, "An older certificate version is unreadable.", "secret", m.cfg.SecretName, "older_version", v, "err", err)
			continue
		}
		sg, err := m.signer(old)
		if err != nil || !sg.validAt(m.now()) {
			continue // not a certificate, expired, or not valid yet: Entra ID would refuse it
		}
		tried++
		tok, err := m.exchange(ctx, x, old)
		var ee *EntraError
		switch {
		case err == nil:
			m.pinOlder(ctx, current, old)
			return &rescue{sv: old, tenant: x.tenant, tok: tok}, nil
		case errors.As(err, &ee) && ee.Rejected():
			continue // removed from the app too
		default:
			return nil, err // Entra ID unreachable or refusing for another reason: no verdict
		}
	}
	return nil, fmt.Errorf("no older version of key vault secret %q is valid and registered on the app", m.cfg.SecretName)
}

// pinOlder signs with old instead of current from now on, and says so: a
// warning the first time for this current version, naming the fix.
func (m *material) pinOlder(ctx context.Context, current, old *secretValue) {
	m.mu.Lock()
	m.pin = &fallback{rejected: current.version, since: m.now(), use: old}
	level := slog.LevelWarn
	if m.warned == current.version {
		level = slog.LevelInfo // the hourly retry of the current version: said once already
	}
	m.warned = current.version
	m.mu.Unlock()
	attrs := []any{"secret", m.cfg.SecretName, "version", current.version}
	if cur, err := m.signer(current); err == nil {
		attrs = append(attrs, "thumbprint", describe(current, cur.cert).Thumbprint)
	}
	if sg, err := m.signer(old); err == nil {
		d := describe(old, sg.cert)
		attrs = append(attrs, "older_version", d.Version, "older_thumbprint", d.Thumbprint, "older_expires", d.NotAfter.UTC().Format(time.RFC3339))
	}
	attrs = append(attrs, "fix", UploadCommand(*m.cfg, current.version))
	m.log.Log(ctx, level, "Entra ID does not know the current certificate in Key Vault (AADSTS700027: not registered on the app, e.g. renewed by its policy); signing with the newest older version it accepts until the current one is uploaded.", attrs...)
}

// settled notes that Entra ID accepted sv, the current version: a fallback
// is over.
func (m *material) settled(ctx context.Context, sv *secretValue) {
	m.mu.Lock()
	over := m.pin != nil
	m.mu.Unlock()
	if over {
		m.unpin(ctx, "Entra ID accepts the current certificate version from Key Vault; the older version is no longer used.")
	}
}

// olderVersions are the secret's versions other than skip that Key Vault
// would serve (enabled, within their dates), newest first.
func (v *vaultSecret) olderVersions(ctx context.Context, skip string) ([]string, error) {
	type item struct {
		version string
		created time.Time
	}
	var items []item
	now := v.now()
	for pager := v.client.NewListSecretPropertiesVersionsPager(v.name, nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		telemetry.VaultRead(ctx, v.name, err)
		if err != nil {
			return nil, fmt.Errorf("listing the versions of %q (an access policy needs List on secrets, besides Get): %w", v.name, vaultError(v.name, v.setting, err))
		}
		for _, p := range page.Value {
			if p.ID == nil || p.ID.Version() == skip || !servable(p.Attributes, now) {
				continue
			}
			items = append(items, item{p.ID.Version(), *p.Attributes.Created})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return b.created.Compare(a.created) })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.version
	}
	return out, nil
}

// servable: Key Vault serves the version (enabled; a disabled one is an
// operator's "never again"), and within its dates.
func servable(a *azsecrets.SecretAttributes, now time.Time) bool {
	return a != nil && a.Created != nil && (a.Enabled == nil || *a.Enabled) &&
		(a.Expires == nil || now.Before(*a.Expires)) && (a.NotBefore == nil || !now.Before(*a.NotBefore))
}

// version reads one version of the secret, outside the cache.
func (v *vaultSecret) version(ctx context.Context, version string) (*secretValue, error) {
	resp, err := v.client.GetSecret(ctx, v.name, version, nil)
	telemetry.VaultRead(ctx, v.name, err)
	if err != nil {
		return nil, vaultError(v.name, v.setting, err)
	}
	if resp.Value == nil || *resp.Value == "" {
		return nil, fmt.Errorf("key vault secret %q version %s is empty", v.name, version)
	}
	return secretValueOf(resp.Secret, v.now()), nil
}

// validAt: the certificate is within its validity. Beyond it Entra ID has
// no use for it either: `az ad app credential reset --cert` ends the key
// credential where the certificate ends.
func (s *signer) validAt(t time.Time) bool {
	return !t.Before(s.cert.NotBefore) && t.Before(s.cert.NotAfter)
}
