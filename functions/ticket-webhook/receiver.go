// Package ticketwebhook is the ticket-webhook function: signed webhooks from
// Jira Cloud, ServiceNow and any Standard Webhooks sender update Defender
// incidents. Every delivery is verified before its body is read, applied
// once, and never echoed back.
package ticketwebhook

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/failure"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/state"
	"github.com/defender-functions/defender-functions/shared/telemetry"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

// Function is ticket-webhook as the platforms bind it.
var Function = function.Descriptor{
	Name:     "ticket-webhook",
	HTTP:     &function.HTTPBinding{Route: "ticket-webhook/{provider}", Methods: []string{"post"}, AuthLevel: "function", Signed: true},
	Roles:    function.Roles{Graph: []string{"SecurityIncident.ReadWrite.All"}, XDR: []string{"Incident.ReadWrite.All"}},
	Settings: config.WebhookSettings,
}

// Jira's delivery headers.
const (
	headerJiraID    = "X-Atlassian-Webhook-Identifier"
	headerJiraRetry = "X-Atlassian-Webhook-Retry"
	headerJiraFlow  = "X-Atlassian-Webhook-Flow"
)

// Receiver serves ticket-webhook.
type Receiver struct {
	Mapping *Mapping
	// Keys are each provider's signing keys (several during a rotation); a
	// provider without keys is switched off.
	Keys Keys
	// Clients are the tenants' API clients; DefaultTenant serves a provider
	// whose mapping names none.
	Clients       map[string]defender.Client
	DefaultTenant string
	State         state.Store
	// Tolerance bounds the age of a signed timestamp; RetryWindow the age of
	// a Jira redelivery, whose body keeps the event's time.
	Tolerance, RetryWindow time.Duration
	// DedupeTTL is how long a delivery is remembered.
	DedupeTTL time.Duration
	// Timeout bounds the upstream work of one delivery.
	Timeout time.Duration
	MaxBody int
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Outcome is the JSON answer to a sender.
type Outcome struct {
	Status   string   `json:"status"` // applied, unchanged, duplicate, ignored, rejected, failed
	Provider string   `json:"provider,omitempty"`
	Delivery string   `json:"delivery,omitempty"`
	Ticket   string   `json:"ticket,omitempty"`
	Tenant   string   `json:"tenant,omitempty"`
	Incident string   `json:"incident,omitempty"`
	Updated  []string `json:"updated,omitempty"`
	Comment  string   `json:"comment,omitempty"` // added, exists
	Reason   string   `json:"reason,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`

	code       int
	retryAfter time.Duration
	cause      error // logged, never sent
}

func (o *Outcome) fail(code int, errCode, msg string) *Outcome {
	o.code = code
	o.Status = "rejected"
	if code >= 500 {
		o.Status = "failed"
	}
	o.Error = &struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{errCode, msg}
	return o
}

func (rc *Receiver) now() time.Time {
	if rc.Now != nil {
		return rc.Now()
	}
	return time.Now()
}

// Serve is the function.
func (rc *Receiver) Serve(ctx context.Context, r *function.HTTPRequest) *function.HTTPResponse {
	start := time.Now()
	o := rc.serve(ctx, r)
	attrs := []any{"provider", o.Provider, "delivery", o.Delivery, "ticket", o.Ticket, "tenant", o.Tenant, "incident", o.Incident,
		"status", o.code, "outcome", o.Status, "duration_ms", time.Since(start).Milliseconds()}
	if len(o.Updated) > 0 {
		attrs = append(attrs, "updated", strings.Join(o.Updated, ","))
	}
	if o.Comment != "" {
		attrs = append(attrs, "comment", o.Comment)
	}
	if o.Error != nil {
		attrs = append(attrs, "code", o.Error.Code)
	}
	if o.cause != nil {
		attrs = append(attrs, "err", o.cause)
	}
	// The provider comes from the path: a metric names only known ones.
	provider := o.Provider
	if !slices.Contains(config.WebhookProviders, provider) {
		provider = "unknown"
	}
	telemetry.Webhook(ctx, provider, o.Status)
	log := function.Logger(ctx)
	if o.code >= 500 {
		log.Warn("Delivery answered.", attrs...)
	} else {
		log.Info("Delivery answered.", attrs...)
	}
	b, _ := json.Marshal(o)
	h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	if o.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((o.retryAfter+time.Second-1)/time.Second)))
	}
	return &function.HTTPResponse{Status: o.code, Header: h, Body: b}
}

// serve verifies a delivery, parses it, and applies it once: each step is
// a method below, in order.
func (rc *Receiver) serve(ctx context.Context, r *function.HTTPRequest) *Outcome {
	o := &Outcome{code: 200}
	provider, keys, failed := rc.admit(ctx, r, o)
	if failed != nil {
		return failed
	}
	now := rc.now()

	// Verification comes first: nothing of an unverified body is read.
	deliveryID, at, err := rc.verify(r, provider, keys, now)
	if errors.Is(err, webhook.ErrSignature) {
		// Signed with a key added since the keys were read? Read them
		// again (at most once per the source's bound) before rejecting.
		if rr, ok := rc.Keys.(Rereader); ok {
			if changed, rerr := rr.Reread(ctx); changed && rerr == nil {
				if keys, rerr = rc.Keys.Keys(ctx, provider); rerr == nil {
					deliveryID, at, err = rc.verify(r, provider, keys, now)
				}
			}
		}
	}
	if err != nil {
		return verifyFailed(o, err)
	}
	if len(deliveryID) > 256 {
		deliveryID = deliveryID[:256]
	}
	o.Delivery = deliveryID

	ch, pm, bodyAt, err := rc.parse(r, provider, now)
	if errors.Is(err, webhook.ErrStale) {
		return verifyFailed(o, err)
	}
	if err != nil {
		return o.fail(400, "BadPayload", err.Error())
	}
	o.Ticket, o.Notes = ch.Ticket, ch.Notes
	if !bodyAt.IsZero() {
		at = bodyAt // Jira signs the event's time in the body
	}

	// A provider pinned to a tenant reaches that tenant alone: its secret
	// must not write another tenant's incidents through the payload.
	if pm.Tenant != "" && ch.Tenant != "" && !strings.EqualFold(ch.Tenant, pm.Tenant) {
		return o.fail(403, "TenantNotAllowed", fmt.Sprintf("the %s provider is pinned to one tenant by the mapping; this delivery names another", provider))
	}
	tenant := cmp.Or(ch.Tenant, pm.Tenant, rc.DefaultTenant)
	client := rc.Clients[tenant]
	if client == nil {
		return o.fail(422, "UnknownTenant", fmt.Sprintf("tenant %q is not in DEFENDER_TENANT_ID", truncate(tenant, 64)))
	}
	o.Tenant = tenant
	l := &ledger{st: rc.State, ttl: rc.DedupeTTL, lease: rc.Timeout + 30*time.Second, now: rc.now}

	if ch.Ignored != "" {
		o.Status, o.Reason, o.Incident = "ignored", ch.Ignored, ch.IncidentID
		if ch.Linkable && ch.IncidentID != "" {
			if err := l.setLink(ctx, provider, ch.Ticket, link{Incident: ch.IncidentID, Tenant: tenant, At: at}); err != nil {
				return stateFailed(o, err)
			}
		}
		return o
	}
	return rc.applyOnce(ctx, o, l, delivery{provider: provider, id: deliveryID, at: at, body: r.Body, change: ch, mapping: pm, tenant: tenant, client: client})
}

// admit checks what can be checked before verification: a known provider
// that is turned on, the body's size and type.
func (rc *Receiver) admit(ctx context.Context, r *function.HTTPRequest, o *Outcome) (provider string, keys [][]byte, failed *Outcome) {
	provider = strings.ToLower(r.Params["provider"])
	if _, ok := providers[provider]; !ok {
		return "", nil, o.fail(404, "UnknownProvider", "use "+providerList("/api/ticket-webhook/"))
	}
	o.Provider = provider
	keys, err := rc.Keys.Keys(ctx, provider)
	if err != nil {
		return "", nil, keysFailed(o, err)
	}
	if len(keys) == 0 {
		// Said before any signature is checked: no setting names.
		return "", nil, o.fail(404, "ProviderDisabled", fmt.Sprintf("the %s provider is off", provider))
	}
	if len(r.Body) > rc.MaxBody {
		return "", nil, o.fail(413, "TooLarge", fmt.Sprintf("the body is larger than %d bytes", rc.MaxBody))
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return "", nil, o.fail(415, "UnsupportedMediaType", "send the body as application/json")
	}
	return provider, keys, nil
}

// verify checks the delivery's signature and returns its ID and, where the
// signature covers one, the event's time (Jira's is in the body: parse).
func (rc *Receiver) verify(r *function.HTTPRequest, provider string, keys [][]byte, now time.Time) (string, time.Time, error) {
	if providers[provider].hub {
		if err := webhook.VerifyHub(keys, r.Header.Get(webhook.HeaderHubSignature), r.Body); err != nil {
			return "", time.Time{}, err
		}
		return r.Header.Get(headerJiraID), time.Time{}, nil
	}
	d, err := webhook.VerifyStandard(keys, r.Header, r.Body, now, rc.Tolerance)
	if err != nil {
		return "", time.Time{}, err
	}
	return d.ID, d.Timestamp, nil
}

// parse reads the verified body as the provider's change, with the
// provider's mapping, and the event's time where the body states it.
func (rc *Receiver) parse(r *function.HTTPRequest, provider string, now time.Time) (*Change, *ProviderMapping, time.Time, error) {
	p := providers[provider]
	ch, at, err := p.parse(r.Body, rc.Mapping)
	if err == nil && p.hub {
		err = rc.jiraAge(r.Header, now, at)
	}
	return ch, p.mapping(rc.Mapping), at, err
}

// delivery is a verified, parsed delivery for a configured tenant.
type delivery struct {
	provider, id string
	at           time.Time // the event's signed time
	body         []byte
	change       *Change
	mapping      *ProviderMapping
	tenant       string
	client       defender.Client
}

// keys are the delivery's ledger keys. Jira's identifier is not signed, so
// its deliveries are also known by the hash of the signed body (a replay of
// the same bytes under a new identifier is still a duplicate).
func (d delivery) keys() (primary, secondary string) {
	if !providers[d.provider].hub {
		return deliveryKey(d.provider, "id", d.id), ""
	}
	sum := sha256.Sum256(d.body)
	primary = deliveryKey(d.provider, "body", hex.EncodeToString(sum[:]))
	if d.id != "" {
		secondary = deliveryKey(d.provider, "id", d.id)
	}
	return primary, secondary
}

// applyOnce claims the delivery in the ledger, finds its incident, applies
// the change and records the outcome. A delivery seen before is a
// duplicate; one being applied elsewhere is answered 503 with Retry-After.
func (rc *Receiver) applyOnce(ctx context.Context, o *Outcome, l *ledger, d delivery) *Outcome {
	primary, secondary := d.keys()
	if secondary != "" {
		seen, err := l.seen(ctx, secondary)
		if err != nil {
			return stateFailed(o, err)
		}
		if seen {
			o.Status, o.Reason = "duplicate", "this delivery was applied before"
			return o
		}
	}
	c, res, err := l.claim(ctx, primary)
	switch {
	case err != nil:
		return stateFailed(o, err)
	case res == duplicate:
		o.Status, o.Reason = "duplicate", "this delivery was applied before"
		return o
	case res == busy:
		o.retryAfter = 30 * time.Second
		return o.fail(503, "InProgress", "the same delivery is being applied right now; retry later")
	}

	ch := d.change
	id := ch.IncidentID
	if id == "" {
		k, err := l.link(ctx, d.provider, ch.Ticket)
		if err != nil {
			l.release(ctx, c)
			return stateFailed(o, err)
		}
		if k != nil && k.Tenant == d.tenant {
			id = k.Incident
		}
	}
	if id == "" {
		l.release(ctx, c)
		o.Status, o.Reason = "ignored", "the ticket names no Defender incident"
		return o
	}
	o.Incident = id

	actx, cancel := context.WithTimeout(ctx, rc.Timeout)
	updated, comment, err := apply(actx, d.client, id, ch, d.mapping.marker(ch.Ticket))
	cancel()
	o.Updated, o.Comment = updated, comment
	if err != nil {
		l.release(ctx, c)
		return upstreamFailed(o, err)
	}
	o.Status = "applied"
	if len(updated) == 0 && comment != "added" {
		o.Status = "unchanged"
	}
	// Bookkeeping after the change: a failure here leaves a change that a
	// redelivery finds already made (nothing to PATCH, the comment exists).
	if err := l.done(ctx, c, o.Status); err != nil {
		o.cause = fmt.Errorf("recording the delivery: %w", err)
	}
	if secondary != "" {
		l.mark(ctx, secondary, o.Status)
	}
	if ch.Linkable {
		l.setLink(ctx, d.provider, ch.Ticket, link{Incident: id, Tenant: d.tenant, At: d.at})
	}
	return o
}

// jiraAge checks the event time the signed body states. Jira keeps it on
// redeliveries and on its slower "Secondary" flow, which may be older than
// the tolerance; those may be as old as the retry window (the ledger makes
// a replay within it a no-op).
func (rc *Receiver) jiraAge(h http.Header, now, at time.Time) error {
	limit := rc.Tolerance
	if n, _ := strconv.Atoi(h.Get(headerJiraRetry)); n > 0 || strings.EqualFold(h.Get(headerJiraFlow), "Secondary") {
		limit = rc.RetryWindow
	}
	if age := now.Sub(at); age > limit || age < -rc.Tolerance {
		return fmt.Errorf("%w: the event is from %s, %s from this host's clock (allowed %s)", webhook.ErrStale, at.UTC().Format(time.RFC3339), age.Round(time.Second), limit)
	}
	return nil
}

func verifyFailed(o *Outcome, err error) *Outcome {
	switch {
	case errors.Is(err, webhook.ErrMissing), errors.Is(err, webhook.ErrMalformed):
		return o.fail(400, "BadSignatureHeaders", err.Error())
	case errors.Is(err, webhook.ErrStale):
		return o.fail(401, "Stale", err.Error())
	}
	return o.fail(401, "InvalidSignature", err.Error())
}

// keysFailed answers a failure to read the signing keys, before any
// signature is checked: nothing names the deployment; the log has the cause.
func keysFailed(o *Outcome, err error) *Outcome {
	o.cause = err
	if errors.Is(err, ErrBadSecret) {
		return o.fail(500, "KeysMisconfigured", "the signing keys could not be read; the operator must fix them (the log says how)")
	}
	f := failure.Classify(err)
	o.retryAfter = f.RetryAfter
	return o.fail(f.Status, f.Code, f.Message)
}

func stateFailed(o *Outcome, err error) *Outcome {
	o.cause, o.retryAfter = err, 30*time.Second
	return o.fail(503, "StateUnavailable", "the state store could not be reached; retry later")
}

// upstreamFailed answers what the sender should do: retry (503, 429, with
// Retry-After) or not (4xx; 500 for a configuration the operator must fix),
// by failure.Classify, as every function does.
func upstreamFailed(o *Outcome, err error) *Outcome {
	o.cause = err
	var re *redirectedError
	if errors.As(err, &re) {
		return o.fail(422, "IncidentMerged", re.Error())
	}
	f := failure.Classify(err)
	switch f.Code {
	case "NotFound":
		return o.fail(422, "IncidentNotFound", fmt.Sprintf("incident %s does not exist in tenant %s", o.Incident, o.Tenant))
	case "Rejected":
		return o.fail(422, "Rejected", f.Message)
	case "NotPermitted":
		f.Message = "the app may not update incidents: grant it SecurityIncident.ReadWrite.All (Graph) or Incident.ReadWrite.All (XDR) with admin consent"
	}
	o.retryAfter = f.RetryAfter
	return o.fail(f.Status, f.Code, f.Message)
}
