//go:build !noaws

package awsidentity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/defender-functions/defender-functions/shared/awsclient"
	"golang.org/x/sync/singleflight"
)

// Source gives the execution role's JWT for one audience. It is safe for
// concurrent use; concurrent callers share one call to STS.
type Source struct {
	o      Options
	sf     singleflight.Group
	mu     sync.Mutex
	client *sts.Client
	tok    string
	exp    time.Time
}

// New prepares a Source; nothing is called until the first Token.
func New(o Options) (*Source, error) {
	if o.Audience == "" {
		return nil, errors.New("awsidentity: no audience")
	}
	if o.Lifetime == 0 {
		o.Lifetime = 10 * time.Minute
	}
	if o.Lifetime < time.Minute || o.Lifetime > time.Hour {
		return nil, fmt.Errorf("awsidentity: lifetime %s: STS issues 60 to 3600 s", o.Lifetime)
	}
	if o.Algorithm == "" {
		o.Algorithm = "RS256"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Source{o: o}, nil
}

// Token returns a JWT with at least a minute (or a fifth of its lifetime)
// left, from STS when the one held has less.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	tok, exp := s.tok, s.exp
	s.mu.Unlock()
	if tok != "" && exp.Sub(s.o.Now()) > max(time.Minute, s.o.Lifetime/5) {
		return tok, nil
	}
	ch := s.sf.DoChan("", func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		tok, exp, err := s.fetch(rctx)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.tok, s.exp = tok, exp
		s.mu.Unlock()
		s.o.Logger.InfoContext(ctx, "Web identity token obtained from AWS STS.", "audience", s.o.Audience, "expires", exp.UTC().Format(time.RFC3339))
		return tok, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (s *Source) fetch(ctx context.Context) (string, time.Time, error) {
	c, err := s.init(ctx)
	if err != nil {
		return "", time.Time{}, &Error{Err: err}
	}
	start := s.o.Now()
	out, err := c.GetWebIdentityToken(ctx, &sts.GetWebIdentityTokenInput{Audience: []string{s.o.Audience},
		SigningAlgorithm: aws.String(s.o.Algorithm), DurationSeconds: aws.Int32(int32(s.o.Lifetime / time.Second))})
	if err != nil {
		e := &Error{Err: err}
		e.Code, e.StatusCode = awsclient.ErrorOf(err)
		return "", time.Time{}, e
	}
	if out.WebIdentityToken == nil || *out.WebIdentityToken == "" {
		return "", time.Time{}, &Error{StatusCode: 200, Code: "EmptyToken", Err: errors.New("no token in the answer")}
	}
	// Our clock, not STS's: a host whose clock is off still renews in time.
	return *out.WebIdentityToken, start.Add(s.o.Lifetime), nil
}

func (s *Source) init(ctx context.Context) (*sts.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	// GetWebIdentityToken is served by STS's regional endpoints only.
	cfg, err := awsclient.Config(ctx, s.o.Region, nil)
	if err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region: GetWebIdentityToken needs STS's regional endpoint (Lambda sets AWS_REGION)")
	}
	s.client = sts.NewFromConfig(cfg)
	return s.client, nil
}
