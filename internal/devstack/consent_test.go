package devstack_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

// An administrator takes back a permission, the admin consent or the
// enterprise application, through the control endpoint: tokens issued
// after it say so, the API answers as the real one does, a token issued
// before keeps its roles until it expires, and a restore undoes it.
func TestWithdrawConsent(t *testing.T) {
	s := start(t, devstack.Options{})
	graphList := s.GraphURL + "/v1.0/security/incidents?$top=1"
	xdrList := s.XDRURL + "/api/incidents?$top=1"
	for _, c := range []struct {
		name, control, restore string
		resource, call         string
		wantRoles              []string // the new token's roles claim (nil: absent)
		wantStatus             int
		wantMessage            string
	}{
		{name: "a hunting role", control: "roles?withdraw=ThreatHunting.Read.All", restore: "roles?restore=ThreatHunting.Read.All",
			resource: devstack.GraphResource, call: s.GraphURL + "/v1.0/security/runHuntingQuery",
			wantRoles: []string{"SecurityIncident.ReadWrite.All", "SecurityAlert.Read.All"}, wantStatus: 403,
			wantMessage: "Missing application roles. API required roles: ThreatHunting.Read.All, application roles: SecurityIncident.ReadWrite.All,SecurityAlert.Read.All."},
		{name: "the incident role", control: "roles?withdraw=SecurityIncident.ReadWrite.All", restore: "roles?restore=all",
			resource: devstack.GraphResource, call: graphList,
			wantRoles: []string{"SecurityAlert.Read.All", "ThreatHunting.Read.All"}, wantStatus: 403,
			wantMessage: "Missing application roles. API required roles: SecurityIncident.Read.All,SecurityIncident.ReadWrite.All, application roles: SecurityAlert.Read.All,ThreatHunting.Read.All."},
		{name: "an XDR role", control: "roles?withdraw=Incident.ReadWrite.All", restore: "roles?restore=Incident.ReadWrite.All",
			resource: devstack.XDRResource, call: xdrList,
			wantRoles: []string{"AdvancedHunting.Read.All"}, wantStatus: 403,
			wantMessage: "Missing application roles. API required roles: Incident.Read.All,Incident.ReadWrite.All, application roles: AdvancedHunting.Read.All."},
		{name: "the admin consent", control: "consent?withdraw=roles", restore: "consent?restore",
			resource: devstack.GraphResource, call: graphList, wantStatus: 403,
			wantMessage: "Missing application roles. API required roles: SecurityIncident.Read.All,SecurityIncident.ReadWrite.All, application roles: ."},
		{name: "the partner tenant's consent", control: "consent?withdraw=roles&tenant=" + devstack.PartnerTenantName, restore: "consent?restore&tenant=" + devstack.PartnerTenantID,
			resource: devstack.GraphResource, call: graphList, wantStatus: 403,
			wantMessage: "Missing application roles. API required roles: SecurityIncident.Read.All,SecurityIncident.ReadWrite.All, application roles: ."},
	} {
		t.Run(c.name, func(t *testing.T) {
			tenant := devstack.DefaultTenantID
			if strings.Contains(c.control, "tenant=") {
				tenant = devstack.PartnerTenantID
			}
			before := token(t, s, tenant, devstack.DefaultClientID, c.resource)
			control(t, s, c.control, 200)
			after := token(t, s, tenant, devstack.DefaultClientID, c.resource)
			if _, present := claims(t, after)["roles"]; present != (c.wantRoles != nil) {
				t.Errorf("roles claim present = %v, want %v", present, c.wantRoles != nil)
			} else if present && !slices.Equal(roles(claims(t, after)), c.wantRoles) {
				t.Errorf("roles after = %q, want %q", roles(claims(t, after)), c.wantRoles)
			}
			r := do(t, s, "POST", c.call, after, strings.NewReader(`{"Query":"DeviceInfo | take 1"}`))
			if c.call == graphList || c.call == xdrList {
				r = do(t, s, "GET", c.call, after, nil)
			}
			if r.status != c.wantStatus || errorMessage(t, r) != c.wantMessage {
				t.Errorf("with the new token: HTTP %d %q, want %d %q", r.status, errorMessage(t, r), c.wantStatus, c.wantMessage)
			}
			if r := do(t, s, "GET", strings.Replace(c.call, "runHuntingQuery", "incidents?$top=1", 1), before, nil); r.status != 200 {
				t.Errorf("the token issued before: HTTP %d, want 200 (its roles are signed in)", r.status)
			}
			control(t, s, c.restore, 200)
			if got := roles(claims(t, token(t, s, tenant, devstack.DefaultClientID, c.resource))); !slices.Equal(got, devstack.AllRoles[c.resource]) {
				t.Errorf("roles after restore = %q, want %q", got, devstack.AllRoles[c.resource])
			}
		})
	}
}

// The enterprise application deleted: Entra ID no longer knows the app in
// the tenant (AADSTS700016), until it is restored. Bad requests say why.
func TestWithdrawApp(t *testing.T) {
	s := start(t, devstack.Options{})
	control(t, s, "consent?withdraw=app", 200)
	r := postForm(t, s, s.EntraURL+"/"+devstack.DefaultTenantID+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {devstack.DefaultClientID}, "client_secret": {s.ClientSecret(devstack.DefaultClientID)},
		"scope": {devstack.GraphResource + "/.default"}})
	if m := r.json(t); r.status != 400 || m["error"] != "unauthorized_client" || !strings.HasPrefix(m["error_description"].(string), "AADSTS700016: Application with identifier '"+devstack.DefaultClientID+"' was not found in the directory 'contoso.onmicrosoft.com'.") {
		t.Errorf("HTTP %d %v", r.status, m["error_description"])
	}
	// The other tenant still has it.
	token(t, s, devstack.PartnerTenantID, devstack.DefaultClientID, devstack.GraphResource)
	control(t, s, "consent?restore", 200)
	token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)

	for _, bad := range []struct{ control, want string }{
		{"roles?withdraw=Mail.Read", `the app holds no application permission "Mail.Read" in this tenant`},
		{"roles?restore=SecurityIncident.Read.All", `the app held no application permission "SecurityIncident.Read.All" in this tenant at start`},
		{"roles?withdraw=ThreatHunting.Read.All&tenant=nowhere.onmicrosoft.com", `no tenant "nowhere.onmicrosoft.com" in the directory`},
		{"roles?withdraw=ThreatHunting.Read.All&app=" + devstack.VaultReaderClientID + "&tenant=" + devstack.PartnerTenantID, "app " + devstack.VaultReaderClientID + " was never consented in tenant " + devstack.PartnerTenantID},
		{"consent?withdraw=everything", "say withdraw=roles, withdraw=app or restore"},
		{"roles", "say withdraw=<role> or restore=<role|all>"},
	} {
		if got := control(t, s, bad.control, 400)["error"]; got != bad.want {
			t.Errorf("%s: %q, want %q", bad.control, got, bad.want)
		}
	}
}

// control POSTs to the devstack's control endpoint and checks the status.
func control(t testing.TB, s *devstack.Stack, pathAndQuery string, want int) map[string]any {
	t.Helper()
	r := do(t, s, "POST", s.ControlURL+"/control/"+pathAndQuery, "", nil)
	if r.status != want {
		t.Fatalf("POST /control/%s: HTTP %d, want %d: %s", pathAndQuery, r.status, want, r.body)
	}
	return r.json(t)
}
