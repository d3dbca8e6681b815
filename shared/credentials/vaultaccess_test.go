package credentials_test

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/google/uuid"
)

// Hosts outside Azure (AWS Lambda) reach Key Vault as a bootstrap app, with
// a certificate or a federated token, through the real azidentity credentials.
func TestVaultAccessOutsideAzure(t *testing.T) {
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	dir := t.TempDir()
	certFile := filepath.Join(dir, "vault-reader.pem")
	if err := os.WriteFile(certFile, []byte(s.ClientCertificatePEM(devstack.VaultReaderClientID)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A federated token from another identity provider; here the devstack's
	// managed identity issues it, for api://AzureADTokenExchange.
	req, _ := newGet(s.IdentityEndpoint + "?api-version=2019-08-01&client_id=" + id + "&resource=" + url.QueryEscape(devstack.TokenExchangeAudience))
	req.Header.Set("X-IDENTITY-HEADER", s.IdentityHeader())
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var mi struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&mi)
	resp.Body.Close()
	tokenFile := filepath.Join(dir, "federated-token")
	if err := os.WriteFile(tokenFile, []byte(mi.AccessToken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		kv   []string
	}{
		{"client-certificate", []string{"KEY_VAULT_CREDENTIAL", "client-certificate", "KEY_VAULT_CLIENT_ID", devstack.VaultReaderClientID, "KEY_VAULT_CERTIFICATE_PATH", certFile}},
		{"workload-identity", []string{"KEY_VAULT_CREDENTIAL", "workload-identity", "KEY_VAULT_CLIENT_ID", devstack.VaultReaderClientID, "KEY_VAULT_FEDERATED_TOKEN_FILE", tokenFile}},
		// The Lambda's execution role's JWT from AWS STS, no file at all.
		{"aws-federation", []string{"KEY_VAULT_CREDENTIAL", "aws-federation", "KEY_VAULT_CLIENT_ID", devstack.VaultReaderClientID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Counters().Get("msi.GET /msi/token", 0)
			f := fixtureOn(t, s, id, tc.kv...)
			if _, err := f.source().Token(context.Background()); err != nil {
				t.Fatal(err)
			}
			if s.Counters().Get("msi.GET /msi/token", 0) != before {
				t.Fatal("the managed identity was used")
			}
			if sts := s.Counters().Get(stsEndpoint, 200); (tc.name == "aws-federation") != (sts > 0) {
				t.Fatalf("%d JWTs from STS", sts)
			}
		})
	}
	// The Defender app's read-only sibling has no vault role: 403, named.
	f := fixtureOn(t, s, id, "KEY_VAULT_CREDENTIAL", "client-certificate", "KEY_VAULT_CLIENT_ID", devstack.ReaderClientID, "KEY_VAULT_CERTIFICATE_PATH", writeTemp(t, s.ClientCertificatePEM(devstack.ReaderClientID)))
	if _, err := f.source().Token(context.Background()); err == nil || !contains(err.Error(), "'Key Vault Secrets User' role") {
		t.Fatalf("unauthorized bootstrap app: %v", err)
	}
}

func writeTemp(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A bootstrap certificate the app does not have is refused with Entra's reason.
func TestVaultAccessWrongCertificate(t *testing.T) {
	id := uuid.NewString()
	s := start(t, devstack.Options{IdentityClientID: id})
	other := start(t, devstack.Options{IdentityClientID: id})
	f := fixtureOn(t, s, id, "KEY_VAULT_CREDENTIAL", "client-certificate", "KEY_VAULT_CLIENT_ID", devstack.VaultReaderClientID,
		"KEY_VAULT_CERTIFICATE_PATH", writeTemp(t, other.ClientCertificatePEM(devstack.VaultReaderClientID)))
	_, err := f.source().Token(context.Background())
	if err == nil || !contains(err.Error(), "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: ") || contains(err.Error(), "RESPONSE") {
		t.Fatalf("err = %v", err)
	}
	noSecretIn(t, s, err.Error())
}
