package devstack

import (
	"fmt"
	"net/http"
	"sort"
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
}

// vault is Key Vault's secret store.
type vault struct {
	mu      sync.RWMutex
	secrets map[string][]*secretVersion // newest last
}

func (v *vault) put(name, value, contentType string) *secretVersion {
	v.mu.Lock()
	defer v.mu.Unlock()
	sv := &secretVersion{version: strings.ReplaceAll(uuid.NewString(), "-", ""), value: value, contentType: contentType, created: time.Now(), enabled: true}
	v.secrets[name] = append(v.secrets[name], sv)
	return sv
}

func (v *vault) get(name, version string) *secretVersion {
	v.mu.RLock()
	defer v.mu.RUnlock()
	vs := v.secrets[name]
	if version == "" {
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].enabled {
				return vs[i]
			}
		}
		return nil
	}
	for _, sv := range vs {
		if sv.version == version {
			return sv
		}
	}
	return nil
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

// vaultHandler is Key Vault's data plane for secrets, with the real challenge flow.
func (s *Stack) vaultHandler() http.Handler {
	mux := http.NewServeMux()
	get := func(w http.ResponseWriter, r *http.Request) {
		if s.faults().VaultOutage {
			kvError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "The service is temporarily unavailable. Please retry.")
			return
		}
		if r.URL.Query().Get("api-version") == "" {
			kvError(w, http.StatusBadRequest, "BadParameter", "The request URI contains an invalid api-version. An api-version is required.")
			return
		}
		claims, ok := s.vaultAuth(w, r)
		if !ok {
			return
		}
		if !s.mayReadVault(claims) {
			appid, _ := claims["appid"].(string)
			if appid == "" {
				appid, _ = claims["azp"].(string)
			}
			oid, _ := claims["oid"].(string)
			iss, _ := claims["iss"].(string)
			writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{
				"code": "Forbidden",
				"message": fmt.Sprintf("Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=%s;oid=%s;iss=%s\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/devstack/providers/microsoft.keyvault/vaults/devstack/secrets/%s'\r\nAssignment: (not found)\r\nVault: devstack;location=local\r\n",
					appid, oid, iss, strings.ToLower(r.PathValue("name"))),
				"innererror": map[string]any{"code": "ForbiddenByRbac"},
			}})
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
		body := map[string]any{
			"value": sv.value,
			"id":    s.KeyVaultURL + "/secrets/" + name + "/" + sv.version,
			"attributes": map[string]any{
				"enabled": sv.enabled, "created": sv.created.Unix(), "updated": sv.created.Unix(),
				"recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90,
			},
			"tags": map[string]string{},
		}
		if sv.contentType != "" {
			body["contentType"] = sv.contentType
		}
		writeJSON(w, http.StatusOK, body)
	}
	mux.HandleFunc("GET /secrets/{name}", get)
	mux.HandleFunc("GET /secrets/{name}/{$}", get)
	mux.HandleFunc("GET /secrets/{name}/{version}", get)
	return s.counted("keyvault", mux)
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
	if g := s.dir.grant(t, appid); g != nil && g.KeyVaultReader {
		return true
	}
	return false
}
