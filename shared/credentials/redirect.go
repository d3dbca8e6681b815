package credentials

import (
	"errors"
	"fmt"
	"net/http"
)

// SameOrigin returns a copy of hc that follows a redirect only within the
// origin (scheme, host and port) of the request that started it. Go's client
// keeps the Authorization header on a redirect to the same host name on
// another port or over plain HTTP, and re-sends a POST's body (a token
// request's client secret or assertion) on a 307 or 308 to anywhere: a
// credential must reach only the service it was made for. Every client of
// Entra ID, Key Vault and the API goes through it.
func SameOrigin(hc *http.Client) *http.Client {
	c := *hc
	next := hc.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		from := via[0].URL
		if req.URL.Scheme != from.Scheme || req.URL.Host != from.Host {
			return fmt.Errorf("%w: %s://%s answered with a redirect to %s://%s; credentials are sent only where they are meant for",
				ErrCrossOriginRedirect, from.Scheme, from.Host, req.URL.Scheme, req.URL.Host)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &c
}

// ErrCrossOriginRedirect is a redirect that SameOrigin refused.
var ErrCrossOriginRedirect = errors.New("refused a redirect to another origin")
