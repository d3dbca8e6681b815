package sink

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/monitor/ingestion/azlogs"
	"github.com/go-json-experiment/json/jsontext"
)

// LogsOptions reach the Logs Ingestion API.
type LogsOptions struct {
	// Credential is the identity the data collection rule lets ingest
	// (role Monitoring Metrics Publisher on the rule).
	Credential azcore.TokenCredential
	// HTTPClient carries the requests; nil is the SDK's default.
	HTTPClient *http.Client
	// MaxBytes bounds a request's body before compression (default, and
	// at most, the API's 1 MB).
	MaxBytes int
	// Now stamps TimeGenerated (default time.Now).
	Now func() time.Time
}

// LogsSink sends versions as rows of a Log Analytics table (Microsoft
// Sentinel's too) through a data collection rule's stream, with azlogs.
// azlogs sends one request per Upload and splits nothing, so the sink
// batches under the API's 1 MB itself; its pipeline retries 408, 429 and
// 5xx, waiting as Retry-After says.
type LogsSink struct {
	client       *azlogs.Client
	rule, stream string
	url          string
	max          int
	now          func() time.Time
}

// LogsRow is a row of the table (DefenderIncidents_CL), as the stream
// declares it. The service truncates a field's value past 64 KB, and an
// incident with many alerts is larger: so the incident (its alerts left
// out) and its alerts are two columns, and a version whose alerts do not
// fit in one row's Alerts is spread over Parts rows, Part 0 to Parts-1,
// each with some of them. VersionID is the same for every copy of a
// version: keep one row per version and part with
//
//	DefenderIncidents_CL | summarize arg_max(TimeGenerated, *) by VersionId, Part
type LogsRow struct {
	TimeGenerated      time.Time       `json:"TimeGenerated"` // when the export sent the row
	VersionID          string          `json:"VersionId"`
	Tenant             string          `json:"Tenant"`
	IncidentID         string          `json:"IncidentId"`
	LastUpdateDateTime time.Time       `json:"LastUpdateDateTime"`
	Incident           json.RawMessage `json:"Incident"` // the API's incident without its alerts (part 0 only)
	Alerts             json.RawMessage `json:"Alerts"`   // an array of the incident's alerts, whole
	Part               int             `json:"Part"`
	Parts              int             `json:"Parts"`
}

// logsFieldMax is what the sink puts in one field: the service truncates
// values past 64 KB, and a truncated value is no longer JSON.
const logsFieldMax = 64<<10 - 512

// parseLogsURL is a stream's endpoint, rule and stream, from a URL that
// config.ClassifySink reads as a Logs Ingestion stream.
func parseLogsURL(raw string) (endpoint, rule, stream string, err error) {
	if k, err := config.ClassifySink(raw); err != nil {
		return "", "", "", err
	} else if k != config.SinkLogs {
		return "", "", "", fmt.Errorf("%q is not a data collection rule's stream: use https://<endpoint>/dataCollectionRules/<immutable ID, dcr-…>/streams/<stream, Custom-…>", config.RedactURL(raw))
	}
	u, _ := url.Parse(raw)
	p := strings.Split(strings.Trim(u.Path, "/"), "/")
	return "https://" + u.Host, p[1], p[3], nil
}

// logsCloud is the cloud of an ingestion endpoint, whose tokens carry its
// audience (https://monitor.azure.com/ in the public cloud).
func logsCloud(endpoint string) cloud.Configuration {
	switch h := strings.ToLower(endpoint); {
	case strings.HasSuffix(h, ".azure.us"):
		return cloud.AzureGovernment
	case strings.HasSuffix(h, ".azure.cn"):
		return cloud.AzureChina
	}
	return cloud.AzurePublic
}

// NewLogsSink opens a stream as a sink; it performs no I/O.
func NewLogsSink(raw string, o LogsOptions) (*LogsSink, error) {
	endpoint, rule, stream, err := parseLogsURL(raw)
	if err != nil {
		return nil, fmt.Errorf("EXPORT_SINK: %w", err)
	}
	if o.Credential == nil {
		return nil, errors.New("EXPORT_SINK: a Logs Ingestion stream needs an identity (the managed identity in Azure, KEY_VAULT_CREDENTIAL elsewhere)")
	}
	if o.MaxBytes <= 0 || o.MaxBytes > defaultMaxBytes {
		o.MaxBytes = defaultMaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	co := azcore.ClientOptions{Cloud: logsCloud(endpoint),
		Retry: policy.RetryOptions{MaxRetries: 6, RetryDelay: time.Second, MaxRetryDelay: time.Minute}}
	if o.HTTPClient != nil {
		co.Transport = o.HTTPClient
	}
	c, err := azlogs.NewClient(endpoint, o.Credential, &azlogs.ClientOptions{ClientOptions: co})
	if err != nil {
		return nil, fmt.Errorf("EXPORT_SINK: %w", err)
	}
	return &LogsSink{client: c, rule: rule, stream: stream, url: raw, max: o.MaxBytes, now: o.Now}, nil
}

func (s *LogsSink) String() string { return s.url }

// Write sends the versions as rows; when it returns nil the API has
// accepted all of them (204).
func (s *LogsSink) Write(ctx context.Context, objs []Object) error {
	now := s.now().UTC()
	recs := make([][]byte, 0, len(objs))
	for _, o := range objs {
		rows, err := logsRows(o, now)
		if err != nil {
			return err
		}
		recs = append(recs, rows...)
	}
	// The parts of a version may land in different requests: a version is
	// written once all of them are, which Write's return says.
	batches, err := split(recs, s.max, len("[]"), len(","), false)
	if err != nil {
		return err
	}
	for _, b := range batches {
		if err := sendHalving(ctx, b, s.upload); err != nil {
			return err
		}
	}
	return nil
}

// logsRows encodes a version as its rows: the incident without its alerts,
// and its alerts, whole, as many to a row as fit in a field. The JSON the
// API returned is cut and spliced, not decoded and encoded again: a third
// of what map and Marshal cost, on every version of the export.
func logsRows(o Object, now time.Time) ([][]byte, error) {
	incident, alerts, err := cutAlerts(o.Data)
	if err != nil {
		return nil, fmt.Errorf("sink: %s is not a JSON incident: %w", o.Name, err)
	}
	if len(incident) > logsFieldMax {
		return nil, fmt.Errorf("sink: %s: the incident without its alerts is %d bytes, more than a Log Analytics field holds (64 KB)", o.Name, len(incident))
	}
	var parts [][][]byte
	var cur [][]byte
	size := len("[]")
	for _, a := range alerts {
		a = fitAlert(a)
		if len(cur) > 0 && size+len(a)+1 > logsFieldMax {
			parts, cur, size = append(parts, cur), nil, len("[]")
		}
		cur = append(cur, a)
		size += len(a) + 1
	}
	parts = append(parts, cur) // part 0 exists even without alerts
	// The columns every part repeats, as LogsRow declares them.
	head := []byte(`{"TimeGenerated":"`)
	head = now.UTC().AppendFormat(head, time.RFC3339Nano)
	head = append(head, `","VersionId":`...)
	head, _ = jsontext.AppendQuote(head, VersionID(o))
	head = append(head, `,"Tenant":`...)
	head, _ = jsontext.AppendQuote(head, o.Tenant)
	head = append(head, `,"IncidentId":`...)
	head, _ = jsontext.AppendQuote(head, o.ID)
	head = append(head, `,"LastUpdateDateTime":"`...)
	head = o.LastUpdate.UTC().AppendFormat(head, time.RFC3339Nano)
	head = append(head, `",`...)
	out := make([][]byte, len(parts))
	for i, p := range parts {
		b := make([]byte, 0, len(head)+len(incident)+size+64)
		b = append(b, head...)
		if i == 0 {
			b = append(b, `"Incident":`...)
			b = append(b, incident...)
			b = append(b, ',')
		}
		b = append(b, `"Alerts":[`...)
		for k, a := range p {
			if k > 0 {
				b = append(b, ',')
			}
			b = append(b, a...)
		}
		b = append(b, `],"Part":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"Parts":`...)
		b = strconv.AppendInt(b, int64(len(parts)), 10)
		out[i] = append(b, '}')
	}
	return out, nil
}

// cutAlerts splits an incident's JSON into the incident without its
// "alerts" member and the alerts, each as it was.
func cutAlerts(raw []byte) (incident []byte, alerts [][]byte, err error) {
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, nil, errors.New("not a JSON object")
	}
	incident = make([]byte, 0, len(raw))
	incident = append(incident, '{')
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return nil, nil, err
		}
		isAlerts := string(name) == `"alerts"`
		if !isAlerts && len(incident) > 1 {
			incident = append(incident, ',')
		}
		if !isAlerts {
			incident = append(append(incident, name...), ':')
		}
		val, err := dec.ReadValue()
		if err != nil {
			return nil, nil, err
		}
		if !isAlerts {
			incident = append(incident, val...)
			continue
		}
		if val.Kind() != '[' {
			return nil, nil, errors.New("alerts is not an array")
		}
		ad := jsontext.NewDecoder(bytes.NewReader(val))
		ad.ReadToken()
		for ad.PeekKind() != ']' {
			a, err := ad.ReadValue()
			if err != nil {
				return nil, nil, err
			}
			alerts = append(alerts, a.Clone())
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, nil, err
	}
	return append(incident, '}'), alerts, nil
}

// fitAlert makes an alert fit in a field: one larger than a field loses its
// evidence (evidenceOmitted says so); the rest of it is kept.
func fitAlert(a []byte) []byte {
	if len(a) <= logsFieldMax {
		return a
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(a, &m) != nil {
		return a
	}
	delete(m, "evidence")
	m["evidenceOmitted"] = json.RawMessage("true")
	b, err := json.Marshal(m)
	if err != nil {
		return a
	}
	return b
}

// Check sends an empty batch: the endpoint, the rule, the stream and the
// identity's right to ingest are all checked, and no row is written.
func (s *LogsSink) Check(ctx context.Context) error { return s.upload(ctx, nil) }

func (s *LogsSink) upload(ctx context.Context, recs [][]byte) error {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write([]byte{'['})
	for i, r := range recs {
		if i > 0 {
			zw.Write([]byte{','})
		}
		zw.Write(r)
	}
	zw.Write([]byte{']'})
	zw.Close()
	_, err := s.client.Upload(ctx, s.rule, s.stream, buf.Bytes(), &azlogs.UploadOptions{ContentEncoding: ptr("gzip")})
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("sink: logs ingestion %s: %w", s.url, err)
	}
	switch re.StatusCode {
	case http.StatusRequestEntityTooLarge:
		return errTooLarge
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("sink: logs ingestion refused the identity's token (HTTP %d %s): give the identity the 'Monitoring Metrics Publisher' role on data collection rule %s", re.StatusCode, re.ErrorCode, s.rule)
	case http.StatusNotFound:
		return fmt.Errorf("sink: logs ingestion knows no data collection rule %s with stream %s at this endpoint (HTTP 404 %s): check EXPORT_SINK", s.rule, s.stream, re.ErrorCode)
	}
	// The SDK's message repeats the whole response; keep the status and code.
	return fmt.Errorf("sink: logs ingestion %s: HTTP %d %s", s.url, re.StatusCode, re.ErrorCode)
}
