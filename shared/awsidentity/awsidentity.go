// Package awsidentity proves the function's AWS identity to Entra ID with
// no secret: the execution role asks AWS STS for a JWT (GetWebIdentityToken,
// IAM outbound identity federation) that the Defender app trusts through a
// federated identity credential, and presents it as the client assertion.
// The JWT is cached and renewed on the calling path, not per invocation.
package awsidentity

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Error is a failed GetWebIdentityToken. Its message says what to do.
type Error struct {
	StatusCode int    // STS's HTTP status; 0 when it was not reached
	Code       string // its error code
	Err        error
}

func (e *Error) Error() string {
	switch e.Code {
	case "OutboundWebIdentityFederationDisabledException":
		return "aws sts: outbound identity federation is not enabled for this AWS account: run `aws iam enable-outbound-web-identity-federation` once, then trust the issuer URL it prints in the Defender app's federated credential (docs/app-registration.md)"
	case "AccessDenied", "AccessDeniedException":
		return "aws sts: the function's role may not call sts:GetWebIdentityToken: grant it to the role (the SAM template does with DefenderCredential=aws-federation)"
	case "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException":
		return fmt.Sprintf("aws sts: the function's AWS credentials were refused (%s): check the execution role and the clock", e.Code)
	case "":
		return fmt.Sprintf("aws sts: GetWebIdentityToken failed: %v (is the regional STS endpoint reachable? the global one does not serve it)", e.Err)
	}
	return fmt.Sprintf("aws sts: GetWebIdentityToken failed with HTTP %d %s", e.StatusCode, e.Code)
}

func (e *Error) Unwrap() error { return e.Err }

// Transient reports whether the failure may pass by itself.
func (e *Error) Transient() bool {
	return e.StatusCode == 0 || e.StatusCode == 429 || e.StatusCode >= 500 || e.Code == "Throttling" || e.Code == "ThrottlingException"
}

// ErrUnavailable is returned by a build without the AWS SDK (the noaws tag).
var ErrUnavailable = errors.New("this build has no AWS STS client (the noaws tag keeps the AWS SDK out of the Azure package): aws-federation is for the Lambda bootstrap")

// Options configures a Source.
type Options struct {
	// Audience is the JWT's aud: Entra ID's token exchange audience,
	// api://AzureADTokenExchange in the public cloud.
	Audience string
	// Lifetime is the JWT's (default 10 minutes; STS allows 60 to 3600 s).
	Lifetime time.Duration
	// Algorithm signs it: RS256 (default) or ES384.
	Algorithm string
	// Region overrides the SDK's (AWS_REGION, set by Lambda).
	Region string
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}
