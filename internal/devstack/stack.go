// Package devstack is an offline simulator of every cloud service Defender
// Functions talks to: Entra ID (token endpoints, OpenID metadata, the App
// Service managed-identity endpoint), Key Vault over TLS with the real
// challenge flow, the Microsoft Graph security API and the Defender XDR API
// over one changing incident store, and advanced hunting over generated
// tables. It enforces what the real services enforce (signatures, audiences,
// roles, $top limits, documented rate limits), answers with their error
// bodies, injects faults on demand and counts what it served.
//
// It exists so that the tests and `make run` exercise the product against
// the services as they behave, offline, with no tenant; nothing shipped
// links it (infra/pack's test checks each deployable's dependencies), and it
// lives under internal/ so that no other module can. Tests start it
// in-process with Start or New; `make devstack` runs it as a program.
package devstack

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Options configures a devstack. The zero value is a useful default.
type Options struct {
	// Seed makes the generated incidents and tables deterministic (default 1).
	Seed int64
	// Incidents is how many incidents the first tenant holds at start (default 300).
	Incidents int
	// ChangeEvery is how often the background changer updates incidents; zero
	// disables it (tests call Mutate instead).
	ChangeEvery time.Duration
	// TimeScale divides the rate-limit windows: 60 makes a "minute" last a second.
	TimeScale float64
	// Dir, when set, receives the CA certificate, devstack.env and local.settings.json.
	Dir string
	// Host is the loopback address to listen on (default 127.0.0.1).
	Host string
	// Ports fixes the listening ports (the command); zero values pick free ones.
	Ports Ports
	// Tenants replaces the default directory (contoso and the partner fabrikam).
	Tenants []Tenant
	// Apps replaces the default app registrations.
	Apps []App
	// DocumentedOrder makes incident listings behave as documented: newest
	// created first, $orderby on the last update honoured. By default they
	// behave as a live tenant was observed to: a stable order that is not
	// chronological, $orderby on the last update accepted and ignored
	// (research: defender-api.md §6.1a). createdDateTime is honoured in both.
	DocumentedOrder bool
	// Limits replaces the documented rate limits; an empty map disables them.
	Limits RateLimits
	// Faults starts the stack with faults already injected.
	Faults Faults
	// Logger receives one line per request; nil discards them.
	Logger *slog.Logger
	// Now is the clock used for token validation (default time.Now).
	Now func() time.Time
	// HuntingRows is how many events each hunting table holds (default 3000).
	HuntingRows int
	// IdentityClientID replaces the managed identity's client ID. The Azure
	// SDK caches managed-identity tokens process-wide by identity and
	// resource, so tests that start several devstacks give each its own.
	IdentityClientID string
	// Prerender encodes every incident at start, on all cores, in the shape
	// the product's export lists (Graph, alerts expanded, unknown enum
	// members preferred), instead of on first request. Encoding one takes
	// some 140 µs here, so without it a first listing pays the simulator's
	// JSON encoder, and a benchmark on one machine measures that instead of
	// the client. The command turns it on.
	Prerender bool
	// SIEM shapes the simulated Logs Ingestion API and HTTP Event Collector.
	SIEM SIEMOptions
}

// Ports are the listening ports of each service.
type Ports struct{ Entra, KeyVault, Graph, XDR, Identity, Control, SecretsManager, STS, SQS, Logs, HEC int }

// Faults are what the devstack breaks on purpose.
type Faults struct {
	// ErrorRate is the share of API requests answered 500, 503 or 504.
	ErrorRate float64 `json:"errorRate"`
	// ThrottleRate is the share of API requests answered 429 beyond the limiter.
	ThrottleRate float64 `json:"throttleRate"`
	// LatencyMs delays every API response.
	LatencyMs int `json:"latencyMs"`
	// TruncateRate is the share of successful API responses cut off mid-body.
	TruncateRate float64 `json:"truncateRate"`
	// ExpandFailAbove makes a Graph $expand=alerts page fail with 500 when one of
	// its incidents has more alerts than this (0 = never), as Graph does for large incidents.
	ExpandFailAbove int `json:"expandFailAbove"`
	// TokenOutage makes the token and managed-identity endpoints answer 503.
	TokenOutage bool `json:"tokenOutage"`
	// VaultOutage makes Key Vault answer 503.
	VaultOutage bool `json:"vaultOutage"`
	// SecretsManagerOutage makes AWS Secrets Manager answer 500 InternalServiceError.
	SecretsManagerOutage bool `json:"secretsManagerOutage"`
	// STSOutage makes AWS STS answer 503 ServiceUnavailable.
	STSOutage bool `json:"stsOutage"`
	// ForeignNextLink, when set (an origin such as https://evil.example),
	// makes every @odata.nextLink point there: a client must refuse it.
	ForeignNextLink string `json:"foreignNextLink"`
	// RejectOrderBy answers 400 to every $orderby, as the live service does
	// for fields it cannot sort by.
	RejectOrderBy bool `json:"rejectOrderBy"`
	// LagShare is the share of new incident versions that listings show only
	// LagMs after their lastUpdate (replication lag): until then they list
	// the version before, or nothing for a new incident. GET shows the new
	// one at once.
	LagShare float64 `json:"lagShare"`
	LagMs    int     `json:"lagMs"`
	// CountEchoesTop makes @odata.count the number of items in the page, as
	// some Graph endpoints were seen to answer (research: defender-api.md
	// §6.1a): a client must not take it for the filtered total.
	CountEchoesTop bool `json:"countEchoesTop"`
	// CreatedFilterIgnored makes $filter accept clauses on the creation time
	// and ignore them, as Graph accepts $orderby=lastUpdateDateTime and
	// ignores it: a client must check that a filter holds.
	CreatedFilterIgnored bool `json:"createdFilterIgnored"`
	// SinkThrottleRate is the share of SIEM requests answered 429 with
	// Retry-After (Logs Ingestion) or 503 "Server is busy" (HEC).
	SinkThrottleRate float64 `json:"sinkThrottleRate"`
	// SinkErrorRate is the share of SIEM requests answered 503.
	SinkErrorRate float64 `json:"sinkErrorRate"`
}

// Stack is a running devstack.
type Stack struct {
	opts Options
	ca   *authority

	// Service base URLs (no trailing slash).
	EntraURL, KeyVaultURL, GraphURL, XDRURL, ControlURL string
	// SecretsManagerURL and STSURL are AWS Secrets Manager's and STS's
	// regional endpoints (AWSSettings).
	SecretsManagerURL, STSURL string
	// SQSURL is Amazon SQS's endpoint; queues are SQSURL/<account>/<name>.
	SQSURL string
	// IdentityEndpoint is the value for IDENTITY_ENDPOINT.
	IdentityEndpoint string
	// LogsURL is a data collection endpoint's Logs Ingestion API; HECURL
	// a Splunk HTTP Event Collector (LogsStreamURL, HECEventURL).
	LogsURL, HECURL string

	identityHeader string
	vaultResource  string
	signKey        *rsa.PrivateKey
	kid            string
	dir            *directory
	vault          *vault
	secretsManager *secretsManager
	sqs            *sqs
	sts            *awsSTS
	siem           *siem
	stores         map[string]*store
	tables         map[string]*tables
	limiter        *limiter
	counters       *Counters
	fault          atomic.Pointer[Faults]
	faultRNG       *lockedRand
	identityDenied atomic.Bool
	ingestDenied   atomic.Bool

	mu      sync.Mutex
	jtis    map[string]bool
	issued  map[string]struct{} // every secret and token handed out, for leak audits
	servers []*http.Server
	stop    chan struct{}
	wg      sync.WaitGroup
	caFile  string
}

// New starts a devstack on loopback. Close stops it.
func New(opts Options) (*Stack, error) {
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Incidents == 0 {
		opts.Incidents = 300
	}
	if opts.TimeScale <= 0 {
		opts.TimeScale = 1
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Tenants == nil {
		opts.Tenants = defaultTenants()
	}
	if opts.Apps == nil {
		opts.Apps = defaultApps()
	}
	if opts.Limits == nil {
		opts.Limits = DocumentedLimits
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ca, err := newAuthority()
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	sts, err := newAWSSTS()
	if err != nil {
		return nil, err
	}
	s := &Stack{opts: opts, ca: ca, signKey: key, sts: sts, kid: randomHex(20), identityHeader: randomHex(16),
		jtis: map[string]bool{}, issued: map[string]struct{}{}, counters: newCounters(), stop: make(chan struct{}),
		vault: &vault{secrets: map[string][]*secretVersion{}}, secretsManager: newSecretsManager(), sqs: newSQS(), siem: newSIEM(opts.SIEM), stores: map[string]*store{}, tables: map[string]*tables{},
		faultRNG: newLockedRand(opts.Seed)}
	s.remember(s.secretsManager.creds.SecretAccessKey)
	s.remember(s.secretsManager.creds.SessionToken)
	f := opts.Faults
	s.fault.Store(&f)
	s.limiter = newLimiter(opts.Limits, opts.TimeScale)
	if opts.IdentityClientID == "" {
		opts.IdentityClientID = IdentityClientID
	}
	s.dir, err = newDirectory(opts.Tenants, opts.Apps, ManagedIdentity{ClientID: opts.IdentityClientID, ObjectID: IdentityObjectID, TenantID: opts.Tenants[0].ID})
	if err != nil {
		return nil, err
	}

	// Listen first: the URLs are part of what the handlers answer.
	type svc struct {
		port    int
		tls     bool
		url     *string
		handler func() http.Handler
	}
	services := []svc{
		{opts.Ports.Entra, true, &s.EntraURL, s.entraHandler},
		{opts.Ports.KeyVault, true, &s.KeyVaultURL, s.vaultHandler},
		{opts.Ports.Graph, true, &s.GraphURL, s.graphHandler},
		{opts.Ports.XDR, true, &s.XDRURL, s.xdrHandler},
		{opts.Ports.Identity, false, &s.IdentityEndpoint, s.identityHandler},
		{opts.Ports.Control, false, &s.ControlURL, s.controlHandler},
		{opts.Ports.SecretsManager, true, &s.SecretsManagerURL, s.secretsManagerHandler},
		{opts.Ports.STS, true, &s.STSURL, s.stsHandler},
		{opts.Ports.SQS, true, &s.SQSURL, s.sqsHandler},
		{opts.Ports.Logs, true, &s.LogsURL, s.logsHandler},
		{opts.Ports.HEC, true, &s.HECURL, s.hecHandler},
	}
	listeners := make([]net.Listener, len(services))
	for i, sv := range services {
		ln, err := net.Listen("tcp", net.JoinHostPort(opts.Host, fmt.Sprint(sv.port)))
		if err != nil {
			for _, l := range listeners[:i] {
				l.Close()
			}
			return nil, fmt.Errorf("devstack: listen: %w", err)
		}
		scheme := "http"
		if sv.tls {
			scheme = "https"
			ln = tls.NewListener(ln, ca.serverConfig())
		}
		listeners[i] = ln
		*sv.url = scheme + "://" + ln.Addr().String()
	}
	s.IdentityEndpoint += "/msi/token"
	// Key Vault's challenge names a resource whose host is a dot-suffix of the
	// vault's host, as https://vault.azure.net is of <name>.vault.azure.net;
	// for a loopback IP that is the IP without its first label. This keeps the
	// SDK's challenge-resource verification on.
	host := strings.TrimPrefix(s.KeyVaultURL, "https://")
	s.vaultResource = "https://" + host[strings.Index(host, ".")+1:]

	anchor := time.Now().UTC()
	firstID := int64(1000)
	for i, t := range opts.Tenants {
		n := t.Incidents
		if n == 0 {
			n = opts.Incidents
			if i > 0 {
				n = max(opts.Incidents/10, 1)
			}
		}
		s.stores[t.ID] = newStore(opts.Seed, t.ID, t.Domain, n, firstID, anchor)
		s.stores[t.ID].lag = s.replicationLag
		if opts.Prerender {
			s.stores[t.ID].prerender(formGraphPreferExpand)
		}
		s.tables[t.ID] = newTables(opts.Seed, t.ID, t.Domain, anchor, opts.HuntingRows)
		firstID += 1_000_000
	}
	s.seedVault()
	// The Function App's identity may federate to the default app (secretless mode).
	for _, id := range []string{DefaultClientID, VaultReaderClientID} {
		if app := s.dir.apps[id]; app != nil {
			app.federated = append(app.federated, federatedCred{issuer: s.issuerV2(s.dir.identity.TenantID), subject: IdentityObjectID, audience: TokenExchangeAudience},
				// The Lambda's execution role too (aws-federation mode).
				federatedCred{issuer: s.AWSIssuer(), subject: AWSRoleARN, audience: TokenExchangeAudience})
		}
	}

	for i, sv := range services {
		srv := &http.Server{Handler: s.logged(sv.handler()), ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
		srv.ErrorLog = slogErrorLog()
		s.servers = append(s.servers, srv)
		ln := listeners[i]
		go srv.Serve(ln)
	}
	if opts.Dir != "" {
		if err := s.writeFiles(opts.Dir); err != nil {
			s.Close()
			return nil, err
		}
	}
	if opts.ChangeEvery > 0 {
		s.wg.Add(1)
		go s.changer(opts.ChangeEvery)
	}
	return s, nil
}

func (s *Stack) seedVault() {
	app := s.dir.apps[DefaultClientID]
	if app == nil {
		return
	}
	s.vault.put(DefaultSecretName, app.secrets[0].value, "")
	s.vault.put(CertificateSecretName, app.certs[0].pem(), "application/x-pem-file")
	s.remember(app.secrets[0].value)
	s.vault.put(HECTokenSecret, s.siem.hecToken, "")
	s.remember(s.siem.hecToken)
	for _, a := range s.dir.apps {
		for _, c := range a.secrets {
			s.remember(c.value)
		}
	}
}

// Close stops every service and the changer.
func (s *Stack) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	s.wg.Wait()
	s.recordIssued()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Stack) changer(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Mutate(1 + s.faultRNG.IntN(4))
		}
	}
}

// Mutate changes up to n incidents of the default tenant in one batch sharing
// one lastUpdate timestamp, and returns their IDs.
func (s *Stack) Mutate(n int) []int64 {
	return s.stores[s.opts.Tenants[0].ID].mutate(time.Now(), n)
}

// MutateTenant is Mutate for a given tenant.
func (s *Stack) MutateTenant(tenantID string, n int) []int64 {
	st := s.stores[tenantID]
	if st == nil {
		return nil
	}
	return st.mutate(time.Now(), n)
}

// Touch updates one incident (a tag is added), giving it a new lastUpdate.
func (s *Stack) Touch(tenantID string, id int64) bool {
	st := s.stores[tenantID]
	if st == nil {
		return false
	}
	return st.update(id, time.Now(), func(in *incident) { in.Tags = append(in.Tags, "touched") }) != nil
}

// IncidentCount returns how many incidents a tenant holds now.
func (s *Stack) IncidentCount(tenantID string) int {
	if st := s.stores[tenantID]; st != nil {
		return st.len()
	}
	return 0
}

// IncidentVersion is what the devstack holds for an incident now.
type IncidentVersion struct {
	ID         int64
	LastUpdate time.Time
}

// Incidents lists every incident of a tenant in its latest version (listed
// or still pending under the replication-lag fault), oldest update first.
func (s *Stack) Incidents(tenantID string) []IncidentVersion {
	st := s.stores[tenantID]
	if st == nil {
		return nil
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make([]IncidentVersion, 0, len(st.byID))
	for _, in := range st.byID {
		out = append(out, IncidentVersion{in.ID, in.LastUpdate})
	}
	slices.SortFunc(out, func(a, b IncidentVersion) int {
		if c := a.LastUpdate.Compare(b.LastUpdate); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// History returns every version (incident ID → last-update times) a tenant
// has held since the start, in order.
func (s *Stack) History(tenantID string) map[int64][]time.Time {
	st := s.stores[tenantID]
	if st == nil {
		return nil
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make(map[int64][]time.Time, len(st.history))
	for id, v := range st.history {
		out[id] = append([]time.Time(nil), v...)
	}
	return out
}

// replicationLag draws how late a new version reaches the listings.
func (s *Stack) replicationLag() time.Duration {
	f := s.faults()
	if f.LagShare > 0 && f.LagMs > 0 && s.faultRNG.Float64() < f.LagShare {
		return time.Duration(f.LagMs) * time.Millisecond
	}
	return 0
}

// SetFaults replaces the injected faults.
func (s *Stack) SetFaults(f Faults) { s.fault.Store(&f) }

func (s *Stack) faults() Faults { return *s.fault.Load() }

// DenyIdentityVaultAccess removes (or restores) the managed identity's
// "Key Vault Secrets User" role assignment.
func (s *Stack) DenyIdentityVaultAccess(deny bool) { s.identityDenied.Store(deny) }

// DenyIdentityIngest removes (or restores) the managed identities'
// "Monitoring Metrics Publisher" role on the data collection rule: Logs
// Ingestion answers them 403.
func (s *Stack) DenyIdentityIngest(deny bool) { s.ingestDenied.Store(deny) }

// Counters returns the request counters.
func (s *Stack) Counters() *Counters { return s.counters }

// CACertPEM is the devstack CA certificate, to trust its TLS services.
func (s *Stack) CACertPEM() []byte { return s.ca.certPEM }

// CAFile is the path of the CA certificate written to Options.Dir ("" without one).
func (s *Stack) CAFile() string { return s.caFile }

// TLSConfig trusts the devstack CA and nothing else.
func (s *Stack) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.ca.pool(), MinVersion: tls.VersionTLS12}
}

// Transport is an HTTP transport that trusts the devstack CA.
func (s *Stack) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = s.TLSConfig()
	t.MaxIdleConnsPerHost = 64
	return t
}

// HTTPClient is a client that trusts the devstack CA.
func (s *Stack) HTTPClient() *http.Client {
	return &http.Client{Transport: s.Transport(), Timeout: 60 * time.Second}
}

// IdentityHeader is the value for IDENTITY_HEADER.
func (s *Stack) IdentityHeader() string { return s.identityHeader }

// VaultResource is the audience of the vault's tokens.
func (s *Stack) VaultResource() string { return s.vaultResource }

// ClientSecret returns the current client secret of an app. Tests use it for
// env-secret mode; it must never be printed.
func (s *Stack) ClientSecret(clientID string) string {
	s.dir.mu.RLock()
	defer s.dir.mu.RUnlock()
	app := s.dir.apps[clientID]
	if app == nil {
		return ""
	}
	for i := len(app.secrets) - 1; i >= 0; i-- {
		if c := app.secrets[i]; !c.revoked && !c.expired {
			return c.value
		}
	}
	return ""
}

// ClientCertificatePEM returns an app's certificate and private key as PEM.
func (s *Stack) ClientCertificatePEM(clientID string) string {
	s.dir.mu.RLock()
	defer s.dir.mu.RUnlock()
	if app := s.dir.apps[clientID]; app != nil && len(app.certs) > 0 {
		return app.certs[len(app.certs)-1].pem()
	}
	return ""
}

// Rotation says what happens to the old secret when a new one is made.
type Rotation int

const (
	// KeepOld leaves the old secret valid (an overlap window).
	KeepOld Rotation = iota
	// RevokeOld removes the old secret: it then fails with AADSTS7000215.
	RevokeOld
	// ExpireOld lets the old secret expire: it then fails with AADSTS7000222.
	ExpireOld
)

// RotateSecret adds a new client secret to the default app, stores it as a
// new version of the vault secret and treats the old one as r says.
func (s *Stack) RotateSecret(r Rotation) (version string) {
	s.dir.mu.Lock()
	app := s.dir.apps[DefaultClientID]
	for _, c := range app.secrets {
		switch r {
		case RevokeOld:
			c.revoked = true
		case ExpireOld:
			c.expired = true
		}
	}
	nu := &secretCred{value: newSecretValue()}
	app.secrets = append(app.secrets, nu)
	s.dir.mu.Unlock()
	s.remember(nu.value)
	return s.vault.put(DefaultSecretName, nu.value, "").version
}

// PutSecret stores a new version of a vault secret.
func (s *Stack) PutSecret(name, value string) string {
	s.remember(value)
	return s.vault.put(name, value, "").version
}

// IssueSecret is a new random value the secrets audit looks for, for a
// test that puts a secret where a user might (a SAS in a URL, a password in
// a URL's user info, a collector's key in a header).
func (s *Stack) IssueSecret() string {
	v := strings.ReplaceAll(uuid.NewString(), "-", "")
	s.remember(v)
	return v
}

func (s *Stack) remember(secret string) {
	s.mu.Lock()
	s.issued[secret] = struct{}{}
	s.mu.Unlock()
}

// Issued returns every secret, certificate key and token the devstack has
// handed out, so a test can prove none of them reached a log.
func (s *Stack) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.issued)+2)
	for k := range s.issued {
		out = append(out, k)
	}
	s.dir.mu.RLock()
	for _, a := range s.dir.apps {
		for _, c := range a.certs {
			p := c.pem()
			// The key's base64 body lines, each long enough to be unique.
			for _, line := range strings.Split(p, "\n") {
				if len(line) == 64 && !strings.HasPrefix(line, "-----") && strings.Contains(p[:strings.Index(p, "-----END PRIVATE KEY")], line) {
					out = append(out, line)
				}
			}
		}
	}
	s.dir.mu.RUnlock()
	sort.Strings(out)
	return out
}

// Settings are the app settings that point Defender Functions at this devstack.
func (s *Stack) Settings() map[string]string {
	m := map[string]string{
		"DEFENDER_API":           "graph",
		"DEFENDER_TENANT_ID":     s.opts.Tenants[0].ID,
		"DEFENDER_CLIENT_ID":     DefaultClientID,
		"DEFENDER_CREDENTIAL":    "keyvault-secret",
		"KEY_VAULT_URL":          s.KeyVaultURL + "/",
		"DEFENDER_SECRET_NAME":   DefaultSecretName,
		"AZURE_AUTHORITY_HOST":   s.EntraURL,
		"DEFENDER_TOKEN_VERSION": "v2",
		"DEFENDER_API_URL":       s.GraphURL,
		"IDENTITY_ENDPOINT":      s.IdentityEndpoint,
		"IDENTITY_HEADER":        s.identityHeader,
		"DEVSTACK_GRAPH_URL":     s.GraphURL,
		"DEVSTACK_XDR_URL":       s.XDRURL,
		"DEVSTACK_CONTROL_URL":   s.ControlURL,
		// To export into a simulated SIEM, EXPORT_SINK takes one of these.
		"DEVSTACK_LOGS_SINK":         s.LogsStreamURL(),
		"DEVSTACK_HEC_SINK":          s.HECEventURL(),
		"EXPORT_SPLUNK_TOKEN_SECRET": HECTokenSecret,
	}
	if s.caFile != "" {
		m["SSL_CERT_FILE"] = s.caFile
	}
	if s.opts.Dir != "" {
		abs, _ := filepath.Abs(s.opts.Dir)
		m["EXPORT_SINK"] = "file://" + filepath.Join(abs, "export")
		m["STATE_STORE"] = "file://" + filepath.Join(abs, "state")
	}
	return m
}

func (s *Stack) writeFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	s.caFile = filepath.Join(abs, "devstack-ca.pem")
	if err := os.WriteFile(s.caFile, s.ca.certPEM, 0o644); err != nil {
		return err
	}
	settings := s.Settings()
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by the devstack at start: the settings that point Defender Functions at it.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, settings[k])
	}
	// Whole or not at all: a supervisor (devstack.StartProcess) reads the
	// settings as soon as the file appears.
	tmp := filepath.Join(abs, ".devstack.env.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(abs, "devstack.env")); err != nil {
		return err
	}
	values := map[string]string{"FUNCTIONS_WORKER_RUNTIME": "custom", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
	for k, v := range settings {
		values[k] = v
	}
	ls, _ := json.MarshalIndent(map[string]any{"IsEncrypted": false, "Values": values}, "", "  ")
	return os.WriteFile(filepath.Join(abs, "local.settings.json"), append(ls, '\n'), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func (s *Stack) now() time.Time { return s.opts.Now() }
