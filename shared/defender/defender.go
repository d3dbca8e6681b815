// Package defender is the Defender API client the functions share. One
// interface serves the Microsoft Graph security API (the default) and the
// Defender XDR API (api.security.microsoft.com, retired 2027-02-01), so a
// function never knows which backend it talks to.
//
// It is a thin client written here rather than msgraph-sdk-go: that SDK
// generates every Graph workload into one module (hundreds of MB of source,
// tens of MB of binary), offers no XDR API, and hides the paging, throttling
// and origin rules this product must control itself.
package defender

import (
	"context"
	"encoding/json"
	"iter"
	"time"
)

// API names a backend.
type API string

// The backends.
const (
	// Graph is the Microsoft Graph security API (https://graph.microsoft.com).
	Graph API = "graph"
	// XDR is the Defender XDR API (https://api.security.microsoft.com).
	XDR API = "xdr"
)

// Client is the Defender API for one tenant.
type Client interface {
	// Incidents lists incidents page by page. A page is yielded only when
	// fully read; the sequence ends after the last page or at the first error.
	Incidents(ctx context.Context, opts ListOptions) iter.Seq2[*Page, error]
	// Incident gets one incident with its alerts.
	Incident(ctx context.Context, id string) (*Incident, error)
	// UpdateIncident changes the fields that are set in u and returns the result.
	UpdateIncident(ctx context.Context, id string, u Update) (*Incident, error)
	// AddComment adds a comment to an incident.
	AddComment(ctx context.Context, id, text string) error
	// Hunt runs an advanced-hunting query; the caller must Close the result.
	Hunt(ctx context.Context, q HuntQuery) (*HuntResult, error)
	// API says which backend this is.
	API() string
	// Capabilities says how the backend's listings may be read.
	Capabilities() Capabilities
}

// Capabilities are what a backend's incident listing offers a scan.
type Capabilities struct {
	// PageMax is the largest page ($top) the API serves.
	PageMax int
	// Count: ListOptions.Count asks for @odata.count, the size of the
	// filtered set at the moment of each request. A caller that relies on
	// it still checks that it is plausible.
	Count bool
	// UpdatedField is the listing's last-update field, as $filter and
	// $orderby name it (for messages that quote the request).
	UpdatedField string
	// CreatedField is the creation time's field, as $filter names it.
	CreatedField string
}

// ListOptions select and shape an incident listing.
type ListOptions struct {
	// Since is an inclusive lower bound on the last update time (zero: none).
	Since time.Time
	// Before is an exclusive upper bound on the last update time (zero: none).
	Before time.Time
	// CreatedSince and CreatedBefore bound the creation time the same way.
	// Unlike the last update it never changes, so a range of it is a set
	// that members can leave but not reorder.
	CreatedSince  time.Time
	CreatedBefore time.Time
	// Status and AssignedTo filter by equality (empty: no filter).
	Status     string
	AssignedTo string
	// PageSize is the $top of each request; 0 means the API's maximum.
	PageSize int
	// OrderByLastUpdate asks for last update order, oldest first. A live
	// tenant accepts it on Graph and ignores it (research: defender-api.md
	// §6.1a), and the XDR API does not document it: nothing may depend on
	// it (the doctor probes what the API does with it).
	OrderByLastUpdate bool
	// Count asks for @odata.count on every page (where Capabilities.Count).
	Count bool
	// Top is a raw $top, sent as is even past the API's maximum (the
	// doctor's probe); it overrides PageSize.
	Top int
	// WithAlerts includes each incident's alerts (XDR always does; Graph
	// uses $expand=alerts and falls back to alerts_v2 per incident).
	WithAlerts bool
	// Skip starts the listing at this offset (keyset paging within a tie).
	Skip int
	// KeysOnly decodes only each incident's ID and last update (and its
	// tenant on XDR); Raw still holds the whole document. For callers that
	// store what the API sent, such as the export: it halves decoding.
	KeysOnly bool
}

// Page is one page of incidents as the API returned it.
type Page struct {
	Incidents []*Incident
	// Requests is how many HTTP requests this page cost (retries, fallbacks included).
	Requests int
	// AlertsFallback is true when alerts came from alerts_v2 because $expand failed.
	AlertsFallback bool
	// More: the listing goes on after this page (a nextLink came, or a full
	// page on an API paged with $skip).
	More bool
	// Count is @odata.count as this page's response gave it, -1 when absent.
	Count int64
}

// Incident is an incident normalized for logic, with the API's own JSON kept
// in Raw for export: nothing a user may rely on is dropped.
type Incident struct {
	ID             string
	TenantID       string
	Name           string
	Status         string // Graph spelling: active, inProgress, resolved, redirected, …
	Severity       string
	Classification string
	Determination  string
	AssignedTo     string
	Tags           []string
	Created        time.Time
	LastUpdate     time.Time
	RedirectID     string
	Alerts         []Alert
	Comments       []Comment
	// Raw is the incident exactly as the API sent it (with alerts spliced in
	// when they came from the alerts_v2 fallback).
	Raw json.RawMessage
}

// Alert is the part of an alert the functions use.
type Alert struct {
	ID            string
	Title         string
	Severity      string
	Status        string
	ServiceSource string
	Created       time.Time
}

// Comment is one incident comment.
type Comment struct {
	Text      string
	CreatedBy string
	Created   time.Time
}

// Update changes an incident; nil fields are left alone.
type Update struct {
	Status         *string
	AssignedTo     *string
	Classification *string
	Determination  *string
	Tags           *[]string
}

// HuntQuery is an advanced-hunting request.
type HuntQuery struct {
	Query string
	// Timespan is Graph's ISO 8601 duration or interval (P7D, start/end);
	// empty means the API's default of 30 days. The XDR API has no timespan.
	Timespan string
}

// Column is one column of a hunting result.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}
