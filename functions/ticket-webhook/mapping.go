package ticketwebhook

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/defender"
)

// defaultMapping is the built-in mapping; docs/ticket-webhook.md explains it.
//
//go:embed mapping.json
var defaultMapping []byte

// Mapping says how tickets translate to Defender incidents, per provider.
type Mapping struct {
	// IgnoreMarkers: a ticket comment containing one of these (or any
	// provider's comment marker) came from Defender and is never sent back.
	IgnoreMarkers []string        `json:"ignoreMarkers"`
	Jira          ProviderMapping `json:"jira"`
	ServiceNow    ProviderMapping `json:"servicenow"`
	Generic       ProviderMapping `json:"generic"`
}

// ProviderMapping is the mapping of one ticketing system. Keys of the maps
// match case-insensitively; a value of "" means "do not synchronise".
type ProviderMapping struct {
	// Tenant is the Defender tenant of this provider's incidents (empty: the
	// first of DEFENDER_TENANT_ID).
	Tenant string `json:"tenant"`
	// IncidentLabelPrefix finds the incident ID in a Jira label: defender-1001.
	IncidentLabelPrefix string `json:"incidentLabelPrefix,omitempty"`
	// IncidentField is a Jira custom field (customfield_10050) or a ServiceNow
	// payload field (correlation_id; a dotted path reaches into objects).
	IncidentField string `json:"incidentField,omitempty"`
	// IncidentPattern is a regular expression on the Jira summary whose one
	// group is the incident ID.
	IncidentPattern string `json:"incidentPattern,omitempty"`
	// Status maps the ticket status name to a Defender status.
	Status folded[string] `json:"status,omitempty"`
	// StatusCategory maps a Jira status category (new, indeterminate, done)
	// when the status name is not in Status.
	StatusCategory folded[string] `json:"statusCategory,omitempty"`
	// Resolution maps a Jira resolution or ServiceNow close code.
	Resolution folded[Classification] `json:"resolution,omitempty"`
	// Assignees maps a ticket user (account ID, e-mail or display name) to
	// the Defender assignedTo value (a UPN). Unmapped users with a visible
	// e-mail address are assigned by that address.
	Assignees folded[string] `json:"assignees,omitempty"`
	// CommentMarker prefixes every comment copied to Defender; {ticket} is
	// replaced by the ticket key.
	CommentMarker string `json:"commentMarker"`
	// IgnoreAuthors are ticket users whose changes are never applied (the
	// account of a Defender→ticket synchronisation, for example).
	IgnoreAuthors []string `json:"ignoreAuthors,omitempty"`

	pattern *regexp.Regexp
}

// folded is a map whose keys match case-insensitively. Decoding adds to
// the map (a mapping file adds to the built-in one), so a file's "done"
// replaces the built-in "Done".
type folded[V any] map[string]V

func (f *folded[V]) UnmarshalJSON(b []byte) error {
	var m map[string]V
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if *f == nil {
		*f = folded[V]{}
	}
	for k, v := range m {
		(*f)[lower(k)] = v
	}
	return nil
}

// Classification is what a resolution means in Defender.
type Classification struct {
	Classification string `json:"classification"`
	Determination  string `json:"determination,omitempty"`
}

// LoadMapping reads a mapping file over the built-in mapping: maps gain or
// replace entries, other fields are replaced. An empty path is the built-in
// mapping alone.
func LoadMapping(path string) (*Mapping, error) {
	if path == "" {
		return ParseMapping(nil, "")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("WEBHOOK_MAPPING_FILE: %w", err)
	}
	return ParseMapping(b, "WEBHOOK_MAPPING_FILE "+path)
}

// ParseMapping reads a mapping's JSON over the built-in mapping, as
// LoadMapping does; source names where it came from in errors. Nil is the
// built-in mapping alone.
func ParseMapping(b []byte, source string) (*Mapping, error) {
	m := &Mapping{}
	if err := decodeStrict(defaultMapping, m); err != nil {
		return nil, fmt.Errorf("built-in mapping: %w", err)
	}
	if b != nil {
		if err := decodeStrict(b, m); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	if err := m.check(); err != nil {
		if source != "" {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		return nil, err
	}
	return m, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// settable are the statuses a client may set.
var settable = []string{"active", "inProgress", "resolved"}

func (m *Mapping) check() error {
	var problems []string
	for _, name := range config.WebhookProviders {
		p := providers[name].mapping(m)
		bad := func(format string, a ...any) { problems = append(problems, name+": "+fmt.Sprintf(format, a...)) }
		for k, v := range p.Status {
			if v != "" {
				if p.Status[k] = defender.Normalize(v, defender.Statuses); !slices.Contains(settable, p.Status[k]) {
					bad("status %q maps to %q: use active, inProgress or resolved", k, v)
				}
			}
		}
		for k, v := range p.StatusCategory {
			if v != "" {
				if p.StatusCategory[k] = defender.Normalize(v, defender.Statuses); !slices.Contains(settable, p.StatusCategory[k]) {
					bad("status category %q maps to %q: use active, inProgress or resolved", k, v)
				}
			}
		}
		for k, v := range p.Resolution {
			if v.Classification != "" {
				if v.Classification = defender.Normalize(v.Classification, defender.Classifications); !defender.Known(v.Classification, defender.Classifications) || v.Classification == "unknown" {
					bad("resolution %q: classification %q is not truePositive, falsePositive or informationalExpectedActivity", k, v.Classification)
				}
			}
			if v.Determination != "" {
				if v.Determination = defender.Normalize(v.Determination, defender.Determinations); !defender.Known(v.Determination, defender.Determinations) {
					bad("resolution %q: %q is not a Defender determination", k, v.Determination)
				}
				if v.Classification == "" {
					bad("resolution %q: a determination needs a classification", k)
				}
			}
			p.Resolution[k] = v
		}
		if !strings.Contains(p.CommentMarker, "{ticket}") {
			bad("commentMarker %q must contain {ticket}", p.CommentMarker)
		}
		if p.IncidentPattern != "" {
			re, err := regexp.Compile(p.IncidentPattern)
			if err != nil || re.NumSubexp() != 1 {
				bad("incidentPattern %q must be a regular expression with exactly one group", p.IncidentPattern)
			} else {
				p.pattern = re
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("mapping: %s", strings.Join(problems, "; "))
	}
	return nil
}

// marker is a provider's comment prefix for one ticket.
func (p *ProviderMapping) marker(ticket string) string {
	return strings.ReplaceAll(p.CommentMarker, "{ticket}", ticket)
}

// echo reports whether a ticket comment came from Defender or from this
// synchronisation: it carries an ignore marker or any provider's marker.
func (m *Mapping) echo(text string) bool {
	for _, s := range m.IgnoreMarkers {
		if s != "" && strings.Contains(text, s) {
			return true
		}
	}
	for _, p := range []*ProviderMapping{&m.Jira, &m.ServiceNow, &m.Generic} {
		if prefix, _, _ := strings.Cut(p.CommentMarker, "{ticket}"); prefix != "" && strings.Contains(text, prefix) {
			return true
		}
	}
	return false
}

// assignee maps ticket user identifiers, tried in order, to a Defender
// assignedTo value; the e-mail address is the fallback.
func (p *ProviderMapping) assignee(email string, ids ...string) (string, bool) {
	for _, id := range append(ids, email) {
		if v, ok := p.Assignees[strings.ToLower(id)]; ok && id != "" {
			return v, v != ""
		}
	}
	if email != "" && strings.Contains(email, "@") {
		return email, true
	}
	return "", false
}

func (p *ProviderMapping) ignoredAuthor(ids ...string) bool {
	for _, a := range p.IgnoreAuthors {
		for _, id := range ids {
			if id != "" && strings.EqualFold(a, id) {
				return true
			}
		}
	}
	return false
}
