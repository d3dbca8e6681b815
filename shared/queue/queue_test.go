package queue_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/queue"
)

func bodies(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, []byte(fmt.Sprintf(`{"tenant":"customer%02d.onmicrosoft.com"}`, i)))
	}
	return out
}

// Tasks reach an Azure Storage queue (Azurite's) base64-encoded, as the
// Functions host's queue trigger reads them; Peek reads them back without
// taking them, and a queue that does not exist holds none.
func TestAzure(t *testing.T) {
	az := emulators.StartAzuriteQueues(t)
	q, err := queue.NewAzure("incident-export", queue.AzureOptions{ConnectionString: az.ConnectionString})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Send(context.Background(), bodies(1)); err == nil {
		t.Fatal("sent to a queue that does not exist")
	}
	if err := q.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := q.Create(context.Background()); err != nil {
		t.Fatalf("creating an existing queue: %v", err)
	}
	if err := q.Send(context.Background(), bodies(40)); err != nil {
		t.Fatal(err)
	}
	raw, _ := azqueue.NewQueueClientFromConnectionString(az.ConnectionString, "incident-export", nil)
	n := int32(32)
	got, err := raw.PeekMessages(context.Background(), &azqueue.PeekMessagesOptions{NumberOfMessages: &n})
	if err != nil || len(got.Messages) != 32 {
		t.Fatalf("%v, %d messages", err, len(got.Messages))
	}
	if b, err := base64.StdEncoding.DecodeString(*got.Messages[0].MessageText); err != nil || !strings.HasPrefix(string(b), `{"tenant":"customer`) {
		t.Fatalf("message text %q is not the task in base64", *got.Messages[0].MessageText)
	}
	peeked, err := q.Peek(context.Background(), 5)
	if err != nil || len(peeked) != 5 || !strings.HasPrefix(string(peeked[0].Body), `{"tenant":"customer`) || peeked[0].InsertedAt.IsZero() {
		t.Fatalf("%v %+v", err, peeked)
	}
	none, _ := queue.NewAzure("incident-export-poison", queue.AzureOptions{ConnectionString: az.ConnectionString})
	if p, err := none.Peek(context.Background(), 5); err != nil || len(p) != 0 {
		t.Fatalf("a missing queue: %v %v", p, err)
	}
}

// Tasks reach an SQS queue (the devstack's, behind SigV4) ten to a batch;
// every one arrives once, and the queue's redrive policy moves a task
// received more than maxReceiveCount times to its dead-letter queue.
func TestSQS(t *testing.T) {
	s := devstack.Start(t, devstack.Options{Incidents: 1})
	s.UseAWS(t)
	s.CreateSQSQueue("tasks-dlq", "", 0)
	url := s.CreateSQSQueue("tasks", "tasks-dlq", 3)
	q, _ := queue.NewSQS(url, "")
	if err := q.Send(context.Background(), bodies(23)); err != nil {
		t.Fatal(err)
	}
	if c := s.Counters(); c.Get("sqs.SendMessageBatch", 200) != 3 {
		t.Fatalf("%d batches for 23 tasks", c.Get("sqs.SendMessageBatch", 200))
	}
	var got []string
	for _, m := range s.SQSMessages("tasks") {
		got = append(got, m.Body)
	}
	var want []string
	for _, b := range bodies(23) {
		want = append(want, string(b))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("the queue holds %v", got)
	}
	cfg, _ := awsconfig.LoadDefaultConfig(context.Background())
	c := sqs.NewFromConfig(cfg)
	for i := range 4 {
		// Received and never deleted: back after the visibility timeout.
		out, err := c.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 10, VisibilityTimeout: 1,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameApproximateReceiveCount}})
		if err != nil || len(out.Messages) != 10 {
			t.Fatalf("receive %d: %v: %d messages", i, err, len(out.Messages))
		}
		if i < 3 && out.Messages[0].Attributes["ApproximateReceiveCount"] != fmt.Sprint(i+1) {
			t.Fatalf("receive %d: count %s", i, out.Messages[0].Attributes["ApproximateReceiveCount"])
		}
		time.Sleep(1100 * time.Millisecond)
	}
	if dead := s.SQSMessages("tasks-dlq"); len(dead) != 10 || dead[0].Receives != 3 {
		t.Fatalf("dead-letter queue: %d messages (%+v)", len(dead), dead)
	}
	// Long polling returns as soon as a message is sent.
	start := time.Now()
	go func() { time.Sleep(300 * time.Millisecond); q.Send(context.Background(), bodies(1)) }()
	empty := s.CreateSQSQueue("empty", "", 0)
	q2, _ := queue.NewSQS(empty, "")
	go func() { time.Sleep(300 * time.Millisecond); q2.Send(context.Background(), bodies(1)) }()
	out, err := c.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(empty), WaitTimeSeconds: 5})
	if err != nil || len(out.Messages) != 1 || time.Since(start) > 4*time.Second {
		t.Fatalf("long poll: %v, %d messages after %s", err, len(out.Messages), time.Since(start))
	}
	// A queue that does not exist is the service's error.
	missing, _ := queue.NewSQS(s.SQSURL+"/"+devstack.AWSAccountID+"/nope", "")
	if err := missing.Send(context.Background(), bodies(1)); err == nil || !strings.Contains(err.Error(), "QueueDoesNotExist") {
		t.Fatalf("missing queue: %v", err)
	}
}
