//go:build !noaws

package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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

// SQSStatus is what a queue's attributes say of the fan-out's health.
type SQSStatus struct {
	// Waiting is the queue's approximate number of visible messages.
	Waiting int
	// DeadLetterQueue is the redrive policy's dead-letter queue's URL, ""
	// without a redrive policy.
	DeadLetterQueue string
	// MaxReceiveCount is the receive on which a failing message moves there.
	MaxReceiveCount int
	// DeadLetters is the dead-letter queue's approximate number of messages.
	DeadLetters int
}

// Status reads the queue's attributes and its dead-letter queue's depth.
// It receives nothing: SQS has no peek, and a receive would count as a
// delivery.
func (q *SQS) Status(ctx context.Context) (SQSStatus, error) {
	var st SQSStatus
	c, err := q.sqs(ctx)
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", q, err)
	}
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q.url),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameRedrivePolicy}})
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", q, err)
	}
	st.Waiting, _ = strconv.Atoi(attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	policy := attrs.Attributes[string(types.QueueAttributeNameRedrivePolicy)]
	if policy == "" {
		return st, nil
	}
	// maxReceiveCount is a number as CloudFormation sets it and a string as
	// the API's examples show it: either is read.
	var rp struct {
		Target string          `json:"deadLetterTargetArn"`
		Max    json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(policy), &rp); err != nil {
		return st, fmt.Errorf("reading %s: its RedrivePolicy is not JSON: %w", q, err)
	}
	st.MaxReceiveCount, _ = strconv.Atoi(strings.Trim(string(rp.Max), `"`))
	// A dead-letter queue is in the queue's account and Region (SQS
	// requires it), so its URL is the queue's with the ARN's name.
	arn := strings.Split(rp.Target, ":")
	i := strings.LastIndex(q.url, "/")
	if len(arn) != 6 || arn[2] != "sqs" || i < 0 {
		return st, fmt.Errorf("reading %s: its RedrivePolicy's deadLetterTargetArn %q is not an SQS queue's ARN", q, rp.Target)
	}
	st.DeadLetterQueue = q.url[:i+1] + arn[5]
	dl, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(st.DeadLetterQueue),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages}})
	if err != nil {
		return st, fmt.Errorf("reading the dead-letter queue %s: %w", st.DeadLetterQueue, err)
	}
	st.DeadLetters, _ = strconv.Atoi(dl.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	return st, nil
}
