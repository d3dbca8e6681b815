package function_test

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/shared/function"
)

// A shared service's logger over LogHandler tags its lines with the
// invocation whose context it was given, once, and only then.
func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	app := slog.New(function.LogHandler(slog.NewJSONHandler(&buf, nil)))
	service := slog.New(function.LogHandler(app.Handler())) // wrapping twice changes nothing
	inv := function.WithInvocation(context.Background(), app, "inv-1")
	for _, tc := range []struct {
		name string
		log  func()
		want string // the invocation_id values, comma-separated
	}{
		{"service with the invocation's context", func() { service.InfoContext(inv, "m", "k", 1) }, "inv-1"},
		{"service without one", func() { service.InfoContext(context.Background(), "m") }, ""},
		{"service, plain Info", func() { service.Info("m") }, ""},
		{"the invocation's logger", func() { function.Logger(inv).Info("m") }, "inv-1"},
		{"the invocation's logger given its context", func() { function.Logger(inv).InfoContext(inv, "m") }, "inv-1"},
		{"derived with attributes and a group", func() { service.With("a", 1).WithGroup("g").InfoContext(inv, "m", "b", 2) }, "inv-1"},
	} {
		buf.Reset()
		tc.log()
		// The keys as written: decoded into a map, a duplicate would hide.
		got := []string{}
		for _, m := range idAttr.FindAllStringSubmatch(buf.String(), -1) {
			got = append(got, m[1])
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("%s: invocation_id %v, want %q: %s", tc.name, got, tc.want, buf.String())
		}
	}
}

var idAttr = regexp.MustCompile(`"invocation_id":"([^"]*)"`)
