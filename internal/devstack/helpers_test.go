package devstack_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/internal/devstack"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

var start = devstack.Start

// token gets an app-only token with x/oauth2's client-credentials flow.
func token(t testing.TB, s *devstack.Stack, tenant, clientID, resource string) string {
	t.Helper()
	cfg := clientcredentials.Config{
		ClientID: clientID, ClientSecret: s.ClientSecret(clientID),
		TokenURL: s.EntraURL + "/" + tenant + "/oauth2/v2.0/token", Scopes: []string{resource + "/.default"},
		AuthStyle: oauth2.AuthStyleInParams,
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.HTTPClient())
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatalf("token for %s: %s", resource, redactErr(err))
	}
	return tok.AccessToken
}

// redactErr keeps an oauth2 error's code and description but nothing else.
func redactErr(err error) string {
	if re, ok := err.(*oauth2.RetrieveError); ok {
		return re.ErrorCode + ": " + strings.SplitN(re.ErrorDescription, "\r\n", 2)[0]
	}
	return err.Error()
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON (%v): %.200s", err, r.body)
	}
	return m
}

func do(t testing.TB, s *devstack.Stack, method, u, bearer string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, u, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func postForm(t testing.TB, s *devstack.Stack, u string, form url.Values) response {
	t.Helper()
	resp, err := s.HTTPClient().PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

// claims decodes a JWT's payload without verifying it.
func claims(t testing.TB, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatal("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func roles(c map[string]any) []string {
	var out []string
	for _, r := range c["roles"].([]any) {
		out = append(out, r.(string))
	}
	return out
}

func errorCode(t testing.TB, r response) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func errorMessage(t testing.TB, r response) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
}

func newGet(method, u string) (*http.Request, error) { return http.NewRequest(method, u, nil) }

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}
