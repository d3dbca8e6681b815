package ticketwebhook

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Jira Cloud webhook payload, the parts that matter. Comment events carry
// a trimmed issue (no labels), and a comment body is wiki text or, from
// some senders, an Atlassian Document Format object: both are read.
type jiraPayload struct {
	Timestamp    int64     `json:"timestamp"`
	WebhookEvent string    `json:"webhookEvent"`
	User         *jiraUser `json:"user"`
	Issue        *struct {
		ID     string                     `json:"id"`
		Key    string                     `json:"key"`
		Fields map[string]json.RawMessage `json:"fields"`
	} `json:"issue"`
	Changelog *struct {
		Items []struct {
			Field   string `json:"field"`
			FieldID string `json:"fieldId"`
		} `json:"items"`
	} `json:"changelog"`
	Comment *struct {
		ID     string          `json:"id"`
		Author *jiraUser       `json:"author"`
		Body   json.RawMessage `json:"body"`
	} `json:"comment"`
}

type jiraUser struct {
	AccountID    string `json:"accountId"`
	Name         string `json:"name"` // Jira Data Center
	EmailAddress string `json:"emailAddress"`
	DisplayName  string `json:"displayName"`
}

type jiraNamed struct {
	Name           string `json:"name"`
	StatusCategory *struct {
		Key string `json:"key"`
	} `json:"statusCategory"`
}

// ParseJira reads a Jira Cloud webhook body. It returns the change and the
// time the payload says the event happened.
func ParseJira(body []byte, m *Mapping) (*Change, time.Time, error) {
	var p jiraPayload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, time.Time{}, payloadErr("not a Jira webhook body: %v", err)
	}
	if p.WebhookEvent == "" || p.Timestamp <= 0 {
		return nil, time.Time{}, payloadErr("not a Jira webhook body: webhookEvent and timestamp are required")
	}
	at := time.UnixMilli(p.Timestamp)
	if p.Issue == nil || !validKey(p.Issue.Key) {
		return nil, at, payloadErr("%s: issue.key is missing or not an issue key", p.WebhookEvent)
	}
	jm := &m.Jira
	c := &Change{Ticket: p.Issue.Key, Event: p.WebhookEvent}
	f := p.Issue.Fields

	id, err := jiraIncident(f, jm)
	if err != nil {
		return nil, at, err
	}
	c.IncidentID, c.Linkable = id, id != ""

	switch p.WebhookEvent {
	case "jira:issue_created":
		c.Ignored = "a new issue only links the ticket; later updates are applied"
	case "jira:issue_updated":
		jiraUpdate(c, &p, jm)
	case "comment_created":
		if err := jiraComment(c, &p, m); err != nil {
			return nil, at, err
		}
	default:
		c.Ignored = "event " + p.WebhookEvent + " is not synchronised"
	}
	return c, at, nil
}

// jiraUpdate reads the synchronised fields an issue update changed: all of
// them when there is no changelog.
func jiraUpdate(c *Change, p *jiraPayload, jm *ProviderMapping) {
	if p.User != nil && jm.ignoredAuthor(p.User.AccountID, p.User.Name, p.User.EmailAddress) {
		c.Ignored = "the change was made by an ignored author"
		return
	}
	f := p.Issue.Fields
	changed := func(field string) bool {
		if p.Changelog == nil {
			return true // no changelog: take the issue as it is
		}
		for _, it := range p.Changelog.Items {
			if strings.EqualFold(it.FieldID, field) || strings.EqualFold(it.Field, field) {
				return true
			}
		}
		return false
	}
	if changed("status") {
		var st jiraNamed
		if raw, ok := f["status"]; ok && json.Unmarshal(raw, &st) == nil {
			cat := ""
			if st.StatusCategory != nil {
				cat = st.StatusCategory.Key
			}
			c.status(jm, st.Name, cat)
		}
	}
	if changed("resolution") {
		var res *jiraNamed
		if raw, ok := f["resolution"]; ok && json.Unmarshal(raw, &res) == nil && res != nil {
			c.classify(jm, res.Name)
		}
	}
	if changed("assignee") {
		var u *jiraUser
		if raw, ok := f["assignee"]; ok && json.Unmarshal(raw, &u) == nil && u != nil {
			if v, ok := jm.assignee(u.EmailAddress, u.AccountID, u.Name, u.DisplayName); ok {
				c.AssignedTo = ptr(v)
			} else {
				c.Notes = append(c.Notes, "assignee "+truncate(u.DisplayName, 60)+" has no mapping and no visible e-mail address")
			}
		}
	}
	if c.Status == nil && c.Classification == nil && c.AssignedTo == nil {
		c.Ignored = "no synchronised field changed"
	}
}

// jiraComment reads a new comment, unless it is empty, by an ignored
// author, or an echo of Defender's own.
func jiraComment(c *Change, p *jiraPayload, m *Mapping) error {
	if p.Comment == nil {
		return payloadErr("comment_created without a comment")
	}
	author := ""
	if a := p.Comment.Author; a != nil {
		author = a.DisplayName
		if m.Jira.ignoredAuthor(a.AccountID, a.Name, a.EmailAddress) {
			c.Ignored = "the comment was written by an ignored author"
			return nil
		}
	}
	text, err := jiraText(p.Comment.Body)
	if err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(text) == "":
		c.Ignored = "the comment is empty"
	case m.echo(text):
		c.Ignored = "the comment carries a synchronisation marker (it came from Defender)"
	default:
		c.Comment = &Comment{ID: p.Comment.ID, Author: author, Text: text}
	}
	return nil
}

// validKey accepts Jira issue keys (PROJECT-123) without being strict about
// the project part, which sites may configure.
func validKey(k string) bool {
	proj, num, ok := strings.Cut(k, "-")
	if !ok || proj == "" || len(k) > 64 {
		return false
	}
	if _, err := strconv.ParseUint(num, 10, 64); err != nil {
		return false
	}
	for _, r := range proj {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// jiraIncident finds the incident ID in the issue: a label with the prefix,
// the custom field, or the summary pattern, in that order. None is "".
func jiraIncident(f map[string]json.RawMessage, jm *ProviderMapping) (string, error) {
	var found []string
	if jm.IncidentLabelPrefix != "" {
		var labels []string
		if raw, ok := f["labels"]; ok {
			if err := json.Unmarshal(raw, &labels); err != nil {
				return "", payloadErr("issue.fields.labels is not a list of strings")
			}
		}
		for _, l := range labels {
			if v, ok := cutPrefixFold(l, jm.IncidentLabelPrefix); ok {
				id, err := incidentID(v, "label "+truncate(l, 60))
				if err != nil {
					return "", err
				}
				if !slices.Contains(found, id) {
					found = append(found, id)
				}
			}
		}
	}
	if len(found) == 0 && jm.IncidentField != "" {
		if raw, ok := f[jm.IncidentField]; ok {
			if v := scalar(raw); v != "" {
				id, err := incidentID(v, "issue.fields."+jm.IncidentField)
				if err != nil {
					return "", err
				}
				found = append(found, id)
			}
		}
	}
	if len(found) == 0 && jm.pattern != nil {
		var summary string
		if raw, ok := f["summary"]; ok {
			json.Unmarshal(raw, &summary)
		}
		if mm := jm.pattern.FindStringSubmatch(summary); mm != nil {
			id, err := incidentID(mm[1], "the summary")
			if err != nil {
				return "", err
			}
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", payloadErr("the issue names several incidents (%s): keep one %s label", strings.Join(found, ", "), jm.IncidentLabelPrefix)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// scalar reads a JSON string, number, or an option object {"value": …}.
func scalar(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimSpace(s)
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	var o struct {
		Value json.RawMessage `json:"value"`
	}
	if json.Unmarshal(raw, &o) == nil && len(o.Value) > 0 && o.Value[0] != '{' {
		return scalar(o.Value)
	}
	return ""
}

// jiraText is a comment body as text: a string, or the text of an ADF document.
func jiraText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var doc adfNode
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Type != "doc" {
		return "", payloadErr("comment.body is neither text nor an Atlassian Document Format document")
	}
	var b strings.Builder
	doc.text(&b, 0)
	return strings.TrimSpace(b.String()), nil
}

type adfNode struct {
	Type    string    `json:"type"`
	Text    string    `json:"text"`
	Content []adfNode `json:"content"`
	Attrs   struct {
		Text string `json:"text"` // mentions
	} `json:"attrs"`
}

// text writes the document's text; blocks end with a new line. Depth is
// bounded because the body comes from outside.
func (n *adfNode) text(b *strings.Builder, depth int) {
	if depth > 32 {
		return
	}
	switch n.Type {
	case "text":
		b.WriteString(n.Text)
	case "mention", "emoji":
		b.WriteString(n.Attrs.Text)
	case "hardBreak":
		b.WriteByte('\n')
	}
	for i := range n.Content {
		n.Content[i].text(b, depth+1)
	}
	switch n.Type {
	case "paragraph", "heading", "codeBlock", "listItem", "blockquote":
		b.WriteByte('\n')
	}
}
