package ticketwebhook

import (
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
)

// provider is what the receiver knows of one ticketing system, the
// deliveries of /api/ticket-webhook/{provider}: how it signs, how its body
// reads, and its part of the mapping. The names are config's
// (config.WebhookProviders: config reads each one's WEBHOOK_SECRET_<NAME>);
// what each name means is here, and only here.
type provider struct {
	// hub: X-Hub-Signature over the body with plain shared secrets, the
	// delivery's ID unsigned and the event's time in the body (Jira);
	// otherwise Standard Webhooks (whsec_ secrets, signed ID and time).
	hub bool
	// parse reads a verified body, with the event's time where the body
	// states it.
	parse   func(body []byte, m *Mapping) (*Change, time.Time, error)
	mapping func(m *Mapping) *ProviderMapping
}

var providers = map[string]provider{
	config.WebhookJira:       {hub: true, parse: ParseJira, mapping: func(m *Mapping) *ProviderMapping { return &m.Jira }},
	config.WebhookServiceNow: {parse: noTime(ParseServiceNow), mapping: func(m *Mapping) *ProviderMapping { return &m.ServiceNow }},
	config.WebhookGeneric:    {parse: noTime(ParseGeneric), mapping: func(m *Mapping) *ProviderMapping { return &m.Generic }},
}

func noTime(parse func([]byte, *Mapping) (*Change, error)) func([]byte, *Mapping) (*Change, time.Time, error) {
	return func(b []byte, m *Mapping) (*Change, time.Time, error) {
		ch, err := parse(b, m)
		return ch, time.Time{}, err
	}
}

// providerList is the providers' names as a sentence's list, prefix
// before each: "jira, servicenow or generic".
func providerList(prefix string) string {
	names := make([]string, len(config.WebhookProviders))
	for i, p := range config.WebhookProviders {
		names[i] = prefix + p
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
