package sink

import (
	"cmp"
	"github.com/defender-functions/defender-functions/shared/config"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// Secret is a value kept in a secret store (the HEC token in Key Vault).
// Rejected says the service refused value, so the next Value reads the
// store again: a rotated token is taken up without a restart.
type Secret interface {
	Value(ctx context.Context) (string, error)
	Rejected(value string)
}

// SplunkOptions reach an HTTP Event Collector.
type SplunkOptions struct {
	// Token is the collector's token (required).
	Token Secret
	// HTTPClient carries the requests; nil is http.DefaultClient.
	HTTPClient *http.Client
	// Ack waits for indexer acknowledgement: Write returns once every
	// event is indexed (the token must have it on), not just received.
	Ack bool
	// AckTimeout bounds the wait for acknowledgement (default 2 minutes).
	AckTimeout time.Duration
	// MaxBytes bounds a request's body (default 1 MB; the collector's
	// max_content_length). A 413 halves the batch.
	MaxBytes int
	// Index and Sourcetype are the events' (empty: the token's default
	// index; sourcetype defender:incident).
	Index, Sourcetype string
	// Attempts bounds the tries of a request the collector may take
	// later (503 busy, 429, 5xx, connection errors; default 6).
	Attempts int
	// RetryBase is the first retry's wait, doubled per retry (default 1 s).
	RetryBase time.Duration
}

// SplunkSink sends versions as events to Splunk's HTTP Event Collector,
// many to a request. Splunk keeps no Go client of HEC that is maintained
// and small; its protocol is three requests, so this is written here.
type SplunkSink struct {
	event, ack string // the endpoints
	o          SplunkOptions
	hc         *http.Client
	channel    string

	mu      sync.Mutex
	pending map[string][]int64 // scope → ackIds not yet acknowledged
}

// SplunkEvent is one event as HEC takes it. version_id is the same for
// every copy of a version: keep one event per version with
//
//	sourcetype=defender:incident | dedup version_id
type SplunkEvent struct {
	Time       float64         `json:"time"` // the version's lastUpdateDateTime
	Source     string          `json:"source"`
	Sourcetype string          `json:"sourcetype"`
	Index      string          `json:"index,omitempty"`
	Fields     SplunkFields    `json:"fields"` // indexed fields
	Event      json.RawMessage `json:"event"`
}

// SplunkFields are the indexed fields of an event.
type SplunkFields struct {
	VersionID  string `json:"version_id"`
	Tenant     string `json:"tenant"`
	IncidentID string `json:"incident_id"`
}

// NewSplunkSink opens a collector as a sink; it performs no I/O.
func NewSplunkSink(raw string, o SplunkOptions) (*SplunkSink, error) {
	if k, err := config.ClassifySink(raw); err != nil {
		return nil, fmt.Errorf("EXPORT_SINK=%w", err)
	} else if k != config.SinkSplunk {
		return nil, fmt.Errorf("EXPORT_SINK=%q is not an HTTP Event Collector endpoint: use https://<host>:8088/services/collector/event", config.RedactURL(raw))
	}
	u, _ := url.Parse(raw)
	if o.Token == nil {
		return nil, errors.New("EXPORT_SINK: an HTTP Event Collector needs its token: set EXPORT_SPLUNK_TOKEN_SECRET to the Key Vault secret that holds it")
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 2 * time.Minute
	}
	if o.Sourcetype == "" {
		o.Sourcetype = "defender:incident"
	}
	if o.Attempts <= 0 {
		o.Attempts = 6
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	base := u.Scheme + "://" + u.Host + "/services/collector"
	return &SplunkSink{event: base + "/event", ack: base + "/ack", o: o, hc: hc, channel: uuid.NewString(), pending: map[string][]int64{}}, nil
}

func (s *SplunkSink) String() string { return s.event }

// hecAnswer is the collector's answer to every request.
type hecAnswer struct {
	Text  string `json:"text"`
	Code  int    `json:"code"`
	AckID *int64 `json:"ackId"`
	// InvalidEvent is the first event a 400 refused; the ones before it
	// were indexed.
	InvalidEvent *int `json:"invalid-event-number"`
}

// Write sends the versions as events; when it returns nil the collector
// has received them all. With Ack they are indexed once SyncScope (or
// Sync) returns: acknowledgement takes seconds, and waiting for it page by
// page would cost a page's throughput each time.
func (s *SplunkSink) Write(ctx context.Context, objs []Object) error {
	recs := make([][]byte, len(objs))
	for i, o := range objs {
		recs[i] = s.event1(o)
	}
	batches, err := split(recs, s.o.MaxBytes, 0, 0, true)
	if err != nil {
		return err
	}
	scopes := scopesOf(objs)
	for _, b := range batches {
		err := sendHalving(ctx, b, func(ctx context.Context, recs [][]byte) error {
			a, err := s.post(ctx, s.event, bytes.Join(recs, nil))
			if err == nil && s.o.Ack {
				if a.AckID == nil {
					return errors.New("sink: the collector sent no ackId: turn indexer acknowledgement on for the token, or EXPORT_SPLUNK_ACK off")
				}
				s.mu.Lock()
				for _, sc := range scopes {
					s.pending[sc] = append(s.pending[sc], *a.AckID)
				}
				s.mu.Unlock()
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// event1 encodes a version as SplunkEvent declares it. The incident's JSON
// goes in as the API returned it (the client decoded it whole): Marshal
// would scan it again to check it.
func (s *SplunkSink) event1(o Object) []byte {
	raw := bytes.TrimSpace(o.Data)
	b := make([]byte, 0, len(raw)+256)
	b = append(b, `{"time":`...)
	b = strconv.AppendFloat(b, float64(o.LastUpdate.UnixMicro())/1e6, 'f', 6, 64)
	b = append(b, `,"source":"defender-functions","sourcetype":`...)
	b, _ = jsontext.AppendQuote(b, s.o.Sourcetype)
	if s.o.Index != "" {
		b = append(b, `,"index":`...)
		b, _ = jsontext.AppendQuote(b, s.o.Index)
	}
	b = append(b, `,"fields":{"version_id":`...)
	b, _ = jsontext.AppendQuote(b, VersionID(o))
	b = append(b, `,"tenant":`...)
	b, _ = jsontext.AppendQuote(b, o.Tenant)
	b = append(b, `,"incident_id":`...)
	b, _ = jsontext.AppendQuote(b, o.ID)
	b = append(b, `},"event":`...)
	b = append(b, raw...)
	return append(b, '}')
}

// scopesOf are the writers' scopes of objs: every request of a Write is
// counted against each of them.
func scopesOf(objs []Object) []string {
	var out []string
	for _, o := range objs {
		if sc := cmp.Or(o.Scope, o.Tenant); !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out
}

// SyncScope waits for the indexer's acknowledgement of every request that
// carried the scope's events since its last SyncScope: then they are
// indexed. The scope's IDs are forgotten whatever the outcome: after a
// failure its writer counts none of them written and sends them again, and
// an acknowledgement that was lost never comes (an ID kept would fail
// every later wait of the scope). Without Ack there is nothing to wait for.
func (s *SplunkSink) SyncScope(ctx context.Context, scope string) error {
	s.mu.Lock()
	ids := s.pending[scope]
	delete(s.pending, scope)
	s.mu.Unlock()
	return s.awaitAcks(ctx, ids)
}

// Sync waits for the acknowledgement of every request sent.
func (s *SplunkSink) Sync(ctx context.Context) error {
	s.mu.Lock()
	var ids []int64
	for sc, p := range s.pending {
		ids = append(ids, p...)
		delete(s.pending, sc)
	}
	s.mu.Unlock()
	slices.Sort(ids)
	return s.awaitAcks(ctx, slices.Compact(ids))
}

// Check sends an empty request: a collector that knows the token answers
// "No data" (code 5), one that does not "Invalid token" (code 4).
func (s *SplunkSink) Check(ctx context.Context) error {
	_, err := s.post(ctx, s.event, nil)
	if he := (*HECError)(nil); errors.As(err, &he) && he.Code == 5 {
		return nil
	}
	return err
}

// HECError is an answer of the collector other than success.
type HECError struct {
	StatusCode int
	Code       int    // HEC's status code: 4 invalid token, 6 invalid data, 9 busy, …
	Text       string // HEC's text
}

func (e *HECError) Error() string {
	msg := fmt.Sprintf("splunk HEC: HTTP %d, code %d %q", e.StatusCode, e.Code, e.Text)
	switch e.Code {
	case 1, 4:
		return msg + ": the token is disabled or unknown to the collector; store a valid token in the Key Vault secret EXPORT_SPLUNK_TOKEN_SECRET names"
	case 7:
		return msg + ": the token may not write to that index; check EXPORT_SPLUNK_INDEX and the token's allowed indexes"
	case 10, 11:
		return msg + ": indexer acknowledgement is on for the token; set EXPORT_SPLUNK_ACK=true"
	case 14:
		return msg + ": indexer acknowledgement is off for the token; turn it on, or EXPORT_SPLUNK_ACK off"
	}
	return msg
}

// post sends one request, again when the collector may take it later,
// and once with a re-read token when it refuses the token (rotation).
func (s *SplunkSink) post(ctx context.Context, endpoint string, body []byte) (*hecAnswer, error) {
	reread := false
	for n := 0; ; n++ {
		tok, err := s.o.Token.Value(ctx)
		if err != nil {
			return nil, fmt.Errorf("sink: splunk HEC token: %w", err)
		}
		a, resp, err := s.try(ctx, endpoint, tok, body)
		if err == nil {
			return a, nil
		}
		var he *HECError
		switch {
		case errors.As(err, &he) && (he.Code == 1 || he.Code == 4) && !reread:
			s.o.Token.Rejected(tok)
			reread = true
			continue
		case errors.As(err, &he) && he.StatusCode == http.StatusRequestEntityTooLarge:
			return nil, errTooLarge
		case errors.As(err, &he) && !retryable(he.StatusCode):
			return nil, err
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		if n+1 >= s.o.Attempts {
			return nil, fmt.Errorf("sink: splunk HEC after %d tries: %w", n+1, err)
		}
		if err := sleep(ctx, backoff(n, s.o.RetryBase, resp)); err != nil {
			return nil, err
		}
	}
}

func (s *SplunkSink) try(ctx context.Context, endpoint, tok string, body []byte) (*hecAnswer, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Splunk "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Splunk-Request-Channel", s.channel)
	resp, err := s.hc.Do(req)
	if err != nil {
		// The transport's error names the URL, never the header.
		return nil, nil, fmt.Errorf("sink: splunk HEC: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, resp, fmt.Errorf("sink: splunk HEC: reading the answer: %w", err)
	}
	var a hecAnswer
	jerr := json.Unmarshal(raw, &a)
	if resp.StatusCode != http.StatusOK {
		he := &HECError{StatusCode: resp.StatusCode, Code: -1, Text: http.StatusText(resp.StatusCode)}
		if jerr == nil && a.Text != "" {
			he.Code, he.Text = a.Code, a.Text
		}
		if he.StatusCode == http.StatusBadRequest && a.InvalidEvent != nil {
			he.Text += " (event " + strconv.Itoa(*a.InvalidEvent) + "; the events before it were indexed)"
		}
		return nil, resp, he
	}
	if jerr != nil {
		return nil, resp, fmt.Errorf("sink: splunk HEC answered 200 with no JSON: %w", jerr)
	}
	return &a, resp, nil
}

// awaitAcks polls the ack endpoint until every ID is acknowledged: the
// events are indexed (replicated, where the indexers replicate).
func (s *SplunkSink) awaitAcks(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.AckTimeout)
	defer cancel()
	pending := ids
	wait := 100 * time.Millisecond
	for {
		body, _ := json.Marshal(map[string][]int64{"acks": pending})
		a, err := s.postAck(ctx, body)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("sink: splunk HEC did not acknowledge %d of %d requests within %s: they are sent again next run", len(pending), len(ids), s.o.AckTimeout)
			}
			return err
		}
		var still []int64
		for _, id := range pending {
			if !a[strconv.FormatInt(id, 10)] {
				still = append(still, id)
			}
		}
		if pending = still; len(pending) == 0 {
			return nil
		}
		if err := sleep(ctx, wait); err != nil {
			return fmt.Errorf("sink: splunk HEC did not acknowledge %d of %d requests within %s: they are sent again next run", len(pending), len(ids), s.o.AckTimeout)
		}
		wait = min(wait*2, 2*time.Second)
	}
}

func (s *SplunkSink) postAck(ctx context.Context, body []byte) (map[string]bool, error) {
	tok, err := s.o.Token.Value(ctx)
	if err != nil {
		return nil, fmt.Errorf("sink: splunk HEC token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ack+"?channel="+s.channel, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Splunk "+tok)
	req.Header.Set("X-Splunk-Request-Channel", s.channel)
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sink: splunk HEC ack: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		if retryable(resp.StatusCode) {
			return map[string]bool{}, nil // asked again after the wait
		}
		var a hecAnswer
		json.Unmarshal(raw, &a)
		return nil, &HECError{StatusCode: resp.StatusCode, Code: a.Code, Text: a.Text}
	}
	var out struct {
		Acks map[string]bool `json:"acks"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("sink: splunk HEC ack answered no JSON: %w", err)
	}
	return out.Acks, nil
}
