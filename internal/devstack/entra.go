package devstack

import (
	"cmp"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// tokenLifetime is what Entra ID gives client-credential tokens (about an hour).
const tokenLifetime = 3599 * time.Second

// entraHandler serves the token endpoints, OpenID metadata and JWKS.
func (s *Stack) entraHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) { s.token(w, r, 2) })
	mux.HandleFunc("POST /{tenant}/oauth2/token", func(w http.ResponseWriter, r *http.Request) { s.token(w, r, 1) })
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", s.openidConfig)
	mux.HandleFunc("GET /{tenant}/.well-known/openid-configuration", s.openidConfig)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", s.jwks)
	mux.HandleFunc("GET /{tenant}/discovery/keys", s.jwks)
	mux.HandleFunc("GET /common/discovery/instance", s.instanceDiscovery)
	mux.HandleFunc("GET /{tenant}/adminconsent", s.adminConsent)
	mux.HandleFunc("GET /{tenant}/v2.0/adminconsent", s.adminConsent)
	mux.HandleFunc("GET "+ConsentRedirectPath, s.consented)
	return s.counted("entra", mux)
}

func (s *Stack) issuerV2(tid string) string { return s.EntraURL + "/" + tid + "/v2.0" }
func (s *Stack) issuerV1(tid string) string { return s.EntraURL + "/" + tid + "/" }

func (s *Stack) openidConfig(w http.ResponseWriter, r *http.Request) {
	t := s.dir.tenant(r.PathValue("tenant"))
	if t == nil {
		s.aadError(w, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", r.PathValue("tenant")))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.issuerV2(t.ID),
		"authorization_endpoint":                s.EntraURL + "/" + t.ID + "/oauth2/v2.0/authorize",
		"token_endpoint":                        s.EntraURL + "/" + t.ID + "/oauth2/v2.0/token",
		"jwks_uri":                              s.EntraURL + "/" + t.ID + "/discovery/v2.0/keys",
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
	})
}

// instanceDiscovery answers MSAL's discovery call for the devstack host, so a
// client that does not disable instance discovery still works offline.
func (s *Stack) instanceDiscovery(w http.ResponseWriter, r *http.Request) {
	host := strings.TrimPrefix(s.EntraURL, "https://")
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": s.EntraURL + "/common/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata":                  []map[string]any{{"preferred_network": host, "preferred_cache": host, "aliases": []string{host}}},
	})
}

func (s *Stack) jwks(w http.ResponseWriter, r *http.Request) {
	pub := s.signKey.PublicKey
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "use": "sig", "kid": s.kid, "x5t": s.kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

// aadError writes Entra ID's error body: the shape, status and AADSTS text of the real service.
func (s *Stack) aadError(w http.ResponseWriter, status int, code string, aadsts int, text string) {
	trace, corr := uuid.NewString(), uuid.NewString()
	ts := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", aadsts, text, trace, corr, ts),
		"error_codes":       []int{aadsts},
		"timestamp":         ts,
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         fmt.Sprintf("%s/error?code=%d", s.EntraURL, aadsts),
	})
}

// token is the client-credentials grant of the v1 (resource) and v2 (scope) endpoints.
func (s *Stack) token(w http.ResponseWriter, r *http.Request, ver int) {
	if s.faults().TokenOutage {
		s.aadError(w, http.StatusServiceUnavailable, "temporarily_unavailable", 50196, "The server is temporarily unavailable. Please try again later.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.aadError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	f := r.PostForm
	t := s.dir.tenant(r.PathValue("tenant"))
	if t == nil {
		s.aadError(w, http.StatusBadRequest, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", r.PathValue("tenant")))
		return
	}
	if gt := f.Get("grant_type"); gt != "client_credentials" {
		if gt == "" {
			s.aadError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		} else {
			s.aadError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+gt+"'.")
		}
		return
	}
	clientID, secret, basic := r.BasicAuth()
	if !basic {
		clientID, secret = f.Get("client_id"), f.Get("client_secret")
	}
	if clientID == "" {
		s.aadError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	grant, consented := s.dir.grant(t, clientID)
	s.dir.mu.RLock()
	app := s.dir.apps[clientID]
	s.dir.mu.RUnlock()
	if !consented || app == nil {
		s.aadError(w, http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", clientID, t.Domain))
		return
	}

	// Which resource: v2 takes scope=<resource>/.default, v1 takes resource=<resource>.
	var resource string
	if ver == 2 {
		var scopes []string
		for _, sc := range strings.Fields(f.Get("scope")) {
			switch sc {
			case "openid", "offline_access", "profile": // MSAL always adds these
			default:
				scopes = append(scopes, sc)
			}
		}
		if len(scopes) != 1 {
			s.aadError(w, http.StatusBadRequest, "invalid_scope", 70011, fmt.Sprintf("The provided value for the input parameter 'scope' isn't valid. The scope %s isn't valid.", f.Get("scope")))
			return
		}
		if !strings.HasSuffix(scopes[0], "/.default") {
			s.aadError(w, http.StatusBadRequest, "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scopes[0]))
			return
		}
		resource = strings.TrimSuffix(scopes[0], "/.default")
	} else {
		resource = f.Get("resource")
		if resource == "" {
			s.aadError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'resource'.")
			return
		}
	}
	resURI, ok := s.knownResource(resource)
	if !ok {
		s.aadError(w, http.StatusBadRequest, "invalid_resource", 500011, fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", resource, t.Domain))
		return
	}

	acr := "1"
	switch {
	case secret != "":
		if code, msg := s.checkSecret(app, secret); code != 0 {
			s.aadError(w, http.StatusUnauthorized, "invalid_client", code, msg)
			return
		}
	case f.Get("client_assertion") != "":
		if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			s.aadError(w, http.StatusBadRequest, "invalid_request", 700024, "Client assertion type is not 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.")
			return
		}
		code, msg := s.checkAssertion(app, t, ver, f.Get("client_assertion"))
		if code != 0 {
			s.aadError(w, http.StatusUnauthorized, "invalid_client", code, msg)
			return
		}
		acr = "2"
	default:
		s.aadError(w, http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}

	roles := grant.Roles[resURI]
	now := time.Now()
	claims := jwt.MapClaims{
		"aud": resURI, "tid": t.ID, "oid": servicePrincipalOID(t.ID, clientID), "sub": servicePrincipalOID(t.ID, clientID),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(tokenLifetime).Unix(),
		"idtyp": "app", "uti": uuid.NewString(), "rh": "0.devstack",
	}
	if len(roles) > 0 {
		claims["roles"] = roles
	}
	if ver == 2 {
		claims["iss"], claims["ver"], claims["azp"], claims["azpacr"] = s.issuerV2(t.ID), "2.0", clientID, acr
	} else {
		claims["iss"], claims["ver"], claims["appid"], claims["appidacr"] = s.issuerV1(t.ID), "1.0", clientID, acr
	}
	tok, err := s.sign(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	life := int(tokenLifetime / time.Second)
	if ver == 2 {
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": tok})
		return
	}
	// v1 answers numbers as strings.
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "expires_in": strconv.Itoa(life), "ext_expires_in": strconv.Itoa(life),
		"expires_on": strconv.FormatInt(now.Add(tokenLifetime).Unix(), 10), "not_before": strconv.FormatInt(now.Unix(), 10),
		"resource": resource, "access_token": tok,
	})
}

// knownResource maps a requested resource (URI or app ID) to the audience it issues.
func (s *Stack) knownResource(res string) (string, bool) {
	res = strings.TrimSuffix(res, "/")
	switch strings.ToLower(res) {
	case GraphResource, GraphAppID, "https://graph.microsoft.com/":
		return GraphResource, true
	case XDRResource, XDRAppID:
		return XDRResource, true
	case strings.ToLower(s.vaultResource):
		return s.vaultResource, true
	case strings.ToLower(TokenExchangeAudience):
		return TokenExchangeAudience, true
	case MonitorResource:
		return MonitorResource, true
	}
	return "", false
}

func servicePrincipalOID(tid, clientID string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(tid+"/"+clientID)).String()
}

func (s *Stack) checkSecret(app *appState, secret string) (int, string) {
	s.dir.mu.RLock()
	defer s.dir.mu.RUnlock()
	for _, c := range app.secrets {
		if c.value != secret {
			continue
		}
		switch {
		case c.revoked:
		case c.expired:
			return 7000222, fmt.Sprintf("The provided client secret keys for app '%s' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.", app.ClientID)
		default:
			return 0, ""
		}
	}
	return 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", app.ClientID)
}

// checkAssertion verifies a client_assertion: either a JWT the app signed
// with a registered certificate (RS256+x5t or PS256+x5t#S256), or a token of
// a federated identity (the managed identity's token for
// api://AzureADTokenExchange).
func (s *Stack) checkAssertion(app *appState, t *Tenant, ver int, assertion string) (int, string) {
	bad := func(why string) (int, string) {
		return 700027, "Client assertion failed signature validation. " + why
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256", "PS256", "ES384"}), jwt.WithExpirationRequired(), jwt.WithLeeway(30*time.Second), jwt.WithTimeFunc(s.now))
	claims := jwt.MapClaims{}
	var fed bool
	_, err := parser.ParseWithClaims(assertion, claims, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		if kid == s.kid {
			fed = true
			return &s.signKey.PublicKey, nil
		}
		if k := s.stsKey(kid); k != nil {
			fed = true
			return k, nil
		}
		s.dir.mu.RLock()
		defer s.dir.mu.RUnlock()
		// Entra ID accepts the thumbprint in base64url (the JOSE form) and in
		// standard base64 (what MSAL sends).
		x5t := normalizeThumbprint(tok.Header["x5t"])
		x5t256 := normalizeThumbprint(tok.Header["x5t#S256"])
		for _, c := range app.certs {
			if (x5t256 != "" && x5t256 == c.x5t256) || (x5t != "" && x5t == c.x5t) {
				return c.cert.PublicKey.(*rsa.PublicKey), nil
			}
		}
		return nil, unregistered{thumbprint: cmp.Or(x5t256, x5t)}
	})
	var nr unregistered
	if errors.As(err, &nr) {
		return 700027, nr.description(app.ClientID)
	}
	if errors.Is(err, jwt.ErrTokenExpired) || errors.Is(err, jwt.ErrTokenNotValidYet) {
		// AADSTS700024, as Entra ID words it (Microsoft's "Workload identity
		// federation: troubleshooting" and AADSTS error code reference).
		nbf, _ := claims.GetNotBefore()
		if nbf == nil {
			nbf, _ = claims.GetIssuedAt()
		}
		exp, _ := claims.GetExpirationTime()
		from, until := "", ""
		if nbf != nil {
			from = nbf.UTC().Format("2006-01-02 15:04:05Z")
		}
		if exp != nil {
			until = exp.UTC().Format("2006-01-02 15:04:05Z")
		}
		return 700024, fmt.Sprintf("Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s.",
			s.opts.Now().UTC().Format("2006-01-02 15:04:05Z"), from, until)
	}
	if err != nil {
		return bad(err.Error())
	}
	if fed {
		// A federated credential matches on issuer and subject, and then
		// on audience: AADSTS70021 and AADSTS700212 (same references).
		iss, _ := claims["iss"].(string)
		sub, _ := claims["sub"].(string)
		aud, _ := claims.GetAudience()
		s.dir.mu.RLock()
		defer s.dir.mu.RUnlock()
		audMismatch := false
		for _, fc := range app.federated {
			if fc.issuer == iss && fc.subject == sub {
				if slices.Contains(aud, fc.audience) {
					return 0, ""
				}
				audMismatch = true
			}
		}
		if audMismatch {
			return 700212, "No matching federated identity record found for presented assertion audience '" + strings.Join(aud, ",") + "'."
		}
		return 70021, fmt.Sprintf("No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'.", iss, sub, strings.Join(aud, ","))
	}
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	if iss != app.ClientID || sub != app.ClientID {
		return bad("The 'iss' and 'sub' claims must both be the client ID.")
	}
	if _, err := claims.GetNotBefore(); err != nil {
		return bad("Invalid 'nbf' claim.")
	}
	aud, _ := claims.GetAudience()
	okAud := false
	for _, a := range aud {
		a = strings.TrimSuffix(a, "/")
		for _, want := range []string{s.EntraURL + "/" + t.ID + "/oauth2/v2.0/token", s.EntraURL + "/" + t.ID + "/oauth2/token",
			s.EntraURL + "/" + t.Domain + "/oauth2/v2.0/token", s.EntraURL + "/" + t.Domain + "/oauth2/token", s.EntraURL + "/" + t.ID + "/v2.0", s.EntraURL + "/" + t.ID} {
			if strings.EqualFold(a, want) {
				okAud = true
			}
		}
	}
	if !okAud {
		return 700027, fmt.Sprintf("Client assertion contains an invalid audience %q; it must be the token endpoint of the tenant.", strings.Join(aud, ","))
	}
	jti, _ := claims["jti"].(string)
	if jti == "" {
		return 700027, "Client assertion is missing the 'jti' claim."
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jtis[jti] {
		return 700027, "The client assertion's 'jti' has already been used (replay)."
	}
	s.jtis[jti] = true
	return 0, ""
}

func (s *Stack) sign(claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.kid
	tok.Header["x5t"] = s.kid
	str, err := tok.SignedString(s.signKey)
	if err == nil {
		s.remember(str)
	}
	return str, err
}

// verify checks a bearer token the devstack issued and returns its claims.
func (s *Stack) verify(raw string) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.now)).
		ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return &s.signKey.PublicKey, nil })
	return claims, err
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// unregistered is an assertion signed by a certificate the app registration
// does not have: Entra ID's state after Key Vault renews a certificate that
// nobody uploaded.
type unregistered struct{ thumbprint string } // base64url, as the client sent it

func (unregistered) Error() string { return "the key was not found" }

// description is Entra ID's AADSTS700027 text for it, as live tenants answer
// (quoted in AzureAD/microsoft-authentication-library-for-js#8339 and
// MicrosoftDocs/entra-docs#1301). The thumbprint is the client's, in hex:
// Entra ID prints a SHA-1 one so; for an x5t#S256 it is assumed the same.
func (u unregistered) description(clientID string) string {
	raw, _ := base64.RawURLEncoding.DecodeString(u.thumbprint)
	objectID := uuid.NewSHA1(uuid.NameSpaceOID, []byte("application/"+clientID))
	return fmt.Sprintf("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., "+
		"Thumbprint of key used by client: '%X', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '%s'. "+
		"Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the corresponding service endpoint and "+
		"https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http to build a query request URL, such as "+
		"'https://graph.microsoft.com/beta/applications/%s']", raw, clientID, objectID)
}

func normalizeThumbprint(v any) string {
	s, _ := v.(string)
	if s == "" {
		return ""
	}
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return base64.RawURLEncoding.EncodeToString(b)
		}
	}
	return s
}
