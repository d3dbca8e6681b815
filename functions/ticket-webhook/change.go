package ticketwebhook

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Change is what one delivery asks of one Defender incident, already in
// Defender's vocabulary. Nil fields are left alone.
type Change struct {
	Ticket     string // ABC-123, SIR0010042, or the generic sender's reference
	Event      string
	Tenant     string // empty: the provider's tenant
	IncidentID string // empty: the ticket's remembered link, if any
	// Linkable: IncidentID was read from the ticket itself, so the link
	// ticket → incident may be remembered for events that lack it (Jira
	// comment events carry no labels).
	Linkable       bool
	Status         *string
	Classification *string
	Determination  *string
	AssignedTo     *string
	Comment        *Comment
	// Ignored says why this delivery asks nothing.
	Ignored string
	// Notes are values that had no mapping, reported to the sender.
	Notes []string
}

// Comment is a ticket comment to copy to the incident.
type Comment struct {
	ID     string
	Author string
	Text   string
}

// PayloadError is a delivery whose body cannot be understood (answer 400).
type PayloadError struct{ Msg string }

func (e *PayloadError) Error() string { return "payload: " + e.Msg }

func payloadErr(format string, a ...any) error { return &PayloadError{Msg: fmt.Sprintf(format, a...)} }

// IsPayloadError reports whether err is a *PayloadError.
func IsPayloadError(err error) bool {
	var p *PayloadError
	return errors.As(err, &p)
}

var incidentIDRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[1-9][0-9]{0,18}$`) })

// incidentID checks an incident ID read from a ticket: Defender's are
// positive integers (Graph sends them as strings, XDR as numbers).
func incidentID(v string, where string) (string, error) {
	if !incidentIDRe().MatchString(v) {
		return "", payloadErr("%s holds %q, which is not a Defender incident ID (a positive integer)", where, truncate(v, 40))
	}
	if _, err := strconv.ParseInt(v, 10, 64); err != nil {
		return "", payloadErr("%s holds %q, which is out of range for an incident ID", where, truncate(v, 40))
	}
	return v, nil
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

func ptr(s string) *string { return &s }

// classify sets the classification and determination a resolution maps to.
func (c *Change) classify(p *ProviderMapping, resolution string) {
	if resolution == "" {
		return
	}
	cl, ok := p.Resolution[lower(resolution)]
	switch {
	case !ok:
		c.Notes = append(c.Notes, fmt.Sprintf("resolution %q has no mapping", resolution))
	case cl.Classification != "":
		c.Classification = ptr(cl.Classification)
		if cl.Determination != "" {
			c.Determination = ptr(cl.Determination)
		}
	}
}

// status sets the Defender status a ticket status (or category) maps to.
func (c *Change) status(p *ProviderMapping, name, category string) {
	if name == "" && category == "" {
		return
	}
	if v, ok := p.Status[lower(name)]; ok && name != "" {
		if v != "" {
			c.Status = ptr(v)
		}
		return
	}
	if v, ok := p.StatusCategory[lower(category)]; ok && category != "" {
		if v != "" {
			c.Status = ptr(v)
		}
		return
	}
	c.Notes = append(c.Notes, fmt.Sprintf("status %q has no mapping", name))
}

func lower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
