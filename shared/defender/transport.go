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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/shared/credentials"
)

// Version is the product version sent in the User-Agent.
var Version = "0.1.0"

// transport sends requests to one API origin with one tenant's tokens.
type transport struct {
	api  string
	base *url.URL
	// rt carries one attempt: pacing, the token, telemetry (roundtrip.go).
	rt http.RoundTripper
	// auth is rt's bearer layer, told when the API rejects its token.
	auth *bearer
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
	// never after a 5xx, a timeout or a cut connection, nor after a 2xx
	// whose body was cut short (the call was applied; what its answer
	// said is lost, and a call made once must not need it). The caller
	// decides.
	once bool
}

// verdict is what do makes of one attempt.
type verdict int

const (
	finished verdict = iota // return its error (nil: success)
	tryAgain                // after a wait, as one more attempt
	tryFresh                // at once with a fresh token; not an attempt
)

// do is the retry layer: it sends r through t.rt until it succeeds, fails
// for good, or the attempts or the deadline run out. It returns how many
// HTTP requests it sent.
func (t *transport) do(ctx context.Context, r request) (int, error) {
	u, err := url.Parse(r.url)
	if err != nil {
		return 0, err
	}
	if err := foreignOrigin(u, t.base); err != nil {
		return 0, err // before pacing: a nextLink off the origin is never sent
	}
	c := &call{bucket: r.bucket}
	req, err := t.newRequest(withCall(ctx, c), r)
	if err != nil {
		return 0, err
	}
	sent := 0
	var last error
	for attempt := 1; ; attempt++ {
		resp, err := t.rt.RoundTrip(replay(req))
		switch e := err.(type) {
		case *paceError:
			return sent, t.stop(ctx, last, e.err)
		case *authError:
			return sent, e.err
		}
		sent++
		if err != nil && ctx.Err() != nil {
			return sent, t.stop(ctx, last, ctx.Err())
		}
		v, wait, err := t.judge(r, u.Path, c, resp, err)
		if v == finished {
			return sent, err
		}
		last = err
		if v == tryFresh {
			attempt--
			continue
		}
		if attempt >= t.attempts {
			return sent, last
		}
		if err := t.pause(ctx, last, attempt, wait, u.Path); err != nil {
			return sent, err
		}
	}
}

// newRequest builds the request every attempt copies.
func (t *transport) newRequest(ctx context.Context, r request) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, bytes.NewReader(r.body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", t.userAgent)
	req.Header.Set("Accept", "application/json")
	if t.prefer != "" {
		req.Header.Set("Prefer", t.prefer)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	return req, nil
}

// replay is one attempt's copy of req, its body read from the start again.
func replay(req *http.Request) *http.Request {
	r := req.Clone(req.Context())
	r.Body, _ = req.GetBody() // a bytes.Reader's: it cannot fail
	return r
}

// judge reads one attempt's outcome: done, or a failure worth another try
// (with the wait the API asked for).
func (t *transport) judge(r request, path string, c *call, resp *http.Response, err error) (verdict, time.Duration, error) {
	if err != nil {
		wrapped := fmt.Errorf("%s API: %s %s: %w", t.api, r.method, path, scrubURLError(err))
		if r.once || errors.Is(err, credentials.ErrCrossOriginRedirect) {
			// A refused redirect will be refused again.
			return finished, 0, wrapped
		}
		return tryAgain, 0, wrapped
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return t.read(r, path, resp)
	}
	ae := t.apiError(r.method, path, resp)
	if resp.StatusCode == 401 && t.auth.rejected(c) {
		return tryFresh, 0, ae
	}
	if !ae.Retryable() || (ae.StatusCode == 429 && !r.retry429) || (r.once && ae.StatusCode != 429) {
		return finished, 0, ae
	}
	return tryAgain, ae.RetryAfter, ae
}

// read hands a 2xx response to r.handle, its size limited. A response cut
// short is worth another try, unless the call is made once.
func (t *transport) read(r request, path string, resp *http.Response) (verdict, time.Duration, error) {
	err := r.handle(&http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: t.limit(resp.Body)})
	if err == nil && r.keepBody {
		return finished, 0, nil
	}
	resp.Body.Close()
	if err != nil && r.once {
		// Applied (2xx), whatever its answer says: cut short, too large,
		// undecodable. Sending it again, or failing it so that the caller
		// sends it again, would apply it twice.
		ctx := context.Background()
		if resp.Request != nil {
			ctx = resp.Request.Context() // the invocation's, for its ID
		}
		t.log.InfoContext(ctx, "The API applied a call made once; its answer was unreadable.", "api", t.api, "method", r.method, "path", path, "err", err)
		return finished, 0, nil
	}
	if err == nil || !isTruncation(err) {
		return finished, 0, err
	}
	return tryAgain, 0, fmt.Errorf("%s API: %s %s: response cut short: %w", t.api, r.method, path, err)
}

// pause waits before the next attempt: the API's wait, else the backoff. It
// gives up at once when the wait would pass the deadline.
func (t *transport) pause(ctx context.Context, last error, attempt int, wait time.Duration, path string) error {
	if wait == 0 {
		wait = backoff(t.retryBase, attempt)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		return t.stop(ctx, last, context.DeadlineExceeded)
	}
	t.log.DebugContext(ctx, "Retrying.", "api", t.api, "path", path, "attempt", attempt, "wait", wait, "err", last)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return t.stop(ctx, last, ctx.Err())
	case <-timer.C:
		return nil
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
	// Both stay in the chain: failure.Classify reads the last failure.
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
	if resp.StatusCode == 403 {
		e.MissingRoles = requiredRoles(e.Message)
	}
	e.Advice = apiAdvice(e)
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
