package devstack

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// The SIEMs the export can write to, simulated from their documented
// contracts: Azure Monitor's Logs Ingestion API (a data collection rule's
// stream into a Log Analytics table) and Splunk's HTTP Event Collector.
// Both keep every row or event they accept, so tests read what arrived,
// duplicates included.

// Logs Ingestion: the rule, the stream and the table the Bicep creates.
const (
	// MonitorResource is the audience of the Logs Ingestion API's tokens.
	MonitorResource = "https://monitor.azure.com"
	// LogsStream is the rule's stream; the table is DefenderIncidents_CL.
	LogsStream = "Custom-DefenderIncidents"
	// LogsMaxBytes is the API's limit of a call, compressed or not (1 MB).
	LogsMaxBytes = 1 << 20
	// LogsFieldMax is the API's limit of a field's value: longer values
	// are truncated (64 KB).
	LogsFieldMax = 64 << 10
	// HECTokenSecret is the Key Vault secret holding the collector's token.
	HECTokenSecret = "splunk-hec-token"
)

// logsColumns is the stream's declaration: the rule keeps these columns
// and drops any other.
var logsColumns = map[string]string{"TimeGenerated": "datetime", "VersionId": "string", "Tenant": "string", "IncidentId": "string",
	"LastUpdateDateTime": "datetime", "Incident": "dynamic", "Alerts": "dynamic", "Part": "int", "Parts": "int"}

// SIEMOptions shape the simulated SIEMs.
type SIEMOptions struct {
	// LogsMaxBytes replaces the Logs Ingestion API's 1 MB limit of a call.
	LogsMaxBytes int
	// HECMaxBytes is the collector's max_content_length (default 1 MB).
	HECMaxBytes int
	// HECAck turns indexer acknowledgement on for the token.
	HECAck bool
	// HECAckDelay is how long an event takes to be indexed, and so
	// acknowledged (default 100 ms).
	HECAckDelay time.Duration
}

type siem struct {
	mu         sync.Mutex
	opts       SIEMOptions
	rule       string
	rows       []map[string]any
	hecToken   string
	events     []json.RawMessage
	channels   map[string]*hecChannel
	ackLost    float64
	lost       int // requests lost by LoseHECAcks
	logsBodies int
	throttle   int // the next SIEM requests answered 429 (ThrottleSink)
}

type hecChannel struct {
	next  int64
	ready map[int64]time.Time // ackId → when it is indexed; absent: unknown or already reported
}

func newSIEM(o SIEMOptions) *siem {
	if o.LogsMaxBytes <= 0 {
		o.LogsMaxBytes = LogsMaxBytes
	}
	if o.HECMaxBytes <= 0 {
		o.HECMaxBytes = 1 << 20
	}
	if o.HECAckDelay <= 0 {
		o.HECAckDelay = 100 * time.Millisecond
	}
	return &siem{opts: o, rule: "dcr-" + strings.ReplaceAll(uuid.NewString(), "-", ""), hecToken: uuid.NewString(), channels: map[string]*hecChannel{}}
}

// LogsStreamURL is the EXPORT_SINK of the simulated rule's stream.
func (s *Stack) LogsStreamURL() string {
	return s.LogsURL + "/dataCollectionRules/" + s.siem.rule + "/streams/" + LogsStream
}

// HECEventURL is the EXPORT_SINK of the simulated collector.
func (s *Stack) HECEventURL() string { return s.HECURL + "/services/collector/event" }

// SetSIEM replaces the SIEMs' options (zero fields keep the defaults).
func (s *Stack) SetSIEM(o SIEMOptions) {
	n := newSIEM(o)
	s.siem.mu.Lock()
	s.siem.opts = n.opts
	s.siem.mu.Unlock()
}

// LogsRows returns every row the rule ingested, in order, duplicates included.
func (s *Stack) LogsRows() []map[string]any {
	s.siem.mu.Lock()
	defer s.siem.mu.Unlock()
	return append([]map[string]any(nil), s.siem.rows...)
}

// HECEvents returns every event the collector indexed, in order, duplicates included.
func (s *Stack) HECEvents() []json.RawMessage {
	s.siem.mu.Lock()
	defer s.siem.mu.Unlock()
	return append([]json.RawMessage(nil), s.siem.events...)
}

// HECLost is how many requests LoseHECAcks has lost.
func (s *Stack) HECLost() int {
	s.siem.mu.Lock()
	defer s.siem.mu.Unlock()
	return s.siem.lost
}

// LoseHECAcks makes a share of the collector's requests lost by the indexer
// (it failed before replicating them): answered 200 with an ackId that never
// turns true, their events never indexed. Splunk's documentation says only
// that such data is to be sent again; events indexed with their ack lost
// would be the milder case (a duplicate, folded by version_id).
func (s *Stack) LoseHECAcks(share float64) {
	s.siem.mu.Lock()
	s.siem.ackLost = share
	s.siem.mu.Unlock()
}

func logsError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

// logsHandler is the Logs Ingestion API of a data collection endpoint.
func (s *Stack) logsHandler() http.Handler {
	mux := http.NewServeMux()
	route(mux, "POST /dataCollectionRules/{rule}/streams/{stream}", "logs.upload", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api-version") != "2023-01-01" {
			logsError(w, http.StatusBadRequest, "InvalidApiVersion", "The api-version query parameter must be 2023-01-01.")
			return
		}
		claims, ok := s.bearer(w, r, MonitorResource, logsError)
		if !ok {
			return
		}
		if r.PathValue("rule") != s.siem.rule || r.PathValue("stream") != LogsStream {
			logsError(w, http.StatusNotFound, "NotFound", "Data collection rule with immutable Id '"+r.PathValue("rule")+"' not found, or it has no stream '"+r.PathValue("stream")+"'.")
			return
		}
		if !s.mayIngest(claims) {
			logsError(w, http.StatusForbidden, "OperationFailed", "The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '"+s.siem.rule+"'.")
			return
		}
		if s.sinkFault(w, func(w http.ResponseWriter, status int) {
			logsError(w, status, "ServiceUnavailable", "The service is temporarily unavailable.")
		}) {
			return
		}
		s.siem.mu.Lock()
		limit := s.siem.opts.LogsMaxBytes
		s.siem.mu.Unlock()
		tooLarge := func() {
			logsError(w, http.StatusRequestEntityTooLarge, "ContentLengthLimitExceeded", fmt.Sprintf("Maximum request body size is %d bytes.", limit))
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
		if err != nil {
			return
		}
		if len(body) > limit {
			tooLarge()
			return
		}
		if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				logsError(w, http.StatusBadRequest, "InvalidContentEncoding", "The request body is not valid gzip.")
				return
			}
			// The limit holds for the data uncompressed, too.
			body, err = io.ReadAll(io.LimitReader(zr, int64(limit)+1))
			if err != nil {
				logsError(w, http.StatusBadRequest, "InvalidContentEncoding", "The request body is not valid gzip.")
				return
			}
			if len(body) > limit {
				tooLarge()
				return
			}
		}
		var recs []map[string]json.RawMessage
		if err := json.Unmarshal(body, &recs); err != nil {
			logsError(w, http.StatusBadRequest, "InvalidPayload", "The request body must be a JSON array of objects: "+err.Error())
			return
		}
		rows := make([]map[string]any, 0, len(recs))
		for i, rec := range recs {
			row, err := logsRow(rec)
			if err != nil {
				// One bad record fails the call: nothing of it is ingested.
				logsError(w, http.StatusBadRequest, "InvalidPayload", fmt.Sprintf("Record %d: %v", i, err))
				return
			}
			rows = append(rows, row)
		}
		s.siem.mu.Lock()
		s.siem.rows = append(s.siem.rows, rows...)
		s.siem.logsBodies++
		s.siem.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	return s.counted("logs", mux)
}

// logsRow applies the stream's declaration to a record: declared columns
// kept and typed, others dropped, values past 64 KB truncated.
func logsRow(rec map[string]json.RawMessage) (map[string]any, error) {
	row := map[string]any{}
	for col, typ := range logsColumns {
		raw, ok := rec[col]
		if !ok || string(raw) == "null" {
			continue
		}
		switch typ {
		case "datetime":
			var t time.Time
			if err := json.Unmarshal(raw, &t); err != nil {
				return nil, fmt.Errorf("column %s is not a datetime", col)
			}
			row[col] = t.UTC()
		case "int":
			var v int64
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("column %s is not an int", col)
			}
			row[col] = v
		case "string":
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("column %s is not a string", col)
			}
			if len(v) > LogsFieldMax {
				v = v[:LogsFieldMax]
			}
			row[col] = v
		case "dynamic":
			if len(raw) > LogsFieldMax {
				row[col] = string(raw[:LogsFieldMax]) // truncated: no longer JSON
				continue
			}
			row[col] = json.RawMessage(bytes.Clone(raw))
		}
	}
	if _, ok := row["TimeGenerated"]; !ok {
		return nil, errors.New("TimeGenerated is required (the rule's transformation does not set it)")
	}
	return row, nil
}

// mayIngest is the role assignment 'Monitoring Metrics Publisher' on the
// rule: the Function App's identities, and the bootstrap app that stands
// for the Lambda's identity.
func (s *Stack) mayIngest(claims jwt.MapClaims) bool {
	oid, _ := claims["oid"].(string)
	if oid == s.dir.identity.ObjectID || oid == SystemIdentityObjectID {
		return !s.ingestDenied.Load()
	}
	appid, _ := claims["appid"].(string)
	if appid == "" {
		appid, _ = claims["azp"].(string)
	}
	return appid == VaultReaderClientID
}

// bearer checks an Entra ID token for the audience; a failure is answered.
func (s *Stack) bearer(w http.ResponseWriter, r *http.Request, audience string, fail func(http.ResponseWriter, int, string, string)) (jwt.MapClaims, bool) {
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		fail(w, http.StatusUnauthorized, "InvalidToken", "The request has no bearer token.")
		return nil, false
	}
	claims, err := s.verify(strings.TrimPrefix(h, "Bearer "))
	if err != nil {
		fail(w, http.StatusUnauthorized, "InvalidToken", "The token is not valid: "+err.Error())
		return nil, false
	}
	aud, _ := claims.GetAudience()
	if len(aud) != 1 || strings.TrimSuffix(aud[0], "/") != audience {
		fail(w, http.StatusUnauthorized, "InvalidAudience", fmt.Sprintf("The token's audience %v is not %s.", aud, audience))
		return nil, false
	}
	return claims, true
}

// ThrottleSink answers the next n SIEM requests 429 with Retry-After: 1
// (503 "Server is busy" from the collector).
func (s *Stack) ThrottleSink(n int) {
	s.siem.mu.Lock()
	s.siem.throttle = n
	s.siem.mu.Unlock()
}

// sinkFault answers an injected fault: 429 with Retry-After, or 503.
func (s *Stack) sinkFault(w http.ResponseWriter, answer func(http.ResponseWriter, int)) bool {
	s.siem.mu.Lock()
	next := s.siem.throttle > 0
	if next {
		s.siem.throttle--
	}
	s.siem.mu.Unlock()
	f := s.faults()
	if next || f.SinkThrottleRate > 0 && s.faultRNG.Float64() < f.SinkThrottleRate {
		w.Header().Set("Retry-After", "1")
		answer(w, http.StatusTooManyRequests)
		return true
	}
	if f.SinkErrorRate > 0 && s.faultRNG.Float64() < f.SinkErrorRate {
		answer(w, http.StatusServiceUnavailable)
		return true
	}
	return false
}

func hecAnswer(w http.ResponseWriter, status int, code int, text string) {
	writeJSON(w, status, map[string]any{"text": text, "code": code})
}

// hecHandler is Splunk's HTTP Event Collector: /services/collector/event,
// /ack and /health.
func (s *Stack) hecHandler() http.Handler {
	mux := http.NewServeMux()
	route(mux, "GET /services/collector/health", "hec.health", func(w http.ResponseWriter, r *http.Request) {
		hecAnswer(w, http.StatusOK, 17, "HEC is healthy")
	})
	event := func(w http.ResponseWriter, r *http.Request) {
		if !s.hecAuth(w, r) {
			return
		}
		s.siem.mu.Lock()
		o := s.siem.opts
		s.siem.mu.Unlock()
		channel := r.Header.Get("X-Splunk-Request-Channel")
		if channel == "" {
			channel = r.URL.Query().Get("channel")
		}
		if o.HECAck {
			if channel == "" {
				hecAnswer(w, http.StatusBadRequest, 10, "Data channel is missing")
				return
			}
			if _, err := uuid.Parse(channel); err != nil {
				hecAnswer(w, http.StatusBadRequest, 11, "Invalid data channel")
				return
			}
		}
		if s.sinkFault(w, func(w http.ResponseWriter, status int) {
			if status == http.StatusTooManyRequests {
				status = http.StatusServiceUnavailable // HEC's "busy", Retry-After kept
			}
			hecAnswer(w, status, 9, "Server is busy")
		}) {
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, int64(o.HECMaxBytes)+1))
		if err != nil {
			return
		}
		if len(body) > o.HECMaxBytes {
			hecAnswer(w, http.StatusRequestEntityTooLarge, 27, "Content too large")
			return
		}
		if len(bytes.TrimSpace(body)) == 0 {
			hecAnswer(w, http.StatusBadRequest, 5, "No data")
			return
		}
		// Events are indexed one by one: a bad one stops the request, and
		// the ones before it stay indexed.
		dec := json.NewDecoder(bytes.NewReader(body))
		var good []json.RawMessage
		var bad *hecBad
		for n := 0; dec.More(); n++ {
			var raw json.RawMessage
			var ev struct {
				Event json.RawMessage `json:"event"`
			}
			if err := dec.Decode(&raw); err != nil || json.Unmarshal(raw, &ev) != nil {
				bad = &hecBad{n, 6, "Invalid data format"}
				break
			}
			switch {
			case ev.Event == nil:
				bad = &hecBad{n, 12, "Event field is required"}
			case string(ev.Event) == `""` || string(ev.Event) == "null":
				bad = &hecBad{n, 13, "Event field cannot be blank"}
			}
			if bad != nil {
				break
			}
			good = append(good, raw)
		}
		s.siem.mu.Lock()
		var ackID int64 = -1
		lost := false
		if o.HECAck && bad == nil {
			ch := s.siem.channels[channel]
			if ch == nil {
				ch = &hecChannel{ready: map[int64]time.Time{}}
				s.siem.channels[channel] = ch
			}
			ackID = ch.next
			ch.next++
			// A lost acknowledgement is the indexer's loss of the request:
			// its events are never indexed and its ackId never turns true
			// (the harshest reading of Splunk's "resend the data" advice).
			if lost = s.siem.ackLost > 0 && s.faultRNG.Float64() < s.siem.ackLost; !lost {
				ch.ready[ackID] = time.Now().Add(o.HECAckDelay)
			} else {
				s.siem.lost++
			}
		}
		if !lost {
			s.siem.events = append(s.siem.events, good...)
		}
		s.siem.mu.Unlock()
		if bad != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"text": bad.text, "code": bad.code, "invalid-event-number": bad.n})
			return
		}
		if ackID >= 0 {
			writeJSON(w, http.StatusOK, map[string]any{"text": "Success", "code": 0, "ackId": ackID})
			return
		}
		hecAnswer(w, http.StatusOK, 0, "Success")
	}
	route(mux, "POST /services/collector/event", "hec.event", event)
	route(mux, "POST /services/collector", "hec.event", event)
	route(mux, "POST /services/collector/ack", "hec.ack", func(w http.ResponseWriter, r *http.Request) {
		if !s.hecAuth(w, r) {
			return
		}
		s.siem.mu.Lock()
		ackOn := s.siem.opts.HECAck
		s.siem.mu.Unlock()
		if !ackOn {
			hecAnswer(w, http.StatusBadRequest, 14, "ACK is disabled")
			return
		}
		channel := r.URL.Query().Get("channel")
		if channel == "" {
			channel = r.Header.Get("X-Splunk-Request-Channel")
		}
		var req struct {
			Acks []int64 `json:"acks"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			hecAnswer(w, http.StatusBadRequest, 6, "Invalid data format")
			return
		}
		out := map[string]bool{}
		now := time.Now()
		s.siem.mu.Lock()
		ch := s.siem.channels[channel]
		for _, id := range req.Acks {
			done := false
			if ch != nil {
				if t, ok := ch.ready[id]; ok && !now.Before(t) {
					done = true
					delete(ch.ready, id) // reported once, as Splunk does
				}
			}
			out[strconv.FormatInt(id, 10)] = done
		}
		s.siem.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"acks": out})
	})
	return s.counted("hec", mux)
}

type hecBad struct {
	n, code int
	text    string
}

// hecAuth checks "Authorization: Splunk <token>"; a failure is answered.
func (s *Stack) hecAuth(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	switch {
	case h == "":
		hecAnswer(w, http.StatusUnauthorized, 2, "Token is required")
		return false
	case !strings.HasPrefix(h, "Splunk "):
		hecAnswer(w, http.StatusUnauthorized, 3, "Invalid authorization")
		return false
	}
	s.siem.mu.Lock()
	ok := strings.TrimPrefix(h, "Splunk ") == s.siem.hecToken
	s.siem.mu.Unlock()
	if !ok {
		hecAnswer(w, http.StatusForbidden, 4, "Invalid token")
		return false
	}
	return true
}

// RotateHECToken makes a new collector token, stores it as a new version
// of the vault secret and disables the old one.
func (s *Stack) RotateHECToken() {
	tok := uuid.NewString()
	s.siem.mu.Lock()
	s.siem.hecToken = tok
	s.siem.mu.Unlock()
	s.PutSecret(HECTokenSecret, tok)
}
