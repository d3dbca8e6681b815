package devstack_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

// The admin-consent link doctor prints can be followed on the devstack: it
// grants the app's permissions back and lands on the registered redirect
// URI; a redirect URI the app did not register, an unknown app or tenant
// change nothing.
func TestAdminConsent(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 5})
	tenant, app := devstack.DefaultTenantID, devstack.DefaultClientID
	noRedirect := &http.Client{Transport: s.HTTPClient().Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		name, path string
		status     int
		location   string // the redirect's query, or the body's AADSTS code
		restored   bool
	}{
		{"v1, registered redirect", "/" + tenant + "/adminconsent?client_id=" + app + "&state=42", 302, "admin_consent=True&state=42&tenant=" + tenant, true},
		{"v2, explicit redirect", "/" + tenant + "/v2.0/adminconsent?client_id=" + app + "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&redirect_uri=" + url.QueryEscape(s.EntraURL+devstack.ConsentRedirectPath), 302,
			"admin_consent=True&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&tenant=" + tenant, true},
		{"another redirect", "/" + tenant + "/adminconsent?client_id=" + app + "&redirect_uri=https%3A%2F%2Fevil.example%2F", 400, "AADSTS50011", false},
		{"unknown app", "/" + tenant + "/adminconsent?client_id=00000000-0000-0000-0000-000000000001", 400, "AADSTS700016", false},
		{"unknown tenant", "/nobody.onmicrosoft.com/adminconsent?client_id=" + app, 400, "AADSTS90002", false},
		{"no client", "/" + tenant + "/adminconsent", 400, "AADSTS900144", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := s.WithdrawRole(tenant, app, "ThreatHunting.Read.All"); err != nil {
				t.Fatal(err)
			}
			defer s.RestoreConsent(tenant, app)
			resp, err := noRedirect.Get(s.EntraURL + c.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, c.status)
			}
			if c.status == 302 {
				want := s.EntraURL + devstack.ConsentRedirectPath + "?" + c.location
				if got := resp.Header.Get("Location"); got != want {
					t.Errorf("Location %s, want %s", got, want)
				}
				page, err := s.HTTPClient().Get(want)
				if err != nil {
					t.Fatal(err)
				}
				text, _ := io.ReadAll(page.Body)
				page.Body.Close()
				if page.StatusCode != 200 || !strings.HasPrefix(string(text), "Admin consent granted in tenant "+tenant) {
					t.Errorf("the redirect URI's page: %d %s", page.StatusCode, text)
				}
			} else if !strings.Contains(string(body), c.location) {
				t.Errorf("body %s, want %s", body, c.location)
			}
			// Whether the role came back: the withdrawn role can be withdrawn again.
			again := s.WithdrawRole(tenant, app, "ThreatHunting.Read.All") == nil
			if again != c.restored {
				t.Errorf("role restored: %v, want %v", again, c.restored)
			}
		})
	}
}
