package customhandler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/function"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// The host's envelopes are decoded with go-json-experiment (encoding/json/v2
// as a module): decoding was half of an invocation's overhead, and v2 does it
// in less than half the time. Names match without regard to case, as
// encoding/json's did.
var decodeOptions = jsonv2.JoinOptions(jsonv2.MatchCaseInsensitiveNames(true), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))

// invocation is the host's envelope; its Metadata repeats what the
// functions need from Data, so it is not decoded.
type invocation struct {
	Data     map[string]jsontext.Value `json:"Data"`
	Metadata map[string]jsontext.Value `json:"Metadata"`
}

// binding is Data's value for the trigger binding want, or for the only
// binding when the function.json names it otherwise.
func (inv invocation) binding(want string) jsontext.Value {
	if raw, ok := inv.Data[want]; ok {
		return raw
	}
	for _, v := range inv.Data {
		return v
	}
	return nil
}

// result is the host's expected answer.
type result struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

func (h *handler) envelope(ctx context.Context, w http.ResponseWriter, r *http.Request, name string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4*h.opts.MaxBody+64<<10))
	if err != nil {
		h.fail(ctx, w, name, fmt.Errorf("the host's invocation request is not the expected JSON envelope: %w", err))
		return
	}
	t, isTimer := h.app.Timers[name]
	q, isQueue := h.app.Queues[name]
	if isTimer || isQueue {
		var inv invocation
		if err := jsonv2.Unmarshal(body, &inv, decodeOptions); err != nil {
			h.fail(ctx, w, name, fmt.Errorf("the host's invocation request is not the expected JSON envelope: %w", err))
			return
		}
		if isTimer {
			h.timer(ctx, w, name, t, inv)
		} else {
			h.queue(ctx, w, name, q, inv)
		}
		return
	}
	if route, ok := h.app.HTTP[name]; ok {
		// Decoded straight into the request's shape, in one pass: the
		// metadata repeats what Data.req holds.
		var inv struct {
			Data struct {
				Req *httpData `json:"req"`
			} `json:"Data"`
		}
		if err := jsonv2.Unmarshal(body, &inv, decodeOptions); err != nil {
			var se *jsontext.SyntacticError
			if errors.As(err, &se) {
				err = fmt.Errorf("the host's invocation request is not the expected JSON envelope: %w", err)
			} else {
				err = fmt.Errorf("HTTP data: %w", err)
			}
			h.fail(ctx, w, name, err)
			return
		}
		if inv.Data.Req == nil {
			h.fail(ctx, w, name, fmt.Errorf("Data has no %q binding", HTTPIn))
			return
		}
		h.httpEnvelope(ctx, w, name, route, inv.Data.Req)
		return
	}
	h.fail(ctx, w, name, fmt.Errorf("no function named %q", name))
}

// fail answers 500: the host marks the invocation failed (and drops the
// logs of a failed answer, so the error is logged here too).
func (h *handler) fail(ctx context.Context, w http.ResponseWriter, name string, err error) {
	function.Logger(ctx).Error("Invocation failed.", "function", name, "err", err)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	json.NewEncoder(w).Encode(result{Outputs: map[string]any{}, Logs: []string{name + " failed: " + err.Error()}})
}

// timerInfo is TimerInfo as the host serializes it.
type timerInfo struct {
	ScheduleStatus *struct {
		Last        lenientTime `json:"Last"`
		Next        lenientTime `json:"Next"`
		LastUpdated lenientTime `json:"LastUpdated"`
	} `json:"ScheduleStatus"`
	IsPastDue bool `json:"IsPastDue"`
}

// lenientTime accepts what the host writes: RFC 3339 with or without an
// offset, and "0001-01-01T00:00:00" (never) with none.
type lenientTime struct{ time.Time }

func (t *lenientTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return nil // null or a non-string: unknown
	}
	t.Time = parseLenient(s)
	return nil
}

func parseLenient(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", "2006-01-02T15:04:05.9999999Z07:00"} {
		if v, err := time.Parse(layout, s); err == nil {
			if v.Year() <= 1 {
				return time.Time{}
			}
			return v.UTC()
		}
	}
	return time.Time{}
}

func (h *handler) timer(ctx context.Context, w http.ResponseWriter, name string, t function.TimerRoute, inv invocation) {
	raw := inv.binding(TimerIn)
	var ti timerInfo
	if len(raw) > 0 {
		if err := jsonv2.Unmarshal(raw, &ti, decodeOptions); err != nil {
			h.fail(ctx, w, name, fmt.Errorf("timer data: %w", err))
			return
		}
	}
	run := function.Timer{ScheduledTime: time.Now().UTC(), PastDue: ti.IsPastDue}
	if st := ti.ScheduleStatus; st != nil {
		// Next is the occurrence firing now; Last the one before.
		if !st.Next.IsZero() {
			run.ScheduledTime = st.Next.Time
		}
		run.LastRun = st.Last.Time
	}
	start := time.Now()
	function.Logger(ctx).Info("Timer function started.", "function", name, "scheduled", run.ScheduledTime, "past_due", run.PastDue)
	if err := t.Func(ctx, run); err != nil {
		h.fail(ctx, w, name, err)
		return
	}
	completed(w, name, start)
}

// completed answers the host for a function without outputs that succeeded.
func completed(w http.ResponseWriter, name string, start time.Time) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(result{Outputs: map[string]any{},
		Logs: []string{fmt.Sprintf("%s completed in %s", name, time.Since(start).Round(time.Millisecond))}})
}

// queue runs a queue function. The message is Data.msg, which the host
// encodes twice: ScriptInvocationContextExtensions.GetHttpScriptInvocationContextValue
// (Azure/azure-functions-host) turns a string input into
// JsonConvert.SerializeObject(text), a JSON string, and the request's
// formatter encodes that again (the host's own test
// GetHttpScriptInvocationContextValueTest_String expects "\"stringTest\"").
// The docs' sample shows the text encoded once, and a JSON message may come
// as the object itself: messageText accepts all three. The host writes
// Metadata's scalars the same way: "Id": "\"…\"", "DequeueCount": "1".
func (h *handler) queue(ctx context.Context, w http.ResponseWriter, name string, q function.QueueRoute, inv invocation) {
	raw, meta := inv.binding(QueueIn), inv.Metadata
	if raw.Kind() == 0 {
		h.fail(ctx, w, name, fmt.Errorf("Data has no %q binding", QueueIn))
		return
	}
	var m function.Message
	body, err := messageText(raw)
	if err != nil {
		h.fail(ctx, w, name, fmt.Errorf("queue message: %w", err))
		return
	}
	m.Body = body
	m.ID = scalar(meta["Id"])
	m.DequeueCount, _ = strconv.Atoi(scalar(meta["DequeueCount"]))
	m.InsertedAt = parseLenient(scalar(meta["InsertionTime"]))
	m.LastAttempt = m.DequeueCount >= h.opts.MaxDequeueCount
	start := time.Now()
	function.Logger(ctx).Info("Queue function started.", "function", name, "message", m.ID, "dequeue_count", m.DequeueCount)
	if err := q.Func(ctx, m); err != nil {
		h.fail(ctx, w, name, err)
		return
	}
	completed(w, name, start)
}

// messageText is a queue message's text from Data.msg: a JSON string
// whose value is itself a JSON string literal (the host's double encoding)
// is decoded twice; a JSON string once; any other JSON value is the text.
// A message whose text is a JSON string literal ("\"x\"" on the queue) is
// read as x: the one reading the two encodings cannot tell apart.
func messageText(raw jsontext.Value) ([]byte, error) {
	if raw.Kind() != '"' {
		return bytes.Clone(raw), nil
	}
	var text string
	if err := jsonv2.Unmarshal(raw, &text); err != nil {
		return nil, err
	}
	if inner := jsontext.Value(text); strings.HasPrefix(text, `"`) && inner.IsValid() {
		if err := jsonv2.Unmarshal(inner, &text); err != nil {
			return nil, err
		}
	}
	return []byte(text), nil
}

// scalar reads a metadata value: a number, a string, or a JSON value
// encoded in a string.
func scalar(v jsontext.Value) string {
	var s string
	if v.Kind() != '"' || jsonv2.Unmarshal(v, &s) != nil {
		return strings.TrimSpace(string(v))
	}
	var inner string
	if strings.HasPrefix(s, `"`) && json.Unmarshal([]byte(s), &inner) == nil {
		return inner
	}
	return s
}
