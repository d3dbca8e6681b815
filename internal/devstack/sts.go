package devstack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// AWS STS's GetWebIdentityToken (IAM outbound identity federation), as the
// Lambda build's aws-federation mode calls it with its execution role: the
// Query protocol behind SigV4, a JWT signed RS256 or ES384 as asked, for
// 60 to 3600 s, with the claims AWS documents (IAM User Guide, "Understanding
// token claims": iss the account's issuer URL, sub the role's ARN, aud as
// requested, iat/exp/jti, AWS's own claims under https://sts.amazonaws.com/),
// and the issuer's OIDC discovery document and JWKS. Entra ID's token
// endpoint trusts it through the apps' federated credentials.

// AWSRoleARN is the execution role, as the token's sub names it.
const AWSRoleARN = "arn:aws:iam::" + AWSAccountID + ":role/defender-functions-role"

type awsSTS struct {
	rsaKey     *rsa.PrivateKey
	ecKey      *ecdsa.PrivateKey
	rsaKid     string
	ecKid      string
	disabled   atomic.Bool // outbound identity federation off for the account
	denied     atomic.Bool // the role's policy lacks sts:GetWebIdentityToken
	issuerPath string
}

func newAWSSTS() (*awsSTS, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &awsSTS{rsaKey: rk, ecKey: ek, rsaKid: randomHex(16), ecKid: randomHex(16), issuerPath: "/" + uuid.NewString()}, nil
}

// AWSIssuer is the account's issuer URL (the real one is
// https://<id>.tokens.sts.global.api.aws): its OIDC discovery document is
// at AWSIssuer/.well-known/openid-configuration.
func (s *Stack) AWSIssuer() string { return s.STSURL + s.sts.issuerPath }

// SetOutboundFederation turns the account's outbound identity federation
// on or off (aws iam enable-outbound-web-identity-federation).
func (s *Stack) SetOutboundFederation(on bool) { s.sts.disabled.Store(!on) }

// DenyWebIdentityToken takes sts:GetWebIdentityToken from (or gives it back
// to) the execution role.
func (s *Stack) DenyWebIdentityToken(deny bool) { s.sts.denied.Store(deny) }

// TrustAWSRole adds (or, with trust false, removes) a federated identity
// credential on an app for the AWS account's issuer, a subject, and an
// audience.
func (s *Stack) TrustAWSRole(clientID, subject, audience string, trust bool) {
	s.trust(clientID, federatedCred{issuer: s.AWSIssuer(), subject: subject, audience: audience}, trust)
}

func (s *Stack) trust(clientID string, fc federatedCred, trust bool) {
	s.dir.mu.Lock()
	defer s.dir.mu.Unlock()
	app := s.dir.apps[clientID]
	if app == nil {
		return
	}
	kept := app.federated[:0]
	for _, f := range app.federated {
		if f != fc {
			kept = append(kept, f)
		}
	}
	app.federated = kept
	if trust {
		app.federated = append(app.federated, fc)
	}
}

// stsKey is the public key of an STS signing key ID, for the token endpoint.
func (s *Stack) stsKey(kid string) any {
	switch kid {
	case s.sts.rsaKid:
		return &s.sts.rsaKey.PublicKey
	case s.sts.ecKid:
		return &s.sts.ecKey.PublicKey
	}
	return nil
}

func (s *Stack) stsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+s.sts.issuerPath+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"issuer": s.AWSIssuer(), "jwks_uri": s.AWSIssuer() + "/.well-known/jwks.json",
			"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES384"}})
	})
	mux.HandleFunc("GET "+s.sts.issuerPath+"/.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
		pad := func(n *big.Int, size int) []byte { return n.FillBytes(make([]byte, size)) }
		ec := s.sts.ecKey.PublicKey
		writeJSON(w, 200, map[string]any{"keys": []map[string]string{
			{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": s.sts.rsaKid, "n": b64(s.sts.rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(s.sts.rsaKey.E)).Bytes())},
			{"kty": "EC", "use": "sig", "alg": "ES384", "kid": s.sts.ecKid, "crv": "P-384", "x": b64(pad(ec.X, 48)), "y": b64(pad(ec.Y, 48))},
		}})
	})
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		status := s.serveSTS(w, r)
		s.counters.add("sts.GetWebIdentityToken", status)
	})
	return mux
}

// stsError writes the Query protocol's error document.
func stsError(w http.ResponseWriter, status int, code, msg string) int {
	typ := "Sender"
	if status >= 500 {
		typ = "Receiver"
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
		typ, code, xmlEscape(msg), uuid.NewString())
	return status
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (s *Stack) serveSTS(w http.ResponseWriter, r *http.Request) int {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil || len(body) > 64<<10 {
		return stsError(w, 413, "RequestEntityTooLarge", "Request is too large")
	}
	if code, msg := s.checkSigV4(r, body, "sts"); code != "" {
		if code == "InvalidSignatureException" {
			code = "SignatureDoesNotMatch"
		} else if code == "UnrecognizedClientException" {
			code = "InvalidClientTokenId"
		}
		return stsError(w, 403, code, msg)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Version") != "2011-06-15" {
		return stsError(w, 400, "InvalidAction", "Could not find operation for version")
	}
	if form.Get("Action") != "GetWebIdentityToken" {
		return stsError(w, 400, "InvalidAction", "Could not find operation "+form.Get("Action")+" for version 2011-06-15")
	}
	if s.faults().STSOutage {
		return stsError(w, 503, "ServiceUnavailable", "Service is unavailable. Please try again later.")
	}
	if s.sts.denied.Load() {
		return stsError(w, 403, "AccessDenied", fmt.Sprintf("User: %s is not authorized to perform: sts:GetWebIdentityToken because no identity-based policy allows the sts:GetWebIdentityToken action", awsRoleARN))
	}
	if s.sts.disabled.Load() {
		// The message's wording is not documented; the code is (the SDK's
		// OutboundWebIdentityFederationDisabledException).
		return stsError(w, 403, "OutboundWebIdentityFederationDisabledException", "Outbound web identity federation is disabled for this account.")
	}
	var aud []string
	for i := 1; form.Has("Audience.member." + strconv.Itoa(i)); i++ {
		aud = append(aud, form.Get("Audience.member."+strconv.Itoa(i)))
	}
	alg := form.Get("SigningAlgorithm")
	dur := 300
	if v := form.Get("DurationSeconds"); v != "" {
		dur, err = strconv.Atoi(v)
		if err != nil || dur < 60 || dur > 3600 {
			return stsError(w, 400, "ValidationError", "1 validation error detected: Value '"+v+"' at 'durationSeconds' failed to satisfy constraint: Member must have value between 60 and 3600")
		}
	}
	switch {
	case len(aud) == 0 || len(aud) > 10:
		return stsError(w, 400, "ValidationError", "1 validation error detected: Value at 'audience' failed to satisfy constraint: Member must have length between 1 and 10")
	case alg != "RS256" && alg != "ES384":
		return stsError(w, 400, "ValidationError", "1 validation error detected: Value '"+alg+"' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [RS256, ES384]")
	}
	now := time.Now().Truncate(time.Second) // AWS's clock
	exp := now.Add(time.Duration(dur) * time.Second)
	claims := jwt.MapClaims{"iss": s.AWSIssuer(), "sub": AWSRoleARN, "iat": now.Unix(), "exp": exp.Unix(), "jti": uuid.NewString(),
		"https://sts.amazonaws.com/": map[string]any{"aws_account": AWSAccountID, "source_region": AWSRegion}}
	if len(aud) == 1 {
		claims["aud"] = aud[0]
	} else {
		claims["aud"] = aud
	}
	var tok string
	if alg == "RS256" {
		t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		t.Header["kid"] = s.sts.rsaKid
		tok, err = t.SignedString(s.sts.rsaKey)
	} else {
		t := jwt.NewWithClaims(jwt.SigningMethodES384, claims)
		t.Header["kid"] = s.sts.ecKid
		tok, err = t.SignedString(s.sts.ecKey)
	}
	if err != nil {
		return stsError(w, 500, "InternalFailure", err.Error())
	}
	s.remember(tok)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(200)
	fmt.Fprintf(w, `<GetWebIdentityTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetWebIdentityTokenResult><WebIdentityToken>%s</WebIdentityToken><Expiration>%s</Expiration></GetWebIdentityTokenResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></GetWebIdentityTokenResponse>`,
		tok, exp.UTC().Format(time.RFC3339), uuid.NewString())
	return 200
}
