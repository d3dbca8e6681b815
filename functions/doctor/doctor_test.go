package doctor_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/infra/local/devstack"
)

// doctor against the devstack: everything passing, then each failure the
// issue names, with the line and the fix an operator needs.
func TestDoctor(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	// The managed identity is found through the process environment, as on Azure.
	base := s.Settings()
	t.Setenv("IDENTITY_ENDPOINT", base["IDENTITY_ENDPOINT"])
	t.Setenv("IDENTITY_HEADER", base["IDENTITY_HEADER"])
	dir := t.TempDir()
	blocker := filepath.Join(dir, "a-file")
	os.WriteFile(blocker, []byte("x"), 0o600)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()

	cases := []struct {
		name   string
		env    []string
		before func()
		after  func()
		pass   bool
		want   []string // lines (or parts of lines) in order
	}{
		{name: "all good", pass: true, want: []string{
			"ok    config       graph API at " + s.GraphURL + ", app " + devstack.DefaultClientID,
			"functions incident-export, hunting-query, ticket-webhook",
			`ok    key vault    secret "` + devstack.DefaultSecretName + `" readable at ` + s.KeyVaultURL,
			"ok    token        tenant " + devstack.DefaultTenantID + ": app-only token for https://graph.microsoft.com",
			"ok    roles        tenant " + devstack.DefaultTenantID,
			"ok    api          tenant " + devstack.DefaultTenantID + ": " + s.GraphURL + " answered a one-incident read (1 returned)",
			"ok    state store  file://",
			"ok    sink         file://",
		}},
		{name: "wrong secret in Key Vault", before: func() { s.PutSecret(devstack.DefaultSecretName, "not-the-app-secret") },
			after: func() { s.PutSecret(devstack.DefaultSecretName, s.ClientSecret(devstack.DefaultClientID)) }, want: []string{
				"ok    key vault",
				"FAIL  token        tenant " + devstack.DefaultTenantID + ": entra id refused a token",
				"fix: the client secret is wrong (AADSTS7000215): the Key Vault secret \"" + devstack.DefaultSecretName + "\" must hold a current secret's Value",
				"skip  roles", "skip  api",
				"ok    state store", "ok    sink",
			}},
		{name: "missing role", env: []string{"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_ID", devstack.ReaderClientID,
			"DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.ReaderClientID)}, want: []string{
			"ok    key vault    not used (DEFENDER_CREDENTIAL=env-secret)",
			"ok    token",
			"FAIL  roles        app " + devstack.ReaderClientID + " lacks the application permission(s) ThreatHunting.Read.All (for hunting-query), SecurityIncident.ReadWrite.All (for ticket-webhook)",
			"fix: add ThreatHunting.Read.All, SecurityIncident.ReadWrite.All as application permissions, then have an administrator of the tenant open " + s.EntraURL + "/" + devstack.DefaultTenantID + "/adminconsent?client_id=" + devstack.ReaderClientID,
			"skip  api",
		}},
		{name: "unreachable Key Vault", env: []string{"KEY_VAULT_URL", "https://" + closed + "/"}, want: []string{
			"FAIL  key vault    key vault: reading secret",
			"fix: make KEY_VAULT_URL (https://" + closed + "/) reachable from here",
			"skip  token",
		}},
		{name: "unwritable sink", env: []string{"EXPORT_SINK", "file://" + filepath.Join(blocker, "export")}, want: []string{
			"ok    api",
			"ok    state store",
			"FAIL  sink",
			"fix: EXPORT_SINK=file://" + filepath.Join(blocker, "export") + " must be a directory this process can create and write",
		}},
		{name: "configuration", env: []string{"DEFENDER_CLIENT_ID", "my-app"}, want: []string{
			`FAIL  config       DEFENDER_CLIENT_ID="my-app" is not an application (client) ID`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before()
			}
			if c.after != nil {
				defer c.after()
			}
			m := s.Settings()
			m["EXPORT_SINK"], m["STATE_STORE"] = "file://"+t.TempDir(), "file://"+t.TempDir()
			m["WEBHOOK_SECRET_JIRA"] = "jira-webhook-secret-for-the-doctor"
			for i := 0; i < len(c.env); i += 2 {
				m[c.env[i]] = c.env[i+1]
			}
			var out strings.Builder
			pass := doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, io.MultiWriter(&out, devstack.AuditLog()), &doctor.Options{HTTPClient: s.HTTPClient()})
			if pass != c.pass {
				t.Fatalf("passed = %v, want %v:\n%s", pass, c.pass, out.String())
			}
			rest := out.String()
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("no %q (in order) in:\n%s", w, out.String())
				}
				rest = rest[i+len(w):]
			}
			if strings.Contains(out.String(), "jira-webhook-secret-for-the-doctor") || strings.Contains(out.String(), s.ClientSecret(devstack.DefaultClientID)) {
				t.Fatalf("a secret printed:\n%s", out.String())
			}
		})
	}
}
