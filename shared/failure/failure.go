// Package failure is how an HTTP function answers when the work it depends
// on fails: a call to Defender, to Entra ID or Key Vault for its token, to
// AWS Secrets Manager for a webhook's keys, or its own configuration. Every
// HTTP function answers by it, so that one failure means the same
// everywhere, by one rule:
//
//   - 503 or 429 with Retry-After: passing; retry, then.
//   - 500 without Retry-After: the deployment is wrong (a setting, the app's
//     credentials, a permission), which only the operator can fix and a
//     retry cannot; the function's log says what to fix.
//   - 504: a timeout; 4xx: the request itself.
//
// It lives at the HTTP edge, not in the clients whose errors it reads: the
// clients return typed errors and know nothing of HTTP answers.
package failure

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/defender-functions/defender-functions/shared/awsidentity"
	"github.com/defender-functions/defender-functions/shared/awssecret"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
)

// Failure is what a failure means for the caller of an HTTP function.
type Failure struct {
	Status     int
	Code       string
	RetryAfter time.Duration // 0: the caller should not retry
	// Message is for the caller: what happened and what helps, without the
	// deployment's details (those are in the function's log). It is not
	// the advice table's (shared/advice): that tells the operator how to
	// fix the deployment; this tells a caller, who cannot, whether to retry,
	// as Status and RetryAfter do.
	Message string
}

// NotConfigured is the answer of a function whose settings are wrong or
// missing: the operator must fix them (doctor says how). The app answers
// with its status and a text body naming the settings to fix.
func NotConfigured(function string) Failure {
	return Failure{Status: 500, Code: "NotConfigured", Message: function + " is not configured"}
}

// Classify reads err as a Failure.
func Classify(err error) Failure {
	var ae *defender.APIError
	var ee *credentials.EntraError
	var ve *credentials.VaultError
	var pe *credentials.PermissionError
	var se *awssecret.Error
	var ie *awsidentity.Error
	var ne net.Error
	switch {
	case errors.As(err, &ae) && ae.StatusCode == 429:
		return Failure{Status: 429, Code: "Throttled", RetryAfter: max(ae.RetryAfter, time.Second), Message: "Defender's quota for this app is exhausted: " + ae.Message}
	case errors.As(err, &ae) && (ae.StatusCode == 401 || ae.StatusCode == 403):
		return Failure{Status: 500, Code: "NotPermitted", Message: "Defender refused the app: it lacks an application permission or admin consent"}
	case errors.As(err, &ae) && ae.StatusCode == 404:
		return Failure{Status: 404, Code: "NotFound", Message: "Defender has no such object"}
	case errors.As(err, &ae) && ae.Retryable():
		return Failure{Status: 503, Code: "UpstreamUnavailable", RetryAfter: max(ae.RetryAfter, 30*time.Second), Message: "Defender is unavailable; retry later"}
	case errors.As(err, &ae) && ae.StatusCode >= 400 && ae.StatusCode < 500:
		return Failure{Status: 400, Code: "Rejected", Message: "Defender refused the request: " + ae.Message}
	// After the API's answers: a deadline that ran out while the API kept
	// failing is that failure, retried too long.
	case errors.Is(err, context.DeadlineExceeded):
		return Failure{Status: 504, Code: "Timeout", Message: "Defender did not answer in time"}
	case errors.As(err, &ee) && ee.Transient(), errors.As(err, &ve) && (ve.StatusCode == 0 || ve.StatusCode == 429 || ve.StatusCode >= 500),
		errors.As(err, &ie) && ie.Transient():
		return Failure{Status: 503, Code: "CredentialsUnavailable", RetryAfter: 30 * time.Second,
			Message: "the identity provider (Entra ID, Key Vault, AWS STS) is unavailable, and no valid token is cached; retry later"}
	case errors.As(err, &ee), errors.As(err, &ve), errors.As(err, &pe), errors.As(err, &ie):
		return Failure{Status: 500, Code: "CredentialsRejected", Message: "the app's credentials or its access to them were refused; the operator must fix it (doctor says how)"}
	case errors.As(err, &se) && se.Transient():
		return Failure{Status: 503, Code: "SecretsUnavailable", RetryAfter: 30 * time.Second,
			Message: "the secret store is unavailable, and no copy is cached; retry later"}
	case errors.As(err, &se):
		return Failure{Status: 500, Code: "SecretsRejected", Message: "the function's access to its secrets was refused; the operator must fix it (doctor says how)"}
	case errors.Is(err, credentials.ErrCrossOriginRedirect):
		return Failure{Status: 502, Code: "Upstream", Message: "Defender answered with a redirect elsewhere; the call was not followed"}
	case errors.As(err, &ne):
		return Failure{Status: 503, Code: "UpstreamUnavailable", RetryAfter: 30 * time.Second, Message: "Defender could not be reached; retry later"}
	}
	return Failure{Status: 502, Code: "Upstream", Message: "the call to Defender failed"}
}
