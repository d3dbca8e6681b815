package doctor_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/google/uuid"
)

// Each setting an operator can get wrong, fed to doctor against the
// devstack: the exact failure and the fix under it (issue #31, item 5).
func TestDoctorFixLines(t *testing.T) {
	// MSAL caches identity tokens per process and client ID: an identity of
	// this test's own, so that no other devstack's token is served.
	id := uuid.NewString()
	s := devstack.Start(t, devstack.Options{IdentityClientID: id})
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint) // on Azure, as the deployed app
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	closed := closedAddr(t)
	authority := strings.TrimPrefix(s.EntraURL, "https://")
	untrusted := httptest.NewTLSServer(http.NotFoundHandler()) // a CA nobody here trusts
	defer untrusted.Close()
	dns := nxdomainClient(t, s)
	hec := func(origin string) string { return origin + "/services/collector/event" }
	dcr := s.LogsStreamURL()[strings.Index(s.LogsStreamURL(), "dcr-"):]
	dcr = dcr[:strings.Index(dcr, "/")]
	wrongPort := func(setting, service string) string {
		return "                   fix: nothing listens at " + closed + ", while AZURE_AUTHORITY_HOST answers at " + authority +
			" on this machine (the devstack runs): check the port in " + setting + " against the " + service + "'s (the devstack writes them to .local/devstack.env)"
	}
	vaultRead := func(origin, cause string) string {
		return `FAIL  key vault    key vault: reading secret "defender-client-secret" failed: Get "` + origin +
			`/secrets/defender-client-secret/?api-version=2026-04-01": ` + cause + " (check KEY_VAULT_URL, the network path to the vault, and the identity used to reach it)"
	}
	for _, c := range []struct {
		name   string
		env    []string
		client *http.Client
		before func()
		want   []string
	}{
		{name: "vault port typo while the devstack runs", env: []string{"KEY_VAULT_URL", "https://" + closed + "/"}, want: []string{
			vaultRead("https://"+closed, "dial tcp "+closed+": connect: connection refused"), wrongPort("KEY_VAULT_URL", "vault"),
			"skip  token        tenant " + devstack.DefaultTenantID + ": needs the app's credential (above)"}},
		{name: "devstack not running", env: []string{"KEY_VAULT_URL", "https://" + closed + "/", "AZURE_AUTHORITY_HOST", "https://" + closed, "DEFENDER_API_URL", "https://" + closed}, want: []string{
			vaultRead("https://"+closed, "dial tcp "+closed+": connect: connection refused"),
			"                   fix: nothing listens at " + closed + ": if KEY_VAULT_URL points at the devstack, it is not running (start it with make devstack, then run make doctor, which loads .local/devstack.env)"}},
		{name: "vault host typo", env: []string{"KEY_VAULT_URL", "https://kv.vault.azure.nte/"}, client: dns, want: []string{
			vaultRead("https://kv.vault.azure.nte", "dial tcp: lookup kv.vault.azure.nte on <dns>: no such host"),
			"                   fix: the name kv.vault.azure.nte does not resolve: check its spelling in KEY_VAULT_URL, whose form is https://<vault-name>.vault.azure.net/ (a private endpoint's name resolves only where its private DNS zone is linked)"}},
		{name: "collector unreachable", env: []string{"EXPORT_SINK", hec("https://" + closed)}, want: []string{
			"FAIL  sink         sink: the Splunk HTTP Event Collector at " + hec("https://"+closed) + ` was not reached: Get "https://` + closed + `/": dial tcp ` + closed + ": connect: connection refused",
			wrongPort("EXPORT_SINK", "sink")}},
		{name: "collector certificate untrusted", env: []string{"EXPORT_SINK", hec(untrusted.URL)}, want: []string{
			"FAIL  sink         sink: the Splunk HTTP Event Collector at " + hec(untrusted.URL) + ` was not reached: Get "` + untrusted.URL + `/": tls: failed to verify certificate: x509: certificate signed by unknown authority`,
			"                   fix: the server's TLS certificate is not trusted here: put the CA that issued it in the file SSL_CERT_FILE names (for the devstack, its ca.pem: `make doctor` loads .local/devstack.env, which sets SSL_CERT_FILE)"}},
		{name: "not a collector there", env: []string{"EXPORT_SINK", hec(s.GraphURL)}, want: []string{
			`FAIL  sink         splunk HEC: HTTP 404, code -1 "Not Found"`,
			"                   fix: no HTTP Event Collector answers at " + hec(s.GraphURL) + ": check the host and port in EXPORT_SINK (HEC listens on 8088 unless set otherwise, not Splunk Web's 8000) and that HEC is on (Settings > Data inputs > HTTP Event Collector > Global Settings)"}},
		{name: "collector token unknown", env: []string{"EXPORT_SINK", s.HECEventURL(), "EXPORT_SPLUNK_TOKEN_SECRET", "other-token"},
			before: func() { s.PutSecret("other-token", "5a1d0c5e-0000-4000-8000-00000000beef") }, want: []string{
				`FAIL  sink         splunk HEC: HTTP 403, code 4 "Invalid token": the token is disabled or unknown to the collector; store a valid token in the Key Vault secret EXPORT_SPLUNK_TOKEN_SECRET names`,
				"                   fix: store the Token Value of an enabled HEC token in the Key Vault secret other-token (EXPORT_SPLUNK_TOKEN_SECRET): Splunk's Settings > Data inputs > HTTP Event Collector lists them"}},
		{name: "collector token not in the vault", env: []string{"EXPORT_SINK", s.HECEventURL(), "EXPORT_SPLUNK_TOKEN_SECRET", "no-such-token"}, want: []string{
			// The failure carries its fix: no fix line repeats it.
			`FAIL  sink         sink: splunk HEC token: key vault: secret "no-such-token" not found: create it (az keyvault secret set --vault-name <vault> --name no-such-token --value <its value>), or set EXPORT_SPLUNK_TOKEN_SECRET to the secret's name`}},
		{name: "collector without its token setting", env: []string{"EXPORT_SINK", s.HECEventURL(), "EXPORT_SPLUNK_TOKEN_SECRET", ""}, want: []string{
			"FAIL  config       incident-export: EXPORT_SINK names a Splunk HTTP Event Collector: set EXPORT_SPLUNK_TOKEN_SECRET to the Key Vault secret (in KEY_VAULT_URL) that holds its token",
			"skip  sink         incident-export's settings are not right yet (config above)"}},
		{name: "logs stream unknown", env: []string{"EXPORT_SINK", strings.Replace(s.LogsStreamURL(), devstack.LogsStream, "Custom-Other", 1)}, want: []string{
			"FAIL  sink         sink: logs ingestion knows no data collection rule " + dcr + " with stream Custom-Other at this endpoint (HTTP 404 NotFound): check EXPORT_SINK",
			"                   fix: set EXPORT_SINK to the rule's logs ingestion endpoint, its immutable ID (dcr-…) and a stream it declares (Custom-DefenderIncidents): the rule's JSON View in the portal shows all three"}},
		{name: "logs role missing", env: []string{"EXPORT_SINK", s.LogsStreamURL()}, before: func() { s.DenyIdentityIngest(true) }, want: []string{
			"FAIL  sink         sink: logs ingestion refused the identity's token (HTTP 403 OperationFailed): give the identity the 'Monitoring Metrics Publisher' role on data collection rule " + dcr,
			"                   fix: assign the identity 'Monitoring Metrics Publisher' on data collection rule " + dcr + " (az role assignment create --role 'Monitoring Metrics Publisher' --assignee <principal ID> --scope <the rule's resource ID>); a new assignment can take 30 minutes to apply"}},
		{name: "logs unreachable", env: []string{"EXPORT_SINK", strings.Replace(s.LogsStreamURL(), s.LogsURL, "https://"+closed, 1)}, want: []string{
			"FAIL  sink         sink: the Logs Ingestion stream at " + strings.Replace(s.LogsStreamURL(), s.LogsURL, "https://"+closed, 1) + ` was not reached: Get "https://` + closed + `/": dial tcp ` + closed + ": connect: connection refused",
			wrongPort("EXPORT_SINK", "sink")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before()
				defer s.DenyIdentityIngest(false)
			}
			hc := c.client
			if hc == nil {
				hc = s.HTTPClient()
			}
			out := doctorRun(t, s, hc, append([]string{"MANAGED_IDENTITY_CLIENT_ID", id}, c.env...))
			out = dnsServer.ReplaceAllString(out, " on <dns>: no such host")
			wantLines(t, out, c.want)
			if strings.Contains(out, "see the message above") || strings.Contains(out, `secret ""`) {
				t.Fatalf("a generic fix, or a secret named \"\":\n%s", out)
			}
		})
	}
}

// Off Azure there is no managed identity: one line says so, with the fix,
// and the checks that need it are skipped, not failed with a role to add.
// The metadata endpoint (169.254.169.254) is answered as off Azure: no
// route there, or a proxy that refuses it (Docker Desktop, egress filters).
func TestDoctorOffAzure(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	t.Setenv("IDENTITY_ENDPOINT", "") // not the deployed app
	t.Setenv("IDENTITY_HEADER", "")
	t.Setenv("MSI_ENDPOINT", "")
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "connecting to 169.254.169.254:80: dial tcp 169.254.169.254:80: connect: network is unreachable", http.StatusForbidden)
	}))
	defer refusing.Close()
	blob := "https://" + closedAddr(t) + "/devstoreaccount1/state"
	for _, c := range []struct {
		name string
		imds func(ctx context.Context) (net.Conn, error)
	}{
		{"no route", func(context.Context) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(169, 254, 169, 254), Port: 80}, Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
		}},
		{"a proxy refuses it", func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", strings.TrimPrefix(refusing.URL, "http://"))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := s.Transport()
			tr.Proxy = nil
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr == "169.254.169.254:80" {
					return c.imds(ctx)
				}
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
			// MSAL caches identity tokens per process and client ID: a
			// new ID, so that no other test's token is served from it.
			out := doctorRun(t, s, &http.Client{Transport: tr}, []string{"STATE_STORE", blob, "EXPORT_SINK", s.LogsStreamURL(), "MANAGED_IDENTITY_CLIENT_ID", uuid.NewString()})
			wantLines(t, out, []string{
				"FAIL  key vault    no managed identity is available on this machine, and KEY_VAULT_URL needs the Function App's (only Azure provides one)",
				"                   fix: run doctor on the deployed Function App (its SSH console), where the managed identity is, or sign in as yourself (see doctor -help)",
				"skip  token        tenant " + devstack.DefaultTenantID + ": needs the app's credential (above)",
				"skip  state store  needs a managed identity, and this machine has none (above)",
				"skip  sink         needs a managed identity, and this machine has none (above)",
			})
			for _, never := range []string{"169.254", "RESPONSE", "Storage Blob Data Contributor", "Monitoring Metrics Publisher"} {
				if strings.Contains(out, never) {
					t.Fatalf("%q in:\n%s", never, out)
				}
			}
		})
	}
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	port, err := loopback.Port()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}
