// Package awssecret reads a secret from AWS Secrets Manager at run time and
// keeps it in memory, so that a rotation reaches a running function without
// a redeploy and a warm invocation pays nothing.
//
// AWS also offers the Parameters and Secrets Lambda Extension (a layer and
// a local HTTP server) for this; an SDK call cached in the process needs no
// layer, no extra process in the sandbox and no second trust boundary.
package awssecret

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Value is one version of the secret.
type Value struct {
	String  string // the SecretString
	Version string // its VersionId
	Read    time.Time
}

// Error is a failed read of a secret. Its message names the secret and what
// to do; it never holds the secret's value.
type Error struct {
	SecretID   string
	StatusCode int    // Secrets Manager's HTTP status; 0 when it was not reached
	Code       string // its error code, e.g. ResourceNotFoundException
	Err        error
}

func (e *Error) Error() string {
	switch e.Code {
	case "ResourceNotFoundException":
		return fmt.Sprintf("secrets manager: no secret %q in this region: check the ARN and AWS_REGION", e.SecretID)
	case "AccessDeniedException":
		return fmt.Sprintf("secrets manager: the function's role may not read %q: grant it secretsmanager:GetSecretValue on that ARN (the SAM template does)", e.SecretID)
	case "DecryptionFailure":
		return fmt.Sprintf("secrets manager: %q could not be decrypted: grant the function's role kms:Decrypt on the secret's KMS key", e.SecretID)
	case "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException":
		return fmt.Sprintf("secrets manager: the function's AWS credentials were refused reading %q (%s): check the execution role and the clock", e.SecretID, e.Code)
	case "":
		return fmt.Sprintf("secrets manager: reading %q failed: %v", e.SecretID, e.Err)
	}
	return fmt.Sprintf("secrets manager: reading %q failed with HTTP %d %s", e.SecretID, e.StatusCode, e.Code)
}

func (e *Error) Unwrap() error { return e.Err }

// Transient reports whether the failure may pass by itself (throttling, an
// outage, the network), as opposed to one an operator must fix.
func (e *Error) Transient() bool {
	switch {
	case e.StatusCode == 0, e.StatusCode == 429, e.StatusCode >= 500:
		return true
	case e.Code == "ThrottlingException", e.Code == "RequestLimitExceeded", e.Code == "InternalServiceError":
		return true
	}
	return false
}

// ErrUnavailable is returned by a build without the AWS SDK (the noaws tag).
var ErrUnavailable = errors.New("this build has no AWS Secrets Manager client (the noaws tag keeps the AWS SDK out of the Azure package); use the Lambda bootstrap, or a Key Vault reference on Azure")

// Options configures a Source. The zero value is a useful default.
type Options struct {
	// TTL is how long a value read is served before it is read again
	// (default 5 minutes, as AWS's own caching extension).
	TTL time.Duration
	// Retry is how long after a failed read the value held is served before
	// the next attempt (default 30 s): an outage costs one failed call per
	// Retry, not one per invocation.
	Retry time.Duration
	// RereadEvery bounds Reread to one read per period (default 30 s), the
	// first at once. Reread runs on a signature that fails to verify, which
	// anyone can send: this bounds what they cost.
	RereadEvery time.Duration
	// Region overrides the SDK's (AWS_REGION, set by Lambda).
	Region string
	// Logger receives a line per read and per failure served from the cache.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}
