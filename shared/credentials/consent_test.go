package credentials_test

import (
	"testing"

	"github.com/defender-functions/defender-functions/shared/credentials"
)

// The admin-consent links pass the app's registered redirect URI, as
// Microsoft's guide does; without one they are the bare link.
func TestAdminConsentURL(t *testing.T) {
	const authority, app = "https://login.microsoftonline.com", "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84"
	for _, tc := range []struct {
		tenant, redirect, v1, v2 string
	}{
		{"contoso.onmicrosoft.com", "",
			authority + "/contoso.onmicrosoft.com/adminconsent?client_id=" + app,
			authority + "/contoso.onmicrosoft.com/v2.0/adminconsent?client_id=" + app + "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"},
		{"contoso.onmicrosoft.com", "https://portal.azure.com/",
			authority + "/contoso.onmicrosoft.com/adminconsent?client_id=" + app + "&redirect_uri=https%3A%2F%2Fportal.azure.com%2F",
			authority + "/contoso.onmicrosoft.com/v2.0/adminconsent?client_id=" + app + "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&redirect_uri=https%3A%2F%2Fportal.azure.com%2F"},
	} {
		if got := credentials.AdminConsentURL(authority, tc.tenant, app, tc.redirect); got != tc.v1 {
			t.Errorf("v1: %s\nwant %s", got, tc.v1)
		}
		if got := credentials.AdminConsentURLv2(authority, tc.tenant, app, "https://graph.microsoft.com", tc.redirect); got != tc.v2 {
			t.Errorf("v2: %s\nwant %s", got, tc.v2)
		}
	}
}
