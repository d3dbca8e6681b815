package state

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// BlobOptions say how to reach Blob Storage, following the Functions
// conventions: a connection string for Azurite and development
// (AzureWebJobsStorage), a token credential (managed identity) in Azure.
type BlobOptions struct {
	ConnectionString string
	Credential       azcore.TokenCredential
	HTTPClient       *http.Client
}

// ContainerClient opens the container a URL names.
func ContainerClient(raw string, o BlobOptions) (*container.Client, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	name := parts[len(parts)-1]
	if name == "" {
		return nil, fmt.Errorf("%q names no container: use https://<account>.blob.core.windows.net/<container>", raw)
	}
	opts := &container.ClientOptions{ClientOptions: policy.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 3}}}
	if o.HTTPClient != nil {
		opts.Transport = o.HTTPClient
	}
	switch {
	case o.ConnectionString != "":
		return container.NewClientFromConnectionString(o.ConnectionString, name, opts)
	case o.Credential != nil:
		return container.NewClient(strings.TrimRight(raw, "/"), o.Credential, opts)
	}
	return nil, fmt.Errorf("no credential for %s: set AzureWebJobsStorage (a connection string) or use a managed identity", raw)
}

// BlobStore keeps documents as block blobs; versions are ETags, and writes
// are conditional (If-Match, or If-None-Match: * to create).
type BlobStore struct{ c *container.Client }

// NewBlobStore opens a container as a store; it performs no I/O.
func NewBlobStore(raw string, o BlobOptions) (*BlobStore, error) {
	c, err := ContainerClient(raw, o)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return &BlobStore{c: c}, nil
}

func (s *BlobStore) Get(ctx context.Context, key string) ([]byte, string, error) {
	if err := CheckKey(key); err != nil {
		return nil, "", err
	}
	resp, err := s.c.NewBlockBlobClient(key).DownloadStream(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return nil, "", ErrNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("state: read %s: %w", key, blobErr(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, "", fmt.Errorf("state: read %s: %w", key, err)
	}
	return b, string(*resp.ETag), nil
}

func (s *BlobStore) Put(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	cond := &blob.ModifiedAccessConditions{}
	if ifVersion == "" {
		any := azcore.ETagAny
		cond.IfNoneMatch = &any
	} else {
		e := azcore.ETag(ifVersion)
		cond.IfMatch = &e
	}
	resp, err := s.c.NewBlockBlobClient(key).Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond},
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: ptr("application/json")},
	})
	if bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists) {
		return "", ErrConflict
	}
	if err != nil {
		return "", fmt.Errorf("state: write %s: %w", key, blobErr(err))
	}
	return string(*resp.ETag), nil
}

func (s *BlobStore) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	_, err := s.c.NewBlockBlobClient(key).Delete(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return fmt.Errorf("state: delete %s: %w", key, blobErr(err))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// blobErr names the fix for the errors an operator meets.
func blobErr(err error) error {
	switch {
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return fmt.Errorf("the container does not exist: create it (the Bicep template does): %w", err)
	case bloberror.HasCode(err, bloberror.AuthorizationPermissionMismatch, bloberror.AuthorizationFailure):
		return fmt.Errorf("not authorized: give the app's identity 'Storage Blob Data Contributor' on the account: %w", err)
	}
	return err
}
