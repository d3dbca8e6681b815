package awsidentity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/awsidentity"
	"github.com/golang-jwt/jwt/v5"
)

// jwks reads the issuer's keys as a verifier does: discovery, then jwks_uri.
func jwks(t *testing.T, s *devstack.Stack, issuer string) map[string]any {
	get := func(u string, v any) {
		resp, err := s.HTTPClient().Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var disco struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	get(issuer+"/.well-known/openid-configuration", &disco)
	if disco.Issuer != issuer {
		t.Fatalf("discovery names issuer %q", disco.Issuer)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	get(disco.JWKSURI, &set)
	keys := map[string]any{}
	num := func(s string) *big.Int {
		b, _ := base64.RawURLEncoding.DecodeString(s)
		return new(big.Int).SetBytes(b)
	}
	for _, k := range set.Keys {
		switch k["kty"] {
		case "RSA":
			keys[k["kid"]] = &rsa.PublicKey{N: num(k["n"]), E: int(num(k["e"]).Int64())}
		case "EC":
			keys[k["kid"]] = &ecdsa.PublicKey{Curve: elliptic.P384(), X: num(k["x"]), Y: num(k["y"])}
		}
	}
	return keys
}

// The JWT, as asked and as AWS documents it, verifiable with the issuer's
// published keys; reused while fresh.
func TestToken(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 1})
	s.UseAWS(t)
	keys := jwks(t, s, s.AWSIssuer())
	for _, alg := range []string{"RS256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			now := time.Now()
			src, err := awsidentity.New(awsidentity.Options{Audience: "api://AzureADTokenExchange", Algorithm: alg, Lifetime: 15 * time.Minute, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := src.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			claims := jwt.MapClaims{}
			parsed, err := jwt.ParseWithClaims(tok, claims, func(tk *jwt.Token) (any, error) { return keys[tk.Header["kid"].(string)], nil },
				jwt.WithValidMethods([]string{alg}), jwt.WithIssuer(s.AWSIssuer()), jwt.WithAudience("api://AzureADTokenExchange"), jwt.WithSubject(devstack.AWSRoleARN))
			if err != nil || !parsed.Valid {
				t.Fatalf("the JWT does not verify: %v", err)
			}
			exp, _ := claims.GetExpirationTime()
			iat, _ := claims.GetIssuedAt()
			if d := exp.Sub(iat.Time); d != 15*time.Minute {
				t.Fatalf("lifetime %s", d)
			}
			if ns, _ := claims["https://sts.amazonaws.com/"].(map[string]any); ns["aws_account"] != devstack.AWSAccountID {
				t.Fatalf("AWS claims %v", claims)
			}
			before := s.Counters().Get("sts.GetWebIdentityToken", 200)
			now = now.Add(11 * time.Minute) // 4 of 15 minutes left: more than a fifth
			if again, _ := src.Token(context.Background()); again != tok || s.Counters().Get("sts.GetWebIdentityToken", 200) != before {
				t.Fatal("a fresh JWT was not reused")
			}
			now = now.Add(2 * time.Minute) // 2 minutes left: less than a fifth
			if again, _ := src.Token(context.Background()); again == tok {
				t.Fatal("a nearly spent JWT was reused")
			}
		})
	}
}

func TestNew(t *testing.T) {
	for _, o := range []awsidentity.Options{{}, {Audience: "a", Lifetime: 30 * time.Second}, {Audience: "a", Lifetime: 2 * time.Hour}} {
		if _, err := awsidentity.New(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := awsidentity.New(awsidentity.Options{Audience: "a", Lifetime: time.Hour}); err != nil || !strings.Contains((&awsidentity.Error{Code: "OutboundWebIdentityFederationDisabledException"}).Error(), "enable-outbound-web-identity-federation") {
		t.Fatal(err)
	}
}
