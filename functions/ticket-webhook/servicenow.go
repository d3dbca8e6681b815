package ticketwebhook

import (
	"encoding/json"
	"strings"
)

// serviceNowPayload is what the business rule in docs/servicenow.md sends.
type serviceNowPayload struct {
	Event      string   `json:"event"` // insert, update
	Table      string   `json:"table"`
	SysID      string   `json:"sys_id"`
	Number     string   `json:"number"`
	State      string   `json:"state"`      // display value
	CloseCode  string   `json:"close_code"` // display value
	Changed    []string `json:"changed"`
	UpdatedBy  string   `json:"updated_by"`
	AssignedTo *struct {
		UserName string `json:"user_name"`
		Email    string `json:"email"`
		Name     string `json:"name"`
	} `json:"assigned_to"`
	Comment *struct {
		ID     string `json:"id"`
		Author string `json:"author"`
		Text   string `json:"text"`
	} `json:"comment"`
}

// ParseServiceNow reads the business rule's payload.
func ParseServiceNow(body []byte, m *Mapping) (*Change, error) {
	var p serviceNowPayload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, payloadErr("not the ServiceNow business rule's payload: %v", err)
	}
	if p.Number == "" || len(p.Number) > 64 || p.Event == "" {
		return nil, payloadErr("not the ServiceNow business rule's payload: event and number are required")
	}
	sm := &m.ServiceNow
	c := &Change{Ticket: p.Number, Event: p.Event}
	if sm.IncidentField != "" {
		var doc map[string]json.RawMessage
		json.Unmarshal(body, &doc)
		if v := scalar(path(doc, sm.IncidentField)); v != "" {
			id, err := incidentID(v, sm.IncidentField)
			if err != nil {
				return nil, err
			}
			c.IncidentID, c.Linkable = id, true
		}
	}
	if sm.ignoredAuthor(p.UpdatedBy) {
		c.Ignored = "the change was made by an ignored author"
		return c, nil
	}
	changed := func(f string) bool {
		if p.Changed == nil {
			return true
		}
		for _, x := range p.Changed {
			if strings.EqualFold(x, f) {
				return true
			}
		}
		return false
	}
	if changed("state") {
		c.status(sm, p.State, "")
	}
	if changed("close_code") {
		c.classify(sm, p.CloseCode)
	}
	if changed("assigned_to") && p.AssignedTo != nil {
		if v, ok := sm.assignee(p.AssignedTo.Email, p.AssignedTo.UserName, p.AssignedTo.Name); ok {
			c.AssignedTo = ptr(v)
		} else if p.AssignedTo.UserName != "" {
			c.Notes = append(c.Notes, "assignee "+truncate(p.AssignedTo.UserName, 60)+" has no mapping and no e-mail address")
		}
	}
	if p.Comment != nil && strings.TrimSpace(p.Comment.Text) != "" {
		if m.echo(p.Comment.Text) {
			c.Notes = append(c.Notes, "the comment carries a synchronisation marker (it came from Defender)")
		} else {
			c.Comment = &Comment{ID: p.Comment.ID, Author: p.Comment.Author, Text: p.Comment.Text}
		}
	}
	if c.Status == nil && c.Classification == nil && c.AssignedTo == nil && c.Comment == nil {
		c.Ignored = "no synchronised field changed"
	}
	return c, nil
}

// path follows a dotted path through JSON objects.
func path(doc map[string]json.RawMessage, p string) json.RawMessage {
	head, rest, more := strings.Cut(p, ".")
	raw := doc[head]
	if !more || raw == nil {
		return raw
	}
	var next map[string]json.RawMessage
	if json.Unmarshal(raw, &next) != nil {
		return nil
	}
	return path(next, rest)
}
