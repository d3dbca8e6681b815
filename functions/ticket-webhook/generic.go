package ticketwebhook

import (
	"bytes"
	"encoding/json"
	"slices"

	"github.com/defender-functions/defender-functions/shared/defender"
)

// genericPayload follows the Standard Webhooks payload shape (type,
// timestamp, data); data speaks Defender's own vocabulary, so any ticketing
// system (or a script) can drive an incident without a mapping.
type genericPayload struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      *struct {
		Tenant         string  `json:"tenant"`
		IncidentID     string  `json:"incidentId"`
		Ticket         string  `json:"ticket"`
		Status         *string `json:"status"`
		Classification *string `json:"classification"`
		Determination  *string `json:"determination"`
		AssignedTo     *string `json:"assignedTo"`
		Comment        *struct {
			ID     string `json:"id"`
			Author string `json:"author"`
			Text   string `json:"text"`
		} `json:"comment"`
	} `json:"data"`
}

// GenericType is the event type the generic provider applies.
const GenericType = "ticket.updated"

// ParseGeneric reads a generic delivery. Unknown fields are refused: a typo
// must not be silently ignored.
func ParseGeneric(body []byte, m *Mapping) (*Change, error) {
	var p genericPayload
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, payloadErr("the body must be {\"type\": %q, \"timestamp\": …, \"data\": {incidentId, ticket, status, classification, determination, assignedTo, comment}}: %v", GenericType, err)
	}
	if p.Type != GenericType {
		return &Change{Event: p.Type, Ignored: "event type " + truncate(p.Type, 60) + " is not applied (only " + GenericType + ")"}, nil
	}
	d := p.Data
	if d == nil {
		return nil, payloadErr("data is required")
	}
	id, err := incidentID(d.IncidentID, "data.incidentId")
	if err != nil {
		return nil, err
	}
	if d.Ticket == "" || len(d.Ticket) > 128 {
		return nil, payloadErr("data.ticket (the ticket's reference, at most 128 characters) is required")
	}
	c := &Change{Ticket: d.Ticket, Event: p.Type, Tenant: d.Tenant, IncidentID: id}
	enum := func(v *string, set []string, field string, ok func(string) bool) (*string, error) {
		if v == nil {
			return nil, nil
		}
		n := defender.Normalize(*v, set)
		if !ok(n) {
			return nil, payloadErr("data.%s %q is not a value Defender accepts", field, truncate(*v, 40))
		}
		return &n, nil
	}
	if c.Status, err = enum(d.Status, defender.Statuses, "status", func(s string) bool { return slices.Contains(settable, s) }); err != nil {
		return nil, err
	}
	if c.Classification, err = enum(d.Classification, defender.Classifications, "classification", func(s string) bool {
		return defender.Known(s, defender.Classifications) && s != "unknown" && s != "unknownFutureValue"
	}); err != nil {
		return nil, err
	}
	if c.Determination, err = enum(d.Determination, defender.Determinations, "determination", func(s string) bool {
		return defender.Known(s, defender.Determinations) && s != "unknownFutureValue"
	}); err != nil {
		return nil, err
	}
	if c.Determination != nil && c.Classification == nil {
		return nil, payloadErr("data.determination needs data.classification")
	}
	if d.AssignedTo != nil {
		if len(*d.AssignedTo) > 256 {
			return nil, payloadErr("data.assignedTo is longer than 256 characters")
		}
		c.AssignedTo = d.AssignedTo
	}
	if d.Comment != nil && d.Comment.Text != "" {
		if m.echo(d.Comment.Text) {
			c.Notes = append(c.Notes, "the comment carries a synchronisation marker (it came from Defender)")
		} else {
			c.Comment = &Comment{ID: d.Comment.ID, Author: d.Comment.Author, Text: d.Comment.Text}
		}
	}
	if c.Status == nil && c.Classification == nil && c.AssignedTo == nil && c.Comment == nil {
		c.Ignored = "the delivery asks for no change"
	}
	return c, nil
}
