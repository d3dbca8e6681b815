//go:build !noaws

package awssecret

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/defender-functions/defender-functions/shared/awsclient"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Source is one secret, read through the SDK's default credential chain
// (the Lambda execution role) and held in memory. It is safe for concurrent
// use; concurrent callers share one read, and no goroutine outlives a call
// (Lambda freezes the sandbox between invocations).
type Source struct {
	id      string
	o       Options
	sf      singleflight.Group
	mu      sync.Mutex
	client  *secretsmanager.Client
	cur     *Value
	failed  time.Time // the last failed read, while cur is served
	rereads *rate.Limiter
}

// New prepares a Source for a secret named by its ARN (or name). Nothing is
// read until the first Get.
func New(secretID string, o *Options) (*Source, error) {
	if secretID == "" {
		return nil, errors.New("awssecret: no secret ID: give the secret's ARN")
	}
	s := &Source{id: secretID}
	if o != nil {
		s.o = *o
	}
	if s.o.TTL <= 0 {
		s.o.TTL = 5 * time.Minute
	}
	if s.o.Retry <= 0 {
		s.o.Retry = 30 * time.Second
	}
	if s.o.RereadEvery <= 0 {
		s.o.RereadEvery = 30 * time.Second
	}
	s.rereads = rate.NewLimiter(rate.Every(s.o.RereadEvery), 1)
	if s.o.Logger == nil {
		s.o.Logger = slog.New(slog.DiscardHandler)
	}
	if s.o.Now == nil {
		s.o.Now = time.Now
	}
	return s, nil
}

// Get returns the secret, read again once the value held is older than the
// TTL. When that read fails, the value held is served until the next
// attempt (the failure is logged); with no value held, the error is returned.
func (s *Source) Get(ctx context.Context) (Value, error) {
	s.mu.Lock()
	cur, failed := s.cur, s.failed
	s.mu.Unlock()
	now := s.o.Now()
	if cur != nil && (now.Sub(cur.Read) < s.o.TTL || now.Sub(failed) < s.o.Retry) {
		return *cur, nil
	}
	v, err := s.read(ctx, cur)
	if err != nil && cur != nil && !errors.Is(err, context.Canceled) {
		s.o.Logger.WarnContext(ctx, "Secret not read again; serving the version held.", "secret", s.id, "version", cur.Version,
			"age_s", int(now.Sub(cur.Read).Seconds()), "err", err)
		return *cur, nil
	}
	return v, err
}

// Reread reads the secret again, at most once per RereadEvery, and says
// whether a new version was read: the caller holds a value that did not
// work and asks whether a rotation replaced it.
func (s *Source) Reread(ctx context.Context) (changed bool, err error) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if !s.rereads.AllowN(s.o.Now(), 1) {
		return false, nil
	}
	v, err := s.read(ctx, cur)
	if err != nil {
		return false, err
	}
	return cur == nil || v.Version != cur.Version, nil
}

// read reads the secret once for every concurrent caller. The read is not
// tied to the first caller's context: one caller giving up fails no other.
func (s *Source) read(ctx context.Context, seen *Value) (Value, error) {
	ch := s.sf.DoChan("", func() (any, error) {
		s.mu.Lock()
		cur := s.cur
		s.mu.Unlock()
		if cur != seen && cur != nil {
			return *cur, nil // another caller's read, finished meanwhile
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		v, err := s.fetch(rctx)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.failed = s.o.Now()
			return nil, err
		}
		s.cur, s.failed = &v, time.Time{}
		s.o.Logger.InfoContext(ctx, "Secret read from Secrets Manager.", "secret", s.id, "version", v.Version)
		return v, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Value{}, r.Err
		}
		return r.Val.(Value), nil
	case <-ctx.Done():
		return Value{}, ctx.Err()
	}
}

func (s *Source) fetch(ctx context.Context) (Value, error) {
	c, err := s.init(ctx)
	if err != nil {
		return Value{}, &Error{SecretID: s.id, Err: err}
	}
	out, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.id)})
	if err != nil {
		e := &Error{SecretID: s.id, Err: err}
		e.Code, e.StatusCode = awsclient.ErrorOf(err)
		return Value{}, e
	}
	if out.SecretString == nil || *out.SecretString == "" {
		return Value{}, fmt.Errorf("secrets manager: %q has no SecretString: store the keys as text (JSON), not as binary", s.id)
	}
	return Value{String: *out.SecretString, Version: aws.ToString(out.VersionId), Read: s.o.Now()}, nil
}

func (s *Source) init(ctx context.Context) (*secretsmanager.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	cfg, err := awsclient.Config(ctx, s.o.Region, nil)
	if err != nil {
		return nil, err
	}
	s.client = secretsmanager.NewFromConfig(cfg)
	return s.client, nil
}
