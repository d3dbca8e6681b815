// Package sink writes exported incident versions where the user wants them:
// files, Azure Blob Storage or Amazon S3, or a SIEM: a Log Analytics table
// through the Logs Ingestion API, or Splunk's HTTP Event Collector. Objects
// have deterministic names, so writing the same version twice overwrites it;
// a SIEM has no overwrite, so each record carries the version's identity
// (VersionID) and a version sent twice is two rows a query can fold into
// one. A write returns only once the objects are durable, or, for a Syncer,
// once its Sync returns.
package sink

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/state"
)

// Object is one exported document: an incident version.
type Object struct {
	Name string // slash-separated, relative to the sink's root
	Data []byte // the incident's JSON, then a newline
	// Tenant, ID and LastUpdate name the version; the record sinks make
	// columns and fields of them.
	Tenant     string
	ID         string
	LastUpdate time.Time
	// Scope names the writer whose ScopeSyncer.SyncScope waits for this
	// object (an export run); empty is Tenant.
	Scope string
}

// VersionID is the identity of the version an object holds: the same for
// every copy of one version, different for any other version. The record
// sinks store it, so that duplicates can be found and folded.
func VersionID(o Object) string {
	return o.Tenant + "/" + o.ID + "/" + o.LastUpdate.UTC().Format("2006-01-02T15:04:05.0000000Z")
}

// Sink stores objects durably.
type Sink interface {
	// Write stores every object; when it returns nil all of them are
	// durable (for a Syncer, once its Sync returns).
	Write(ctx context.Context, objs []Object) error
	// String names the sink for logs (never a credential).
	String() string
}

// Syncer is a Sink whose writes become durable only when Sync returns: the
// file sink flushes once for many pages instead of once a page.
type Syncer interface {
	Sync(ctx context.Context) error
}

// S3Options reach Amazon S3 or a compatible endpoint (in builds with S3).
type S3Options struct {
	// Region defaults to AWS_REGION.
	Region string
	// Endpoint is an S3-compatible endpoint (s3rver, MinIO); empty is AWS.
	Endpoint string
	// HTTPClient carries the requests; nil is the SDK's default.
	HTTPClient *http.Client
}

// ScopeSyncer is a Sink whose writes become durable when SyncScope returns
// (Splunk with indexer acknowledgement) for the objects written with that
// Scope. A scope is its writer's own, so that two runs of one tenant never
// wait for (or forget) each other's writes, and a failure is that writer's
// alone: it must then count none of the scope's objects as written (they
// are forgotten, not waited for again).
type ScopeSyncer interface {
	SyncScope(ctx context.Context, scope string) error
}

// Exister is a sink that can say whether an object is stored (whole: each
// sink stores an object at once or not at all). The batched layout needs
// it to learn, after a crash, whether the batch it was writing landed.
type Exister interface {
	Exists(ctx context.Context, name string) (bool, error)
}

// contentType is an object's type by its name: the per-version JSON, or a
// batch's gzip-compressed NDJSON (no Content-Encoding, so that a download
// keeps the .gz the collectors expect).
func contentType(name string) string {
	if strings.HasSuffix(name, ".gz") {
		return "application/gzip"
	}
	return "application/json"
}

// Checker is a sink that can show it is reachable and may be written
// without writing anything (doctor): a SIEM keeps every row sent to it.
type Checker interface {
	Check(ctx context.Context) error
}

// Options carry the credentials of the cloud sinks.
type Options struct {
	Blob   state.BlobOptions
	S3     S3Options
	Logs   LogsOptions
	Splunk SplunkOptions
}

// Open returns the sink an EXPORT_SINK URL names, as config.ClassifySink
// reads it.
func Open(raw string, o Options) (Sink, error) {
	kind, err := config.ClassifySink(raw)
	if err != nil {
		return nil, fmt.Errorf("EXPORT_SINK=%w", err)
	}
	u, _ := url.Parse(raw)
	switch kind {
	case config.SinkFile:
		return NewFileSink(u.Path)
	case config.SinkLogs:
		return NewLogsSink(raw, o.Logs)
	case config.SinkSplunk:
		return NewSplunkSink(raw, o.Splunk)
	case config.SinkS3:
		return NewS3Sink(u.Host, strings.Trim(u.Path, "/"), o.S3)
	}
	return NewBlobSink(raw, o.Blob)
}

// checkName refuses names that could escape the sink's root.
func checkName(n string) error {
	if n == "" || strings.HasPrefix(n, "/") || strings.Contains(n, "..") || strings.ContainsAny(n, "\\\x00") {
		return fmt.Errorf("sink: invalid object name %q", n)
	}
	return nil
}
