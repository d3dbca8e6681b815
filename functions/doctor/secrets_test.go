package doctor_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// A secret a user puts where it does not belong (a SAS in a container URL,
// a password in a URL's user info, a collector's key in a header it cannot
// decode) is refused without being shown: doctor printed the SAS in its fix
// line and the password in its config line. Each value is issued by the
// devstack, so the suite's secrets audit looks for it in every log too.
func TestDoctorNeverShowsASecretInASetting(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"a SAS in the sink", "EXPORT_SINK", "https://acct.blob.core.windows.net/exports?sv=2024-08-04&sig=%s", `EXPORT_SINK="https://acct.blob.core.windows.net/exports?…" carries a query (a SAS token?)`},
		{"a SAS in the state store", "STATE_STORE", "https://acct.blob.core.windows.net/state?sig=%s", `STATE_STORE="https://acct.blob.core.windows.net/state?…"`},
		{"a password in the API's URL", "DEFENDER_API_URL", "https://svc:%s@graph.microsoft.com", `DEFENDER_API_URL="https://svc:…@graph.microsoft.com" is not an https base URL`},
		{"a password in the vault's URL", "KEY_VAULT_URL", "https://svc:%s@kv.vault.azure.net/", `KEY_VAULT_URL="https://svc:…@kv.vault.azure.net/" is not a vault URI`},
		{"a header the exporters cannot decode", "OTEL_EXPORTER_OTLP_HEADERS", "api-key=%s%%zz", "OTEL_EXPORTER_OTLP_HEADERS is not a list of key=value pairs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := s.IssueSecret()
			m := s.Settings()
			m["EXPORT_SINK"], m["STATE_STORE"] = "file://"+t.TempDir(), "file://"+t.TempDir()
			m["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318"
			m[tc.key] = strings.Replace(tc.value, "%s", secret, 1)
			var out strings.Builder
			if doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, io.MultiWriter(&out, devstack.AuditLog()), &doctor.Options{HTTPClient: s.HTTPClient()}) {
				t.Fatalf("passed:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "FAIL  config") || !strings.Contains(out.String(), tc.want) {
				t.Fatalf("no config failure %q:\n%s", tc.want, out.String())
			}
			if strings.Contains(out.String(), secret) {
				t.Fatalf("the secret is shown:\n%s", out.String())
			}
		})
	}
}
