package ticketwebhook_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
)

func TestLoadMapping(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "mapping.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A file adds to the built-in maps and replaces scalars.
	m, err := ticketwebhook.LoadMapping(write(`{"jira": {"tenant": "fabrikam.onmicrosoft.com", "status": {"Waiting for customer": "InProgress", "done": ""},
		"resolution": {"Duplicate": {"classification": "InformationalExpectedActivity", "determination": "Other"}},
		"assignees": {"712020:A41E": "lee@contoso.onmicrosoft.com"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Jira.Tenant != "fabrikam.onmicrosoft.com" || m.Jira.Status["waiting for customer"] != "inProgress" || m.Jira.Status["done"] != "" ||
		m.Jira.Status["in progress"] != "inProgress" || m.Jira.Resolution["duplicate"].Classification != "informationalExpectedActivity" ||
		m.Jira.Resolution["false positive"].Determination != "clean" || m.Jira.Assignees["712020:a41e"] != "lee@contoso.onmicrosoft.com" ||
		m.ServiceNow.IncidentField != "correlation_id" {
		t.Fatalf("%+v", m.Jira)
	}
	for _, c := range []struct{ body, want string }{
		{`{"jira": {"status": {"Done": "closed"}}}`, `jira: status "done" maps to "closed": use active, inProgress or resolved`},
		{`{"jira": {"status": {"Done": "redirected"}}}`, `maps to "redirected"`},
		{`{"servicenow": {"resolution": {"X": {"classification": "maybe"}}}}`, `servicenow: resolution "x": classification "maybe"`},
		{`{"servicenow": {"resolution": {"X": {"determination": "malware"}}}}`, `a determination needs a classification`},
		{`{"jira": {"incidentPattern": "Defender \\d+"}}`, "exactly one group"},
		{`{"generic": {"commentMarker": "[Ticket]"}}`, "must contain {ticket}"},
		{`{"jira": {"statusMap": {}}}`, `unknown field "statusMap"`},
		{`{"jira": `, "unexpected EOF"},
	} {
		_, err := ticketwebhook.LoadMapping(write(c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "WEBHOOK_MAPPING_FILE") {
			t.Errorf("%s: err = %v, want %q", c.body, err, c.want)
		}
	}
	if _, err := ticketwebhook.LoadMapping(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "WEBHOOK_MAPPING_FILE") {
		t.Fatalf("missing file: %v", err)
	}
}
