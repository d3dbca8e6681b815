package defender

import (
	"context"
	"errors"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strings"
	"time"
)

func odataTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0000000Z") }

func odataString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// lister is one API's way of listing incidents: the bucket its requests
// are paced in, how a page decodes, how it pages where there is no
// nextLink, and how alerts are fetched when $expand=alerts fails.
type lister struct {
	t        *transport
	bucket   string
	pageSize int
	decode   func(io.Reader, func(*Incident)) (envelope, error)
	// withSkip is the URL of the page after skip incidents; nil: the API
	// pages by nextLink alone.
	withSkip func(skip int) string
	// alerts fetches a page's alerts per incident; nil: no fallback.
	alerts func(context.Context, *Page) error
}

// list drives the paging from first: follow nextLink, else $skip until a
// short page.
func (l lister) list(ctx context.Context, first string) iter.Seq2[*Page, error] {
	return func(yield func(*Page, error) bool) {
		u := first
		pages, total := 0, 0
		var through time.Time
		for u != "" {
			p, next, err := l.page(ctx, u)
			if err != nil {
				yield(nil, &IncompleteError{Pages: pages, Incidents: total, Through: through, Err: err})
				return
			}
			pages++
			total += len(p.Incidents)
			if len(p.Incidents) > 0 {
				through = p.Incidents[len(p.Incidents)-1].LastUpdate
			}
			skipping := l.withSkip != nil && len(p.Incidents) == l.pageSize
			p.More = next != "" || skipping
			if !yield(p, nil) {
				return
			}
			switch {
			case next != "":
				u = next
			case skipping:
				u = l.withSkip(total)
			default:
				u = ""
			}
		}
	}
}

// page reads one page and its nextLink. Graph fails $expand=alerts for
// large incidents (5xx): the page is then read without it and its alerts
// fetched per incident.
func (l lister) page(ctx context.Context, u string) (*Page, string, error) {
	p := &Page{Count: -1}
	var next string
	n, err := l.t.do(ctx, request{method: "GET", url: u, bucket: l.bucket, retry429: true, handle: func(resp *http.Response) error {
		p.Incidents = p.Incidents[:0]
		env, err := l.decode(resp.Body, func(in *Incident) { p.Incidents = append(p.Incidents, in) })
		next, p.Count = env.next, env.count
		return err
	}})
	p.Requests += n
	var ae *APIError
	if err == nil || l.alerts == nil || !errors.As(err, &ae) || ae.StatusCode < 500 || !strings.Contains(u, "expand=alerts") {
		return p, next, err
	}
	p2, err := fallbackPage(ctx, l.t, u, l.decode, l.alerts)
	if err != nil {
		return nil, "", err
	}
	p2.page.Requests += p.Requests
	return p2.page, p2.next, nil
}

type fallback struct {
	page *Page
	next string
}

func fallbackPage(ctx context.Context, t *transport, u string, decode func(io.Reader, func(*Incident)) (envelope, error), after func(context.Context, *Page) error) (*fallback, error) {
	pu, _ := url.Parse(u)
	q := pu.Query()
	q.Del("$expand")
	pu.RawQuery = q.Encode()
	p := &Page{AlertsFallback: true, Count: -1}
	var next string
	n, err := t.do(ctx, request{method: "GET", url: pu.String(), bucket: "security", retry429: true, handle: func(resp *http.Response) error {
		p.Incidents = p.Incidents[:0]
		env, err := decode(resp.Body, func(in *Incident) { p.Incidents = append(p.Incidents, in) })
		next, p.Count = env.next, env.count
		return err
	}})
	p.Requests += n
	if err != nil {
		return nil, err
	}
	if next != "" {
		// Keep paging with $expand on the following pages.
		nu, _ := url.Parse(next)
		nq := nu.Query()
		nq.Set("$expand", "alerts")
		nu.RawQuery = nq.Encode()
		next = nu.String()
	}
	t.log.InfoContext(ctx, "The listing refused $expand=alerts; alerts are fetched per incident.", "incidents", len(p.Incidents))
	if err := after(ctx, p); err != nil {
		return nil, err
	}
	return &fallback{p, next}, nil
}

func filter(o ListOptions, caps Capabilities) string {
	var parts []string
	for _, b := range []struct {
		field, op string
		t         time.Time
	}{{caps.UpdatedField, "ge", o.Since}, {caps.UpdatedField, "lt", o.Before}, {caps.CreatedField, "ge", o.CreatedSince}, {caps.CreatedField, "lt", o.CreatedBefore}} {
		if !b.t.IsZero() {
			parts = append(parts, b.field+" "+b.op+" "+odataTime(b.t))
		}
	}
	if o.Status != "" {
		parts = append(parts, "status eq "+odataString(o.Status))
	}
	if o.AssignedTo != "" {
		parts = append(parts, "assignedTo eq "+odataString(o.AssignedTo))
	}
	return strings.Join(parts, " and ")
}
