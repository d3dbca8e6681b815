package credentials_test

import (
	"context"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/google/uuid"
	"golang.org/x/oauth2"
)

// warmSource is a source whose token is already cached, from the devstack.
func warmSource(b *testing.B) credentials.Source {
	id := uuid.NewString()
	s := start(b, devstack.Options{IdentityClientID: id})
	cfg := settings(b, s, id, "DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID))
	// The real clock, as in production.
	creds, err := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil), Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	src := creds.Source(cfg.Tenants[0])
	if _, err := src.Token(context.Background()); err != nil {
		b.Fatal(err)
	}
	return src
}

// BenchmarkCacheHit is the cost every warm invocation pays for its token.
// The functions call under a deadline (the invocation's, or their own
// timeout), as here; no-deadline is the clock-reading path.
func BenchmarkCacheHit(b *testing.B) {
	src := warmSource(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.Run("serial-no-deadline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := src.Token(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := src.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := src.Token(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

type staticSource struct{ tok *oauth2.Token }

func (s staticSource) Token() (*oauth2.Token, error) { return s.tok, nil }

// BenchmarkReuseTokenSource is x/oauth2's cache hit, measured in the same
// run for comparison.
func BenchmarkReuseTokenSource(b *testing.B) {
	src := oauth2.ReuseTokenSource(nil, staticSource{&oauth2.Token{AccessToken: "x", Expiry: time.Now().Add(time.Hour)}})
	src.Token()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			src.Token()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				src.Token()
			}
		})
	})
}

var sink time.Duration

// BenchmarkClockRead is what a hit without a deadline pays to check
// expiry: one monotonic clock read on this machine.
func BenchmarkClockRead(b *testing.B) {
	start := time.Now()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			sink += time.Since(start)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			var d time.Duration
			for pb.Next() {
				d += time.Since(start)
			}
			sink = d
		})
	})
}

// BenchmarkTokenPerCall is the baseline the cache replaces: a token request
// to Entra ID on every call, as the original guide's samples do (here over
// loopback TLS to the devstack, so a real network adds to it), and, for the
// keyvault-secret mode, the Key Vault read before it.
func BenchmarkTokenPerCall(b *testing.B) {
	id := uuid.NewString()
	s := start(b, devstack.Options{IdentityClientID: id})
	for _, mode := range []struct {
		name string
		kv   []string
	}{
		{"client-secret", []string{"DEFENDER_CREDENTIAL", "env-secret", "DEFENDER_CLIENT_SECRET", s.ClientSecret(devstack.DefaultClientID)}},
		{"keyvault-secret", nil},
	} {
		b.Run(mode.name, func(b *testing.B) {
			cfg := settings(b, s, id, mode.kv...)
			for b.Loop() {
				creds, err := credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := creds.Source(cfg.Tenants[0]).Token(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
