package defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// readPage streams a list response: the value array is read one element at
// a time, so memory is O(page), whatever the listing's size.
func readPage(body io.Reader, each func(json.RawMessage) error) (next string, err error) {
	return readPageInto(json.NewDecoder(body), func(dec *json.Decoder) error {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		return each(raw)
	})
}

// recorder keeps the bytes of the current page, so elements can be sliced
// out by the decoder's offsets.
type recorder struct {
	r    io.Reader
	buf  []byte
	base int64 // stream offset of buf[0]
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

// slice returns the stream bytes [from, to) and forgets what precedes them.
func (r *recorder) slice(from, to int64) []byte {
	b := bytes.TrimLeft(r.buf[from-r.base:to-r.base], " \t\r\n,")
	out := append([]byte(nil), b...)
	// Drop consumed bytes, keeping what the decoder has buffered ahead.
	keep := r.buf[to-r.base:]
	r.buf = append(r.buf[:0], keep...)
	r.base = to
	return out
}

// readPageInto walks a list response's envelope and hands each element of
// "value" to element, which decodes it from dec.
func readPageInto(dec *json.Decoder, element func(*json.Decoder) error) (next string, err error) {
	if err := expectDelim(dec, '{'); err != nil {
		return "", err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", err
		}
		switch key {
		case "value":
			if err := expectDelim(dec, '['); err != nil {
				return "", err
			}
			for dec.More() {
				if err := element(dec); err != nil {
					return "", err
				}
			}
			if err := expectDelim(dec, ']'); err != nil {
				return "", err
			}
		case "@odata.nextLink":
			if err := dec.Decode(&next); err != nil {
				return "", err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "", err
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return "", err
	}
	return next, nil
}

// readIncidents decodes each element straight into its wire struct (one
// scan after the decoder's own) and cuts its raw bytes from a recording of
// the page by the decoder's offsets, instead of a third scan.
func readIncidents[W any](body io.Reader, normalize func(*W, json.RawMessage) (*Incident, error), each func(*Incident)) (string, error) {
	rec := &recorder{r: body}
	return readPageInto(json.NewDecoder(rec), func(dec *json.Decoder) error {
		start := dec.InputOffset()
		var w W
		if err := dec.Decode(&w); err != nil {
			return err
		}
		in, err := normalize(&w, rec.slice(start, dec.InputOffset()))
		if err != nil {
			return err
		}
		each(in)
		return nil
	})
}

func expectDelim(dec *json.Decoder, d json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if t != d {
		return fmt.Errorf("unexpected JSON: got %v, want %v", t, d)
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
	if err := json.Unmarshal(raw, &w); err != nil {
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
	IncidentID         json.Number    `json:"incidentId"`
	RedirectIncidentID *json.Number   `json:"redirectIncidentId"`
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
	if err := json.Unmarshal(raw, &w); err != nil {
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

// DecodePage decodes one list response of an API ("graph" or "xdr") from r.
func DecodePage(api, tenant string, r io.Reader) ([]*Incident, error) {
	var out []*Incident
	_, err := pageDecoder(api, tenant)(r, func(in *Incident) { out = append(out, in) })
	return out, err
}

// pageDecoder reads one list response of an API, incident by incident.
func pageDecoder(api, tenant string) func(io.Reader, func(*Incident)) (string, error) {
	if api == "xdr" {
		return func(r io.Reader, each func(*Incident)) (string, error) {
			return readIncidents(r, func(w *xdrIncidentWire, raw json.RawMessage) (*Incident, error) { return normalizeXDR(w, raw, tenant) }, each)
		}
	}
	return func(r io.Reader, each func(*Incident)) (string, error) {
		return readIncidents(r, normalizeGraph, each)
	}
}
