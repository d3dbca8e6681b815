//go:build !noaws

package queue

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/defender-functions/defender-functions/shared/awsclient"
)

// SQS is an Amazon SQS queue, reached with the SDK's default chain (on
// Lambda, the execution role).
type SQS struct {
	url, region string
	mu          sync.Mutex
	client      *sqs.Client
}

// NewSQS is the queue at url. It does no I/O: the SDK's configuration is
// loaded on the first send.
func NewSQS(url, region string) (*SQS, error) {
	return &SQS{url: url, region: region}, nil
}

func (q *SQS) String() string { return "queue " + q.url }

func (q *SQS) sqs(ctx context.Context) (*sqs.Client, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.client == nil {
		cfg, err := awsclient.Config(ctx, q.region, nil)
		if err != nil {
			return nil, err
		}
		q.client = sqs.NewFromConfig(cfg)
	}
	return q.client, nil
}

// Send sends the bodies ten to a request (SendMessageBatch's limit). It
// stops at the first failure, a whole request's or one entry's: the
// caller's next run sends them all again.
func (q *SQS) Send(ctx context.Context, bodies [][]byte) error {
	c, err := q.sqs(ctx)
	if err != nil {
		return fmt.Errorf("sending to %s: %w", q, err)
	}
	for start := 0; start < len(bodies); start += 10 {
		var entries []types.SendMessageBatchRequestEntry
		for i, b := range bodies[start:min(start+10, len(bodies))] {
			entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(b))})
		}
		out, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(q.url), Entries: entries})
		if err != nil {
			return fmt.Errorf("sending to %s: %w", q, err)
		}
		if len(out.Failed) > 0 {
			f := out.Failed[0]
			return fmt.Errorf("sending to %s: %d of %d messages refused: %s: %s", q, len(out.Failed), len(entries), aws.ToString(f.Code), aws.ToString(f.Message))
		}
	}
	return nil
}
