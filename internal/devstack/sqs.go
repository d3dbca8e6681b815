package devstack

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Amazon SQS, as the export's fan-out uses it on AWS: the AWS JSON 1.0
// protocol (what the SDK speaks since 2023) behind Signature Version 4,
// with SendMessage, SendMessageBatch, ReceiveMessage (visibility timeout,
// long polling, ApproximateReceiveCount), DeleteMessage,
// ChangeMessageVisibility and GetQueueAttributes, and a redrive policy: a
// message received more than maxReceiveCount times is moved to its
// dead-letter queue instead (API reference; "Using dead-letter queues").
// Order is not kept, as a standard queue's is not.

type sqsMessage struct {
	id, body string
	sent     time.Time
	receives int
	visible  time.Time
	handle   string // the latest receive's receipt handle
}

type sqsQueue struct {
	name, url  string
	dlq        string // the dead-letter queue's name, or ""
	maxReceive int
	messages   []*sqsMessage
}

type sqs struct {
	mu     sync.Mutex
	cond   *sync.Cond // signalled when a message is sent or made visible
	queues map[string]*sqsQueue
}

func newSQS() *sqs {
	q := &sqs{queues: map[string]*sqsQueue{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// CreateSQSQueue makes a standard queue and returns its URL. With dlq
// (another queue's name) and maxReceive, its redrive policy moves a
// message received more than maxReceive times there.
func (s *Stack) CreateSQSQueue(name, dlq string, maxReceive int) string {
	q := s.sqs
	q.mu.Lock()
	defer q.mu.Unlock()
	if qq := q.queues[name]; qq != nil {
		return qq.url
	}
	qq := &sqsQueue{name: name, url: s.SQSURL + "/" + AWSAccountID + "/" + name, dlq: dlq, maxReceive: maxReceive}
	q.queues[name] = qq
	return qq.url
}

// SQSMessage is a message a queue holds.
type SQSMessage struct {
	ID, Body string
	Receives int
}

// SQSMessages lists what a queue holds, visible or not.
func (s *Stack) SQSMessages(name string) []SQSMessage {
	q := s.sqs
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []SQSMessage
	if qq := q.queues[name]; qq != nil {
		for _, m := range qq.messages {
			out = append(out, SQSMessage{ID: m.id, Body: m.body, Receives: m.receives})
		}
	}
	return out
}

func (s *Stack) sqsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := s.serveSQS(w, r)
		s.counters.add("sqs."+strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSQS."), status)
	})
}

// askedFor is the attributes of all a request names, as the service
// answers: "All" for every one, none without a name.
func askedFor(all map[string]string, names []string) map[string]string {
	out := map[string]string{}
	for _, a := range names {
		if a == "All" {
			return all
		}
		if v, ok := all[a]; ok {
			out[a] = v
		}
	}
	return out
}

func sqsARN(name string) string { return "arn:aws:sqs:" + AWSRegion + ":" + AWSAccountID + ":" + name }

func md5Hex(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }

func (s *Stack) serveSQS(w http.ResponseWriter, r *http.Request) int {
	fail := func(status int, code, msg string) int {
		w.Header().Set("X-Amzn-Requestid", uuid.NewString())
		w.Header().Set("X-Amzn-Query-Error", code+";Sender")
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws.sqs#" + code, "message": msg})
		return status
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return fail(400, "UnsupportedOperation", "")
	}
	// A batch holds at most 256 KiB of messages.
	body, err := io.ReadAll(io.LimitReader(r.Body, 300<<10+1))
	if err != nil || len(body) > 300<<10 {
		return fail(413, "RequestEntityTooLarge", "Request is too large")
	}
	if code, msg := s.checkSigV4(r, body, "sqs"); code != "" {
		return fail(403, code, msg)
	}
	var in struct {
		QueueURL            string `json:"QueueUrl"`
		MessageBody         string
		Entries             []struct{ ID, MessageBody string } `json:"Entries"`
		MaxNumberOfMessages int
		VisibilityTimeout   *int
		WaitTimeSeconds     int
		ReceiptHandle       string
		// The system attributes a receive asks for (both names are in use).
		AttributeNames              []string
		MessageSystemAttributeNames []string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return fail(400, "InvalidParameterValue", "the request body is not JSON")
	}
	q := s.sqs
	q.mu.Lock()
	defer q.mu.Unlock()
	name := in.QueueURL[strings.LastIndexByte(in.QueueURL, '/')+1:]
	qq := q.queues[name]
	if qq == nil || !strings.HasSuffix(in.QueueURL, "/"+AWSAccountID+"/"+name) {
		return fail(400, "QueueDoesNotExist", "The specified queue does not exist.")
	}
	reply := func(v any) int {
		b, _ := json.Marshal(v)
		w.Header().Set("X-Amzn-Requestid", uuid.NewString())
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(200)
		w.Write(b)
		return 200
	}
	now := time.Now()
	send := func(b string) *sqsMessage {
		m := &sqsMessage{id: uuid.NewString(), body: b, sent: now, visible: now}
		qq.messages = append(qq.messages, m)
		q.cond.Broadcast()
		return m
	}
	switch r.Header.Get("X-Amz-Target") {
	case "AmazonSQS.SendMessage":
		if in.MessageBody == "" || len(in.MessageBody) > 256<<10 {
			return fail(400, "InvalidParameterValue", "One or more parameters are invalid. Reason: Message must be shorter than 262144 bytes and not empty.")
		}
		m := send(in.MessageBody)
		return reply(map[string]string{"MessageId": m.id, "MD5OfMessageBody": md5Hex(m.body)})
	case "AmazonSQS.SendMessageBatch":
		if len(in.Entries) == 0 {
			return fail(400, "EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry in the request.")
		}
		if len(in.Entries) > 10 {
			return fail(400, "TooManyEntriesInBatchRequest", fmt.Sprintf("Maximum number of entries per request are 10. You have sent %d.", len(in.Entries)))
		}
		type ok struct{ Id, MessageId, MD5OfMessageBody string }
		out := struct {
			Successful []ok
			Failed     []any
		}{Failed: []any{}}
		for _, e := range in.Entries {
			m := send(e.MessageBody)
			out.Successful = append(out.Successful, ok{e.ID, m.id, md5Hex(m.body)})
		}
		return reply(out)
	case "AmazonSQS.ReceiveMessage":
		n := in.MaxNumberOfMessages
		if n == 0 {
			n = 1
		}
		if n < 1 || n > 10 || in.WaitTimeSeconds < 0 || in.WaitTimeSeconds > 20 {
			return fail(400, "InvalidParameterValue", "Value for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.")
		}
		vis := 30 * time.Second
		if in.VisibilityTimeout != nil {
			vis = time.Duration(*in.VisibilityTimeout) * time.Second
		}
		deadline := now.Add(time.Duration(in.WaitTimeSeconds) * time.Second)
		type msg struct {
			MessageId, ReceiptHandle, MD5OfBody, Body string
			Attributes                                map[string]string `json:",omitempty"`
		}
		var out []msg
		for {
			now = time.Now()
			for i := 0; i < len(qq.messages) && len(out) < n; i++ {
				m := qq.messages[i]
				if m.visible.After(now) {
					continue
				}
				if qq.dlq != "" && qq.maxReceive > 0 && m.receives >= qq.maxReceive {
					// Received more than maxReceiveCount times: to the
					// dead-letter queue, keeping its ID and count.
					qq.messages = append(qq.messages[:i], qq.messages[i+1:]...)
					i--
					if d := q.queues[qq.dlq]; d != nil {
						m.visible = now
						d.messages = append(d.messages, m)
					}
					continue
				}
				m.receives++
				m.visible = now.Add(vis)
				m.handle = uuid.NewString() + "#" + m.id
				// Only the attributes asked for, as the service answers.
				all := map[string]string{
					"ApproximateReceiveCount": strconv.Itoa(m.receives), "SentTimestamp": strconv.FormatInt(m.sent.UnixMilli(), 10),
					"SenderId": "AROAEXAMPLE:defender-functions", "ApproximateFirstReceiveTimestamp": strconv.FormatInt(now.UnixMilli(), 10)}
				out = append(out, msg{m.id, m.handle, md5Hex(m.body), m.body, askedFor(all, append(in.AttributeNames, in.MessageSystemAttributeNames...))})
			}
			if len(out) > 0 || !now.Before(deadline) {
				break
			}
			// Long polling: wait for a send, or for the earliest message to
			// become visible again.
			wake := deadline
			for _, m := range qq.messages {
				if m.visible.Before(wake) {
					wake = m.visible
				}
			}
			t := time.AfterFunc(max(wake.Sub(now), time.Millisecond), func() { q.mu.Lock(); q.cond.Broadcast(); q.mu.Unlock() })
			q.cond.Wait()
			t.Stop()
		}
		return reply(map[string]any{"Messages": out})
	case "AmazonSQS.DeleteMessage", "AmazonSQS.ChangeMessageVisibility":
		for i, m := range qq.messages {
			if m.handle != in.ReceiptHandle || in.ReceiptHandle == "" {
				continue
			}
			if r.Header.Get("X-Amz-Target") == "AmazonSQS.DeleteMessage" {
				qq.messages = append(qq.messages[:i], qq.messages[i+1:]...)
			} else if in.VisibilityTimeout != nil {
				m.visible = now.Add(time.Duration(*in.VisibilityTimeout) * time.Second)
				q.cond.Broadcast()
			}
			return reply(map[string]any{})
		}
		return fail(400, "ReceiptHandleIsInvalid", "The input receipt handle is invalid.")
	case "AmazonSQS.GetQueueAttributes":
		visible, inFlight := 0, 0
		for _, m := range qq.messages {
			if m.visible.After(now) {
				inFlight++
			} else {
				visible++
			}
		}
		all := map[string]string{"ApproximateNumberOfMessages": strconv.Itoa(visible),
			"ApproximateNumberOfMessagesNotVisible": strconv.Itoa(inFlight), "QueueArn": sqsARN(name)}
		if qq.dlq != "" {
			// A JSON document in a string, its count a number, as the
			// service answers.
			p, _ := json.Marshal(map[string]any{"deadLetterTargetArn": sqsARN(qq.dlq), "maxReceiveCount": qq.maxReceive})
			all["RedrivePolicy"] = string(p)
		}
		return reply(map[string]any{"Attributes": askedFor(all, in.AttributeNames)})
	}
	return fail(400, "UnsupportedOperation", "")
}
