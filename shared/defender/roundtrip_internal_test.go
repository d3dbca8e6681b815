package defender

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/credentials"
)

type countingSource struct {
	tokens, invalidated atomic.Int32
}

func (s *countingSource) Token(context.Context) (*credentials.Token, error) {
	s.tokens.Add(1)
	return &credentials.Token{AccessToken: "tok", Expiry: time.Now().Add(time.Hour)}, nil
}
func (s *countingSource) Invalidate(*credentials.Token) { s.invalidated.Add(1) }

func testTransport(t *testing.T, h http.HandlerFunc, src credentials.Source, limits Limits) *transport {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(Graph, srv.URL, "t", src, &Options{HTTPClient: srv.Client(), Limits: limits, RetryBase: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c.(*graph).t
}

// The bearer adds the token on a copy, and never off the configured origin.
func TestBearerOnlyOnOrigin(t *testing.T) {
	var seen []string
	next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = append(seen, r.Header.Get("Authorization"))
		return &http.Response{StatusCode: 204, Body: http.NoBody}, nil
	})
	base, _ := url.Parse("https://api.example:")
	b := &bearer{src: &countingSource{}, base: base, next: next}
	req, _ := http.NewRequest("GET", "https://api.example:/x", nil)
	if _, err := b.RoundTrip(req); err != nil || len(seen) != 1 || seen[0] != "Bearer tok" || req.Header.Get("Authorization") != "" {
		t.Fatalf("err %v, sent %q, caller's request %v", err, seen, req.Header)
	}
	req, _ = http.NewRequest("GET", "https://elsewhere.example/x", nil)
	var ae *authError
	if _, err := b.RoundTrip(req); !errors.As(err, &ae) || !errors.Is(err, ErrForeignNextLink) || len(seen) != 1 {
		t.Fatalf("err %v, sent %q", err, seen)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A retried request carries its body again; a 401 costs one fresh token.
func TestRetryReplaysBodyAndRefreshesOnce(t *testing.T) {
	var bodies []string
	statuses := []int{401, 503, 200}
	src := &countingSource{}
	tr := testTransport(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		w.WriteHeader(statuses[len(bodies)-1])
	}, src, NoLimits)
	n, err := tr.do(context.Background(), request{method: "PATCH", url: tr.base.String() + "/x", body: []byte(`{"a":1}`), bucket: "security",
		handle: func(*http.Response) error { return nil }})
	if err != nil || n != 3 || len(bodies) != 3 || bodies[0] != `{"a":1}` || bodies[2] != `{"a":1}` {
		t.Fatalf("n %d, err %v, bodies %q", n, err, bodies)
	}
	if src.invalidated.Load() != 1 || src.tokens.Load() != 3 {
		t.Fatalf("invalidated %d, tokens %d", src.invalidated.Load(), src.tokens.Load())
	}
}

// A second 401 is the answer: no second invalidation, the 401 returned.
func TestSecond401IsFinal(t *testing.T) {
	src := &countingSource{}
	tr := testTransport(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(401) }, src, NoLimits)
	n, err := tr.do(context.Background(), request{method: "GET", url: tr.base.String() + "/x", bucket: "security", handle: func(*http.Response) error { return nil }})
	if !errors.Is(err, ErrUnauthorized) || n != 2 || src.invalidated.Load() != 1 {
		t.Fatalf("n %d, err %v, invalidated %d", n, err, src.invalidated.Load())
	}
}

// A pacing slot past the deadline stops the call with the last failure in
// the chain, and the refused attempt is not counted.
func TestPacingPastDeadline(t *testing.T) {
	tr := testTransport(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, &countingSource{},
		Limits{"security": {{1, time.Hour}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := tr.do(ctx, request{method: "GET", url: tr.base.String() + "/x", bucket: "security", retry429: true, handle: func(*http.Response) error { return nil }})
	if n != 1 || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("n %d, err %v", n, err)
	}
}

// A call made once is not sent again, nor failed, when its 2xx answer is
// cut short or cannot be read: the API applied it (a second PATCH with a
// comment adds a second comment, and so does a webhook's sender retrying
// a delivery that failed).
func TestOnceNotRepeatedAfterTruncatedAnswer(t *testing.T) {
	var sent atomic.Int32
	tr := testTransport(t, func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.WriteString(w, `{"id":`) // complete, but not a document
	}, &countingSource{}, NoLimits)
	_, err := tr.do(context.Background(), request{method: "PATCH", url: tr.base.String() + "/x", body: []byte(`{"comment":"c"}`), bucket: "update", once: true,
		handle: func(resp *http.Response) error { var v any; return json.NewDecoder(resp.Body).Decode(&v) }})
	if err != nil || sent.Load() != 1 {
		t.Errorf("undecodable answer: err %v, sent %d times, want applied once", err, sent.Load())
	}
	for _, once := range []bool{true, false} {
		var sent atomic.Int32
		tr := testTransport(t, func(w http.ResponseWriter, r *http.Request) {
			sent.Add(1)
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			io.WriteString(w, `{"id":"1`) // and the connection drops
		}, &countingSource{}, NoLimits)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := tr.do(ctx, request{method: "PATCH", url: tr.base.String() + "/x", body: []byte(`{"comment":"c"}`), bucket: "update", once: once,
			handle: func(resp *http.Response) error { _, err := io.ReadAll(resp.Body); return err }})
		cancel()
		switch {
		case once && (err != nil || sent.Load() != 1):
			t.Errorf("once: err %v, sent %d times, want applied once", err, sent.Load())
		case !once && (err == nil || sent.Load() < 2):
			t.Errorf("idempotent: err %v, sent %d times, want retries until the deadline", err, sent.Load())
		}
	}
}
