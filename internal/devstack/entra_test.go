package devstack_test

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// guideEnv is the environment of the guide's sample clients.
func guideEnv(s *devstack.Stack, caFile string) []string {
	return append(os.Environ(), "TENANT_ID="+devstack.DefaultTenantID, "CLIENT_ID="+devstack.DefaultClientID,
		"CLIENT_SECRET="+s.ClientSecret(devstack.DefaultClientID), "AUTHORITY="+s.EntraURL, "CA_FILE="+caFile, "SSL_CERT_FILE="+caFile)
}

func TestGuideCurlV2(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Dir: t.TempDir()})
	cmd := exec.Command("sh", "testdata/guide/token_v2.sh")
	cmd.Env = guideEnv(s, s.CAFile())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	var resp struct {
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("v2 answer is not the documented JSON: %v", err)
	}
	c := claims(t, resp.AccessToken)
	if resp.TokenType != "Bearer" || resp.ExpiresIn != 3599 || c["aud"] != devstack.XDRResource || c["ver"] != "2.0" {
		t.Fatalf("token_type=%q expires_in=%d aud=%v ver=%v", resp.TokenType, resp.ExpiresIn, c["aud"], c["ver"])
	}
	if got := roles(c); !slices.Equal(got, []string{"Incident.ReadWrite.All", "AdvancedHunting.Read.All"}) {
		t.Fatalf("roles = %v", got)
	}
}

func TestGuidePythonV1(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{Dir: t.TempDir()})
	cmd := exec.Command("python3", "testdata/guide/token_v1.py")
	cmd.Env = guideEnv(s, s.CAFile())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var got struct {
		Roles     []string `json:"roles"`
		Aud       string   `json:"aud"`
		ExpiresIn any      `json:"expires_in"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Aud != devstack.XDRResource || got.ExpiresIn != "3599" || !slices.Equal(got.Roles, []string{"Incident.ReadWrite.All", "AdvancedHunting.Read.All"}) {
		t.Fatalf("got %+v (v1 answers numbers as strings)", got)
	}
}

// The PowerShell sample posts an ordered form to the v1 endpoint.
func TestPowerShellStyleV1(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	form := "resource=" + url.QueryEscape(devstack.XDRResource) + "&client_id=" + devstack.DefaultClientID +
		"&client_secret=" + url.QueryEscape(s.ClientSecret(devstack.DefaultClientID)) + "&grant_type=client_credentials"
	req := postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantName+"/oauth2/token", mustParse(form))
	m := req.json(t)
	for _, k := range []string{"expires_in", "ext_expires_in", "expires_on", "not_before"} {
		if _, ok := m[k].(string); !ok {
			t.Errorf("%s = %T, want a string as the v1 endpoint sends", k, m[k])
		}
	}
	c := claims(t, m["access_token"].(string))
	if c["ver"] != "1.0" || c["appid"] != devstack.DefaultClientID || c["tid"] != devstack.DefaultTenantID || m["resource"] != devstack.XDRResource {
		t.Fatalf("claims %v %v %v", c["ver"], c["appid"], c["tid"])
	}
}

func mustParse(q string) url.Values {
	v, err := url.ParseQuery(q)
	if err != nil {
		panic(err)
	}
	return v
}

func TestClientCredentialsEachAPI(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.HTTPClient())
	for _, tc := range []struct {
		name, resource string
		v1             bool
		want           []string
	}{
		{"graph v2", devstack.GraphResource, false, devstack.AllRoles[devstack.GraphResource]},
		{"xdr v2", devstack.XDRResource, false, devstack.AllRoles[devstack.XDRResource]},
		{"graph v1", devstack.GraphResource, true, devstack.AllRoles[devstack.GraphResource]},
		{"xdr v1", devstack.XDRResource, true, devstack.AllRoles[devstack.XDRResource]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clientcredentials.Config{ClientID: devstack.DefaultClientID, ClientSecret: s.ClientSecret(devstack.DefaultClientID), AuthStyle: oauth2.AuthStyleInParams}
			if tc.v1 {
				cfg.TokenURL = s.EntraURL + "/" + devstack.DefaultTenantID + "/oauth2/token"
				cfg.EndpointParams = url.Values{"resource": {tc.resource}}
			} else {
				cfg.TokenURL = s.EntraURL + "/" + devstack.DefaultTenantID + "/oauth2/v2.0/token"
				cfg.Scopes = []string{tc.resource + "/.default"}
			}
			tok, err := cfg.Token(ctx)
			if err != nil {
				t.Fatal(redactErr(err))
			}
			if time.Until(tok.Expiry) < 59*time.Minute {
				t.Errorf("expiry %v, want about an hour", tok.Expiry)
			}
			c := claims(t, tok.AccessToken)
			if c["aud"] != tc.resource || !slices.Equal(roles(c), tc.want) {
				t.Fatalf("aud=%v roles=%v", c["aud"], c["roles"])
			}
		})
	}
}

// The real azsecrets client, authenticated by the real managed-identity
// credential, reads the secret through the challenge flow over TLS.
func TestAzsecretsThroughManagedIdentity(t *testing.T) {
	s := start(t, devstack.Options{})
	c := vaultClient(t, s)
	got, err := c.GetSecret(context.Background(), devstack.DefaultSecretName, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Value != s.ClientSecret(devstack.DefaultClientID) {
		t.Fatal("the vault returned another value than the app's current secret")
	}
	if n := s.Counters().Get("keyvault.GET /secrets/{name}/{$}", 401); n != 1 {
		t.Errorf("challenge round trips = %d, want 1", n)
	}
	// A missing secret is the SDK's typed 404.
	_, err = c.GetSecret(context.Background(), "no-such-secret", "", nil)
	var re *azcore.ResponseError
	if !asResponseError(err, &re) || re.StatusCode != 404 || re.ErrorCode != "SecretNotFound" {
		t.Fatalf("missing secret: %v", err)
	}
	// Without the role assignment: 403 Forbidden.
	s.DenyIdentityVaultAccess(true)
	_, err = c.GetSecret(context.Background(), devstack.DefaultSecretName, "", nil)
	if !asResponseError(err, &re) || re.StatusCode != 403 || re.ErrorCode != "Forbidden" {
		t.Fatalf("denied: %v", err)
	}
}

func asResponseError(err error, target **azcore.ResponseError) bool {
	re, ok := err.(*azcore.ResponseError)
	if !ok {
		return false
	}
	*target = re
	return true
}

func TestTokenErrors(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	secret := s.ClientSecret(devstack.DefaultClientID)
	v2 := func(tenant string) string { return s.EntraURL + "/" + tenant + "/oauth2/v2.0/token" }
	base := func(kv ...string) url.Values {
		f := url.Values{"grant_type": {"client_credentials"}, "client_id": {devstack.DefaultClientID},
			"client_secret": {secret}, "scope": {devstack.GraphResource + "/.default"}}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				f.Del(kv[i])
			} else {
				f.Set(kv[i], kv[i+1])
			}
		}
		return f
	}
	for _, tc := range []struct {
		name   string
		url    string
		form   url.Values
		status int
		code   string
		aadsts int
	}{
		{"wrong secret", v2(devstack.DefaultTenantID), base("client_secret", "not-the-secret"), 401, "invalid_client", 7000215},
		{"no credential", v2(devstack.DefaultTenantID), base("client_secret", ""), 401, "invalid_client", 7000218},
		{"app not in tenant", v2(devstack.DefaultTenantID), base("client_id", uuid.NewString()), 400, "unauthorized_client", 700016},
		{"reader app not consented in partner tenant", v2(devstack.PartnerTenantID), base("client_id", devstack.ReaderClientID), 400, "unauthorized_client", 700016},
		{"unknown tenant", v2("nosuch.onmicrosoft.com"), base(), 400, "invalid_request", 90002},
		{"unknown resource", v2(devstack.DefaultTenantID), base("scope", "https://example.com/.default"), 400, "invalid_resource", 500011},
		{"scope without /.default", v2(devstack.DefaultTenantID), base("scope", devstack.GraphResource+"/SecurityIncident.Read.All"), 400, "invalid_scope", 1002012},
		{"bad assertion", v2(devstack.DefaultTenantID), base("client_secret", "", "client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion", "a.b.c"), 401, "invalid_client", 700027},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := postForm(t, s, tc.url, tc.form)
			m := r.json(t)
			codes, _ := m["error_codes"].([]any)
			if r.status != tc.status || m["error"] != tc.code || len(codes) != 1 || int(codes[0].(float64)) != tc.aadsts {
				t.Fatalf("status %d error %v codes %v, want %d %s %d", r.status, m["error"], m["error_codes"], tc.status, tc.code, tc.aadsts)
			}
			desc, _ := m["error_description"].(string)
			if !strings.HasPrefix(desc, "AADSTS") || !strings.Contains(desc, "Trace ID: ") || m["trace_id"] == nil || m["correlation_id"] == nil {
				t.Fatalf("description %q lacks the real shape", desc)
			}
		})
	}
}

func TestRotationRevokesOldSecret(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode   devstack.Rotation
		aadsts float64
	}{{devstack.RevokeOld, 7000215}, {devstack.ExpireOld, 7000222}} {
		s := start(t, devstack.Options{})
		old := s.ClientSecret(devstack.DefaultClientID)
		s.RotateSecret(tc.mode)
		nu := s.ClientSecret(devstack.DefaultClientID)
		if nu == old {
			t.Fatal("rotation kept the secret")
		}
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {devstack.DefaultClientID}, "scope": {devstack.GraphResource + "/.default"}}
		form.Set("client_secret", old)
		r := postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantID+"/oauth2/v2.0/token", form)
		if r.status != 401 || r.json(t)["error_codes"].([]any)[0] != tc.aadsts {
			t.Fatalf("old secret: status %d codes %v, want 401 %v", r.status, r.json(t)["error_codes"], tc.aadsts)
		}
		form.Set("client_secret", nu)
		if r := postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantID+"/oauth2/v2.0/token", form); r.status != 200 {
			t.Fatalf("new secret: %d", r.status)
		}
	}
}

// signAssertion builds a client assertion as MSAL does (PS256, x5t#S256) or
// as older libraries do (RS256, x5t).
func signAssertion(t *testing.T, pemText, aud, method string) string {
	t.Helper()
	var cert *x509.Certificate
	var key *rsa.PrivateKey
	rest := []byte(pemText)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			cert, _ = x509.ParseCertificate(b.Bytes)
		case "PRIVATE KEY":
			k, _ := x509.ParsePKCS8PrivateKey(b.Bytes)
			key = k.(*rsa.PrivateKey)
		}
	}
	now := time.Now()
	claims := jwt.MapClaims{"aud": aud, "iss": devstack.DefaultClientID, "sub": devstack.DefaultClientID, "jti": uuid.NewString(),
		"nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	var tok *jwt.Token
	if method == "PS256" {
		tok = jwt.NewWithClaims(jwt.SigningMethodPS256, claims)
		sum := sha256.Sum256(cert.Raw)
		tok.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(sum[:])
	} else {
		tok = jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		sum := sha1.Sum(cert.Raw)
		tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	str, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func TestCertificateAssertions(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	pemText := s.ClientCertificatePEM(devstack.DefaultClientID)
	tokenURL := s.EntraURL + "/" + devstack.DefaultTenantID + "/oauth2/v2.0/token"
	post := func(assertion string) response {
		return postForm(t, s, tokenURL, url.Values{"grant_type": {"client_credentials"}, "client_id": {devstack.DefaultClientID},
			"scope": {devstack.XDRResource + "/.default"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion": {assertion}})
	}
	for _, method := range []string{"PS256", "RS256"} {
		a := signAssertion(t, pemText, tokenURL, method)
		r := post(a)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", method, r.status, r.json(t)["error"])
		}
		if c := claims(t, r.json(t)["access_token"].(string)); c["azpacr"] != "2" {
			t.Errorf("%s: azpacr=%v, want 2 (certificate)", method, c["azpacr"])
		}
		if r := post(a); r.status != 401 || r.json(t)["error_codes"].([]any)[0] != float64(700027) {
			t.Errorf("%s: a replayed assertion was accepted: %d", method, r.status)
		}
	}
	// Wrong audience and a certificate the app does not have.
	if r := post(signAssertion(t, pemText, "https://elsewhere/token", "PS256")); r.status != 401 {
		t.Errorf("wrong aud: %d", r.status)
	}
	other := start(t, devstack.Options{})
	if r := post(signAssertion(t, other.ClientCertificatePEM(devstack.DefaultClientID), tokenURL, "PS256")); r.status != 401 || r.json(t)["error_codes"].([]any)[0] != float64(700027) {
		t.Errorf("unregistered certificate: %d", r.status)
	}
}

// Secretless: the user-assigned identity's token for
// api://AzureADTokenExchange is the assertion; the system-assigned
// identity's is refused (no app may trust one).
func TestManagedIdentityFederation(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	c := s.HTTPClient()
	miToken := func(clientID string) string {
		req, _ := newGet("GET", s.IdentityEndpoint+"?api-version=2019-08-01&resource="+url.QueryEscape(devstack.TokenExchangeAudience)+"&client_id="+clientID)
		req.Header.Set("X-IDENTITY-HEADER", s.IdentityHeader())
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var mi struct {
			AccessToken string `json:"access_token"`
			ExpiresOn   string `json:"expires_on"`
		}
		json.NewDecoder(resp.Body).Decode(&mi)
		resp.Body.Close()
		if mi.ExpiresOn == "" || claims(t, mi.AccessToken)["aud"] != devstack.TokenExchangeAudience {
			t.Fatalf("MI token for %q: expires_on=%q", clientID, mi.ExpiresOn)
		}
		return mi.AccessToken
	}
	system := miToken("")
	if claims(t, system)["oid"] != devstack.SystemIdentityObjectID {
		t.Fatalf("no client_id: %v", claims(t, system))
	}
	r := postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantID+"/oauth2/v2.0/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {devstack.DefaultClientID}, "scope": {devstack.GraphResource + "/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {system}})
	if r.status != 401 || r.json(t)["error_codes"].([]any)[0] != float64(70021) {
		t.Fatalf("system-assigned identity: %d %v", r.status, r.json(t)["error_codes"])
	}
	mi := struct{ AccessToken string }{miToken(devstack.IdentityClientID)}
	r = postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantID+"/oauth2/v2.0/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {devstack.DefaultClientID}, "scope": {devstack.GraphResource + "/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {mi.AccessToken}})
	if r.status != 200 {
		t.Fatalf("federated: %d %v", r.status, r.json(t)["error_codes"])
	}
	// The reader app has no federated credential for this identity.
	r = postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantID+"/oauth2/v2.0/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {devstack.ReaderClientID}, "scope": {devstack.GraphResource + "/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {mi.AccessToken}})
	if r.status != 401 || r.json(t)["error_codes"].([]any)[0] != float64(70021) {
		t.Fatalf("unfederated app: %d %v", r.status, r.json(t)["error_codes"])
	}
}

func TestIdentityEndpointRejectsBadHeader(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	req, _ := newGet("GET", s.IdentityEndpoint+"?api-version=2019-08-01&resource="+url.QueryEscape(devstack.GraphResource))
	req.Header.Set("X-IDENTITY-HEADER", "wrong")
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
