package credentials_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/credentials"
)

// What the tools print (az 2.54 and later adds expires_on; azd's message
// of a signed-out account is its legacy consoleMessage form).
func azOutput(token, tenant string, exp time.Time) string {
	b, _ := json.Marshal(map[string]any{"accessToken": token, "expiresOn": exp.Local().Format("2006-01-02 15:04:05.000000"),
		"expires_on": exp.Unix(), "subscription": "00000000-0000-0000-0000-000000000000", "tenant": tenant, "tokenType": "Bearer"})
	return string(b)
}

func azdOutput(token string, exp time.Time) string {
	b, _ := json.Marshal(map[string]any{"token": token, "expiresOn": exp.UTC().Format("2006-01-02T15:04:05Z")})
	return string(b)
}

const (
	azSignedOut  = "ERROR: Please run 'az login' to setup account."
	azdSignedOut = `{"type":"consoleMessage","timestamp":"2026-01-05T10:00:00Z","data":{"message":"\nERROR: not logged in, run azd auth login to login\n"}}`
)

// KEY_VAULT_CREDENTIAL=developer reads the app's secret with the operator's
// own sign-in: the Azure CLI's, else the Azure Developer CLI's, whichever
// gives a token (a signed-out az does not hide a signed-in azd); the
// managed identity is never asked. With neither, the error says how to
// sign in, and what each tool said.
func TestDeveloperCredential(t *testing.T) {
	s := start(t, devstack.Options{})
	tok := s.OperatorVaultToken(t)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tenant := devstack.DefaultTenantID
	azWant := "account get-access-token -o json --resource " + s.VaultResource() + " --tenant " + tenant
	azdWant := "auth token -o json --no-prompt --scope " + s.VaultResource() + "/.default --tenant-id " + tenant
	for _, c := range []struct {
		name    string
		az, azd bool // installed and signed in
		noAz    bool // az not installed
		used    string
		err     string
	}{
		{name: "az", az: true, used: "az"},
		{name: "az signed out, azd signed in", azd: true, used: "azd"},
		{name: "no az, azd signed in", noAz: true, azd: true, used: "azd"},
		{name: "both signed out", err: "your own sign-in gave no token for " + s.VaultResource() + "/.default: sign in with `az login --tenant " + tenant +
			"` or `azd auth login --tenant-id " + tenant + "` (Azure CLI: AzureCLICredential: Please run 'az login' to setup account.; " +
			"Azure Developer CLI: AzureDeveloperCLICredential: not logged in, run azd auth login to login.)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			azOut, azdOut := "", ""
			if c.az {
				azOut = azOutput(tok, tenant, exp)
			}
			if c.azd {
				azdOut = azdOutput(tok, exp)
			}
			if !c.noAz {
				devstack.FakeAzureCLI(t, dir, "az", azWant, azOut, azSignedOut)
			}
			devstack.FakeAzureCLI(t, dir, "azd", azdWant, azdOut, azdSignedOut)
			t.Setenv("PATH", dir) // nothing else: no real az or azd answers
			msi := s.Counters().Get("msi.GET /msi/token", 0)
			f := fixtureOn(t, s, "", "KEY_VAULT_CREDENTIAL", "developer")
			_, err := f.source().Token(context.Background())
			if c.err != "" {
				var se *credentials.SignInError
				if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v\nwant it to carry %q", err, c.err)
				}
				noSecretIn(t, s, err.Error())
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Counters().Get("msi.GET /msi/token", 0) != msi {
				t.Fatal("the managed identity was asked")
			}
			want := map[string]string{"az": azWant, "azd": azdWant}[c.used]
			if log, _ := os.ReadFile(filepath.Join(dir, c.used+".log")); !strings.Contains(string(log), want+"\n") {
				t.Fatalf("%s ran %q, want %q", c.used, log, want)
			}
		})
	}
}
