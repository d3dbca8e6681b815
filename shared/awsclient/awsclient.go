//go:build !noaws

// Package awsclient is what the AWS SDK clients of this project share: the
// SDK's configuration, loaded the one way, and the reading of its errors.
package awsclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"
)

// Config loads the SDK's default chain: on Lambda the execution role's
// variables and AWS_REGION; AWS_ENDPOINT_URL_<SERVICE> and AWS_CA_BUNDLE
// for a local stand-in. region and hc override the chain's when set.
func Config(ctx context.Context, region string, hc *http.Client) (aws.Config, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	if hc != nil {
		opts = append(opts, awsconfig.WithHTTPClient(hc))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("AWS configuration: %w", err)
	}
	return cfg, nil
}

// ErrorOf reads a failed call: the service's error code and HTTP status,
// empty and 0 when the service was not reached.
func ErrorOf(err error) (code string, status int) {
	var api smithy.APIError
	if errors.As(err, &api) {
		code = api.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}
