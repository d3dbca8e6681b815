package doctor_test

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// certLine is what doctor says of a version of the certificate: its
// subject, thumbprints and end, computed here from the vault's PEM.
func certLine(t *testing.T, s *devstack.Stack, version string) (line, thumbprint string, notAfter time.Time) {
	t.Helper()
	rest := []byte(s.CertificateVersionPEM(version))
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			t.Fatalf("no certificate in version %s", version)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		s1, s256 := sha1.Sum(c.Raw), sha256.Sum256(c.Raw)
		thumbprint, notAfter = fmt.Sprintf("%X", s1), c.NotAfter
		left := "expired"
		if d := time.Until(c.NotAfter); d > 0 {
			left = fmt.Sprintf("%d days left", int(d/(24*time.Hour)))
		}
		return fmt.Sprintf("version %s: CN=defender-functions, thumbprint %s (x5t#S256 %s), valid until %s (%s)",
			version, thumbprint, base64.RawURLEncoding.EncodeToString(s256[:]), notAfter.UTC().Format(time.RFC3339), left), thumbprint, notAfter
	}
}

// With keyvault-certificate, doctor names the certificate Key Vault holds,
// how long it lasts, and whether the app registration has it: a Key Vault
// renewal that nobody uploaded fails the check (the functions sign with the
// older version meanwhile) with the command that fixes it.
func TestDoctorCertificate(t *testing.T) {
	upload := func(version string) string {
		file := devstack.CertificateSecretName + "-" + version + ".pem"
		return "fix: upload the current version: az keyvault certificate download --vault-name <vault> --name " + devstack.CertificateSecretName +
			" --version " + version + " --encoding PEM --file " + file + " && az ad app credential reset --id " + devstack.DefaultClientID + " --cert @" + file + " --append\n"
	}
	// A home tenant where the app is not consented: Entra ID answers the
	// certificate's token request with another refusal than AADSTS700027.
	unconsented := devstack.Options{Tenants: []devstack.Tenant{
		{ID: devstack.DefaultTenantID, Domain: devstack.DefaultTenantName, Apps: []devstack.Grant{{ClientID: devstack.DefaultClientID, Roles: devstack.AllRoles}}},
		{ID: devstack.PartnerTenantID, Domain: devstack.PartnerTenantName},
	}}
	for _, c := range []struct {
		name  string
		opts  devstack.Options
		env   []string
		renew func(s *devstack.Stack, seed string) string // the current version
		pass  bool
		want  func(s *devstack.Stack, seed, current string) []string
	}{
		{name: "registered", pass: true, want: func(s *devstack.Stack, seed, _ string) []string {
			line, _, _ := certLine(t, s, seed)
			return []string{"ok    key vault    secret \"" + devstack.CertificateSecretName + "\" readable",
				"\nok    certificate  " + line + "; app " + devstack.DefaultClientID + " has it\n", "ok    token", "ok    roles", "ok    api"}
		}},
		{name: "renewed, not uploaded", renew: func(s *devstack.Stack, _ string) string { return s.RenewCertificate(devstack.CertificateRenewal{}) },
			want: func(s *devstack.Stack, seed, current string) []string {
				line, _, _ := certLine(t, s, current)
				_, oldThumb, oldUntil := certLine(t, s, seed)
				return []string{"\nFAIL  certificate  " + line + " is not registered on app " + devstack.DefaultClientID + " (AADSTS700027): until it is, the functions sign with the older version " +
					seed + " (thumbprint " + oldThumb + ", valid until " + oldUntil.UTC().Format(time.RFC3339) + ")\n", "                   " + upload(current),
					"ok    token", "ok    roles", "ok    api"}
			}},
		{name: "renewed and uploaded", pass: true, renew: func(s *devstack.Stack, _ string) string {
			return s.RenewCertificate(devstack.CertificateRenewal{Register: true})
		}, want: func(s *devstack.Stack, _, current string) []string {
			line, _, _ := certLine(t, s, current)
			return []string{"\nok    certificate  " + line + "; app " + devstack.DefaultClientID + " has it\n", "ok    token"}
		}},
		{name: "nothing older registered", renew: func(s *devstack.Stack, seed string) string {
			v := s.RenewCertificate(devstack.CertificateRenewal{})
			if err := s.UnregisterCertificate(seed); err != nil {
				t.Fatal(err)
			}
			return v
		}, want: func(s *devstack.Stack, _, current string) []string {
			line, _, _ := certLine(t, s, current)
			return []string{"\nFAIL  certificate  " + line + " is not registered on app " + devstack.DefaultClientID + " (AADSTS700027), nor is an older version that is still valid\n",
				"                   " + upload(current),
				"FAIL  token        tenant " + devstack.DefaultTenantID + ": entra id refused a token for app " + devstack.DefaultClientID + " in tenant " + devstack.DefaultTenantID +
					": the certificate that signed the client assertion is not registered on the app (AADSTS700027, key not found",
				"skip  roles"}
		}},
		{name: "ends in 10 days", pass: true, renew: func(s *devstack.Stack, _ string) string {
			return s.RenewCertificate(devstack.CertificateRenewal{Register: true, NotAfter: time.Now().Add(10 * 24 * time.Hour)})
		}, want: func(s *devstack.Stack, _, current string) []string {
			line, _, _ := certLine(t, s, current)
			return []string{"\nWARN  certificate  " + line + "; app " + devstack.DefaultClientID + " has it\n",
				"                   fix: create the next version now and upload it (docs/certificate-rotation.md): the functions move to it within DEFENDER_SECRET_TTL (1h0m0s) of its upload\n",
				"ok    token"}
		}},
		{name: "expired", renew: func(s *devstack.Stack, _ string) string {
			return s.RenewCertificate(devstack.CertificateRenewal{Register: true, NotAfter: time.Now().Add(-time.Hour)})
		}, want: func(s *devstack.Stack, _, current string) []string {
			line, _, _ := certLine(t, s, current)
			return []string{"\nFAIL  certificate  " + line + ": Entra ID refuses an expired certificate\n",
				"                   fix: create a new version and upload it: docs/certificate-rotation.md\n"}
		}},
		{name: "default renewal ahead", pass: true, renew: func(s *devstack.Stack, _ string) string {
			return s.RenewCertificate(devstack.CertificateRenewal{Register: true, NotAfter: time.Now().Add(100 * 24 * time.Hour)})
		}, want: func(s *devstack.Stack, _, current string) []string {
			line, _, notAfter := certLine(t, s, current)
			renewal := notAfter.Add(-90 * 24 * time.Hour).UTC().Format(time.DateOnly)
			return []string{"\nok    certificate  " + line + "; app " + devstack.DefaultClientID + " has it\n",
				"note  certificate  if its policy auto-renews (Key Vault's default: 90 days before the end), a new version becomes current on " + renewal +
					": Entra ID refuses it until it is uploaded (docs/certificate-rotation.md)\n", "ok    token"}
		}},
		{name: "not known", opts: unconsented, env: []string{"DEFENDER_TENANT_ID", devstack.PartnerTenantID}, want: func(s *devstack.Stack, seed, _ string) []string {
			line, _, _ := certLine(t, s, seed)
			return []string{"\nnote  certificate  " + line + "; whether app " + devstack.DefaultClientID + " has it is not known: the token request failed (see the token check)\n",
				"FAIL  token        tenant " + devstack.PartnerTenantID + ": entra id refused a token for app " + devstack.DefaultClientID + " in tenant " + devstack.PartnerTenantID +
					": the application is not in this tenant (AADSTS700016)"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := devstack.Start(t, c.opts)
			t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
			t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
			seed := s.SecretVersions(devstack.CertificateSecretName)[0]
			current := seed
			if c.renew != nil {
				current = c.renew(s, seed)
			}
			env := append([]string{"DEFENDER_CREDENTIAL", "keyvault-certificate", "DEFENDER_SECRET_NAME", devstack.CertificateSecretName}, c.env...)
			runDoctor(t, s, env, nil, nil, c.pass, c.want(s, seed, current))
		})
	}
}

// Only keyvault-certificate has a certificate to check.
func TestDoctorNoCertificate(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	out := doctorOutput(t, s, nil)
	if strings.Contains(out, "certificate") {
		t.Fatalf("a certificate check with a client secret:\n%s", out)
	}
}

// No line doctor prints carries key material: its lines name certificates
// by thumbprint only.
func TestDoctorCertificatePrintsNoKey(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	s.RenewCertificate(devstack.CertificateRenewal{})
	out := doctorOutput(t, s, []string{"DEFENDER_CREDENTIAL", "keyvault-certificate", "DEFENDER_SECRET_NAME", devstack.CertificateSecretName})
	if !strings.Contains(out, "FAIL  certificate") {
		t.Fatalf("no certificate check:\n%s", out)
	}
	for _, secret := range s.Issued() {
		if strings.Contains(out, secret) {
			t.Fatalf("doctor printed something the devstack issued:\n%s", out)
		}
	}
}

// doctorOutput is doctor's output with the devstack's settings changed by
// env (name, value pairs).
func doctorOutput(t *testing.T, s *devstack.Stack, env []string) string {
	t.Helper()
	m := s.Settings()
	m["EXPORT_SINK"], m["STATE_STORE"], m["DEFENDER_RATE_LIMITS"] = "file://"+t.TempDir(), "file://"+t.TempDir(), "off"
	for i := 0; i < len(env); i += 2 {
		m[env[i]] = env[i+1]
	}
	var out strings.Builder
	doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, &out, &doctor.Options{HTTPClient: s.HTTPClient()})
	return out.String()
}
