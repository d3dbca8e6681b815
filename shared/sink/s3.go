//go:build !noaws

package sink

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/defender-functions/defender-functions/shared/awsclient"
	"golang.org/x/sync/errgroup"
)

// S3Sink writes objects to a bucket under a prefix. PutObject answers 200
// only once the object is stored durably.
type S3Sink struct {
	bucket, prefix string
	opts           S3Options
	mu             sync.Mutex
	client         *s3.Client
}

// NewS3Sink prepares a sink; credentials come from the SDK's default chain
// (the Lambda execution role in AWS), loaded on first use.
func NewS3Sink(bucket, prefix string, o S3Options) (*S3Sink, error) {
	if bucket == "" {
		return nil, fmt.Errorf("EXPORT_SINK: s3://bucket/prefix names no bucket")
	}
	return &S3Sink{bucket: bucket, prefix: prefix, opts: o}, nil
}

func (s *S3Sink) String() string { return "s3://" + path.Join(s.bucket, s.prefix) }

func (s *S3Sink) init(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return nil
	}
	cfg, err := awsclient.Config(ctx, s.opts.Region, s.opts.HTTPClient)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	s.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if s.opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.opts.Endpoint)
			o.UsePathStyle = true
		}
	})
	return nil
}

func (s *S3Sink) Write(ctx context.Context, objs []Object) error {
	if err := s.init(ctx); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, o := range objs {
		if err := checkName(o.Name); err != nil {
			return err
		}
		key := path.Join(s.prefix, o.Name)
		g.Go(func() error {
			_, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key),
				Body: bytes.NewReader(o.Data), ContentType: aws.String(contentType(o.Name))})
			if err != nil {
				return fmt.Errorf("sink: put s3://%s/%s: %w", s.bucket, key, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Exists asks for the object's head.
func (s *S3Sink) Exists(ctx context.Context, name string) (bool, error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	if err := s.init(ctx); err != nil {
		return false, err
	}
	// A listing of the key as a prefix, not HeadObject: S3 answers a
	// missing object's HEAD 403 unless the role may list the bucket, and a
	// ListBucket grant bounded by s3:prefix (the template's) is sure to
	// match only a request that carries the prefix. The key sorts first
	// among the keys it begins.
	key := path.Join(s.prefix, name)
	out, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(key), MaxKeys: aws.Int32(1)})
	if err != nil {
		return false, fmt.Errorf("sink: list s3://%s/%s: %w", s.bucket, key, err)
	}
	return len(out.Contents) > 0 && aws.ToString(out.Contents[0].Key) == key, nil
}
