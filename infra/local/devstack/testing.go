package devstack

import "testing"

// Start starts a devstack for a test or benchmark and stops it when tb
// ends. Unless opts.Limits says otherwise, it serves without rate limits:
// tests that exercise throttling opt in with DocumentedLimits.
func Start(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	if opts.Limits == nil {
		opts.Limits = NoLimits
	}
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
