package credentials_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
)

// recorder is a server that counts the requests reaching it and whether
// one carried a credential.
type recorder struct {
	*httptest.Server
	hits, creds atomic.Int32
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		body, _ := io.ReadAll(req.Body)
		if req.Header.Get("Authorization") != "" || strings.Contains(string(body), "client_secret") {
			r.creds.Add(1)
		}
		http.Error(w, "not here", http.StatusTeapot)
	}))
	t.Cleanup(r.Close)
	return r
}

// redirector answers every request with status to target.
func redirector(t *testing.T, status int, target string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, target+req.URL.Path, status)
	}))
	t.Cleanup(s.Close)
	return s
}

// A token endpoint that redirects elsewhere does not get the client secret
// re-sent there; the request fails naming the redirect.
func TestTokenRequestIsNotRedirected(t *testing.T) {
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		other := newRecorder(t)
		entra := redirector(t, status, other.URL)
		creds, err := credentials.New(credentials.Registration{API: config.Graph, Resource: "https://graph.microsoft.com", ClientID: "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84",
			Tenants: []string{"contoso.onmicrosoft.com"}, AuthorityHost: entra.URL, TokenVersion: 2, Credential: config.EnvSecret,
			ClientSecret: "a-client-secret-value"}, &credentials.Options{HTTPClient: entra.Client(), Cache: credentials.NewCache(nil)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = creds.Source("contoso.onmicrosoft.com").Token(context.Background())
		if !errors.Is(err, credentials.ErrCrossOriginRedirect) {
			t.Errorf("%d: err = %v, want the refused redirect", status, err)
		}
		if other.hits.Load() != 0 {
			t.Errorf("%d: the redirect was followed (%d requests, %d with the secret)", status, other.hits.Load(), other.creds.Load())
		}
	}
}

// SameOrigin follows a redirect within the origin and refuses one to
// another scheme, host or port.
func TestSameOrigin(t *testing.T) {
	other := newRecorder(t)
	var final atomic.Int32
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/here":
			http.Redirect(w, req, "/there", http.StatusTemporaryRedirect)
		case "/away":
			http.Redirect(w, req, other.URL+"/x", http.StatusTemporaryRedirect)
		default:
			final.Add(1)
		}
	}))
	defer home.Close()
	hc := credentials.SameOrigin(home.Client())
	for _, tc := range []struct {
		path string
		ok   bool
	}{{"/here", true}, {"/away", false}} {
		req, _ := http.NewRequest("GET", home.URL+tc.path, nil)
		req.Header.Set("Authorization", "Bearer a-token")
		resp, err := hc.Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, credentials.ErrCrossOriginRedirect) {
			t.Errorf("%s: err = %v", tc.path, err)
		}
	}
	if final.Load() != 1 || other.hits.Load() != 0 {
		t.Errorf("same-origin hops %d, other origin reached %d times", final.Load(), other.hits.Load())
	}
}
