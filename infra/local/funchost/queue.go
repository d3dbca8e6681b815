package funchost

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
	"github.com/google/uuid"
)

// queueSettings are host.json's extensions.queues, as the host reads them.
type queueSettings struct {
	BatchSize          int    `json:"batchSize"`
	NewBatchThreshold  int    `json:"newBatchThreshold"`
	MaxPollingInterval string `json:"maxPollingInterval"`
	VisibilityTimeout  string `json:"visibilityTimeout"`
	MaxDequeueCount    int    `json:"maxDequeueCount"`
	MessageEncoding    string `json:"messageEncoding"`

	maxPoll, visibility time.Duration
}

// withDefaults fills what host.json leaves out with the host's defaults.
func (q queueSettings) withDefaults() queueSettings {
	if q.BatchSize <= 0 {
		q.BatchSize = 16
	}
	if q.NewBatchThreshold <= 0 {
		q.NewBatchThreshold = q.BatchSize / 2
	}
	if q.MaxDequeueCount <= 0 {
		q.MaxDequeueCount = 5
	}
	if q.MessageEncoding == "" {
		q.MessageEncoding = "base64"
	}
	q.maxPoll = timespan(q.MaxPollingInterval, time.Minute)
	q.visibility = timespan(q.VisibilityTimeout, 0)
	return q
}

// timespan reads a .NET TimeSpan such as "00:00:02" or "00:00:00.5".
func timespan(s string, def time.Duration) time.Duration {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return def
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	sec, err3 := strconv.ParseFloat(parts[2], 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return def
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec*float64(time.Second))
}

// listen starts a listener per queue-triggered function whose queue name
// and connection resolve.
func (h *Host) listen() error {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	for _, f := range h.funcs {
		if f.trigger.Type != "queueTrigger" {
			continue
		}
		name := f.trigger.QueueName
		if m := settingRef.FindStringSubmatch(name); m != nil {
			name = h.setting(m[1])
		}
		conn := f.trigger.Connection
		if conn == "" {
			conn = "AzureWebJobsStorage"
		}
		cs := h.setting(conn)
		if name == "" || cs == "" {
			// The host reports such a function in error and runs the others.
			h.log.Warn("queue trigger not listening: its queue name or connection is not set", "function", f.name, "queue", f.trigger.QueueName, "connection", conn)
			continue
		}
		q, err := azqueue.NewQueueClientFromConnectionString(cs, name, nil)
		if err != nil {
			return fmt.Errorf("funchost: %s: %w", f.name, err)
		}
		poison, err := azqueue.NewQueueClientFromConnectionString(cs, name+"-poison", nil)
		if err != nil {
			return fmt.Errorf("funchost: %s: %w", f.name, err)
		}
		l := &listener{h: h, f: f, q: q, poison: poison, s: h.queues, lease: cmp.Or(h.opts.QueueLease, defaultLease)}
		h.listeners.Go(func() { l.run(ctx) })
	}
	return nil
}

// listener is the host's queue listener for one function: it takes up to
// batchSize messages at once (invisible while they are processed), fetches
// more once newBatchThreshold or fewer are in flight, polls an empty queue
// with a random exponential back-off up to maxPollingInterval, deletes a
// message whose invocation succeeded, makes a failed one visible again
// after visibilityTimeout, and moves one that failed on its
// maxDequeueCount-th delivery to <queue>-poison.
type listener struct {
	h         *Host
	f         *fn
	q, poison *azqueue.QueueClient
	s         queueSettings
	lease     time.Duration
}

// defaultLease is how long a taken message stays invisible, as the host
// takes it; the host renews the lease at half of it while the function
// runs, so that a long invocation is not delivered again beside itself.
const defaultLease = 10 * time.Minute

func (l *listener) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, l.s.BatchSize)
	wait := time.Duration(0)
	for ctx.Err() == nil {
		if inFlight := len(slots); inFlight > l.s.NewBatchThreshold {
			sleep(ctx, 20*time.Millisecond)
			continue
		}
		n := int32(l.s.BatchSize - len(slots))
		resp, err := l.q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: ptr(int32(l.lease / time.Second))})
		if err != nil || len(resp.Messages) == 0 {
			if err != nil && ctx.Err() == nil && !queueerror.HasCode(err, queueerror.QueueNotFound) {
				l.h.log.Warn("queue listener: dequeue failed", "function", l.f.name, "error", err.Error())
			}
			wait = min(max(2*wait, 100*time.Millisecond), l.s.maxPoll)
			sleep(ctx, wait/2+rand.N(wait/2+1))
			continue
		}
		wait = 0
		for _, m := range resp.Messages {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				l.process(ctx, m)
			})
		}
	}
}

func (l *listener) process(ctx context.Context, m *azqueue.DequeuedMessage) {
	id, pop, text := deref(m.MessageID), deref(m.PopReceipt), deref(m.MessageText)
	count := int64(0)
	if m.DequeueCount != nil {
		count = *m.DequeueCount
	}
	body, ok := text, true
	if l.s.MessageEncoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(text)
		body, ok = string(b), err == nil
	}
	now := time.Now().UTC()
	var failure error
	if ok {
		// Scalars JSON-encoded inside strings, as the host writes them
		// (research: runtime-contracts.md §1.4).
		quoted := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		meta := map[string]any{"DequeueCount": strconv.FormatInt(count, 10), "Id": quoted(id), "PopReceipt": quoted(pop),
			"InsertionTime": date(m.InsertionTime), "ExpirationTime": date(m.ExpirationTime), "NextVisibleTime": date(m.TimeNextVisible),
			"sys": map[string]any{"MethodName": l.f.name, "UtcNow": now.Format(time.RFC3339Nano), "RandGuid": uuid.NewString()}}
		stop := l.renew(ctx, id, text, pop)
		_, failure = l.h.envelope(context.WithoutCancel(ctx), l.f.name, map[string]any{"Data": map[string]any{l.f.trigger.Name: body}, "Metadata": meta})
		pop = stop()
	} else {
		failure = fmt.Errorf("the message is not base64 (host.json messageEncoding)")
	}
	bg := context.WithoutCancel(ctx)
	switch {
	case failure == nil:
		if _, err := l.q.DeleteMessage(bg, id, pop, nil); err != nil {
			l.h.log.Warn("queue listener: delete failed; the message is delivered again", "function", l.f.name, "message", id, "error", err.Error())
		}
	case count >= int64(l.s.MaxDequeueCount):
		l.h.log.Error("queue message failed on its last delivery; moved to the poison queue", "function", l.f.name, "message", id, "dequeue_count", count, "error", failure.Error())
		if _, err := l.poison.Create(bg, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
			l.h.log.Warn("queue listener: poison queue", "error", err.Error())
		}
		if _, err := l.poison.EnqueueMessage(bg, text, nil); err == nil {
			l.q.DeleteMessage(bg, id, pop, nil)
		}
	default:
		l.h.log.Warn("queue message failed; delivered again after the visibility timeout", "function", l.f.name, "message", id, "dequeue_count", count, "error", failure.Error())
		vis := int32(l.s.visibility / time.Second)
		if _, err := l.q.UpdateMessage(bg, id, pop, text, &azqueue.UpdateMessageOptions{VisibilityTimeout: &vis}); err != nil {
			l.h.log.Warn("queue listener: release failed; the message returns when its lease ends", "function", l.f.name, "message", id, "error", err.Error())
		}
	}
}

// renew keeps the message invisible while its invocation runs, every half
// lease; each renewal changes the pop receipt, which stop returns for the
// delete or release that follows.
func (l *listener) renew(ctx context.Context, id, text, pop string) (stop func() string) {
	var mu sync.Mutex
	current := pop
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.lease / 2)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			mu.Lock()
			resp, err := l.q.UpdateMessage(context.WithoutCancel(ctx), id, current, text, &azqueue.UpdateMessageOptions{VisibilityTimeout: ptr(int32(l.lease / time.Second))})
			if err == nil && resp.PopReceipt != nil {
				current = *resp.PopReceipt
			} else if err != nil {
				l.h.log.Warn("queue listener: lease renewal failed; the message may be delivered again while it runs", "function", l.f.name, "message", id, "error", err.Error())
			}
			mu.Unlock()
		}
	})
	return func() string {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return current
	}
}

func date(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.0000000+00:00")
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
