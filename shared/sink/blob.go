package sink

import (
	"github.com/defender-functions/defender-functions/shared/config"

	"bytes"
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/defender-functions/defender-functions/shared/state"
	"golang.org/x/sync/errgroup"
)

// BlobSink writes block blobs into a container. A blob upload is durable
// when the service answers 201.
type BlobSink struct {
	c   *state.Container
	url string // as shown: no credential
}

// NewBlobSink opens a container as a sink; it performs no I/O.
func NewBlobSink(raw string, o state.BlobOptions) (*BlobSink, error) {
	c, err := state.OpenContainer(raw, o)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	return &BlobSink{c: c, url: config.RedactURL(raw)}, nil
}

func (s *BlobSink) String() string { return s.url }

func (s *BlobSink) Write(ctx context.Context, objs []Object) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, o := range objs {
		if err := checkName(o.Name); err != nil {
			return err
		}
		g.Go(func() error {
			bb, err := s.c.BlockBlob(o.Name)
			if err == nil {
				_, err = bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(o.Data)), &blockblob.UploadOptions{
					HTTPHeaders: &blob.HTTPHeaders{BlobContentType: ptr(contentType(o.Name))},
				})
			}
			if err != nil {
				return fmt.Errorf("sink: upload %s: %w", o.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Exists asks for the blob's properties.
func (s *BlobSink) Exists(ctx context.Context, name string) (bool, error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	b, err := s.c.Blob(name)
	if err != nil {
		return false, fmt.Errorf("sink: %s: %w", name, err)
	}
	_, err = b.GetProperties(ctx, nil)
	switch {
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sink: %s: %w", name, err)
	}
	return true, nil
}

func ptr[T any](v T) *T { return &v }
