package devstack

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// The real resources the app asks tokens for. The devstack serves them on
// loopback, but the audiences stay the real ones, exactly as in Azure.
const (
	GraphResource         = "https://graph.microsoft.com"
	GraphAppID            = "00000003-0000-0000-c000-000000000000"
	XDRResource           = "https://api.security.microsoft.com"
	XDRAppID              = "8ee8fdad-f234-4243-8f3b-15c294843740"
	TokenExchangeAudience = "api://AzureADTokenExchange"
)

// Tenant is one Entra ID tenant of the simulated directory.
type Tenant struct {
	ID     string
	Domain string
	// Incidents is how many incidents the tenant's Defender holds at start.
	// Zero means Options.Incidents for the first tenant and a tenth of it for the others.
	Incidents int
	// Apps are the applications consented in this tenant, with the app roles
	// granted to each, keyed by resource URI.
	Apps []Grant
}

// Customers are n customer tenants of a partner app: each holds incidents
// and has consented to the default app with every role. It returns their
// IDs too, in order, as DEFENDER_TENANT_ID lists them.
func Customers(n, incidents int) ([]Tenant, []string) {
	tenants, ids := make([]Tenant, n), make([]string, n)
	for i := range tenants {
		ids[i] = uuid.NewString()
		tenants[i] = Tenant{ID: ids[i], Domain: fmt.Sprintf("customer%d.onmicrosoft.com", i), Incidents: incidents,
			Apps: []Grant{{ClientID: DefaultClientID, Roles: AllRoles}}}
	}
	return tenants, ids
}

// Grant is an application's service principal in a tenant.
type Grant struct {
	ClientID string
	Roles    map[string][]string
	// KeyVaultReader lets the app itself read vault secrets (the AWS path,
	// where a certificate or federation reaches Key Vault).
	KeyVaultReader bool

	// deleted is a service principal removed from the tenant since start
	// (WithdrawConsent(…, ConsentApp)): Entra ID no longer knows the app there.
	deleted bool
}

// App is an application registration: its credentials live in its home
// tenant and serve every tenant where it is consented.
type App struct {
	ClientID string
	Name     string
}

// ManagedIdentity is the Function App's user-assigned identity.
type ManagedIdentity struct {
	ClientID string
	ObjectID string
	TenantID string
}

// Well-known identities of the default directory. They are identifiers, not
// secrets: every credential is generated at start.
const (
	DefaultTenantID   = "4d2a9e1c-6b7f-4c1e-9a52-0c3f8d7e1b10"
	DefaultTenantName = "contoso.onmicrosoft.com"
	PartnerTenantID   = "9c81f7b2-3e4d-4a6b-8f10-d25e6c7a9b43"
	PartnerTenantName = "fabrikam.onmicrosoft.com"
	DefaultClientID   = "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84"
	ReaderClientID    = "7e1d5a90-2c3b-4f68-a1d4-5b9e0c8f2a67"
	// VaultReaderClientID is a bootstrap app that may only read the vault:
	// how a host outside Azure (AWS Lambda) reaches Key Vault, with a
	// certificate or workload-identity federation.
	VaultReaderClientID = "b8c4e2d1-5f3a-4e7b-9d60-3a1f8e2c4b95"
	// IdentityClientID and IdentityObjectID are the Function App's
	// user-assigned identity: the one apps may trust as a federated
	// credential (Entra ID accepts no system-assigned identity there).
	IdentityClientID = "6a0d4f2e-91b7-4c35-8e2a-f4c1d9b07e53"
	IdentityObjectID = "c3e57a1b-0d94-4f2c-b86e-1a9f3d5e7c20"
	// SystemIdentityObjectID is its system-assigned identity, what the
	// endpoint serves to a request naming no client_id.
	SystemIdentityObjectID = "5b7e9d21-3c4a-4f86-a0e2-7d1c9f3b6a48"
	SystemIdentityClientID = "e2a64c1f-8b35-4d97-b0c6-2f9a7e1d5c83"
	// DefaultSecretName is the vault secret holding the default app's client secret.
	DefaultSecretName = "defender-client-secret"
	// CertificateSecretName holds the default app's certificate and key as PEM.
	CertificateSecretName = "defender-client-certificate"
)

// AllRoles are every app role the product may need, per resource.
var AllRoles = map[string][]string{
	GraphResource: {"SecurityIncident.ReadWrite.All", "SecurityAlert.Read.All", "ThreatHunting.Read.All"},
	XDRResource:   {"Incident.ReadWrite.All", "AdvancedHunting.Read.All"},
}

// ReadOnlyRoles lack write and hunting permissions: the "missing role" case.
var ReadOnlyRoles = map[string][]string{
	GraphResource: {"SecurityIncident.Read.All"},
	XDRResource:   {"Incident.Read.All"},
}

func defaultTenants() []Tenant {
	return []Tenant{
		{ID: DefaultTenantID, Domain: DefaultTenantName, Apps: []Grant{
			{ClientID: DefaultClientID, Roles: AllRoles},
			{ClientID: ReaderClientID, Roles: ReadOnlyRoles},
			{ClientID: VaultReaderClientID, KeyVaultReader: true},
		}},
		{ID: PartnerTenantID, Domain: PartnerTenantName, Apps: []Grant{
			{ClientID: DefaultClientID, Roles: AllRoles},
		}},
	}
}

func defaultApps() []App {
	return []App{{ClientID: DefaultClientID, Name: "defender-functions"}, {ClientID: ReaderClientID, Name: "defender-reader"},
		{ClientID: VaultReaderClientID, Name: "defender-functions-vault-reader"}}
}

// secretCred is one client secret of an app registration.
type secretCred struct {
	value   string
	expired bool // AADSTS7000222
	revoked bool // removed from the registration: AADSTS7000215
}

// certCred is one certificate registered on an app.
type certCred struct {
	cert   *x509.Certificate
	key    *rsa.PrivateKey
	x5t    string // base64url SHA-1 thumbprint
	x5t256 string // base64url SHA-256 thumbprint
}

type appState struct {
	App
	secrets []*secretCred
	certs   []*certCred
	// federated identity credentials: the issuer, subject and audience of
	// each token it trusts.
	federated []federatedCred
}

type federatedCred struct{ issuer, subject, audience string }

// directory is Entra ID's state: tenants, apps, credentials. A tenant's
// grants change only under mu (the consent controls, consent.go), each
// Roles map replaced whole, never written: a Grant copied under the read
// lock stays valid.
type directory struct {
	mu       sync.RWMutex
	tenants  []*Tenant
	byName   map[string]*Tenant // ID and domain, lower case
	apps     map[string]*appState
	identity ManagedIdentity
	// granted are the grants at start, by tenant ID, for RestoreConsent.
	granted map[string][]Grant
}

func newDirectory(tenants []Tenant, apps []App, mi ManagedIdentity) (*directory, error) {
	d := &directory{byName: map[string]*Tenant{}, apps: map[string]*appState{}, identity: mi, granted: map[string][]Grant{}}
	for i := range tenants {
		t := tenants[i]
		// The caller's slice (and Customers' shared AllRoles) stay untouched.
		t.Apps = slices.Clone(t.Apps)
		d.granted[t.ID] = slices.Clone(t.Apps)
		d.tenants = append(d.tenants, &t)
		d.byName[strings.ToLower(t.ID)] = &t
		if t.Domain != "" {
			d.byName[strings.ToLower(t.Domain)] = &t
		}
	}
	for _, a := range apps {
		st := &appState{App: a}
		st.secrets = []*secretCred{{value: newSecretValue()}}
		c, err := newCertCred(a.Name)
		if err != nil {
			return nil, err
		}
		st.certs = []*certCred{c}
		d.apps[a.ClientID] = st
	}
	return d, nil
}

func (d *directory) tenant(name string) *Tenant {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.byName[strings.ToLower(name)]
}

// grant returns a copy of the app's service principal in tenant t, or
// false when the tenant has none (never consented, or deleted).
func (d *directory) grant(t *Tenant, clientID string) (Grant, bool) {
	if t == nil {
		return Grant{}, false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if g := d.grantLocked(t, clientID); g != nil && !g.deleted {
		return *g, true
	}
	return Grant{}, false
}

// grantLocked is the app's entry in t.Apps, deleted or not; d.mu held.
func (d *directory) grantLocked(t *Tenant, clientID string) *Grant {
	for i := range t.Apps {
		if strings.EqualFold(t.Apps[i].ClientID, clientID) {
			return &t.Apps[i]
		}
	}
	return nil
}

// newSecretValue makes a client secret in the shape Entra ID issues
// (40 characters, a "~" in it), random at every start.
func newSecretValue() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.~"
	b := make([]byte, 40)
	buf := make([]byte, 40)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(buf[i])%len(alphabet)]
	}
	b[3] = '8'
	b[4] = 'Q'
	b[5] = '~'
	return string(b)
}

func newCertCred(name string) (*certCred, error) {
	now := time.Now()
	return newCertCredValid(name, now.Add(-time.Hour), now.Add(365*24*time.Hour))
}

// newCertCredValid makes a self-signed certificate with a new key pair,
// valid from notBefore to notAfter, as Key Vault's "Self" issuer does for
// each version of a certificate.
func newCertCredValid(name string, notBefore, notAfter time.Time) (*certCred, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	s1 := sha1.Sum(der)
	s256 := sha256.Sum256(der)
	return &certCred{cert: cert, key: key,
		x5t:    base64.RawURLEncoding.EncodeToString(s1[:]),
		x5t256: base64.RawURLEncoding.EncodeToString(s256[:]),
	}, nil
}

// pem returns the certificate and its private key as one PEM document, the
// form Key Vault returns for a PEM certificate read as a secret.
func (c *certCred) pem() string {
	keyDER, _ := x509.MarshalPKCS8PrivateKey(c.key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}))
}

// addCert registers a certificate on an app beside the others, as
// `az ad app credential reset --cert @file --append` does; false when it
// already was.
func (d *directory) addCert(clientID string, c *certCred) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	app := d.apps[clientID]
	for _, have := range app.certs {
		if have.x5t256 == c.x5t256 {
			return false
		}
	}
	app.certs = append(app.certs, c)
	return true
}

// removeCert removes the certificate with this SHA-256 thumbprint from the
// app's registration (`az ad app credential delete --cert`); false when it
// was not there.
func (d *directory) removeCert(clientID, x5t256 string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	app := d.apps[clientID]
	for i, have := range app.certs {
		if have.x5t256 == x5t256 {
			app.certs = append(app.certs[:i:i], app.certs[i+1:]...)
			return true
		}
	}
	return false
}
