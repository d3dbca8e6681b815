package devstack

import (
	"bytes"
	"testing"
	"time"
)

// Prerendering changes when an incident is encoded, not what is served: the
// bytes are those a later first encoding gives, every incident has them,
// and a changed incident is a new version, encoded afresh.
func TestPrerender(t *testing.T) {
	t.Parallel()
	anchor := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	pre := newStore(1, "t", "contoso.com", 200, 1000, anchor)
	lazy := newStore(1, "t", "contoso.com", 200, 1000, anchor)
	pre.prerender(formGraphPreferExpand)
	for i, in := range pre.byCreated {
		if in.enc[formGraphPreferExpand] == nil {
			t.Fatalf("incident %d was not prerendered", in.ID)
		}
		if in.enc[formXDR] != nil {
			t.Fatalf("incident %d: a form nobody asked for was rendered", in.ID)
		}
		if want := lazy.byCreated[i].render(formGraphPreferExpand); !bytes.Equal(in.enc[formGraphPreferExpand], want) {
			t.Fatalf("incident %d: prerendered %q\nfirst request would give %q", in.ID, in.enc[formGraphPreferExpand], want)
		}
	}
	in := pre.byCreated[0]
	before := in.render(formGraphPreferExpand)
	nu := pre.update(in.ID, anchor.Add(time.Hour), func(n *incident) { n.Status = "resolved" })
	if after := nu.render(formGraphPreferExpand); bytes.Equal(after, before) || !bytes.Contains(after, []byte(`"status":"resolved"`)) {
		t.Fatalf("the changed incident serves %q", after)
	}
}
