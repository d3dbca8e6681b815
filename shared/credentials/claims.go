package credentials

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/advice"
	"github.com/defender-functions/defender-functions/shared/config"
)

// Claims are the parts of an access token that say who it is for and what it
// may do: the guide's "validate the token" step. They are read, not
// verified: the API verifies the signature.
type Claims struct {
	Audience  string
	Issuer    string
	Subject   string
	TenantID  string
	AppID     string // appid (v1) or azp (v2)
	Roles     []string
	Version   string
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
}

// ParseClaims decodes an access token's payload.
func ParseClaims(accessToken string) (*Claims, error) {
	parts := strings.Split(accessToken, ".")
	if len(parts) != 3 {
		return nil, errors.New("the access token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("the access token's payload is not base64url")
	}
	var c struct {
		Aud   any      `json:"aud"`
		Iss   string   `json:"iss"`
		Sub   string   `json:"sub"`
		Tid   string   `json:"tid"`
		AppID string   `json:"appid"`
		Azp   string   `json:"azp"`
		Roles []string `json:"roles"`
		Ver   string   `json:"ver"`
		Iat   int64    `json:"iat"`
		Nbf   int64    `json:"nbf"`
		Exp   int64    `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, errors.New("the access token's payload is not JSON")
	}
	out := &Claims{Issuer: c.Iss, Subject: c.Sub, TenantID: c.Tid, AppID: c.AppID, Roles: c.Roles, Version: c.Ver,
		IssuedAt: time.Unix(c.Iat, 0), NotBefore: time.Unix(c.Nbf, 0), Expiry: time.Unix(c.Exp, 0)}
	if out.AppID == "" {
		out.AppID = c.Azp
	}
	switch a := c.Aud.(type) {
	case string:
		out.Audience = a
	case []any:
		if len(a) > 0 {
			out.Audience, _ = a[0].(string)
		}
	}
	return out, nil
}

// RoleRequirement is what one function needs: any one of its roles.
type RoleRequirement struct {
	Function string
	AnyOf    []string // the least privileged first
}

// PermissionError says which application permissions a token lacks, or that
// it was issued for another API.
type PermissionError struct {
	Tenant, ClientID string
	API              config.API
	WrongAudience    string // set when the token is for another resource
	WantAudience     string
	Missing          []RoleRequirement
	ConsentURL       string // the guide's admin-consent link for the tenant
	ConsentURLv2     string // the v2 adminconsent form with the API's scope
}

// Error says what to do in the advice table's words, as doctor's fix line
// does; the v2 consent link is the same consent, scoped to the API.
func (e *PermissionError) Error() string {
	if e.WrongAudience != "" {
		return fmt.Sprintf("the token of app %s is for %q, but the %s API needs a token for %q: %s", e.ClientID, e.WrongAudience, e.API, e.WantAudience, advice.Say(advice.WrongAudience, nil))
	}
	var parts, roles []string
	for _, m := range e.Missing {
		parts = append(parts, fmt.Sprintf("%s (for %s)", m.AnyOf[0], m.Function))
		roles = append(roles, m.AnyOf[0])
	}
	api := "Microsoft Graph"
	if e.API == config.XDR {
		api = "Microsoft Threat Protection"
	}
	return fmt.Sprintf("app %s lacks the application permission(s) %s of %s in tenant %s: %s (or %s)", e.ClientID, strings.Join(parts, ", "), api, e.Tenant,
		advice.Say(advice.MissingRoles, advice.Vars{"roles": strings.Join(roles, ", "), "consent_url": e.ConsentURL}), e.ConsentURLv2)
}

// CheckRoles checks that a token is for cfg's API and carries the roles of
// the requirements (the functions' descriptors declare them).
func CheckRoles(reg Registration, tenant string, c *Claims, reqs []RoleRequirement) error {
	cfg := &reg
	e := &PermissionError{Tenant: tenant, ClientID: cfg.ClientID, API: cfg.API, WantAudience: cfg.Resource,
		ConsentURL:   AdminConsentURL(cfg.AuthorityHost, tenant, cfg.ClientID, cfg.ConsentRedirectURI),
		ConsentURLv2: AdminConsentURLv2(cfg.AuthorityHost, tenant, cfg.ClientID, cfg.Resource, cfg.ConsentRedirectURI)}
	aud := strings.TrimSuffix(c.Audience, "/")
	if aud != cfg.Resource && !(cfg.API == config.Graph && aud == "00000003-0000-0000-c000-000000000000") && !(cfg.API == config.XDR && aud == "8ee8fdad-f234-4243-8f3b-15c294843740") {
		e.WrongAudience = c.Audience
		return e
	}
	for _, req := range reqs {
		ok := false
		for _, r := range req.AnyOf {
			if slices.Contains(c.Roles, r) {
				ok = true
			}
		}
		if !ok {
			e.Missing = append(e.Missing, req)
		}
	}
	if len(e.Missing) > 0 {
		return e
	}
	return nil
}

// AdminConsentURL is the admin-consent link of the guide, for one tenant.
// After consent Entra ID sends the administrator to a redirect URI of the
// app: redirectURI names one registered on it (as Microsoft's guide does);
// without one, Entra ID answers AADSTS500113 once consent is granted.
func AdminConsentURL(authority, tenant, clientID, redirectURI string) string {
	return withRedirect(fmt.Sprintf("%s/%s/adminconsent?client_id=%s", authority, url.PathEscape(tenant), url.QueryEscape(clientID)), redirectURI)
}

// AdminConsentURLv2 is the v2 endpoint's admin-consent link, scoped to the API.
func AdminConsentURLv2(authority, tenant, clientID, resource, redirectURI string) string {
	return withRedirect(fmt.Sprintf("%s/%s/v2.0/adminconsent?client_id=%s&scope=%s", authority, url.PathEscape(tenant), url.QueryEscape(clientID), url.QueryEscape(resource+"/.default")), redirectURI)
}

func withRedirect(link, redirectURI string) string {
	if redirectURI == "" {
		return link
	}
	return link + "&redirect_uri=" + url.QueryEscape(redirectURI)
}
