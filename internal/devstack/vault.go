package devstack

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// identityHandler is the App Service managed-identity endpoint
// (IDENTITY_ENDPOINT + X-IDENTITY-HEADER, api-version 2019-08-01). Like the
// real one it is plain HTTP on loopback.
func (s *Stack) identityHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /msi/token", func(w http.ResponseWriter, r *http.Request) {
		if s.faults().TokenOutage {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"statusCode": 503, "message": "The managed identity endpoint is temporarily unavailable."})
			return
		}
		if r.Header.Get("X-IDENTITY-HEADER") != s.identityHeader {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"statusCode": 401, "message": "Missing or invalid X-IDENTITY-HEADER."})
			return
		}
		q := r.URL.Query()
		if q.Get("api-version") != "2019-08-01" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "Unsupported api-version; use 2019-08-01."})
			return
		}
		mi := s.dir.identity
		switch id := q.Get("client_id"); {
		case id == "":
			// No client_id: the system-assigned identity.
			mi = ManagedIdentity{ClientID: SystemIdentityClientID, ObjectID: SystemIdentityObjectID, TenantID: mi.TenantID}
		case !strings.EqualFold(id, mi.ClientID):
			writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "No managed identity with client_id " + id + " is assigned to this app."})
			return
		}
		res, ok := s.knownResource(q.Get("resource"))
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "AADSTS500011: The resource principal named " + q.Get("resource") + " was not found in the tenant."})
			return
		}
		now := time.Now()
		claims := jwt.MapClaims{
			"aud": res, "tid": mi.TenantID, "oid": mi.ObjectID, "sub": mi.ObjectID,
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
			"idtyp": "app", "uti": uuid.NewString(), "xms_mirid": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/devstack/providers/Microsoft.Web/sites/defender-functions",
		}
		if res == TokenExchangeAudience {
			claims["iss"] = s.issuerV2(mi.TenantID)
			claims["azp"], claims["ver"] = mi.ClientID, "2.0"
		} else {
			claims["iss"] = s.issuerV1(mi.TenantID)
			claims["appid"], claims["ver"] = mi.ClientID, "1.0"
		}
		tok, err := s.sign(claims)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"access_token": tok, "expires_on": fmt.Sprint(now.Add(24 * time.Hour).Unix()),
			"resource": q.Get("resource"), "token_type": "Bearer", "client_id": mi.ClientID,
		})
	})
	return s.counted("msi", mux)
}

type secretVersion struct {
	version     string
	value       string
	contentType string
	created     time.Time
	enabled     bool
	// A certificate's secret: Key Vault manages it (managed: true) and dates
	// it with the certificate (nbf, exp). cert is what RenewCertificate made.
	cert *certCred
}

// vault is Key Vault's secret store.
type vault struct {
	mu      sync.RWMutex
	secrets map[string][]*secretVersion // newest last
}

func (v *vault) put(name, value, contentType string) *secretVersion {
	return v.add(name, &secretVersion{value: value, contentType: contentType})
}

// putCertificate stores a new version of a certificate's secret: the
// certificate and its key as PEM (a policy's application/x-pem-file).
func (v *vault) putCertificate(name string, c *certCred) *secretVersion {
	return v.add(name, &secretVersion{value: c.pem(), contentType: "application/x-pem-file", cert: c})
}

func (v *vault) add(name string, sv *secretVersion) *secretVersion {
	v.mu.Lock()
	defer v.mu.Unlock()
	sv.version, sv.enabled = strings.ReplaceAll(uuid.NewString(), "-", ""), true
	// Key Vault dates versions to the second; a test makes several in one,
	// and "the newest" must still mean one version.
	sv.created = time.Now().Truncate(time.Second)
	if vs := v.secrets[name]; len(vs) > 0 && !sv.created.After(vs[len(vs)-1].created) {
		sv.created = vs[len(vs)-1].created.Add(time.Second)
	}
	v.secrets[name] = append(v.secrets[name], sv)
	return sv
}

// get is a version, or without one the current (newest) version, disabled
// or not: Key Vault refuses to read a disabled one rather than serve an
// older one.
func (v *vault) get(name, version string) *secretVersion {
	v.mu.RLock()
	defer v.mu.RUnlock()
	vs := v.secrets[name]
	if version == "" {
		if len(vs) == 0 {
			return nil
		}
		return vs[len(vs)-1]
	}
	for _, sv := range vs {
		if sv.version == version {
			return sv
		}
	}
	return nil
}

// versions are a secret's versions, oldest first.
func (v *vault) versions(name string) []*secretVersion {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Clone(v.secrets[name])
}

func (v *vault) setEnabled(name, version string, enabled bool) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, sv := range v.secrets[name] {
		if sv.version == version {
			sv.enabled = enabled
			return true
		}
	}
	return false
}

func (v *vault) names() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var n []string
	for k := range v.secrets {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// attributes are a version's attributes as Key Vault serves them.
func (sv *secretVersion) attributes() map[string]any {
	a := map[string]any{
		"enabled": sv.enabled, "created": sv.created.Unix(), "updated": sv.created.Unix(),
		"recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90,
	}
	if sv.cert != nil {
		a["nbf"], a["exp"] = sv.cert.cert.NotBefore.Unix(), sv.cert.cert.NotAfter.Unix()
	}
	return a
}

// versionsPage is how many versions Key Vault lists per page (its maxresults
// default and limit).
const versionsPage = 25

// vaultHandler is Key Vault's data plane for secrets, with the real challenge flow.
func (s *Stack) vaultHandler() http.Handler {
	mux := http.NewServeMux()
	get := func(w http.ResponseWriter, r *http.Request) {
		if !s.vaultAllows(w, r, "getSecret/action") {
			return
		}
		name := r.PathValue("name")
		sv := s.vault.get(name, r.PathValue("version"))
		if sv == nil {
			what := name
			if v := r.PathValue("version"); v != "" {
				what = name + "/" + v
			}
			kvError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", what))
			return
		}
		if !sv.enabled {
			writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{
				"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.", "innererror": map[string]any{"code": "SecretDisabled"}}})
			return
		}
		body := map[string]any{
			"value":      sv.value,
			"id":         s.KeyVaultURL + "/secrets/" + name + "/" + sv.version,
			"attributes": sv.attributes(),
			"tags":       map[string]string{},
		}
		if sv.contentType != "" {
			body["contentType"] = sv.contentType
		}
		if sv.cert != nil {
			body["managed"], body["kid"] = true, s.KeyVaultURL+"/keys/"+name+"/"+sv.version
		}
		writeJSON(w, http.StatusOK, body)
	}
	mux.HandleFunc("GET /secrets/{name}", get)
	mux.HandleFunc("GET /secrets/{name}/{$}", get)
	mux.HandleFunc("GET /secrets/{name}/{version}", get)
	mux.HandleFunc("GET /secrets/{name}/versions", s.secretVersions)
	return s.counted("keyvault", mux)
}

// secretVersions lists a secret's versions, values left out, a page at a
// time with the nextLink the SDK's pager follows.
func (s *Stack) secretVersions(w http.ResponseWriter, r *http.Request) {
	if !s.vaultAllows(w, r, "readMetadata/action") {
		return
	}
	name := r.PathValue("name")
	vs := s.vault.versions(name)
	if len(vs) == 0 {
		kvError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", name))
		return
	}
	size := versionsPage
	if n, err := strconv.Atoi(r.URL.Query().Get("maxresults")); err == nil && n > 0 && n < size {
		size = n
	}
	from, _ := strconv.Atoi(r.URL.Query().Get("$skiptoken"))
	from = min(max(from, 0), len(vs))
	to := min(from+size, len(vs))
	items := []map[string]any{}
	for _, sv := range vs[from:to] {
		item := map[string]any{"id": s.KeyVaultURL + "/secrets/" + name + "/" + sv.version, "attributes": sv.attributes(), "tags": map[string]string{}}
		if sv.contentType != "" {
			item["contentType"] = sv.contentType
		}
		if sv.cert != nil {
			item["managed"] = true
		}
		items = append(items, item)
	}
	var next any
	if to < len(vs) {
		next = fmt.Sprintf("%s/secrets/%s/versions?api-version=%s&maxresults=%d&$skiptoken=%d", s.KeyVaultURL, name, url.QueryEscape(r.URL.Query().Get("api-version")), size, to)
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": items, "nextLink": next})
}

// vaultAllows answers what every data-plane call meets first: an outage,
// the api-version, the token (the challenge), and the caller's role for
// action (Key Vault Secrets User has getSecret and readMetadata).
func (s *Stack) vaultAllows(w http.ResponseWriter, r *http.Request, action string) bool {
	if s.faults().VaultOutage {
		kvError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "The service is temporarily unavailable. Please retry.")
		return false
	}
	if r.URL.Query().Get("api-version") == "" {
		kvError(w, http.StatusBadRequest, "BadParameter", "The request URI contains an invalid api-version. An api-version is required.")
		return false
	}
	claims, ok := s.vaultAuth(w, r)
	if !ok {
		return false
	}
	if s.mayReadVault(claims) {
		return true
	}
	appid, _ := claims["appid"].(string)
	if appid == "" {
		appid, _ = claims["azp"].(string)
	}
	oid, _ := claims["oid"].(string)
	iss, _ := claims["iss"].(string)
	writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{
		"code": "Forbidden",
		"message": fmt.Sprintf("Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=%s;oid=%s;iss=%s\r\nAction: 'Microsoft.KeyVault/vaults/secrets/%s'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/devstack/providers/microsoft.keyvault/vaults/devstack/secrets/%s'\r\nAssignment: (not found)\r\nVault: devstack;location=local\r\n",
			appid, oid, iss, action, strings.ToLower(r.PathValue("name"))),
		"innererror": map[string]any{"code": "ForbiddenByRbac"},
	}})
	return false
}

func kvError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

// vaultAuth implements the challenge: no token → 401 with WWW-Authenticate
// naming the authority and the vault's resource; a bad token → 401.
func (s *Stack) vaultAuth(w http.ResponseWriter, r *http.Request) (jwt.MapClaims, bool) {
	challenge := fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, s.EntraURL, DefaultTenantID, s.vaultResource)
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		w.Header().Set("WWW-Authenticate", challenge)
		kvError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return nil, false
	}
	claims, err := s.verify(strings.TrimPrefix(h, "Bearer "))
	if err != nil {
		w.Header().Set("WWW-Authenticate", challenge)
		kvError(w, http.StatusUnauthorized, "Unauthorized", "AKV10032: Invalid token: "+err.Error())
		return nil, false
	}
	aud, _ := claims.GetAudience()
	if len(aud) != 1 || aud[0] != s.vaultResource {
		w.Header().Set("WWW-Authenticate", challenge)
		kvError(w, http.StatusUnauthorized, "Unauthorized", fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", s.vaultResource, strings.Join(aud, ",")))
		return nil, false
	}
	if tid, _ := claims["tid"].(string); tid != DefaultTenantID {
		w.Header().Set("WWW-Authenticate", challenge)
		kvError(w, http.StatusUnauthorized, "Unauthorized", "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/"+DefaultTenantID+"/, found "+tid+".")
		return nil, false
	}
	return claims, true
}

// mayReadVault is the "Key Vault Secrets User" role assignment check.
func (s *Stack) mayReadVault(claims jwt.MapClaims) bool {
	oid, _ := claims["oid"].(string)
	if oid == s.dir.identity.ObjectID || oid == SystemIdentityObjectID {
		return !s.identityDenied.Load()
	}
	appid, _ := claims["appid"].(string)
	if appid == "" {
		appid, _ = claims["azp"].(string)
	}
	t := s.dir.tenant(DefaultTenantID)
	g, ok := s.dir.grant(t, appid)
	return ok && g.KeyVaultReader
}

// CertificateRenewal is a new version of the default app's certificate in
// Key Vault (CertificateSecretName), as the certificate's policy makes one
// on renewal or `az keyvault certificate create` does: a new key pair and
// certificate, with the same subject, current at once.
type CertificateRenewal struct {
	// Register uploads it to the app registration too (`az ad app
	// credential reset --cert @file --append`). Key Vault never does:
	// without it Entra ID refuses the new version with AADSTS700027.
	Register bool
	// NotAfter ends its validity; zero is a year from now (the default
	// policy's 12 months). A past one makes an expired certificate.
	NotAfter time.Time
}

// RenewCertificate stores a new version of the certificate's secret and
// returns the version.
func (s *Stack) RenewCertificate(r CertificateRenewal) string {
	now := time.Now()
	notAfter := r.NotAfter
	if notAfter.IsZero() {
		notAfter = now.AddDate(1, 0, 0)
	}
	notBefore := now.Add(-time.Hour)
	if notAfter.Before(now) {
		notBefore = notAfter.Add(-365 * 24 * time.Hour)
	}
	c, err := newCertCredValid(s.dir.apps[DefaultClientID].Name, notBefore, notAfter)
	if err != nil {
		panic(err) // the system's randomness failed
	}
	s.rememberKey(c)
	sv := s.vault.putCertificate(CertificateSecretName, c)
	if r.Register {
		s.dir.addCert(DefaultClientID, c)
	}
	return sv.version
}

// RegisterCertificate uploads a version of the certificate's secret to the
// default app, beside its other certificates.
func (s *Stack) RegisterCertificate(version string) error {
	c, err := s.certificateVersion(version)
	if err != nil {
		return err
	}
	s.dir.addCert(DefaultClientID, c)
	return nil
}

// UnregisterCertificate removes a version's certificate from the default
// app (`az ad app credential delete --cert`): Entra ID refuses it from then on.
func (s *Stack) UnregisterCertificate(version string) error {
	c, err := s.certificateVersion(version)
	if err != nil {
		return err
	}
	if !s.dir.removeCert(DefaultClientID, c.x5t256) {
		return fmt.Errorf("version %s of %s is not registered on the app", version, CertificateSecretName)
	}
	return nil
}

// certificateVersion is the certificate a version of the certificate's
// secret holds: one RenewCertificate made, or the seeded one, the app's own.
func (s *Stack) certificateVersion(version string) (*certCred, error) {
	sv := s.vault.get(CertificateSecretName, version)
	if sv == nil {
		return nil, fmt.Errorf("%s has no version %q", CertificateSecretName, version)
	}
	if sv.cert != nil {
		return sv.cert, nil
	}
	s.dir.mu.RLock()
	defer s.dir.mu.RUnlock()
	for _, c := range s.dir.apps[DefaultClientID].certs {
		if c.pem() == sv.value {
			return c, nil
		}
	}
	return nil, fmt.Errorf("version %s of %s holds no certificate the devstack made", version, CertificateSecretName)
}

// SecretVersions are a secret's versions, oldest first.
func (s *Stack) SecretVersions(name string) []string {
	var out []string
	for _, sv := range s.vault.versions(name) {
		out = append(out, sv.version)
	}
	return out
}

// SetSecretVersionEnabled enables or disables one version of a secret (`az
// keyvault secret set-attributes --enabled false`): a disabled version
// cannot be read.
func (s *Stack) SetSecretVersionEnabled(name, version string, enabled bool) error {
	if !s.vault.setEnabled(name, version, enabled) {
		return fmt.Errorf("%s has no version %q", name, version)
	}
	return nil
}

// rememberKey adds the base64 lines of a certificate's private key to what
// Issued returns: a renewed certificate lives in the vault whether or not
// the app registration has it.
func (s *Stack) rememberKey(c *certCred) {
	p := c.pem()
	key := p[:strings.Index(p, "-----END PRIVATE KEY")]
	for _, line := range strings.Split(key, "\n") {
		if len(line) == 64 && !strings.HasPrefix(line, "-----") {
			s.remember(line)
		}
	}
}

// CertificateVersionPEM is a version of the certificate's secret: the
// certificate and its private key, as PEM. Tests use it; it must never be
// printed.
func (s *Stack) CertificateVersionPEM(version string) string {
	if sv := s.vault.get(CertificateSecretName, version); sv != nil {
		return sv.value
	}
	return ""
}
