package defender

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	"golang.org/x/time/rate"
)

// One attempt of a call goes through these round-trippers, outermost first:
//
//	pacer → bearer → traced → sender (http.Client)
//
// They sit above the http.Client: a redirect it follows within the origin
// is part of the one attempt, paced, authorized and traced once. do
// (transport.go) is the retry layer above them all.

// call is what the layers learn of the logical call an attempt belongs to;
// do puts it in each attempt's context. Attempts are sequential: no lock.
type call struct {
	bucket string             // the pacer's
	token  *credentials.Token // the bearer's last, should the API reject it
	fresh  bool               // the bearer already dropped a rejected token
}

type callKey struct{}

func withCall(ctx context.Context, c *call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

func callOf(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		return &call{}
	}
	return c
}

// paceError is the pacer's refusal: no slot before the deadline. The request
// was not sent; do reports it with the last failure.
type paceError struct{ err error }

func (e *paceError) Error() string { return e.err.Error() }
func (e *paceError) Unwrap() error { return e.err }

// authError is the bearer's refusal: no token, or a URL off the API's origin.
// The request was not sent, and another try would fail the same way.
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// refuse follows the RoundTripper contract: the body is closed even when the
// request is not sent.
func refuse(req *http.Request, err error) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, err
}

// --- pacing ---

// Rate is "Requests per Per".
type Rate struct {
	Requests int
	Per      time.Duration
}

// Limits are client-side rate limits per bucket of operations.
type Limits map[string][]Rate

// The documented limits, per app and tenant. The XDR API's hourly limit
// (1,500/h) bounds its sustained rate to 25 calls a minute.
var (
	GraphLimits = Limits{"security": {{150, time.Minute}}, "hunting": {{45, time.Minute}}}
	XDRLimits   = Limits{
		"list":    {{50, time.Minute}, {1500, time.Hour}},
		"get":     {{100, time.Minute}, {1500, time.Hour}},
		"update":  {{50, time.Minute}, {1500, time.Hour}},
		"hunting": {{45, time.Minute}},
	}
	// NoLimits turns client-side pacing off.
	NoLimits = Limits{}
)

// Pacers pace the calls of every client built with them, per API origin,
// tenant, app and bucket, so that concurrent invocations of one process
// share the documented limits. The app builds one for all its clients; a
// client built without one paces alone.
type Pacers struct {
	mu sync.Mutex
	m  map[string][]*rate.Limiter
}

// NewPacers returns an empty set of pacers.
func NewPacers() *Pacers { return &Pacers{m: map[string][]*rate.Limiter{}} }

func (p *Pacers) get(key string, rates []Rate) []*rate.Limiter {
	key += fmt.Sprint(rates) // clients with other limits pace apart
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.m[key]; ok {
		return l
	}
	var ls []*rate.Limiter
	for _, r := range rates {
		// Burst 1, starting full: the first call goes at once (hunting is
		// interactive); at worst the server's first window sees one call
		// too many, the single 429 the pacing may cause.
		ls = append(ls, rate.NewLimiter(rate.Limit(float64(r.Requests)/r.Per.Seconds()), 1))
	}
	p.m[key] = ls
	return ls
}

// pacer waits for a slot in the call's bucket before each attempt, retries
// included: the API counts them all.
type pacer struct {
	pacers *Pacers
	key    string // origin, tenant and app: the limits' scope
	limits Limits
	next   http.RoundTripper
}

func (p *pacer) RoundTrip(req *http.Request) (*http.Response, error) {
	bucket := callOf(req.Context()).bucket
	for _, l := range p.pacers.get(p.key+"|"+bucket, p.limits[bucket]) {
		if err := l.Wait(req.Context()); err != nil {
			// x/time/rate refuses a wait that would pass the deadline.
			return refuse(req, &paceError{fmt.Errorf("%w: the rate limit's next slot is after the deadline", context.DeadlineExceeded)})
		}
	}
	return p.next.RoundTrip(req)
}

// --- the bearer token ---

// bearer adds the token, like oauth2.Transport, but only to the API's
// origin; the http.Client below refuses redirects off it.
type bearer struct {
	src  credentials.Source
	base *url.URL
	next http.RoundTripper
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	// http.NewRequest drops an empty port ("host:"); url.Parse keeps it.
	if u := req.URL; u.Scheme != b.base.Scheme || strings.TrimSuffix(u.Host, ":") != strings.TrimSuffix(b.base.Host, ":") {
		return refuse(req, &authError{foreignOrigin(u, b.base)})
	}
	tok, err := b.src.Token(req.Context())
	if err != nil {
		return refuse(req, &authError{err})
	}
	callOf(req.Context()).token = tok
	req = req.Clone(req.Context()) // a RoundTripper leaves its request alone
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	return b.next.RoundTrip(req)
}

// rejected drops the token a 401 answered (exactly that one: others may have
// refreshed it already) and reports whether to try once more with a fresh
// one. A second 401 in the call is the API's answer (most likely, a token
// for another audience).
func (b *bearer) rejected(c *call) bool {
	if c.fresh {
		return false
	}
	b.src.Invalidate(c.token)
	c.fresh = true
	return true
}

// foreignOrigin refuses a URL off the configured origin: the bearer token
// never leaves it, and neither does a nextLink.
func foreignOrigin(u, base *url.URL) error {
	if u.Scheme != base.Scheme || u.Host != base.Host {
		return fmt.Errorf("%w: %s is not on %s://%s", ErrForeignNextLink, u.Redacted(), base.Scheme, base.Host)
	}
	return nil
}

// --- telemetry and sending ---

// traced makes each request a client span and counts it in the metrics.
type traced struct {
	api  string
	next http.RoundTripper
}

func (t traced) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, end := telemetry.APICall(req.Context(), t.api, req.Method, req.URL.Host, req.URL.Path)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		end(0, err)
	} else {
		end(resp.StatusCode, nil)
	}
	return resp, err
}

// sender hands the request to the http.Client, which follows redirects
// within the origin (credentials.SameOrigin) and refuses the others.
type sender struct{ hc *http.Client }

func (s sender) RoundTrip(req *http.Request) (*http.Response, error) { return s.hc.Do(req) }
