package doctor_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// The most important failure, rehearsed: an administrator takes back one
// application permission, the admin consent, or the enterprise application,
// through the devstack's control endpoint over HTTP; doctor's verdict and
// its fix say which, for the tenant, with the consent link.
func TestDoctorWithdrawnConsent(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint) // on Azure, as the deployed app
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	tid, app := devstack.DefaultTenantID, devstack.DefaultClientID
	consent := s.EntraURL + "/" + tid + "/adminconsent?client_id=" + app
	v2 := func(res string) string {
		return s.EntraURL + "/" + tid + "/v2.0/adminconsent?client_id=" + app + "&scope=" + url.QueryEscape(res+"/.default")
	}
	redirect := " (register a Web redirect URI on the app and set DEFENDER_CONSENT_REDIRECT_URI to it: Entra ID sends the administrator there after consent)"
	missing := func(parts, roles, api, res string) []string {
		return []string{
			"FAIL  roles        app " + app + " lacks the application permission(s) " + parts + " of " + api + " in tenant " + tid +
				": add " + roles + " as application permissions, then have an administrator of the tenant open " + consent + " (or " + v2(res) + ")",
			"                   fix: add " + roles + " as application permissions, then have an administrator of the tenant open " + consent + redirect,
			"skip  api          tenant " + tid + ": needs the roles"}
	}
	xdr := []string{"DEFENDER_API", "xdr", "DEFENDER_API_URL", s.XDRURL}
	for _, c := range []struct {
		name, control string
		env           []string
		want          []string
	}{
		{"hunting permission", "roles?withdraw=ThreatHunting.Read.All", nil,
			missing("ThreatHunting.Read.All (for hunting-query)", "ThreatHunting.Read.All", "Microsoft Graph", devstack.GraphResource)},
		{"incident permission", "roles?withdraw=SecurityIncident.ReadWrite.All", nil,
			missing("SecurityIncident.Read.All (for incident-export), SecurityIncident.ReadWrite.All (for ticket-webhook)", "SecurityIncident.Read.All, SecurityIncident.ReadWrite.All", "Microsoft Graph", devstack.GraphResource)},
		{"XDR hunting permission", "roles?withdraw=AdvancedHunting.Read.All", xdr,
			missing("AdvancedHunting.Read.All (for hunting-query)", "AdvancedHunting.Read.All", "Microsoft Threat Protection", devstack.XDRResource)},
		{"XDR incident permission", "roles?withdraw=Incident.ReadWrite.All", xdr,
			missing("Incident.Read.All (for incident-export), Incident.ReadWrite.All (for ticket-webhook)", "Incident.Read.All, Incident.ReadWrite.All", "Microsoft Threat Protection", devstack.XDRResource)},
		{"admin consent revoked", "consent?withdraw=roles", nil, []string{
			"FAIL  roles        app " + app + " lacks the application permission(s) SecurityIncident.Read.All (for incident-export), ThreatHunting.Read.All (for hunting-query), SecurityIncident.ReadWrite.All (for ticket-webhook) of Microsoft Graph in tenant " + tid +
				": add SecurityIncident.Read.All, ThreatHunting.Read.All, SecurityIncident.ReadWrite.All as application permissions, then have an administrator of the tenant open " + consent + " (or " + v2(devstack.GraphResource) + ")",
			"                   fix: the token carries no roles: have an administrator of tenant " + tid + " grant admin consent to the app's application permissions (SecurityIncident.Read.All, ThreatHunting.Read.All, SecurityIncident.ReadWrite.All): " + consent + redirect,
			"skip  api          tenant " + tid + ": needs the roles"}},
		{"enterprise application deleted", "consent?withdraw=app", nil, []string{
			"ok    key vault    secret \"" + devstack.DefaultSecretName + "\" readable at " + s.KeyVaultURL + "/ (version ",
			// The failure carries its fix: no fix line repeats it.
			"FAIL  token        tenant " + tid + ": entra id refused a token for app " + app + " in tenant " + tid +
				": the application is not in this tenant (AADSTS700016): check DEFENDER_CLIENT_ID and DEFENDER_TENANT_ID, and have an administrator of tenant " + tid + " grant consent: " + consent + " (HTTP 400 unauthorized_client, AADSTS700016, trace ID ",
			"skip  roles        tenant " + tid + ": needs a token"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			controlPost(t, s, c.control)
			defer controlPost(t, s, "consent?restore")
			out := doctorRun(t, s, s.HTTPClient(), c.env)
			wantLines(t, out, c.want)
		})
	}
	// Restored: all passes again.
	if out := doctorRun(t, s, s.HTTPClient(), nil); !strings.Contains(out, "ok    roles        tenant "+tid+": SecurityIncident.ReadWrite.All, SecurityAlert.Read.All, ThreatHunting.Read.All cover") {
		t.Fatalf("not restored:\n%s", out)
	}
}

func controlPost(t *testing.T, s *devstack.Stack, pathAndQuery string) {
	t.Helper()
	resp, err := s.HTTPClient().Post(s.ControlURL+"/control/"+pathAndQuery, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /control/%s: HTTP %d", pathAndQuery, resp.StatusCode)
	}
}

// doctorRun runs doctor on the devstack's settings changed by env
// (name, value pairs), with a file sink and state store, and returns what
// it printed; it fails the test if a secret is among it.
func doctorRun(t *testing.T, s *devstack.Stack, hc *http.Client, env []string) string {
	t.Helper()
	m := s.Settings()
	m["EXPORT_SINK"], m["STATE_STORE"] = "file://"+t.TempDir(), "file://"+t.TempDir()
	m["WEBHOOK_SECRET_JIRA"] = "jira-webhook-secret-for-the-doctor"
	m["DEFENDER_RATE_LIMITS"] = "off"
	for i := 0; i < len(env); i += 2 {
		m[env[i]] = env[i+1]
	}
	var out strings.Builder
	doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, io.MultiWriter(&out, devstack.AuditLog()), &doctor.Options{HTTPClient: hc})
	for _, secret := range []string{"jira-webhook-secret-for-the-doctor", s.ClientSecret(devstack.DefaultClientID)} {
		if strings.Contains(out.String(), secret) {
			t.Fatalf("a secret printed:\n%s", out.String())
		}
	}
	return out.String()
}

// wantLines checks that each of want is a whole line of out, in order, a
// fix line right under its failure; a want ending in a space is the start
// of its line (what follows varies: a version, a trace ID).
func wantLines(t *testing.T, out string, want []string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	i := 0
	for n, w := range want {
		for i < len(lines) && lines[i] != w && !(strings.HasSuffix(w, " ") && strings.HasPrefix(lines[i], w)) {
			i++
		}
		if i == len(lines) {
			t.Fatalf("no line %q (in order) in:\n%s", w, out)
		}
		// A failure's next line is the one wanted next, if that is its fix.
		if n+1 < len(want) && strings.Contains(want[n+1], "fix: ") && (i+1 == len(lines) || lines[i+1] != want[n+1]) {
			t.Fatalf("after %q, no fix line %q in:\n%s", w, want[n+1], out)
		}
		i++
	}
}
