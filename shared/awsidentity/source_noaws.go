//go:build noaws

package awsidentity

import "context"

// Source is absent from a build without the AWS SDK: New says so.
type Source struct{}

// New says that this build cannot call AWS STS, and what to do.
func New(Options) (*Source, error) { return nil, ErrUnavailable }

func (*Source) Token(context.Context) (string, error) { return "", ErrUnavailable }
