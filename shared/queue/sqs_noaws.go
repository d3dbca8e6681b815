//go:build noaws

package queue

import (
	"context"
	"errors"
)

// SQS is absent from a build without the AWS SDK (the Azure handler).
type SQS struct{}

// ErrNoSQS: this build cannot reach Amazon SQS.
var ErrNoSQS = errors.New("queue: this build has no Amazon SQS client (the Azure handler); on Azure, EXPORT_QUEUE is a Storage queue's name")

// NewSQS says that this build cannot send to SQS, and what to do.
func NewSQS(url, region string) (*SQS, error) { return nil, ErrNoSQS }

func (*SQS) Send(context.Context, [][]byte) error { return ErrNoSQS }

// SQSStatus is what a queue's attributes say of the fan-out's health.
type SQSStatus struct {
	Waiting, MaxReceiveCount, DeadLetters int
	DeadLetterQueue                       string
}

func (*SQS) Status(context.Context) (SQSStatus, error) { return SQSStatus{}, ErrNoSQS }
