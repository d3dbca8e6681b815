package customhandler_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/function"
)

// BenchmarkInvocationOverhead is what the handler adds around a function
// that does nothing: decoding the host's envelope (timer) or the forwarded
// request, and writing the answer in the host's shape.
func BenchmarkInvocationOverhead(b *testing.B) {
	app := &function.App{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		HTTP: map[string]function.HTTPRoute{"hunting-query": {Descriptor: function.Descriptor{HTTP: &function.HTTPBinding{Route: "hunting-query", Methods: []string{"get", "post"}}},
			Func: func(context.Context, *function.HTTPRequest) *function.HTTPResponse {
				return &function.HTTPResponse{Status: 204}
			}}},
		Timers: map[string]function.TimerRoute{"incident-export": {Func: func(context.Context, function.Timer) error { return nil }}},
	}
	h := customhandler.New(app, customhandler.Options{})
	timer, _ := os.ReadFile("testdata/timer-normal.json")
	envelope, _ := os.ReadFile("testdata/http-get-query.json")
	for _, tc := range []struct {
		name, method, path string
		body               []byte
	}{
		{"timer-envelope", "POST", "/incident-export", timer},
		{"http-envelope", "POST", "/hunting-query", envelope},
		{"http-forwarded", "GET", "/api/hunting-query?name=x", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(tc.method, tc.path, bytes.NewReader(tc.body))
				req.Header.Set("X-Azure-Functions-InvocationId", "3f5e8c2a-1b4d-4e6f-8a9b-0c1d2e3f4a5b")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK && w.Code != http.StatusNoContent {
					b.Fatal(w.Code)
				}
			}
		})
	}
}
