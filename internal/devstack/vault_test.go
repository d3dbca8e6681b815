package devstack_test

import (
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// vaultClient is the real azsecrets client, through the managed identity.
func vaultClient(t *testing.T, s *devstack.Stack) *azsecrets.Client {
	t.Helper()
	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader())
	opts := azcore.ClientOptions{Transport: s.HTTPClient(), Retry: policy.RetryOptions{MaxRetries: -1}}
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient(s.KeyVaultURL+"/", cred, &azsecrets.ClientOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certificateOf(t *testing.T, pemText string) *x509.Certificate {
	t.Helper()
	rest := []byte(pemText)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			t.Fatal("no certificate in the PEM")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}

// Key Vault renews the app's certificate: a new current version, dated and
// managed as a certificate's secret, listed beside the old one. Entra ID
// refuses it as Entra ID words it until it is uploaded; a removed or
// disabled version is refused too.
func TestCertificateRenewal(t *testing.T) {
	s := start(t, devstack.Options{})
	kv := vaultClient(t, s)
	ctx := context.Background()
	tokenURL := s.EntraURL + "/" + devstack.DefaultTenantID + "/oauth2/v2.0/token"
	tokenWith := func(pemText, method string) response {
		return postForm(t, s, tokenURL, url.Values{"grant_type": {"client_credentials"}, "client_id": {devstack.DefaultClientID},
			"scope": {devstack.GraphResource + "/.default"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion": {signAssertion(t, pemText, tokenURL, method)}})
	}
	seed := s.SecretVersions(devstack.CertificateSecretName)
	if len(seed) != 1 {
		t.Fatalf("seeded versions %v", seed)
	}
	notAfter := time.Now().Add(40 * 24 * time.Hour).Truncate(time.Second)
	renewed := s.RenewCertificate(devstack.CertificateRenewal{NotAfter: notAfter})

	cur, err := kv.GetSecret(ctx, devstack.CertificateSecretName, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := certificateOf(t, *cur.Value)
	if cur.ID.Version() != renewed || cur.Managed == nil || !*cur.Managed || *cur.ContentType != "application/x-pem-file" ||
		!cur.Attributes.Expires.Equal(notAfter) || !cur.Attributes.NotBefore.Equal(cert.NotBefore) || !cert.NotAfter.Equal(notAfter) ||
		cert.Subject.CommonName != "defender-functions" {
		t.Fatalf("current version %s managed %v type %s exp %v nbf %v, certificate %s until %v", cur.ID.Version(), cur.Managed, *cur.ContentType,
			cur.Attributes.Expires, cur.Attributes.NotBefore, cert.Subject, cert.NotAfter)
	}
	var listed []string
	var created []time.Time
	for pager := kv.NewListSecretPropertiesVersionsPager(devstack.CertificateSecretName, nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Value {
			listed = append(listed, p.ID.Version())
			created = append(created, *p.Attributes.Created)
			if (p.Managed != nil && *p.Managed) != (p.ID.Version() == renewed) {
				t.Errorf("version %s managed %v", p.ID.Version(), p.Managed)
			}
		}
	}
	if fmt.Sprint(listed) != fmt.Sprint([]string{seed[0], renewed}) || !created[1].After(created[0]) {
		t.Fatalf("listed %v created %v", listed, created)
	}

	// Entra ID knows only the seeded certificate.
	old, err := kv.GetSecret(ctx, devstack.CertificateSecretName, seed[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := tokenWith(*old.Value, "PS256"); r.status != 200 {
		t.Fatalf("the registered certificate: %d", r.status)
	}
	sum := sha1.Sum(cert.Raw)
	for _, method := range []string{"RS256", "PS256"} {
		r := tokenWith(*cur.Value, method)
		desc, _ := r.json(t)["error_description"].(string)
		want := "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '"
		if r.status != 401 || !strings.HasPrefix(desc, want) || !strings.Contains(desc, "configured keys for app Id '"+devstack.DefaultClientID+"'") {
			t.Fatalf("%s with the renewed certificate: %d %s", method, r.status, desc)
		}
		if method == "RS256" && !strings.HasPrefix(desc, fmt.Sprintf("%s%X'", want, sum)) {
			t.Fatalf("the SHA-1 thumbprint is not named: %s", desc)
		}
	}
	// Uploaded, it is accepted; the old one, removed, is refused.
	if err := s.RegisterCertificate(renewed); err != nil {
		t.Fatal(err)
	}
	if r := tokenWith(*cur.Value, "PS256"); r.status != 200 {
		t.Fatalf("the uploaded certificate: %d", r.status)
	}
	if err := s.UnregisterCertificate(seed[0]); err != nil {
		t.Fatal(err)
	}
	if r := tokenWith(*old.Value, "PS256"); r.status != 401 {
		t.Fatalf("a removed certificate: %d", r.status)
	}
	if err := s.UnregisterCertificate(seed[0]); err == nil {
		t.Fatal("removed twice")
	}
	// A disabled version cannot be read, by version or as the current one.
	if err := s.SetSecretVersionEnabled(devstack.CertificateSecretName, renewed, false); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{renewed, ""} {
		_, err := kv.GetSecret(ctx, devstack.CertificateSecretName, v, nil)
		var re *azcore.ResponseError
		if !asResponseError(err, &re) || re.StatusCode != 403 || re.ErrorCode != "Forbidden" || !strings.Contains(err.Error(), "Operation get is not allowed on a disabled secret.") {
			t.Fatalf("disabled version %q: %v", v, err)
		}
	}
	if err := s.SetSecretVersionEnabled(devstack.CertificateSecretName, "no-such-version", false); err == nil {
		t.Fatal("disabled a version that does not exist")
	}
}

// Versions are listed 25 a page; the pager follows nextLink to the end.
func TestSecretVersionsPaging(t *testing.T) {
	s := start(t, devstack.Options{})
	kv := vaultClient(t, s)
	for i := range 30 {
		s.PutSecret("many", fmt.Sprintf("value-%d", i))
	}
	var n int
	for pager := kv.NewListSecretPropertiesVersionsPager("many", nil); pager.More(); {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Value)
	}
	if pages := s.Counters().Get("keyvault.GET /secrets/{name}/versions", 200); n != 30 || pages != 2 {
		t.Fatalf("%d versions in %d pages, want 30 in 2", n, pages)
	}
	_, err := kv.NewListSecretPropertiesVersionsPager("none", nil).NextPage(context.Background())
	var re *azcore.ResponseError
	if !asResponseError(err, &re) || re.StatusCode != 404 || re.ErrorCode != "SecretNotFound" {
		t.Fatalf("versions of a missing secret: %v", err)
	}
}
