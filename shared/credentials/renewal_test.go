package credentials_test

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/google/uuid"
)

const versionsEndpoint = "keyvault.GET /secrets/{name}/versions"

// certFixture is a fixture in keyvault-certificate mode whose log lines
// also go to logs (and to the package's audit).
func certFixture(t *testing.T, logs *devstack.LogBuffer, kv ...string) *fixture {
	t.Helper()
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	f := &fixture{s: s, clock: &fakeClock{t: time.Now()}}
	f.cfg = settings(t, s, id, append([]string{"DEFENDER_CREDENTIAL", "keyvault-certificate", "DEFENDER_SECRET_NAME", devstack.CertificateSecretName}, kv...)...)
	f.cache = credentials.NewCache(f.clock.Now)
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(logs, syncWriter{}, devstack.AuditLog()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	f.creds, err = credentials.New(functions.Registration(f.cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: f.cache, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// records are the log records with this message.
const fellBack = "Entra ID does not know the current certificate in Key Vault (AADSTS700027: not registered on the app, e.g. renewed by its policy); signing with the newest older version it accepts until the current one is uploaded."

// thumbprints are the SHA-1 (hex) and SHA-256 (base64url) thumbprints of
// the certificate in a version's PEM, and the certificate.
func thumbprints(t *testing.T, pemText string) (string, string, *x509.Certificate) {
	t.Helper()
	for rest := []byte(pemText); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			t.Fatal("no certificate")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			s1, s256 := sha1.Sum(c.Raw), sha256.Sum256(c.Raw)
			return fmt.Sprintf("%X", s1), base64.RawURLEncoding.EncodeToString(s256[:]), c
		}
	}
}

// Key Vault renews the certificate (its policy, or someone) and nobody
// uploads it: the functions keep getting tokens with the previous version,
// say once what to run, and move to the current version within SecretTTL
// of its upload.
func TestCertificateRenewalFallsBack(t *testing.T) {
	var logs devstack.LogBuffer
	f := certFixture(t, &logs)
	ctx := context.Background()
	seed := f.s.SecretVersions(devstack.CertificateSecretName)[0]
	if _, err := f.source().Token(ctx); err != nil {
		t.Fatal(err)
	}
	renewed := f.s.RenewCertificate(devstack.CertificateRenewal{})
	f.clock.Advance(61 * time.Minute) // past the token's refresh point and the secret's TTL: the renewed version is read
	if _, err := f.source().Token(ctx); err != nil {
		t.Fatalf("after the renewal: %v", err)
	}
	c := f.s.Counters()
	if refused, ok, lists := c.Get(tokenEndpoint, 401), c.Get(tokenEndpoint, 200), c.Get(versionsEndpoint, 200); refused != 1 || ok != 2 || lists != 1 {
		t.Fatalf("token refusals %d, tokens %d, version lists %d; want 1, 2, 1", refused, ok, lists)
	}
	warned := logs.Records(fellBack)
	seedThumb, _, seedCert := thumbprints(t, f.s.CertificateVersionPEM(seed))
	renewedThumb, _, _ := thumbprints(t, f.s.CertificateVersionPEM(renewed))
	fix := "az keyvault certificate download --vault-name <vault> --name " + devstack.CertificateSecretName + " --version " + renewed +
		" --encoding PEM --file " + devstack.CertificateSecretName + "-" + renewed + ".pem && az ad app credential reset --id " + devstack.DefaultClientID +
		" --cert @" + devstack.CertificateSecretName + "-" + renewed + ".pem --append"
	if len(warned) != 1 || warned[0]["level"] != "WARN" || warned[0]["version"] != renewed || warned[0]["thumbprint"] != renewedThumb ||
		warned[0]["older_version"] != seed || warned[0]["older_thumbprint"] != seedThumb ||
		warned[0]["older_expires"] != seedCert.NotAfter.UTC().Format(time.RFC3339) || warned[0]["fix"] != fix {
		t.Fatalf("warnings %v", warned)
	}

	// The next refresh signs with the older version straight away.
	f.clock.Advance(31 * time.Minute)
	if _, err := f.source().Token(ctx); err != nil {
		t.Fatal(err)
	}
	if refused, ok, lists := c.Get(tokenEndpoint, 401), c.Get(tokenEndpoint, 200), c.Get(versionsEndpoint, 200); refused != 1 || ok != 3 || lists != 1 {
		t.Fatalf("within the TTL: token refusals %d, tokens %d, version lists %d; want 1, 3, 1", refused, ok, lists)
	}

	// Uploaded, the current version is used once the TTL has passed.
	if err := f.s.RegisterCertificate(renewed); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(31 * time.Minute)
	if _, err := f.source().Token(ctx); err != nil {
		t.Fatal(err)
	}
	if refused, ok := c.Get(tokenEndpoint, 401), c.Get(tokenEndpoint, 200); refused != 1 || ok != 4 {
		t.Fatalf("after the upload: token refusals %d, tokens %d; want 1, 4", refused, ok)
	}
	if over := logs.Records("Entra ID accepts the current certificate version from Key Vault; the older version is no longer used."); len(over) != 1 || over[0]["version"] != renewed || over[0]["older_version"] != seed {
		t.Fatalf("end of the fallback: %v", over)
	}
	if len(logs.Records(fellBack)) != 1 {
		t.Fatal("warned more than once")
	}
}

// Not uploaded for longer than the TTL: the current version is tried again
// each TTL, and the warning is not repeated.
func TestCertificateRenewalRetriesEachTTL(t *testing.T) {
	var logs devstack.LogBuffer
	f := certFixture(t, &logs)
	f.s.RenewCertificate(devstack.CertificateRenewal{})
	for range 3 {
		if _, err := f.source().Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(61 * time.Minute)
	}
	if refused, lists := f.s.Counters().Get(tokenEndpoint, 401), f.s.Counters().Get(versionsEndpoint, 200); refused != 3 || lists != 3 {
		t.Fatalf("token refusals %d, version lists %d; want 3, 3", refused, lists)
	}
	levels := []string{}
	for _, r := range logs.Records(fellBack) {
		levels = append(levels, r["level"].(string))
	}
	if fmt.Sprint(levels) != "[WARN INFO INFO]" {
		t.Fatalf("levels %v", levels)
	}
}

// Where nothing older will do, the refusal reaches the caller with what to
// run; versions Key Vault would not serve are not tried.
func TestCertificateRenewalWithoutFallback(t *testing.T) {
	for _, c := range []struct {
		name     string
		breakIt  func(s *devstack.Stack, seed string) error
		refusals int64 // token requests Entra ID refused
	}{
		{"older version removed from the app", func(s *devstack.Stack, seed string) error { return s.UnregisterCertificate(seed) }, 2},
		{"older version disabled in the vault", func(s *devstack.Stack, seed string) error {
			return s.SetSecretVersionEnabled(devstack.CertificateSecretName, seed, false)
		}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs devstack.LogBuffer
			// RS256: its x5t is the SHA-1 thumbprint, the one Entra ID names.
			f := certFixture(t, &logs, "DEFENDER_ASSERTION_ALG", "RS256")
			seed := f.s.SecretVersions(devstack.CertificateSecretName)[0]
			renewed := f.s.RenewCertificate(devstack.CertificateRenewal{})
			if err := c.breakIt(f.s, seed); err != nil {
				t.Fatal(err)
			}
			_, err := f.source().Token(context.Background())
			var ee *credentials.EntraError
			if !errors.As(err, &ee) || !ee.Unregistered() {
				t.Fatalf("err = %v", err)
			}
			thumb, _, _ := thumbprints(t, f.s.CertificateVersionPEM(renewed))
			want := "the certificate that signed the client assertion is not registered on the app (AADSTS700027, key not found, thumbprint " + thumb + "): " +
				"Key Vault's current version of \"" + devstack.CertificateSecretName + "\" was never uploaded (did its policy renew it?): upload the certificate: " +
				"az keyvault certificate download --vault-name <vault> --name " + devstack.CertificateSecretName + " --encoding PEM --file " + devstack.CertificateSecretName + ".pem" +
				" && az ad app credential reset --id " + devstack.DefaultClientID + " --cert @" + devstack.CertificateSecretName + ".pem --append (docs/certificate-rotation.md)"
			if ee.Advice() != want {
				t.Fatalf("advice:\n%s\nwant:\n%s", ee.Advice(), want)
			}
			noSecretIn(t, f.s, err.Error())
			if n := f.s.Counters().Get(tokenEndpoint, 401); n != c.refusals {
				t.Fatalf("%d token requests refused, want %d", n, c.refusals)
			}
			if n := len(logs.Records("No older certificate version to sign with.")); n != 1 {
				t.Fatalf("%d lines say there was no fallback", n)
			}
			if n := len(logs.Records(fellBack)); n != 0 {
				t.Fatalf("%d lines say it fell back", n)
			}
		})
	}
}

// The newest older version that is still valid is chosen: an expired one,
// though newer and registered, is passed over without a request.
func TestCertificateRenewalSkipsExpired(t *testing.T) {
	var logs devstack.LogBuffer
	f := certFixture(t, &logs)
	seed := f.s.SecretVersions(devstack.CertificateSecretName)[0]
	f.s.RenewCertificate(devstack.CertificateRenewal{Register: true, NotAfter: time.Now().Add(-time.Hour)})
	newer := f.s.RenewCertificate(devstack.CertificateRenewal{Register: true})
	f.s.RenewCertificate(devstack.CertificateRenewal{})
	if _, err := f.source().Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if warned := logs.Records(fellBack); len(warned) != 1 || warned[0]["older_version"] != newer {
		t.Fatalf("fell back to %v, want the newest valid older version %s (not %s)", warned, newer, seed)
	}
	if n := f.s.Counters().Get(tokenEndpoint, 401); n != 1 {
		t.Fatalf("%d refusals, want 1", n)
	}
}

// A renewal uploaded before it is read costs nothing: no refusal, no list.
func TestCertificateRenewalUploaded(t *testing.T) {
	var logs devstack.LogBuffer
	f := certFixture(t, &logs)
	f.s.RenewCertificate(devstack.CertificateRenewal{Register: true})
	if _, err := f.source().Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if refused, lists := f.s.Counters().Get(tokenEndpoint, 401), f.s.Counters().Get(versionsEndpoint, 0); refused != 0 || lists != 0 {
		t.Fatalf("token refusals %d, version lists %d", refused, lists)
	}
}

// A partner app's tenants, refused at once, share one search.
func TestCertificateRenewalManyTenants(t *testing.T) {
	var logs devstack.LogBuffer
	f := certFixture(t, &logs, "DEFENDER_TENANT_ID", devstack.DefaultTenantID+","+devstack.PartnerTenantID)
	f.s.RenewCertificate(devstack.CertificateRenewal{})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, tenant := range f.creds.Tenants() {
		wg.Go(func() {
			tok, err := f.creds.Source(tenant).Token(context.Background())
			if err == nil && mustClaims(t, tok).TenantID != tenant {
				err = fmt.Errorf("a token for %s", mustClaims(t, tok).TenantID)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if ok, lists := f.s.Counters().Get(tokenEndpoint, 200), f.s.Counters().Get(versionsEndpoint, 200); ok != 2 || lists != 1 {
		t.Fatalf("tokens %d, version lists %d; want 2, 1", ok, lists)
	}
}

// CheckCertificate says which certificate Key Vault holds and whether the
// app registration has it, and what signs meanwhile when it does not.
func TestCheckCertificate(t *testing.T) {
	ctx := context.Background()
	var logs devstack.LogBuffer
	f := certFixture(t, &logs)
	reg := functions.Registration(f.cfg)
	seed := f.s.SecretVersions(devstack.CertificateSecretName)[0]
	sha1Hex, x5t256, cert := thumbprints(t, f.s.CertificateVersionPEM(seed))
	seedCert := credentials.Certificate{Version: seed, Subject: "CN=defender-functions", Thumbprint: sha1Hex, X5tS256: x5t256, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
	check, used, err := f.creds.CheckCertificate(ctx)
	if err != nil || !used {
		t.Fatalf("used %v, err %v", used, err)
	}
	if want := (credentials.CertificateCheck{Current: seedCert, Accepted: true, Upload: credentials.UploadCommand(reg, seed)}); fmt.Sprint(*check) != fmt.Sprint(want) {
		t.Fatalf("check\n%+v\nwant\n%+v", *check, want)
	}

	renewed := f.s.RenewCertificate(devstack.CertificateRenewal{})
	f.clock.Advance(61 * time.Minute)
	check, _, err = f.creds.CheckCertificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ee *credentials.EntraError
	if check.Current.Version != renewed || !check.Current.Managed || check.Accepted || !check.Unregistered || !errors.As(check.Refused, &ee) ||
		check.Fallback == nil || fmt.Sprint(*check.Fallback) != fmt.Sprint(seedCert) || check.Upload != credentials.UploadCommand(reg, renewed) {
		t.Fatalf("renewed, not uploaded: %+v", *check)
	}

	if err := f.s.UnregisterCertificate(seed); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(61 * time.Minute)
	if check, _, _ = f.creds.CheckCertificate(ctx); !check.Unregistered || check.Fallback != nil {
		t.Fatalf("nothing to fall back to: %+v", *check)
	}

	// The other modes have no certificate to check.
	g := newFixture(t)
	if check, used, err := g.creds.CheckCertificate(ctx); check != nil || used || err != nil {
		t.Fatalf("keyvault-secret: %v %v %v", check, used, err)
	}
}

// The vault's name is taken from its URI, in every cloud.
func TestUploadCommand(t *testing.T) {
	for _, c := range []struct{ uri, version, want string }{
		{"https://kv-defender.vault.azure.net/", "0a1b", "az keyvault certificate download --vault-name kv-defender --name cert --version 0a1b --encoding PEM --file cert-0a1b.pem && az ad app credential reset --id app --cert @cert-0a1b.pem --append"},
		{"https://kv-gov.vault.usgovcloudapi.net", "", "az keyvault certificate download --vault-name kv-gov --name cert --encoding PEM --file cert.pem && az ad app credential reset --id app --cert @cert.pem --append"},
		{"https://127.0.0.1:8443/", "", "az keyvault certificate download --vault-name <vault> --name cert --encoding PEM --file cert.pem && az ad app credential reset --id app --cert @cert.pem --append"},
	} {
		if got := credentials.UploadCommand(credentials.Registration{KeyVaultURL: c.uri, SecretName: "cert", ClientID: "app"}, c.version); got != c.want {
			t.Errorf("%s:\n%s\nwant\n%s", c.uri, got, c.want)
		}
	}
}
