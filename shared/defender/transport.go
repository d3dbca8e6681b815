package defender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	"golang.org/x/time/rate"
)

// Version is the product version sent in the User-Agent.
var Version = "0.1.0"

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

// transport sends requests to one API origin with one tenant's tokens.
type transport struct {
	api      string
	base     *url.URL
	hc       *http.Client
	src      credentials.Source
	limits   Limits
	pacers   *Pacers
	pacerKey string
	// pageHint is the size of the last page read (decode.go).
	pageHint  atomic.Int64
	userAgent string
	maxBody   int64
	attempts  int
	retryBase time.Duration
	log       *slog.Logger
	prefer    string
}

// request describes one logical call; do may send it several times.
type request struct {
	method string
	url    string // absolute
	body   []byte
	bucket string
	// retry429 waits out a 429 when the wait fits the deadline.
	retry429 bool
	// handle reads a 2xx response; an unexpected EOF in it is retried.
	handle func(*http.Response) error
	// keepBody leaves the body open after a successful handle (streams).
	keepBody bool
	// once marks a call that is not idempotent (adding a comment): it is
	// sent again only when the API certainly did not act on it (401, 429),
	// never after a 5xx, a timeout or a cut connection. The caller decides.
	once bool
}

// do runs a request with tokens, pacing and retries. It returns how many
// HTTP requests it sent.
func (t *transport) do(ctx context.Context, r request) (int, error) {
	u, err := url.Parse(r.url)
	if err != nil {
		return 0, err
	}
	if u.Scheme != t.base.Scheme || u.Host != t.base.Host {
		// The bearer token never leaves the configured origin.
		return 0, fmt.Errorf("%w: %s is not on %s://%s", ErrForeignNextLink, u.Redacted(), t.base.Scheme, t.base.Host)
	}
	limiters := t.pacers.get(t.pacerKey+"|"+r.bucket, t.limits[r.bucket])
	sent := 0
	retried401 := false
	var last error
	for attempt := 1; ; attempt++ {
		for _, l := range limiters {
			if err := l.Wait(ctx); err != nil {
				// x/time/rate refuses a wait that would pass the deadline.
				return sent, t.stop(ctx, last, fmt.Errorf("%w: the rate limit's next slot is after the deadline", context.DeadlineExceeded))
			}
		}
		tok, err := t.src.Token(ctx)
		if err != nil {
			return sent, err
		}
		sctx, end := telemetry.APICall(ctx, string(t.api), r.method, u.Host, u.Path)
		req, err := http.NewRequestWithContext(sctx, r.method, r.url, bytes.NewReader(r.body))
		if err != nil {
			end(0, err)
			return sent, err
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		req.Header.Set("User-Agent", t.userAgent)
		req.Header.Set("Accept", "application/json")
		if t.prefer != "" {
			req.Header.Set("Prefer", t.prefer)
		}
		if r.body != nil {
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
		}
		sent++
		resp, err := t.hc.Do(req)
		if err != nil {
			end(0, err)
		} else {
			end(resp.StatusCode, nil)
		}
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return sent, t.stop(ctx, last, ctx.Err())
			}
			last = fmt.Errorf("%s API: %s %s: %w", t.api, r.method, u.Path, scrubURLError(err))
			if r.once || errors.Is(err, credentials.ErrCrossOriginRedirect) {
				// A refused redirect will be refused again.
				return sent, last
			}
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			err = r.handle(&http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: t.limit(resp.Body)})
			if err == nil && r.keepBody {
				return sent, nil
			}
			resp.Body.Close()
			if err == nil {
				return sent, nil
			}
			if !isTruncation(err) {
				return sent, err
			}
			last = fmt.Errorf("%s API: %s %s: response cut short: %w", t.api, r.method, u.Path, err)
		default:
			ae := t.apiError(r.method, u.Path, resp)
			if resp.StatusCode == 401 && !retried401 {
				// The token was rejected: drop exactly that token and retry once.
				t.src.Invalidate(tok)
				retried401 = true
				attempt--
				last = ae
				continue
			}
			if !ae.Retryable() || (ae.StatusCode == 429 && !r.retry429) || (r.once && ae.StatusCode != 429) {
				return sent, ae
			}
			last, wait = ae, ae.RetryAfter
		}
		if attempt >= t.attempts {
			return sent, last
		}
		if wait == 0 {
			wait = backoff(t.retryBase, attempt)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return sent, t.stop(ctx, last, context.DeadlineExceeded)
		}
		t.log.DebugContext(ctx, "retrying", "api", t.api, "path", u.Path, "attempt", attempt, "wait", wait, "error", last)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return sent, t.stop(ctx, last, ctx.Err())
		case <-timer.C:
		}
	}
}

// stop reports the deadline (or cancellation) together with the last failure.
func (t *transport) stop(ctx context.Context, last, cause error) error {
	if ctx.Err() != nil {
		cause = ctx.Err()
	}
	if last == nil {
		return cause
	}
	// Both stay in the chain: defender.Classify reads the last failure.
	return fmt.Errorf("%w (last failure: %w)", cause, last)
}

// backoff is exponential with jitter: base, 2×base, 4×base … capped at 20 s,
// each drawn from its upper half.
func backoff(base time.Duration, attempt int) time.Duration {
	d := base << min(attempt-1, 6)
	d = min(d, 20*time.Second)
	return d/2 + rand.N(d/2+1)
}

func isTruncation(err error) bool {
	var se *json.SyntaxError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &se) || errors.Is(err, syscall.ECONNRESET)
}

// scrubURLError drops the URL's query (filters are not secret, but keep
// errors short) and keeps the cause.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		var ne net.Error
		if errors.As(ue.Err, &ne) && ne.Timeout() {
			return errors.New("timeout")
		}
		return ue.Err
	}
	return err
}

// limitedBody fails a read past the client's response size limit.
type limitedBody struct {
	r   io.Reader
	n   int64
	max int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.n > l.max {
		return 0, ErrResponseTooLarge
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n, ErrResponseTooLarge
	}
	return n, err
}

func (t *transport) limit(body io.ReadCloser) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{&limitedBody{r: body, max: t.maxBody}, body}
}

// apiError reads an error response of either API's shape.
func (t *transport) apiError(method, path string, resp *http.Response) *APIError {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{API: t.api, Method: method, Path: path, StatusCode: resp.StatusCode, RequestID: resp.Header.Get("request-id")}
	var body struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			Target     string `json:"target"`
			InnerError struct {
				RequestID string `json:"request-id"`
			} `json:"innerError"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
		if body.Error.InnerError.RequestID != "" {
			e.RequestID = body.Error.InnerError.RequestID
		} else if body.Error.Target != "" {
			e.RequestID = body.Error.Target
		}
	}
	if e.Message == "" && len(b) > 0 && len(b) < 512 && !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		e.Message = string(bytes.TrimSpace(b))
	}
	e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	if resp.StatusCode == 429 && e.RetryAfter == 0 {
		e.RetryAfter = retryAfterFromMessage(e.Message)
	}
	switch resp.StatusCode {
	case 403:
		e.MissingRoles = requiredRoles(e.Message)
		if len(e.MissingRoles) > 0 {
			e.Advice = "grant the app one of the application permissions " + strings.Join(e.MissingRoles, " or ") + " and have an administrator consent"
		}
	case 401:
		e.Advice = "the API rejected the token twice: check that the token's audience matches DEFENDER_API and DEFENDER_API_URL"
	case 429:
		e.Advice = "the API's rate limit was reached"
	}
	return e
}

// retryAfter parses Retry-After as seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryAfterFromMessage reads "maximum allowed 50 per 00:01:00": with no
// header, wait a window's share of one call.
func retryAfterFromMessage(msg string) time.Duration {
	i := strings.Index(msg, " per ")
	if i < 0 {
		return 0
	}
	var h, m, s int
	if _, err := fmt.Sscanf(msg[i+5:], "%d:%d:%d", &h, &m, &s); err != nil {
		return 0
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second
}

// requiredRoles reads "API required roles: A,B, application roles: C."
func requiredRoles(msg string) []string {
	const marker = "API required roles: "
	i := strings.Index(msg, marker)
	if i < 0 {
		return nil
	}
	rest := msg[i+len(marker):]
	if j := strings.Index(rest, ", application roles"); j >= 0 {
		rest = rest[:j]
	}
	var out []string
	for _, r := range strings.Split(rest, ",") {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}
