// Package queue sends messages to the platforms' own queues, whose
// triggers, retries and poison or dead-letter queues are the distributed
// engine that fans work out: Azure Storage Queues here, Amazon SQS beside
// it. Nothing here schedules or retries on its own.
package queue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
	"golang.org/x/sync/errgroup"
)

// Sender sends messages.
type Sender interface {
	Send(ctx context.Context, bodies [][]byte) error
}

// AzureOptions say how to reach the storage account, the way the Functions
// host's AzureWebJobsStorage does: a connection string (Azurite,
// development), or an account name and an identity.
type AzureOptions struct {
	ConnectionString string
	// Account is the storage account's name (AzureWebJobsStorage__accountName)
	// when there is no connection string; Credential reaches it.
	Account string
	// ServiceURL is the queue endpoint (AzureWebJobsStorage__queueServiceUri)
	// in place of Account, for a national cloud's.
	ServiceURL string
	Credential azcore.TokenCredential
	HTTPClient *http.Client
}

// Azure is an Azure Storage queue.
type Azure struct {
	name string
	c    *azqueue.QueueClient
}

// NewAzure is the queue name of the account o names.
func NewAzure(name string, o AzureOptions) (*Azure, error) {
	var copts *azqueue.ClientOptions
	if o.HTTPClient != nil {
		copts = &azqueue.ClientOptions{ClientOptions: policy.ClientOptions{Transport: o.HTTPClient}}
	}
	var c *azqueue.QueueClient
	var err error
	switch {
	case o.ConnectionString != "":
		c, err = azqueue.NewQueueClientFromConnectionString(o.ConnectionString, name, copts)
	case o.ServiceURL != "" && o.Credential != nil:
		c, err = azqueue.NewQueueClient(strings.TrimSuffix(o.ServiceURL, "/")+"/"+name, o.Credential, copts)
	case o.Account != "" && o.Credential != nil:
		c, err = azqueue.NewQueueClient("https://"+o.Account+".queue.core.windows.net/"+name, o.Credential, copts)
	default:
		return nil, errors.New("queue: no storage account: set AzureWebJobsStorage (a connection string), or AzureWebJobsStorage__accountName (or __queueServiceUri) with an identity")
	}
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", name, err)
	}
	return &Azure{name: name, c: c}, nil
}

func (q *Azure) String() string { return "queue " + q.name }

// Name is the queue's name.
func (q *Azure) Name() string { return q.name }

// Send enqueues each body, base64-encoded as the Functions host's queue
// trigger reads messages by default (host.json messageEncoding), sixteen
// at a time. It stops at the first failure: the caller's next run sends
// them all again, and the export's checkpoints make a repeat harmless.
func (q *Azure) Send(ctx context.Context, bodies [][]byte) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, b := range bodies {
		g.Go(func() error {
			_, err := q.c.EnqueueMessage(ctx, base64.StdEncoding.EncodeToString(b), nil)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("sending to %s: %w", q, err)
	}
	return nil
}

// Create makes the queue (and succeeds if it exists): the host creates its
// poison queue itself, the deployment the queue.
func (q *Azure) Create(ctx context.Context) error {
	_, err := q.c.Create(ctx, nil)
	if err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		return fmt.Errorf("creating %s: %w", q, err)
	}
	return nil
}

// Peeked is a message seen without taking it.
type Peeked struct {
	ID           string
	Body         []byte
	DequeueCount int
	InsertedAt   time.Time
}

// Peek returns up to n messages without taking them (the doctor's look at
// the poison queue). A queue that does not exist holds none.
func (q *Azure) Peek(ctx context.Context, n int) ([]Peeked, error) {
	resp, err := q.c.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: ptr(int32(min(max(n, 1), 32)))})
	if err != nil {
		if queueerror.HasCode(err, queueerror.QueueNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("peeking at %s: %w", q, err)
	}
	var out []Peeked
	for _, m := range resp.Messages {
		p := Peeked{ID: deref(m.MessageID), Body: decode(deref(m.MessageText))}
		if m.DequeueCount != nil {
			p.DequeueCount = int(*m.DequeueCount)
		}
		if m.InsertionTime != nil {
			p.InsertedAt = *m.InsertionTime
		}
		out = append(out, p)
	}
	return out, nil
}

// decode reads a message as the host does: base64, else the text itself.
func decode(s string) []byte {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b
	}
	return []byte(s)
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
