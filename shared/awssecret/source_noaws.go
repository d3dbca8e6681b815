//go:build noaws

package awssecret

import "context"

// Source is absent from a build without the AWS SDK: New says so.
type Source struct{}

// New says that this build cannot read AWS Secrets Manager, and what to do.
func New(secretID string, o *Options) (*Source, error) { return nil, ErrUnavailable }

func (*Source) Get(context.Context) (Value, error)   { return Value{}, ErrUnavailable }
func (*Source) Reread(context.Context) (bool, error) { return false, ErrUnavailable }
