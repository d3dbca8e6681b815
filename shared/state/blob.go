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
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// BlobOptions say how to reach Blob Storage, following the Functions
// conventions: a connection string for Azurite and development
// (AzureWebJobsStorage), a token credential (managed identity) in Azure.
type BlobOptions struct {
	ConnectionString string
	Credential       azcore.TokenCredential
	HTTPClient       *http.Client
}

// Container is a Blob container as the state store and the Blob sink reach
// it: a client per blob, made when needed. Not azblob's container.Client:
// its package links Apache Arrow (an opt-in listing format since azblob
// v1.8.1), whose package initialisation (CPU feature probing, compression
// tables) and 2.2 MB slowed every start of the handler and of the Lambda
// bootstrap by about 1.4 ms; we list nothing. Blob names are escaped and
// joined as container.Client's NewBlockBlobClient does.
type Container struct {
	url        string // https://<account>.blob.core.windows.net/<container>
	name       string
	connString string
	cred       azcore.TokenCredential
	opts       policy.ClientOptions
}

// OpenContainer opens the container a URL names; it performs no I/O.
func OpenContainer(raw string, o BlobOptions) (*Container, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	name := parts[len(parts)-1]
	if name == "" {
		return nil, fmt.Errorf("%q names no container: use https://<account>.blob.core.windows.net/<container>", raw)
	}
	c := &Container{url: strings.TrimRight(raw, "/"), name: name, connString: o.ConnectionString, cred: o.Credential,
		opts: policy.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 3}}}
	if o.HTTPClient != nil {
		c.opts.Transport = o.HTTPClient
	}
	if c.connString == "" && c.cred == nil {
		return nil, fmt.Errorf("no credential for %s: set AzureWebJobsStorage (a connection string) or use a managed identity", raw)
	}
	if c.connString != "" {
		// Checked now, as container.Client did: a bad connection string is
		// a setting to fix, not a failure of the first write.
		if _, err := blockblob.NewClientFromConnectionString(c.connString, name, "x", nil); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// BlockBlob is the client of the named block blob.
func (c *Container) BlockBlob(name string) (*blockblob.Client, error) {
	o := &blockblob.ClientOptions{ClientOptions: c.opts}
	if c.connString != "" {
		return blockblob.NewClientFromConnectionString(c.connString, c.name, url.PathEscape(name), o)
	}
	return blockblob.NewClient(runtime.JoinPaths(c.url, url.PathEscape(name)), c.cred, o)
}

// Blob is the client of the named blob, whatever its type.
func (c *Container) Blob(name string) (*blob.Client, error) {
	o := &blob.ClientOptions{ClientOptions: c.opts}
	if c.connString != "" {
		return blob.NewClientFromConnectionString(c.connString, c.name, url.PathEscape(name), o)
	}
	return blob.NewClient(runtime.JoinPaths(c.url, url.PathEscape(name)), c.cred, o)
}

// BlobStore keeps documents as block blobs; versions are ETags, and writes
// are conditional (If-Match, or If-None-Match: * to create).
type BlobStore struct{ c *Container }

// NewBlobStore opens a container as a store; it performs no I/O.
func NewBlobStore(raw string, o BlobOptions) (*BlobStore, error) {
	c, err := OpenContainer(raw, o)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return &BlobStore{c: c}, nil
}

func (s *BlobStore) Get(ctx context.Context, key string) ([]byte, string, error) {
	if err := CheckKey(key); err != nil {
		return nil, "", err
	}
	bb, err := s.c.BlockBlob(key)
	if err != nil {
		return nil, "", fmt.Errorf("state: read %s: %w", key, err)
	}
	resp, err := bb.DownloadStream(ctx, nil)
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
	bb, err := s.c.BlockBlob(key)
	if err != nil {
		return "", fmt.Errorf("state: write %s: %w", key, err)
	}
	resp, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
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
	bb, err := s.c.BlockBlob(key)
	if err != nil {
		return fmt.Errorf("state: delete %s: %w", key, err)
	}
	_, err = bb.Delete(ctx, nil)
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
