package ticketwebhook_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func builtin(t testing.TB) *ticketwebhook.Mapping {
	t.Helper()
	m, err := ticketwebhook.LoadMapping("")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func s(v string) *string { return &v }

// flat is a Change with its pointers read, for exact comparison.
type flat struct {
	Ticket, Event, Tenant, IncidentID     string
	Linkable                              bool
	Status, Class, Det, Assigned, Comment string
	Ignored                               string
	Notes                                 []string
}

func flatten(c *ticketwebhook.Change) flat {
	get := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	f := flat{Ticket: c.Ticket, Event: c.Event, Tenant: c.Tenant, IncidentID: c.IncidentID, Linkable: c.Linkable, Status: get(c.Status),
		Class: get(c.Classification), Det: get(c.Determination), Assigned: get(c.AssignedTo), Comment: "<nil>", Ignored: c.Ignored, Notes: c.Notes}
	if c.Comment != nil {
		f.Comment = c.Comment.ID + "|" + c.Comment.Author + "|" + c.Comment.Text
	}
	return f
}

func TestParseJira(t *testing.T) {
	m := builtin(t)
	withMapping := builtin(t)
	withMapping.Jira.Assignees = map[string]string{"712020:a41e9b07-2c5d-4f83-b6e1-7d90c2f4e518": "lee@contoso.onmicrosoft.com"}
	withMapping.Jira.IgnoreAuthors = []string{"712020:a41e9b07-2c5d-4f83-b6e1-7d90c2f4e518"}
	const comment = "10501|Ana Analyst|Confirmed with the device owner: the PowerShell download was the approved inventory script. Closing as false positive."
	cases := []struct {
		name    string
		fixture string
		edit    func(string) string
		m       *ticketwebhook.Mapping
		want    flat
		err     string
	}{
		{name: "Done with resolution False positive", fixture: "jira-issue-updated-done.json", m: m,
			want: flat{Ticket: "SOC-17", Event: "jira:issue_updated", IncidentID: "1001", Linkable: true, Status: "resolved", Class: "falsePositive", Det: "clean",
				Assigned: "<nil>", Comment: "<nil>"}},
		{name: "assignee with a visible e-mail address", fixture: "jira-issue-updated-assignee.json", m: m,
			want: flat{Ticket: "SOC-17", Event: "jira:issue_updated", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "lee.lead@contoso.com", Comment: "<nil>"}},
		{name: "assignee without e-mail and without mapping", fixture: "jira-issue-updated-assignee.json", m: m,
			edit: func(b string) string { return strings.Replace(b, `"lee.lead@contoso.com"`, "null", -1) },
			want: flat{Ticket: "SOC-17", Event: "jira:issue_updated", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "<nil>", Ignored: "no synchronised field changed", Notes: []string{"assignee Lee Lead has no mapping and no visible e-mail address"}}},
		{name: "assignee mapped by account ID", fixture: "jira-issue-updated-assignee.json", m: withMapping,
			edit: func(b string) string { return strings.Replace(b, `"lee.lead@contoso.com"`, "null", -1) },
			want: flat{Ticket: "SOC-17", Event: "jira:issue_updated", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "lee@contoso.onmicrosoft.com", Comment: "<nil>"}},
		{name: "unmapped status and resolution are reported", fixture: "jira-issue-updated-done.json", m: m,
			edit: func(b string) string {
				b = strings.Replace(b, `"name": "Done",`, `"name": "Parked",`, 1)
				b = strings.Replace(b, `"key": "done",`, `"key": "parked",`, 1)
				return strings.Replace(b, `"name": "False positive"`, `"name": "Won't Do"`, 1)
			},
			want: flat{Ticket: "SOC-17", Event: "jira:issue_updated", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "<nil>", Ignored: "no synchronised field changed", Notes: []string{`status "Parked" has no mapping`, `resolution "Won't Do" has no mapping`}}},
		{name: "an ignored author changes nothing", fixture: "jira-issue-updated-done.json", m: withMapping,
			edit: func(b string) string {
				return strings.Replace(b, "5f0c3a2e-8d1b-4c7a-9e62-1b7d4f0a9c33", "a41e9b07-2c5d-4f83-b6e1-7d90c2f4e518", -1)
			},
			want: flat{Ticket: "SOC-17", Event: "jira:issue_updated", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "<nil>", Ignored: "the change was made by an ignored author"}},
		{name: "incident from the custom field", fixture: "jira-issue-updated-done.json", m: func() *ticketwebhook.Mapping {
			x := builtin(t)
			x.Jira.IncidentLabelPrefix, x.Jira.IncidentField = "", "customfield_10050"
			return x
		}(), edit: func(b string) string {
			return strings.Replace(b, `"customfield_10050": "1001"`, `"customfield_10050": 1002`, 1)
		},
			want: flat{Ticket: "SOC-17", Event: "jira:issue_updated", IncidentID: "1002", Linkable: true, Status: "resolved", Class: "falsePositive", Det: "clean",
				Assigned: "<nil>", Comment: "<nil>"}},
		{name: "issue created only links", fixture: "jira-issue-created.json", m: m,
			want: flat{Ticket: "SOC-17", Event: "jira:issue_created", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "<nil>", Ignored: "a new issue only links the ticket; later updates are applied"}},
		{name: "comment on a trimmed issue: incident from the summary", fixture: "jira-comment-created.json", m: m,
			want: flat{Ticket: "SOC-17", Event: "comment_created", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: comment}},
		{name: "comment without any incident reference", fixture: "jira-comment-created.json", m: m,
			edit: func(b string) string { return strings.Replace(b, "[Defender 1001] ", "", 1) },
			want: flat{Ticket: "SOC-17", Event: "comment_created", Status: "<nil>", Class: "<nil>", Det: "<nil>", Assigned: "<nil>", Comment: comment}},
		{name: "our own marker in an ADF comment is not sent back", fixture: "jira-comment-created-echo-adf.json", m: m,
			want: flat{Ticket: "SOC-17", Event: "comment_created", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "<nil>", Ignored: "the comment carries a synchronisation marker (it came from Defender)"}},
		{name: "ADF comment text", fixture: "jira-comment-created-echo-adf.json", m: m,
			edit: func(b string) string { return strings.Replace(b, "[Jira SOC-17] Ana Analyst: ", "", 1) },
			want: flat{Ticket: "SOC-17", Event: "comment_created", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "10502|Ana Analyst|Confirmed with the device owner."}},
		{name: "Defender marker", fixture: "jira-comment-created.json", m: m,
			edit: func(b string) string {
				return strings.Replace(b, `"body": "Confirmed`, `"body": "[Defender] Confirmed`, 1)
			},
			want: flat{Ticket: "SOC-17", Event: "comment_created", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "<nil>", Ignored: "the comment carries a synchronisation marker (it came from Defender)"}},
		{name: "other events are ignored", fixture: "jira-comment-created.json", m: m,
			edit: func(b string) string { return strings.Replace(b, `"comment_created"`, `"comment_updated"`, 1) },
			want: flat{Ticket: "SOC-17", Event: "comment_updated", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>",
				Assigned: "<nil>", Comment: "<nil>", Ignored: "event comment_updated is not synchronised"}},
		{name: "two incident labels", fixture: "jira-issue-updated-done.json", m: m,
			edit: func(b string) string { return strings.Replace(b, `"xdr"`, `"defender-1002"`, 1) }, err: "names several incidents (1001, 1002)"},
		{name: "label that is not an ID", fixture: "jira-issue-updated-done.json", m: m,
			edit: func(b string) string { return strings.Replace(b, `"defender-1001"`, `"defender-x1"`, 1) }, err: `label defender-x1 holds "x1", which is not a Defender incident ID`},
		{name: "no timestamp", fixture: "jira-issue-updated-done.json", m: m,
			edit: func(b string) string { return strings.Replace(b, `"timestamp": 1764165600000,`, "", 1) }, err: "webhookEvent and timestamp are required"},
		{name: "bad issue key", fixture: "jira-issue-updated-done.json", m: m,
			edit: func(b string) string { return strings.Replace(b, `"key": "SOC-17"`, `"key": "../../etc"`, 1) }, err: "issue.key is missing"},
		{name: "not JSON", fixture: "jira-issue-updated-done.json", m: m, edit: func(b string) string { return b[:100] }, err: "not a Jira webhook body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := string(fixture(t, c.fixture))
			if c.edit != nil {
				body = c.edit(body)
			}
			ch, at, err := ticketwebhook.ParseJira([]byte(body), c.m)
			if c.err != "" {
				if err == nil || !ticketwebhook.IsPayloadError(err) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want a payload error with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !at.Equal(time.UnixMilli(1764165600000)) {
				t.Fatalf("at = %s", at)
			}
			if got := flatten(ch); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParseServiceNow(t *testing.T) {
	m := builtin(t)
	cases := []parseCase{
		{name: "closed as false positive with a comment",
			want: flat{Ticket: "SIR0010042", Event: "update", IncidentID: "1001", Linkable: true, Status: "resolved", Class: "falsePositive", Det: "clean", Assigned: "<nil>",
				Comment: "4f1c2a9e1b2d0210a1c3e4f5a6b7c8d9:2025-11-26 13:59:58|Ana Analyst|Approved inventory script; closing as false positive."}},
		{name: "assignment", edit: func(b string) string { return strings.Replace(b, `"changed": [`, `"changed": ["assigned_to", `, 1) },
			want: flat{Ticket: "SIR0010042", Event: "update", IncidentID: "1001", Linkable: true, Status: "resolved", Class: "falsePositive", Det: "clean", Assigned: "ana.analyst@contoso.com",
				Comment: "4f1c2a9e1b2d0210a1c3e4f5a6b7c8d9:2025-11-26 13:59:58|Ana Analyst|Approved inventory script; closing as false positive."}},
		{name: "only a work note that came from Defender",
			edit: func(b string) string {
				b = strings.Replace(b, `"changed": [
    "state",
    "close_code",
    "comments"
  ]`, `"changed": ["work_notes"]`, 1)
				return strings.Replace(b, `"text": "Approved`, `"text": "Comment from Defender: Approved`, 1)
			},
			want: flat{Ticket: "SIR0010042", Event: "update", IncidentID: "1001", Linkable: true, Status: "<nil>", Class: "<nil>", Det: "<nil>", Assigned: "<nil>", Comment: "<nil>",
				Ignored: "no synchronised field changed", Notes: []string{"the comment carries a synchronisation marker (it came from Defender)"}}},
		{name: "incident ID not a number", edit: func(b string) string {
			return strings.Replace(b, `"correlation_id": "1001"`, `"correlation_id": "INC-1"`, 1)
		},
			err: `correlation_id holds "INC-1"`},
		{name: "no number", edit: func(b string) string { return strings.Replace(b, `"number": "SIR0010042",`, "", 1) }, err: "event and number are required"},
		{name: "array body", edit: func(string) string { return "[]" }, err: "not the ServiceNow business rule's payload"},
	}
	runCases(t, "servicenow-closed.json", cases, func(b []byte) (*ticketwebhook.Change, error) { return ticketwebhook.ParseServiceNow(b, m) })
}

func TestParseGeneric(t *testing.T) {
	m := builtin(t)
	cases := []parseCase{
		{name: "resolved", want: flat{Ticket: "OPS-7", Event: "ticket.updated", IncidentID: "1001", Status: "resolved", Class: "falsePositive", Det: "clean",
			Assigned: "ana.analyst@contoso.com", Comment: "c-9|Ana Analyst|Closed in the ops tracker: approved script."}},
		{name: "XDR spellings are accepted", edit: func(b string) string {
			return strings.NewReplacer(`"resolved"`, `"Resolved"`, `"falsePositive"`, `"FalsePositive"`, `"clean"`, `"NotMalicious"`).Replace(b)
		}, want: flat{Ticket: "OPS-7", Event: "ticket.updated", IncidentID: "1001", Status: "resolved", Class: "falsePositive", Det: "clean",
			Assigned: "ana.analyst@contoso.com", Comment: "c-9|Ana Analyst|Closed in the ops tracker: approved script."}},
		{name: "another type is ignored", edit: func(b string) string { return strings.Replace(b, "ticket.updated", "ticket.deleted", 1) },
			want: flat{Event: "ticket.deleted", Status: "<nil>", Class: "<nil>", Det: "<nil>", Assigned: "<nil>", Comment: "<nil>", Ignored: "event type ticket.deleted is not applied (only ticket.updated)"}},
		{name: "unknown status", edit: func(b string) string { return strings.Replace(b, `"resolved"`, `"closed"`, 1) }, err: `data.status "closed" is not a value Defender accepts`},
		{name: "redirected cannot be set", edit: func(b string) string { return strings.Replace(b, `"resolved"`, `"redirected"`, 1) }, err: `data.status "redirected"`},
		{name: "unknown classification", edit: func(b string) string { return strings.Replace(b, `"falsePositive"`, `"maybe"`, 1) }, err: `data.classification "maybe"`},
		{name: "determination alone", edit: func(b string) string { return strings.Replace(b, `"classification": "falsePositive",`, "", 1) }, err: "needs data.classification"},
		{name: "a typo in a field name", edit: func(b string) string { return strings.Replace(b, `"assignedTo"`, `"assignee"`, 1) }, err: `unknown field "assignee"`},
		{name: "no incident", edit: func(b string) string { return strings.Replace(b, `"incidentId": "1001",`, "", 1) }, err: "data.incidentId holds \"\""},
		{name: "no ticket", edit: func(b string) string { return strings.Replace(b, `"ticket": "OPS-7",`, "", 1) }, err: "data.ticket"},
	}
	runCases(t, "generic-resolved.json", cases, func(b []byte) (*ticketwebhook.Change, error) { return ticketwebhook.ParseGeneric(b, m) })
}

type parseCase struct {
	name string
	edit func(string) string
	want flat
	err  string
}

// runCases parses a fixture, edited by each case, and checks the exact change or error.
func runCases(t *testing.T, name string, cases []parseCase, parse func([]byte) (*ticketwebhook.Change, error)) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := string(fixture(t, name))
			if c.edit != nil {
				body = c.edit(body)
			}
			ch, err := parse([]byte(body))
			if c.err != "" {
				if err == nil || !ticketwebhook.IsPayloadError(err) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want a payload error with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := flatten(ch); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}
