package ticketwebhook_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
)

// The payload parsers read bodies from outside (after the signature check,
// but a sender can sign anything). Whatever the body: no panic, either a
// *PayloadError or a change whose incident ID, if any, is a positive
// integer and whose values are in Defender's vocabulary.
func checkChange(t *testing.T, c *ticketwebhook.Change, err error) {
	if err != nil {
		if !ticketwebhook.IsPayloadError(err) {
			t.Fatalf("error of another kind: %T %v", err, err)
		}
		return
	}
	if c == nil {
		t.Fatal("nil change without error")
	}
	if id := c.IncidentID; id != "" && (len(id) > 19 || strings.Trim(id, "0123456789") != "" || id[0] == '0') {
		t.Fatalf("incident ID %q", id)
	}
	in := func(p *string, set ...string) {
		if p == nil {
			return
		}
		for _, s := range set {
			if *p == s {
				return
			}
		}
		t.Fatalf("value %q outside %v", *p, set)
	}
	in(c.Status, "active", "inProgress", "resolved")
	in(c.Classification, "truePositive", "falsePositive", "informationalExpectedActivity")
	if c.Determination != nil && c.Classification == nil {
		t.Fatal("a determination without a classification")
	}
	if c.Comment != nil && (strings.TrimSpace(c.Comment.Text) == "" || strings.Contains(c.Comment.Text, "[Jira ")) {
		t.Fatalf("comment %q", c.Comment.Text)
	}
}

func seed(f *testing.F, names ...string) {
	for _, n := range names {
		f.Add(fixture(f, n))
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[`))
}

func FuzzParseJira(f *testing.F) {
	seed(f, "jira-issue-updated-done.json", "jira-issue-updated-assignee.json", "jira-issue-created.json", "jira-comment-created.json", "jira-comment-created-echo-adf.json")
	m := builtin(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		c, _, err := ticketwebhook.ParseJira(body, m)
		checkChange(t, c, err)
		if err == nil && c.Ignored == "" && c.Comment == nil && c.Status == nil && c.Classification == nil && c.AssignedTo == nil {
			t.Fatal("a change that asks nothing is not marked ignored")
		}
	})
}

func FuzzParseServiceNow(f *testing.F) {
	seed(f, "servicenow-closed.json")
	m := builtin(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ticketwebhook.ParseServiceNow(body, m)
		checkChange(t, c, err)
	})
}

func FuzzParseGeneric(f *testing.F) {
	seed(f, "generic-resolved.json")
	m := builtin(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ticketwebhook.ParseGeneric(body, m)
		checkChange(t, c, err)
		if err == nil && c.Ignored == "" && (c.Ticket == "" || !utf8.ValidString(c.Ticket) && len(c.Ticket) > 128) {
			t.Fatalf("ticket %q", c.Ticket)
		}
	})
}
