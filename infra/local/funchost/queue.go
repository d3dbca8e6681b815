package funchost

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
			h.log.Warn("Queue trigger not listening: its queue name or connection is not set.", "function", f.name, "queue", f.trigger.QueueName, "connection", conn)
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
				l.h.log.Warn("Queue listener: dequeue failed.", "function", l.f.name, "err", err)
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
	poison := count >= int64(l.s.MaxDequeueCount) // a failure now is the last
	switch {
	case !ok:
		// The queue extension's decoding-failure handler
		// (QueueServiceClientProvider.CreateMessageDecodingFailedHandler):
		// the raw message goes to the poison queue on its first delivery,
		// and the function never sees it.
		failure, poison = errors.New("Message decoding has failed! Check MessageEncoding settings."), true
	case count > int64(l.s.MaxDequeueCount):
		// QueueProcessor.BeginProcessingMessageAsync: a message delivered
		// more often than maxDequeueCount (its invocation died past its
		// last delivery) is poisoned without an invocation.
		failure = fmt.Errorf("dequeued %d times, more than maxDequeueCount", count)
	default:
		stop := l.renew(ctx, id, text, pop)
		_, failure = l.h.envelope(context.WithoutCancel(ctx), l.f.name, queueEnvelope(l.f.name, l.f.trigger.Name, body, m, now))
		pop = stop()
	}
	bg := context.WithoutCancel(ctx)
	switch {
	case failure == nil:
		if _, err := l.q.DeleteMessage(bg, id, pop, nil); err != nil {
			l.h.log.Warn("Queue listener: delete failed; the message is delivered again.", "function", l.f.name, "message", id, "err", err)
		}
	case poison:
		l.h.log.Error("Queue message failed on its last delivery; moved to the poison queue.", "function", l.f.name, "message", id, "dequeue_count", count, "err", failure)
		if _, err := l.poison.Create(bg, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
			l.h.log.Warn("Queue listener: poison queue.", "err", err)
		}
		if _, err := l.poison.EnqueueMessage(bg, text, nil); err == nil {
			l.q.DeleteMessage(bg, id, pop, nil)
		}
	default:
		l.h.log.Warn("Queue message failed; delivered again after the visibility timeout.", "function", l.f.name, "message", id, "dequeue_count", count, "err", failure)
		vis := int32(l.s.visibility / time.Second)
		if _, err := l.q.UpdateMessage(bg, id, pop, text, &azqueue.UpdateMessageOptions{VisibilityTimeout: &vis}); err != nil {
			l.h.log.Warn("Queue listener: release failed; the message returns when its lease ends.", "function", l.f.name, "message", id, "err", err)
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
				l.h.log.Warn("Queue listener: lease renewal failed; the message may be delivered again while it runs.", "function", l.f.name, "message", id, "err", err)
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

// queueEnvelope is the request the host sends a custom handler for a queue
// message, as ScriptInvocationContextExtensions.ToHttpScriptInvocationContext
// (Azure/azure-functions-host, src/WebJobs.Script/Workers/MessageExtensions)
// builds it: each input and each binding-data value goes through
// GetHttpScriptInvocationContextValue, which JObject.FromObject fails on for a
// string or a number, so they become JsonConvert.SerializeObject(value): the
// message text, Id and PopReceipt JSON-quoted inside the JSON string, the
// dequeue count a number inside a string; DateTimeOffsets stay dates; sys is
// an object; QueueTrigger is left out (its key ends with "trigger").
func queueEnvelope(name, binding, text string, m *azqueue.DequeuedMessage, now time.Time) map[string]any {
	count := int64(0)
	if m.DequeueCount != nil {
		count = *m.DequeueCount
	}
	meta := map[string]any{"DequeueCount": serialized(count), "Id": serialized(deref(m.MessageID)), "PopReceipt": serialized(deref(m.PopReceipt)),
		"InsertionTime": date(m.InsertionTime), "ExpirationTime": date(m.ExpirationTime), "NextVisibleTime": date(m.TimeNextVisible),
		"sys": map[string]any{"MethodName": name, "UtcNow": now.Format(time.RFC3339Nano), "RandGuid": uuid.NewString()}}
	// A JSON task's properties join the binding data, over what is there
	// (WorkerFunctionInvoker.TransformInput): a task's "tenant" is a
	// metadata key too.
	maps.Copy(meta, jsonBindingData(text))
	return map[string]any{"Data": map[string]any{binding: serialized(text)}, "Metadata": meta}
}

// jsonBindingData is the binding data the host takes from a JSON object's
// text (Utility.ApplyBindingData, ConvertPropertyValue): its top-level
// properties that are not arrays, an object as it is, a scalar as the text
// .NET gives it (True, an ISO date parsed by Newtonsoft and printed
// MM/dd/yyyy HH:mm:ss), encoded as every string is; none for other text.
func jsonBindingData(text string) map[string]any {
	var props map[string]any
	if json.Unmarshal([]byte(text), &props) != nil {
		return nil
	}
	out := map[string]any{}
	for k, v := range props {
		switch v := v.(type) {
		case map[string]any:
			out[k] = v
		case string:
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				v = t.Format("01/02/2006 15:04:05")
			}
			out[k] = serialized(v)
		case bool:
			out[k] = serialized(map[bool]string{true: "True", false: "False"}[v])
		case float64:
			out[k] = serialized(strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	return out
}

// serialized is JsonConvert.SerializeObject(v): the JSON text of a scalar,
// which the request's own encoding then quotes again.
func serialized(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// date is a DateTimeOffset as GetHttpScriptInvocationContextValue writes
// it: DateTimeOffset.Parse(value.ToString()), which keeps whole seconds.
func date(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05+00:00")
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
