package ticketwebhook

import (
	"context"
	"fmt"
	"strings"

	"github.com/defender-functions/defender-functions/shared/defender"
)

// maxComment is the longest comment sent to Defender (the API refuses more).
const maxComment = 30000

// redirectedError: the incident was merged into another one.
type redirectedError struct{ id, into string }

func (e *redirectedError) Error() string {
	return fmt.Sprintf("incident %s was merged into incident %s: point the ticket at %s", e.id, e.into, e.into)
}

// apply brings one incident in line with a change: it PATCHes only the
// fields that differ and adds the comment unless the incident already has
// it, so applying the same change twice changes nothing the second time.
func apply(ctx context.Context, c defender.Client, id string, ch *Change, marker string) (updated []string, comment string, err error) {
	in, err := c.Incident(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if in.RedirectID != "" && in.RedirectID != id {
		return nil, "", &redirectedError{id: id, into: in.RedirectID}
	}
	var u defender.Update
	if ch.Status != nil && in.Status != *ch.Status {
		u.Status = ch.Status
		updated = append(updated, "status")
	}
	if ch.Classification != nil && (in.Classification != *ch.Classification || ch.Determination != nil && in.Determination != *ch.Determination) {
		// Sent together: the API checks a determination against its classification.
		u.Classification = ch.Classification
		updated = append(updated, "classification")
		if ch.Determination != nil {
			u.Determination = ch.Determination
			updated = append(updated, "determination")
		}
	}
	if ch.AssignedTo != nil && !strings.EqualFold(in.AssignedTo, *ch.AssignedTo) {
		u.AssignedTo = ch.AssignedTo
		updated = append(updated, "assignedTo")
	}
	if len(updated) > 0 {
		if _, err := c.UpdateIncident(ctx, id, u); err != nil {
			return nil, "", err
		}
	}
	if ch.Comment == nil {
		return updated, "", nil
	}
	text := commentText(marker, ch.Comment)
	for _, existing := range in.Comments {
		if strings.TrimSpace(existing.Text) == text {
			return updated, "exists", nil
		}
	}
	if err := c.AddComment(ctx, id, text); err != nil {
		return updated, "", err
	}
	return updated, "added", nil
}

// commentText is the comment as Defender shows it: the marker, the author
// and the text, cut to the API's limit.
func commentText(marker string, c *Comment) string {
	head := marker + " "
	if c.Author != "" {
		head += c.Author + ": "
	}
	text := strings.TrimSpace(c.Text)
	if r := []rune(head + text); len(r) > maxComment {
		return string(r[:maxComment-1]) + "…"
	}
	return head + text
}
