package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
)

// tenantRow is one tenant's line of the partner table.
type tenantRow struct {
	tenant, consent, token, roles, api, link string
}

// partner: 3-5 for every tenant of a partner app at once (a bounded
// number in flight, so that 500 tenants take seconds), as one table; the
// home tenant's checks in full, and each failing tenant's with its fixes.
func (k *checkup) partner(vaultOK bool) {
	tenants := k.cfg.Tenants
	rows := make([]tenantRow, len(tenants))
	reports := make([]*report, len(tenants))
	bufs := make([]strings.Builder, len(tenants))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, t := range tenants {
		reports[i] = &report{out: &bufs[i]}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rows[i] = k.tenant(reports[i], t, vaultOK, i == 0)
		})
	}
	wg.Wait()
	out := k.r.out
	width := len("tenant")
	for _, t := range tenants {
		width = max(width, len(t))
	}
	consented, failed := 0, 0
	line := func(cells ...any) {
		io.WriteString(out, strings.TrimRight(fmt.Sprintf("%-*s  %-9s %-5s %-5s %-5s %s", cells...), " ")+"\n")
	}
	io.WriteString(out, "\n")
	line(width, "tenant", "consented", "token", "roles", "api", "admin consent (where needed)")
	for i, row := range rows {
		line(width, row.tenant, row.consent, row.token, row.roles, row.api, row.link)
		if row.consent == "yes" {
			consented++
		}
		if reports[i].failed {
			failed++
		}
	}
	fmt.Fprintf(out, "%d tenants: %d consented, %d failing\n\n", len(tenants), consented, failed)
	for i := range tenants {
		if i == 0 || reports[i].failed {
			io.WriteString(out, bufs[i].String())
		}
		k.r.failed = k.r.failed || reports[i].failed
	}
}

// tenant: 3. a token, 4. its roles, 5. the API, and (probe) the listing's
// probe, reported to r; the row sums them up.
func (k *checkup) tenant(r *report, t string, vaultOK, probe bool) tenantRow {
	cfg := k.cfg
	row := tenantRow{tenant: t, consent: "?", token: "skip", roles: "skip", api: "skip"}
	consentLink := credentials.AdminConsentURL(cfg.AuthorityHost, t, cfg.ClientID, cfg.ConsentRedirectURI)
	if !vaultOK {
		r.skip("token", "tenant "+t+": needs the app's credential (above)")
		r.skip("roles", "tenant "+t+": needs a token")
		r.skip("api", "tenant "+t+": needs a token")
		return row
	}
	c, cancel := k.step()
	tok, err := k.creds.Source(t).Token(c)
	cancel()
	if err != nil {
		r.fail("token", fmt.Errorf("tenant %s: %w", t, err), k.tokenFix(err))
		r.skip("roles", "tenant "+t+": needs a token")
		r.skip("api", "tenant "+t+": needs a token")
		row.token = "FAIL"
		if ee := (*credentials.EntraError)(nil); errors.As(err, &ee) && ee.AADSTS == 700016 {
			row.consent, row.link = "no", consentLink
		}
		return row
	}
	row.consent, row.token = "yes", "ok"
	claims, err := credentials.ParseClaims(tok.AccessToken)
	if err != nil {
		r.fail("token", fmt.Errorf("tenant %s: the token cannot be read: %w", t, err), "")
		row.token = "FAIL"
		return row
	}
	r.ok("token", "tenant %s: app-only token for %s, valid until %s", t, claims.Audience, tok.Expiry.UTC().Format(time.RFC3339))
	if err := credentials.CheckRoles(functions.Registration(cfg), t, claims, functions.Requirements(cfg.API, k.enabled...)); err != nil {
		r.fail("roles", err, rolesFix(err, claims.Roles))
		r.skip("api", "tenant "+t+": needs the roles")
		row.roles, row.link = "FAIL", consentLink
		return row
	}
	row.roles = "ok"
	r.ok("roles", "tenant %s: %s cover %s", t, strings.Join(claims.Roles, ", "), strings.Join(k.enabled, ", "))
	client, err := functions.NewClient(cfg, t, k.creds.Source(t), &defender.Options{HTTPClient: k.o.HTTPClient})
	if err != nil {
		r.fail("api", err, "")
		row.api = "FAIL"
		return row
	}
	c, cancel = k.step()
	n, err := firstPage(c, client)
	cancel()
	if err != nil {
		r.fail("api", fmt.Errorf("tenant %s: %w", t, err), k.apiFix(err))
		row.api = "FAIL"
		return row
	}
	row.api = "ok"
	r.ok("api", "tenant %s: %s answered a one-incident read (%d returned)", t, cfg.APIURL, n)
	if probe && cfg.ExportSink != "" {
		c, cancel = context.WithTimeout(k.ctx, 4*k.o.Timeout)
		probeListing(c, r, t, client, cfg.ExportPageSize)
		cancel()
	}
	return row
}

func firstPage(ctx context.Context, c defender.Client) (int, error) {
	p, err := first(ctx, c, defender.ListOptions{PageSize: 1})
	if err != nil {
		return 0, err
	}
	return len(p.Incidents), nil
}
