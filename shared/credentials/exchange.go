package credentials

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// exchanger performs the client-credentials grant for one tenant and
// resource. It uses x/oauth2's Config.Token, which caches nothing: our cache
// is the only one, so a 401 can really evict a token (MSAL cannot).
type exchanger struct {
	cfg      *Registration
	tenant   string
	tokenURL string
	hc       *http.Client
	now      func() time.Time
}

func newExchanger(cfg *Registration, tenant string, hc *http.Client, now func() time.Time) *exchanger {
	path := "/oauth2/v2.0/token"
	if cfg.TokenVersion == 1 {
		path = "/oauth2/token"
	}
	return &exchanger{cfg: cfg, tenant: tenant, tokenURL: cfg.AuthorityHost + "/" + url.PathEscape(tenant) + path, hc: hc, now: now}
}

func (x *exchanger) scope() string {
	if x.cfg.TokenVersion == 1 {
		return "v1:" + x.cfg.Resource
	}
	return x.cfg.Resource + "/.default"
}

func (x *exchanger) exchange(ctx context.Context, secret string, assertion string) (*Token, error) {
	cc := clientcredentials.Config{ClientID: x.cfg.ClientID, ClientSecret: secret, TokenURL: x.tokenURL,
		AuthStyle: oauth2.AuthStyleInParams, EndpointParams: url.Values{}}
	if x.cfg.TokenVersion == 1 {
		cc.EndpointParams.Set("resource", x.cfg.Resource)
	} else {
		cc.Scopes = []string{x.cfg.Resource + "/.default"}
	}
	if assertion != "" {
		cc.EndpointParams.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		cc.EndpointParams.Set("client_assertion", assertion)
	}
	start := time.Now()
	t, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, x.hc))
	if err != nil {
		return nil, entraError(err, x.cfg, x.tenant)
	}
	if t.AccessToken == "" || t.Expiry.IsZero() {
		return nil, fmt.Errorf("entra id: the token response from %s lacks access_token or expires_in", x.cfg.AuthorityHost)
	}
	// x/oauth2 dates the expiry with the wall clock; re-date it with ours.
	return &Token{AccessToken: t.AccessToken, Expiry: x.now().Add(t.Expiry.Sub(start))}, nil
}

// signer makes client assertions from a certificate and its RSA key.
type signer struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	alg  string
}

func parseCertificate(value, contentType string, password []byte) (*signer, error) {
	data := []byte(value)
	if !strings.Contains(value, "-----BEGIN") {
		// Key Vault returns a PFX certificate read as a secret base64-encoded.
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value)); err == nil {
			data = raw
		}
	}
	certs, key, err := azidentity.ParseCertificates(data, password)
	if err != nil || len(certs) == 0 {
		return nil, errors.New("the secret is not a PEM or PFX certificate with its private key (content type " + contentType + ")")
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("the certificate's key is not RSA; Entra ID client assertions need an RSA key")
	}
	return &signer{cert: certs[0], key: rk}, nil
}

// assertion signs a client assertion: PS256 with x5t#S256 (what Entra ID
// documents now), or RS256 with x5t (the long-standing form).
func (s *signer) assertion(clientID, aud, alg string, now time.Time) (string, error) {
	claims := jwt.MapClaims{"aud": aud, "iss": clientID, "sub": clientID, "jti": uuid.NewString(),
		"nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	var tok *jwt.Token
	if alg == "RS256" {
		tok = jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		sum := sha1.Sum(s.cert.Raw)
		tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(sum[:])
	} else {
		tok = jwt.NewWithClaims(jwt.SigningMethodPS256, claims)
		sum := sha256.Sum256(s.cert.Raw)
		tok.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return tok.SignedString(s.key)
}

// readFile reads a small local file (a certificate), refusing large ones.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("%s is larger than 1 MiB; it is not a certificate", path)
	}
	return b, nil
}
