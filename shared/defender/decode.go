package defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// List pages are the export's hot path: an incident with its alerts is 9 to
// 13 KB of JSON. encoding/json decoded them at about 3,500 a second on one
// core here; jsontext and json from go-json-experiment (the Go team's
// encoding/json/v2, a module until the standard library ships it) do 2.5
// times that, mostly by skipping the fields we do not map far faster.
//
// readOptions are tolerant of what the services may send: a repeated name
// or invalid UTF-8 in a free-text field must not stop an export.
var readOptions = jsonv2.JoinOptions(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))

// readPage streams a list response: the value array is read one element at
// a time, so memory is O(page), whatever the listing's size. each gets a
// copy of the element's bytes, which it may keep.
func readPage(body io.Reader, each func(json.RawMessage) error) (envelope, error) {
	return readPageInto(jsontext.NewDecoder(body, readOptions), func(dec *jsontext.Decoder) error {
		v, err := dec.ReadValue()
		if err != nil {
			return err
		}
		return each(bytes.Clone(v))
	})
}

// envelope is what a list response says besides its elements.
type envelope struct {
	next  string // @odata.nextLink
	count int64  // @odata.count, -1 when absent
}

// readPageInto walks a list response's envelope and hands each element of
// "value" to element, which reads it from dec.
func readPageInto(dec *jsontext.Decoder, element func(*jsontext.Decoder) error) (envelope, error) {
	env := envelope{count: -1}
	if err := expectKind(dec, '{'); err != nil {
		return env, err
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return env, err
		}
		switch name.String() {
		case "value":
			if err := expectKind(dec, '['); err != nil {
				return env, err
			}
			for dec.PeekKind() != ']' {
				if err := element(dec); err != nil {
					return env, err
				}
			}
			if err := expectKind(dec, ']'); err != nil {
				return env, err
			}
		case "@odata.nextLink":
			v, err := dec.ReadToken()
			if err != nil {
				return env, err
			}
			if v.Kind() != '"' {
				return env, fmt.Errorf("unexpected JSON: @odata.nextLink is %v, want a string", v.Kind())
			}
			env.next = v.String()
		case "@odata.count":
			v, err := dec.ReadToken()
			if err != nil {
				return env, err
			}
			// A count that is not a whole number is treated as absent: the
			// caller then proves a listing complete without it.
			if v.Kind() == '0' {
				if n, err := strconv.ParseInt(v.String(), 10, 64); err == nil && n >= 0 {
					env.count = n
				}
			}
		default:
			if err := dec.SkipValue(); err != nil {
				return env, err
			}
		}
	}
	if err := expectKind(dec, '}'); err != nil {
		return env, err
	}
	return env, nil
}

// readIncidents reads a page whole (its bytes are kept anyway: they are the
// incidents' Raw) and decodes each element straight into its wire struct.
// Raw is the element's own slice of the page, cut by the decoder's offsets:
// no second scan and no copy. jsontext parses a bytes.Buffer in place.
//
// hint sizes the buffer from the last page its client read (pages of one
// listing are alike): one allocation instead of a doubling series, which
// allocated three times the page.
func readIncidents[W any](body io.Reader, hint *atomic.Int64, normalize func(*W, json.RawMessage) (*Incident, error), each func(*Incident)) (envelope, error) {
	var buf bytes.Buffer
	buf.Grow(int(hint.Load()))
	if _, err := buf.ReadFrom(body); err != nil {
		return envelope{count: -1}, err
	}
	hint.Store(int64(buf.Len() + buf.Len()/8 + bytes.MinRead))
	page := buf.Bytes()
	return readPageInto(jsontext.NewDecoder(&buf, readOptions), func(dec *jsontext.Decoder) error {
		start := dec.InputOffset()
		var w W
		if err := jsonv2.UnmarshalDecode(dec, &w); err != nil {
			return err
		}
		end := dec.InputOffset()
		// Capacity ends with the element: appending to Raw copies it.
		raw := bytes.TrimLeft(page[start:end:end], " \t\r\n,")
		in, err := normalize(&w, raw)
		if err != nil {
			return err
		}
		each(in)
		return nil
	})
}

func expectKind(dec *jsontext.Decoder, k jsontext.Kind) error {
	t, err := dec.ReadToken()
	if err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if t.Kind() != k {
		return fmt.Errorf("unexpected JSON: got %v, want %v", t.Kind(), k)
	}
	return nil
}

// --- Graph ---

type graphIncidentWire struct {
	ID                 string           `json:"id"`
	TenantID           string           `json:"tenantId"`
	DisplayName        string           `json:"displayName"`
	Status             string           `json:"status"`
	Severity           string           `json:"severity"`
	Classification     string           `json:"classification"`
	Determination      string           `json:"determination"`
	AssignedTo         *string          `json:"assignedTo"`
	CustomTags         []string         `json:"customTags"`
	CreatedDateTime    time.Time        `json:"createdDateTime"`
	LastUpdateDateTime time.Time        `json:"lastUpdateDateTime"`
	RedirectIncidentID *string          `json:"redirectIncidentId"`
	Comments           []graphComment   `json:"comments"`
	Alerts             []graphAlertWire `json:"alerts"`
}

type graphComment struct {
	Comment              string    `json:"comment"`
	CreatedByDisplayName string    `json:"createdByDisplayName"`
	CreatedDateTime      time.Time `json:"createdDateTime"`
}

type graphAlertWire struct {
	ID              string    `json:"id"`
	Title           string    `json:"title"`
	Severity        string    `json:"severity"`
	Status          string    `json:"status"`
	ServiceSource   string    `json:"serviceSource"`
	CreatedDateTime time.Time `json:"createdDateTime"`
}

func decodeGraphIncident(raw json.RawMessage) (*Incident, error) {
	var w graphIncidentWire
	if err := jsonv2.Unmarshal(raw, &w, readOptions); err != nil {
		return nil, fmt.Errorf("graph incident: %w", err)
	}
	return normalizeGraph(&w, raw)
}

func normalizeGraph(w *graphIncidentWire, raw json.RawMessage) (*Incident, error) {
	if w.ID == "" || w.LastUpdateDateTime.IsZero() {
		return nil, errors.New("graph incident: id or lastUpdateDateTime missing")
	}
	in := &Incident{ID: w.ID, TenantID: w.TenantID, Name: w.DisplayName, Status: Normalize(w.Status, Statuses),
		Severity: Normalize(w.Severity, Severities), Classification: Normalize(w.Classification, Classifications),
		Determination: Normalize(w.Determination, Determinations), Tags: w.CustomTags, Created: w.CreatedDateTime,
		LastUpdate: w.LastUpdateDateTime, Raw: raw}
	if w.AssignedTo != nil {
		in.AssignedTo = *w.AssignedTo
	}
	if w.RedirectIncidentID != nil {
		in.RedirectID = *w.RedirectIncidentID
	}
	for _, c := range w.Comments {
		in.Comments = append(in.Comments, Comment{Text: c.Comment, CreatedBy: c.CreatedByDisplayName, Created: c.CreatedDateTime})
	}
	in.Alerts = graphAlerts(w.Alerts)
	return in, nil
}

func graphAlerts(ws []graphAlertWire) []Alert {
	var out []Alert
	for _, a := range ws {
		out = append(out, Alert{ID: a.ID, Title: a.Title, Severity: Normalize(a.Severity, Severities), Status: a.Status,
			ServiceSource: a.ServiceSource, Created: a.CreatedDateTime})
	}
	return out
}

// --- XDR ---

type xdrIncidentWire struct {
	IncidentID         xdrNumber      `json:"incidentId"`
	RedirectIncidentID *xdrNumber     `json:"redirectIncidentId"`
	IncidentName       string         `json:"incidentName"`
	CreatedTime        time.Time      `json:"createdTime"`
	LastUpdateTime     time.Time      `json:"lastUpdateTime"`
	AssignedTo         *string        `json:"assignedTo"`
	Classification     string         `json:"classification"`
	Determination      string         `json:"determination"`
	Status             string         `json:"status"`
	Severity           string         `json:"severity"`
	Tags               []string       `json:"tags"`
	Comments           []xdrComment   `json:"comments"`
	Alerts             []xdrAlertWire `json:"alerts"`
}

// xdrNumber is an XDR identifier: a JSON number, kept as its text (a
// string of digits is tolerated too).
type xdrNumber string

func (n *xdrNumber) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	t, err := dec.ReadToken()
	if err != nil {
		return err
	}
	switch t.Kind() {
	case '0', '"':
		*n = xdrNumber(t.String())
	case 'n':
		*n = ""
	default:
		return fmt.Errorf("want a number, got %v", t.Kind())
	}
	return nil
}

type xdrComment struct {
	Comment     string    `json:"comment"`
	CreatedBy   string    `json:"createdBy"`
	CreatedTime time.Time `json:"createdTime"`
}

type xdrAlertWire struct {
	AlertID       string    `json:"alertId"`
	Title         string    `json:"title"`
	Severity      string    `json:"severity"`
	Status        string    `json:"status"`
	ServiceSource string    `json:"serviceSource"`
	CreationTime  time.Time `json:"creationTime"`
}

func decodeXDRIncident(raw json.RawMessage, tenant string) (*Incident, error) {
	var w xdrIncidentWire
	if err := jsonv2.Unmarshal(raw, &w, readOptions); err != nil {
		return nil, fmt.Errorf("xdr incident: %w", err)
	}
	return normalizeXDR(&w, raw, tenant)
}

func normalizeXDR(w *xdrIncidentWire, raw json.RawMessage, tenant string) (*Incident, error) {
	if w.IncidentID == "" || w.LastUpdateTime.IsZero() {
		return nil, errors.New("xdr incident: incidentId or lastUpdateTime missing")
	}
	if _, err := strconv.ParseInt(string(w.IncidentID), 10, 64); err != nil {
		return nil, fmt.Errorf("xdr incident: incidentId %q is not a number", w.IncidentID)
	}
	in := &Incident{ID: string(w.IncidentID), TenantID: tenant, Name: w.IncidentName, Status: Normalize(w.Status, Statuses),
		Severity: Normalize(w.Severity, Severities), Classification: Normalize(w.Classification, Classifications),
		Determination: Normalize(w.Determination, Determinations), Tags: w.Tags, Created: w.CreatedTime, LastUpdate: w.LastUpdateTime, Raw: raw}
	// The XDR API writes a literal "Unassigned" for no owner.
	if w.AssignedTo != nil && *w.AssignedTo != "Unassigned" {
		in.AssignedTo = *w.AssignedTo
	}
	if w.RedirectIncidentID != nil {
		in.RedirectID = string(*w.RedirectIncidentID)
	}
	for _, c := range w.Comments {
		in.Comments = append(in.Comments, Comment{Text: c.Comment, CreatedBy: c.CreatedBy, Created: c.CreatedTime})
	}
	for _, a := range w.Alerts {
		in.Alerts = append(in.Alerts, Alert{ID: a.AlertID, Title: a.Title, Severity: Normalize(a.Severity, Severities),
			Status: Normalize(a.Status, []string{"new", "inProgress", "resolved"}), ServiceSource: a.ServiceSource, Created: a.CreationTime})
	}
	return in, nil
}

// keysWire is what ListOptions.KeysOnly decodes: an incident's identity,
// version and creation time, in either API's names. Unmarshalling the
// alerts into structs was 40 % of decoding a page; skipping them costs a
// fraction of that.
type keysWire struct {
	ID                 string     `json:"id"`
	LastUpdateDateTime time.Time  `json:"lastUpdateDateTime"`
	CreatedDateTime    time.Time  `json:"createdDateTime"`
	IncidentID         *xdrNumber `json:"incidentId"`
	LastUpdateTime     time.Time  `json:"lastUpdateTime"`
	CreatedTime        time.Time  `json:"createdTime"`
}

// UnmarshalJSONFrom reads the six names and passes over everything else
// with ReadValue, which scans a nested value in one go; the default
// unmarshaler's SkipValue walks it token by token, which was two thirds of
// the time a page took.
func (w *keysWire) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	if err := expectKind(dec, '{'); err != nil {
		return err
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		switch name.String() {
		case "id":
			err = jsonv2.UnmarshalDecode(dec, &w.ID)
		case "lastUpdateDateTime":
			err = jsonv2.UnmarshalDecode(dec, &w.LastUpdateDateTime)
		case "incidentId":
			err = jsonv2.UnmarshalDecode(dec, &w.IncidentID)
		case "lastUpdateTime":
			err = jsonv2.UnmarshalDecode(dec, &w.LastUpdateTime)
		case "createdDateTime":
			err = jsonv2.UnmarshalDecode(dec, &w.CreatedDateTime)
		case "createdTime":
			err = jsonv2.UnmarshalDecode(dec, &w.CreatedTime)
		default:
			_, err = dec.ReadValue()
		}
		if err != nil {
			return err
		}
	}
	return expectKind(dec, '}')
}

func (w *keysWire) normalize(api, tenant string, raw json.RawMessage) (*Incident, error) {
	if api == "xdr" {
		var id xdrNumber
		if w.IncidentID != nil {
			id = *w.IncidentID
		}
		return normalizeXDR(&xdrIncidentWire{IncidentID: id, LastUpdateTime: w.LastUpdateTime, CreatedTime: w.CreatedTime}, raw, tenant)
	}
	return normalizeGraph(&graphIncidentWire{ID: w.ID, LastUpdateDateTime: w.LastUpdateDateTime, CreatedDateTime: w.CreatedDateTime}, raw)
}

// DecodePage decodes one list response of an API ("graph" or "xdr") from r.
func DecodePage(api, tenant string, r io.Reader) ([]*Incident, error) {
	var out []*Incident
	_, err := pageDecoder(api, tenant, false, new(atomic.Int64))(r, func(in *Incident) { out = append(out, in) })
	return out, err
}

// pageDecoder reads one list response of an API, incident by incident,
// sizing its buffer by hint.
func pageDecoder(api, tenant string, keysOnly bool, hint *atomic.Int64) func(io.Reader, func(*Incident)) (envelope, error) {
	if keysOnly {
		return func(r io.Reader, each func(*Incident)) (envelope, error) {
			return readIncidents(r, hint, func(w *keysWire, raw json.RawMessage) (*Incident, error) { return w.normalize(api, tenant, raw) }, each)
		}
	}
	if api == "xdr" {
		return func(r io.Reader, each func(*Incident)) (envelope, error) {
			return readIncidents(r, hint, func(w *xdrIncidentWire, raw json.RawMessage) (*Incident, error) { return normalizeXDR(w, raw, tenant) }, each)
		}
	}
	return func(r io.Reader, each func(*Incident)) (envelope, error) {
		return readIncidents(r, hint, normalizeGraph, each)
	}
}
