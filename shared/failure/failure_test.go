package failure_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/awsidentity"
	"github.com/defender-functions/defender-functions/shared/awssecret"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/failure"
)

// One reading of every upstream failure: retry (503, 429, with when), a
// configuration to fix (500, no retry), a timeout, or the request.
func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("graph API: GET /v1.0/security/incidents: %w", err) }
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter time.Duration
	}{
		{"throttled", wrap(&defender.APIError{StatusCode: 429, RetryAfter: 7 * time.Second}), 429, "Throttled", 7 * time.Second},
		{"throttled without Retry-After", wrap(&defender.APIError{StatusCode: 429}), 429, "Throttled", time.Second},
		{"API outage", wrap(&defender.APIError{StatusCode: 503}), 503, "UpstreamUnavailable", 30 * time.Second},
		{"API outage asking for longer", wrap(&defender.APIError{StatusCode: 503, RetryAfter: time.Minute}), 503, "UpstreamUnavailable", time.Minute},
		{"permission", wrap(&defender.APIError{StatusCode: 403}), 500, "NotPermitted", 0},
		{"token refused by the API", wrap(&defender.APIError{StatusCode: 401}), 500, "NotPermitted", 0},
		{"no such incident", wrap(&defender.APIError{StatusCode: 404}), 404, "NotFound", 0},
		{"bad request", wrap(&defender.APIError{StatusCode: 400, Message: "Syntax error"}), 400, "Rejected", 0},
		{"Entra outage", wrap(&credentials.EntraError{StatusCode: 503}), 503, "CredentialsUnavailable", 30 * time.Second},
		{"Entra refuses the secret", wrap(&credentials.EntraError{StatusCode: 401, Code: "invalid_client"}), 500, "CredentialsRejected", 0},
		{"Key Vault unreachable", wrap(&credentials.VaultError{Err: errors.New("dial tcp: connection refused")}), 503, "CredentialsUnavailable", 30 * time.Second},
		{"Key Vault forbids", wrap(&credentials.VaultError{StatusCode: 403}), 500, "CredentialsRejected", 0},
		{"roles missing", &credentials.PermissionError{}, 500, "CredentialsRejected", 0},
		{"STS outage", &awsidentity.Error{StatusCode: 503, Code: "ServiceUnavailable"}, 503, "CredentialsUnavailable", 30 * time.Second},
		{"outbound federation off", &awsidentity.Error{StatusCode: 403, Code: "OutboundWebIdentityFederationDisabledException"}, 500, "CredentialsRejected", 0},
		{"Secrets Manager outage", &awssecret.Error{StatusCode: 500, Code: "InternalServiceError"}, 503, "SecretsUnavailable", 30 * time.Second},
		{"Secrets Manager throttles", &awssecret.Error{StatusCode: 400, Code: "ThrottlingException"}, 503, "SecretsUnavailable", 30 * time.Second},
		{"Secrets Manager unreachable", &awssecret.Error{Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, 503, "SecretsUnavailable", 30 * time.Second},
		{"Secrets Manager denies", &awssecret.Error{StatusCode: 400, Code: "AccessDeniedException"}, 500, "SecretsRejected", 0},
		{"no such AWS secret", &awssecret.Error{StatusCode: 400, Code: "ResourceNotFoundException"}, 500, "SecretsRejected", 0},
		{"timeout", wrap(context.DeadlineExceeded), 504, "Timeout", 0},
		{"outage until the deadline", errors.Join(wrap(&defender.APIError{StatusCode: 502}), context.DeadlineExceeded), 503, "UpstreamUnavailable", 30 * time.Second},
		{"network", wrap(&net.OpError{Op: "dial", Err: errors.New("connection refused")}), 503, "UpstreamUnavailable", 30 * time.Second},
		{"refused redirect", wrap(credentials.ErrCrossOriginRedirect), 502, "Upstream", 0},
		{"anything else", errors.New("boom"), 502, "Upstream", 0},
	} {
		f := failure.Classify(tc.err)
		if f.Status != tc.status || f.Code != tc.code || f.RetryAfter != tc.retryAfter || f.Message == "" {
			t.Errorf("%s: %+v, want %d %s retry after %s", tc.name, f, tc.status, tc.code, tc.retryAfter)
		}
		if f.Status == 500 && f.RetryAfter != 0 || (f.Status == 503 || f.Status == 429) && f.RetryAfter == 0 {
			t.Errorf("%s: status %d with Retry-After %s", tc.name, f.Status, f.RetryAfter)
		}
		if strings.Contains(f.Message, "connection refused") {
			t.Errorf("%s: the message discloses the cause: %q", tc.name, f.Message)
		}
	}
}
