package defender_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
)

type fixedToken struct{}

func (fixedToken) Token(context.Context) (*credentials.Token, error) {
	return &credentials.Token{AccessToken: "a-bearer-token", Expiry: time.Now().Add(time.Hour)}, nil
}
func (fixedToken) Invalidate(*credentials.Token) {}

// The bearer token goes to the configured API only: a redirect from the
// API to another port, over plain HTTP, is refused, not followed with the
// token, and not retried (a retry would wait an hour here).
func TestBearerTokenIsNotRedirected(t *testing.T) {
	var elsewhere, withToken atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		if r.Header.Get("Authorization") != "" {
			withToken.Add(1)
		}
	}))
	defer other.Close()
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer api.Close()
	for _, be := range []defender.API{defender.Graph, defender.XDR} {
		c, err := defender.New(be, api.URL, "contoso.onmicrosoft.com", fixedToken{}, &defender.Options{HTTPClient: api.Client(), Limits: defender.NoLimits, RetryBase: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Incident(context.Background(), "1")
		if !errors.Is(err, credentials.ErrCrossOriginRedirect) {
			t.Errorf("%s: err = %v, want the refused redirect", be, err)
		}
	}
	if elsewhere.Load() != 0 {
		t.Fatalf("the redirect was followed: %d requests, %d with the token", elsewhere.Load(), withToken.Load())
	}
}
