// Package doctor is the preflight of a deployment: run with the functions'
// own settings, it checks in order everything they depend on and prints one
// plain line per check, with the fix under each failure.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	huntingquery "github.com/defender-functions/defender-functions/functions/hunting-query"
	incidentexport "github.com/defender-functions/defender-functions/functions/incident-export"
	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/queue"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
)

// Options tune Run; the zero value is right for a deployment.
type Options struct {
	// HTTPClient carries every request; nil is the functions' default.
	HTTPClient *http.Client
	// Timeout bounds each check.
	Timeout time.Duration
}

type report struct {
	out    io.Writer
	failed bool
}

func (r *report) ok(check, format string, a ...any) {
	fmt.Fprintf(r.out, "ok    %-12s %s\n", check, fmt.Sprintf(format, a...))
}

// fail reports a failed check and its fix. A fix that the failure already
// says word for word (an Entra ID or API error carries its advice) is not
// printed twice.
func (r *report) fail(check string, err error, fix string) {
	r.failed = true
	fmt.Fprintf(r.out, "FAIL  %-12s %v\n", check, err)
	if fix != "" && !strings.Contains(err.Error(), fix) {
		fmt.Fprintf(r.out, "      %-12s fix: %s\n", "", fix)
	}
}

// note is a fact that is not a failure, said for what it means.
func (r *report) note(check, format string, a ...any) {
	fmt.Fprintf(r.out, "note  %-12s %s\n", check, fmt.Sprintf(format, a...))
}

// warn is a check that passes today and needs action soon: it does not
// fail the run.
func (r *report) warn(check string, err error, fix string) {
	fmt.Fprintf(r.out, "WARN  %-12s %v\n", check, err)
	if fix != "" {
		fmt.Fprintf(r.out, "      %-12s fix: %s\n", "", fix)
	}
}

func (r *report) skip(check, why string) {
	r.failed = true
	fmt.Fprintf(r.out, "skip  %-12s %s\n", check, why)
}

// Run checks the deployment that lookup's settings describe and reports
// whether everything passed. The checks run in order, each a method of
// checkup below; one that needs a failed one is marked skip.
func Run(ctx context.Context, lookup func(string) (string, bool), out io.Writer, opts *Options) bool {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = credentials.DefaultHTTPClient()
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	k := &checkup{ctx: ctx, o: o, r: &report{out: out}}
	if !k.configuration(lookup) {
		return false
	}
	vaultOK := k.vault() && k.federation()
	if len(k.cfg.Tenants) == 1 {
		k.tenant(k.r, k.cfg.Tenants[0], vaultOK, true)
	} else {
		k.partner(vaultOK)
	}
	k.storage()
	k.queue()
	k.webhookKeys()
	return !k.r.failed
}

// checkup is one run of the checks.
type checkup struct {
	ctx     context.Context
	o       Options
	r       *report
	cfg     *config.Config
	creds   *credentials.Credentials
	enabled []string // the functions the settings turn on
}

// step bounds one check.
func (k *checkup) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(k.ctx, k.o.Timeout)
}

// configuration: 1. the settings parse, and the credentials can be built.
func (k *checkup) configuration(lookup func(string) (string, bool)) bool {
	r := k.r
	cfg, err := config.Load(lookup)
	if cfg == nil {
		var p config.Problems
		if errors.As(err, &p) {
			for _, line := range p {
				r.fail("config", errors.New(line), "")
			}
		} else {
			r.fail("config", err, "")
		}
		for _, check := range []string{"key vault", "token", "roles", "api", "state store", "sink"} {
			r.skip(check, "needs the configuration")
		}
		return false
	}
	// Problems with one function's own settings stop that function only:
	// each is a failure, and the checks go on for the others.
	for _, d := range functions.Functions {
		for _, line := range cfg.FunctionProblems[d.Name] {
			r.fail("config", fmt.Errorf("%s: %s", d.Name, line), "")
		}
	}
	k.cfg = cfg
	for _, on := range []struct {
		d  function.Descriptor
		on bool
	}{{incidentexport.Function, cfg.ExportSink != ""}, {huntingquery.Function, true}, {ticketwebhook.Function, len(cfg.WebhookSecrets) > 0 || cfg.WebhookSecretsARN != ""}} {
		if on.on && len(cfg.FunctionProblems[on.d.Name]) == 0 {
			k.enabled = append(k.enabled, on.d.Name)
		}
	}
	r.ok("config", "%s API at %s, app %s, tenant(s) %s, credential %s; functions %s", cfg.API, cfg.APIURL, cfg.ClientID,
		strings.Join(cfg.Tenants, ","), cfg.Credential, strings.Join(k.enabled, ", "))

	k.creds, err = credentials.New(functions.Registration(cfg), &credentials.Options{HTTPClient: k.o.HTTPClient})
	if err != nil {
		r.fail("credentials", err, "check "+config.EnvVaultAccess+" and the identity settings it needs")
		return false
	}
	return true
}

// vault: 2. the app's credential is readable from Key Vault (where used).
func (k *checkup) vault() bool {
	c, cancel := k.step()
	version, used, err := k.creds.CheckVault(c)
	cancel()
	switch {
	case !used:
		k.r.ok("key vault", "not used (%s=%s)", config.EnvCredential, k.cfg.Credential)
	case err != nil:
		k.r.fail("key vault", err, vaultFix(k.cfg, err))
	default:
		k.r.ok("key vault", "secret %q readable at %s (version %s)", k.cfg.SecretName, k.cfg.KeyVaultURL, version)
		k.certificate()
	}
	return err == nil
}

// certificateWarning is how long before its end a certificate is warned
// about: time to make the next version and upload it.
const certificateWarning = 30 * 24 * time.Hour

// certificate: 2. with keyvault-certificate, the certificate Key Vault
// holds now, how long it lasts, and whether the app registration has it
// (a token request signed with it). A Key Vault renewal makes a new one that
// Entra ID refuses until it is uploaded; the functions sign with an older
// one meanwhile, so this check is where it shows. It never fails the
// checks after it: the token check says whether a token comes.
func (k *checkup) certificate() {
	c, cancel := k.step()
	chk, used, err := k.creds.CheckCertificate(c)
	cancel()
	switch {
	case !used:
		return
	case err != nil:
		k.r.fail("certificate", err, "store the certificate with its private key (PEM or PFX) in "+k.cfg.SecretName)
		return
	}
	cur, left := chk.Current, time.Until(chk.Current.NotAfter)
	what := fmt.Sprintf("version %s: %s, thumbprint %s (x5t#S256 %s), valid until %s (%s)", cur.Version, cur.Subject, cur.Thumbprint, cur.X5tS256,
		cur.NotAfter.UTC().Format(time.RFC3339), daysLeft(left))
	switch {
	case left <= 0:
		k.r.fail("certificate", fmt.Errorf("%s: Entra ID refuses an expired certificate", what), "create a new version and upload it: docs/certificate-rotation.md")
	case chk.Unregistered && chk.Fallback != nil:
		old := chk.Fallback
		k.r.fail("certificate", fmt.Errorf("%s is not registered on app %s (AADSTS700027): until it is, the functions sign with the older version %s (thumbprint %s, valid until %s)",
			what, k.cfg.ClientID, old.Version, old.Thumbprint, old.NotAfter.UTC().Format(time.RFC3339)), "upload the current version: "+chk.Upload)
	case chk.Unregistered:
		k.r.fail("certificate", fmt.Errorf("%s is not registered on app %s (AADSTS700027), nor is an older version that is still valid", what, k.cfg.ClientID),
			"upload the current version: "+chk.Upload)
	case chk.Refused != nil:
		k.r.note("certificate", "%s; whether app %s has it is not known: the token request failed (see the token check)", what, k.cfg.ClientID)
	case left < certificateWarning:
		k.r.warn("certificate", fmt.Errorf("%s; app %s has it", what, k.cfg.ClientID),
			fmt.Sprintf("create the next version now and upload it (docs/certificate-rotation.md): the functions move to it within %s (%s) of its upload", config.EnvSecretTTL, k.cfg.SecretTTL))
	default:
		k.r.ok("certificate", "%s; app %s has it", what, k.cfg.ClientID)
	}
	// Key Vault's default policy renews 90 days before the end, unannounced.
	if renewal := cur.NotAfter.Add(-90 * 24 * time.Hour); cur.Managed && chk.Accepted && time.Until(renewal) > 0 && time.Until(renewal) < certificateWarning {
		k.r.note("certificate", "if its policy auto-renews (Key Vault's default: 90 days before the end), a new version becomes current on %s: Entra ID refuses it until it is uploaded (docs/certificate-rotation.md)",
			renewal.UTC().Format(time.DateOnly))
	}
}

// daysLeft says a remaining validity in whole days.
func daysLeft(d time.Duration) string {
	switch n := int(d / (24 * time.Hour)); {
	case d <= 0:
		return "expired"
	case n == 1:
		return "1 day left"
	default:
		return fmt.Sprintf("%d days left", n)
	}
}

// federation: 2. in a secretless mode, the token presented as the app's
// assertion: what Entra ID will match against the app's federated
// credentials, for the operator to compare with them.
func (k *checkup) federation() bool {
	c, cancel := k.step()
	claims, used, err := k.creds.CheckFederation(c)
	cancel()
	switch {
	case !used:
		return true
	case err != nil:
		k.r.fail("federation", err, federationFix(k.cfg, err))
		return false
	}
	k.r.ok("federation", "%s: a token with issuer %s, subject %s, audience %s: the app needs a federated credential with exactly these",
		k.cfg.Credential, claims.Issuer, claims.Subject, claims.Audience)
	return true
}

func federationFix(cfg *config.Config, err error) string {
	if cfg.Credential == config.ManagedIdentityFederation {
		if fix := netFix(err, "IDENTITY_ENDPOINT"); fix != "" {
			return fix
		}
		return fmt.Sprintf("assign the user-assigned identity %s to the Function App (the Bicep does), or set %s to the client ID of one that is", cfg.ManagedIdentityClientID, config.EnvManagedIdentityClientID)
	}
	return "" // the AWS errors say what to do
}

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
		r.fail("token", fmt.Errorf("tenant %s: %w", t, err), tokenFix(cfg, t, err))
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
		r.fail("roles", err, rolesFix(err))
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
		r.fail("api", fmt.Errorf("tenant %s: %w", t, err), apiFix(cfg, err))
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

// storage: 6. where the functions write, the state store and the sink.
func (k *checkup) storage() {
	r, cfg := k.r, k.cfg
	blob, err := functions.BlobOptions(cfg, k.o.HTTPClient)
	if err != nil {
		r.fail("storage", err, "set "+config.EnvStorage+" or give the app a managed identity")
		return
	}
	if cfg.StateStore == "" {
		r.ok("state store", "not set (%s): incident-export and ticket-webhook need it", config.EnvStateStore)
	} else {
		c, cancel := k.step()
		err := checkState(c, cfg.StateStore, blob)
		cancel()
		if err != nil {
			r.fail("state store", err, storageFix(config.EnvStateStore, cfg.StateStore))
		} else {
			r.ok("state store", "%s is writable", config.RedactURL(cfg.StateStore))
		}
	}
	if cfg.ExportSink == "" {
		r.ok("sink", "not set (%s): incident-export is off", config.EnvExportSink)
		return
	}
	c, cancel := k.step()
	err = checkSink(c, cfg, k.o.HTTPClient, blob)
	cancel()
	kind, _ := config.ClassifySink(cfg.ExportSink)
	siem, shown := kind == config.SinkLogs || kind == config.SinkSplunk, config.RedactURL(cfg.ExportSink)
	switch {
	case err != nil && siem:
		r.fail("sink", err, "see the message above")
	case err != nil:
		r.fail("sink", err, storageFix(config.EnvExportSink, cfg.ExportSink))
	case siem:
		r.ok("sink", "%s takes this app's records (an empty request was accepted; nothing written)", shown)
	default:
		r.ok("sink", "%s is writable (wrote _doctor/check.json)", shown)
	}
}

// queue: the export's fan-out queue reachable, and its poison queue empty:
// a task there is a tenant that failed on every delivery and is no longer
// exported. It reads without taking anything.
func (k *checkup) queue() {
	r, cfg := k.r, k.cfg
	switch {
	case cfg.ExportQueue == "":
		return
	case config.ExportQueueIsSQS(cfg.ExportQueue):
		k.sqsQueue()
		return
	}
	blob, err := functions.BlobOptions(cfg, k.o.HTTPClient)
	if err != nil {
		r.fail("queue", err, "set "+config.EnvStorage+" or give the app a managed identity")
		return
	}
	open := func(name string) (*queue.Azure, error) { return functions.AzureQueue(cfg, name, blob) }
	q, err := open(cfg.ExportQueue)
	if err != nil {
		r.fail("queue", err, "")
		return
	}
	c, cancel := k.step()
	waiting, err := q.Peek(c, 32)
	cancel()
	if err != nil {
		r.fail("queue", err, "the host's identity needs Storage Queue Data Contributor on "+cfg.ExportQueue+" and Message Sender on "+cfg.ExportQueue+"-poison, the functions' identity Storage Queue Data Message Sender on "+cfg.ExportQueue+" and Reader on both (the Bicep assigns them)")
		return
	}
	r.ok("queue", "%s is reachable: %s waiting", cfg.ExportQueue, plural(len(waiting), "task", 32))
	p, err := open(cfg.ExportQueue + "-poison")
	if err != nil {
		r.fail("queue", err, "")
		return
	}
	c, cancel = k.step()
	dead, err := p.Peek(c, 32)
	cancel()
	switch {
	case err != nil:
		r.fail("queue", fmt.Errorf("%s-poison: %w", cfg.ExportQueue, err), "")
	case len(dead) == 0:
		r.ok("queue", "%s-poison is empty: no tenant failed on every delivery", cfg.ExportQueue)
	default:
		var lines []string
		for _, m := range dead {
			tenant := "(not a task: " + strconv.Quote(string(m.Body[:min(len(m.Body), 80)])) + ")"
			var task struct {
				Tenant string `json:"tenant"`
			}
			if json.Unmarshal(m.Body, &task) == nil && task.Tenant != "" {
				tenant = "tenant " + task.Tenant
			}
			lines = append(lines, fmt.Sprintf("%s, enqueued %s", tenant, m.InsertedAt.UTC().Format(time.RFC3339)))
		}
		r.fail("queue", fmt.Errorf("%s in %s-poison, no longer exported: %s", plural(len(dead), "task", 32), cfg.ExportQueue, strings.Join(lines, "; ")),
			"the log line \"tenant export failed on the message's last delivery\" names each cause; fix it (the tenants' checks above), then move the tasks back to "+cfg.ExportQueue+" or delete them (the next round enqueues every tenant again)")
	}
}

// sqsQueue: the SQS queue reachable, with a dead-letter queue, and that
// queue empty. It reads attributes only: a receive would count as a
// delivery, so the tasks' tenants are not named (the log lines name them).
func (k *checkup) sqsQueue() {
	r, cfg := k.r, k.cfg
	q, err := queue.NewSQS(cfg.ExportQueue, cfg.S3Region)
	if err != nil {
		r.fail("queue", err, "")
		return
	}
	c, cancel := k.step()
	st, err := q.Status(c)
	cancel()
	switch {
	case err != nil:
		r.fail("queue", err, "set EXPORT_QUEUE to the stack's queue URL (its ExportTasks), and give doctor's AWS identity sqs:GetQueueAttributes on the queue and its dead-letter queue")
		return
	case st.DeadLetterQueue == "":
		r.ok("queue", "%s is reachable: %s waiting", cfg.ExportQueue, plural(st.Waiting, "task", 0))
		r.fail("queue", fmt.Errorf("%s has no redrive policy: a tenant that keeps failing is delivered again until its task expires, and no dead-letter queue shows it", cfg.ExportQueue),
			"give the queue a dead-letter queue (the SAM template's ExportTasks has one, maxReceiveCount 5)")
		return
	}
	r.ok("queue", "%s is reachable: %s waiting; after %d receives a task goes to %s", cfg.ExportQueue, plural(st.Waiting, "task", 0), st.MaxReceiveCount, st.DeadLetterQueue)
	if st.DeadLetters == 0 {
		r.ok("queue", "%s is empty: no tenant failed on every delivery", st.DeadLetterQueue)
		return
	}
	r.fail("queue", fmt.Errorf("%s in %s, no longer exported", plural(st.DeadLetters, "task", 0), st.DeadLetterQueue),
		"the log line \"tenant export failed on the message's last delivery\" names each tenant and cause; fix it (the tenants' checks above), then redrive the tasks to "+cfg.ExportQueue+" (the SQS console's \"Start DLQ redrive\") or purge them (the next round enqueues every tenant again)")
}

// plural says n things, "32 or more" at a peek's limit (0: none).
func plural(n int, thing string, limit int) string {
	s := fmt.Sprintf("%d %s", n, thing)
	if n != 1 {
		s += "s"
	}
	if limit > 0 && n >= limit {
		s = fmt.Sprintf("%d or more %ss", n, thing)
	}
	return s
}

// webhookKeys: 7. the webhook's keys, where they are read at run time
// (AWS Secrets Manager): readable by this identity, and well formed.
func (k *checkup) webhookKeys() {
	cfg := k.cfg
	if cfg.WebhookSecretsARN == "" || len(cfg.FunctionProblems[ticketwebhook.Function.Name]) > 0 {
		return
	}
	keys, err := functions.WebhookKeys(cfg, nil)
	if err != nil {
		k.r.fail("webhook keys", err, "")
		return
	}
	c, cancel := k.step()
	defer cancel()
	var on []string
	for _, p := range []string{ticketwebhook.Jira, ticketwebhook.ServiceNow, ticketwebhook.Generic} {
		ks, err := keys.Keys(c, p)
		if err != nil {
			k.r.fail("webhook keys", err, "")
			return
		}
		if len(ks) > 0 {
			on = append(on, fmt.Sprintf("%s (%d)", p, len(ks)))
		}
	}
	if len(on) == 0 {
		k.r.fail("webhook keys", fmt.Errorf("%s names a secret that turns no provider on", config.EnvWebhookSecretsARN),
			`store {"jira": "…", "servicenow": "whsec_…", "generic": "whsec_…"} in it`)
		return
	}
	k.r.ok("webhook keys", "%s is readable; providers on: %s", cfg.WebhookSecretsARN, strings.Join(on, ", "))
}

func firstPage(ctx context.Context, c defender.Client) (int, error) {
	p, err := first(ctx, c, defender.ListOptions{PageSize: 1})
	if err != nil {
		return 0, err
	}
	return len(p.Incidents), nil
}

func checkState(ctx context.Context, raw string, blob state.BlobOptions) error {
	st, err := state.Open(raw, blob)
	if err != nil {
		return err
	}
	const key = "doctor/check"
	_, ver, err := st.Get(ctx, key)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	data := []byte(`{"checkedAt":"` + time.Now().UTC().Format(time.RFC3339) + `"}`)
	if _, err := st.Put(ctx, key, data, ver); err != nil {
		return err
	}
	return st.Delete(ctx, key)
}

func checkSink(ctx context.Context, cfg *config.Config, hc *http.Client, blob state.BlobOptions) error {
	sk, err := functions.Sink(cfg, hc, blob, nil)
	if err != nil {
		return err
	}
	if c, ok := sk.(sink.Checker); ok {
		return c.Check(ctx) // a SIEM keeps every row: write none
	}
	if err := sk.Write(ctx, []sink.Object{{Name: "_doctor/check.json", Data: []byte(`{"checkedAt":"` + time.Now().UTC().Format(time.RFC3339) + `"}`)}}); err != nil {
		return err
	}
	if cfg.ExportBatched {
		// After a crash the export asks whether its batch landed: an
		// absent object must read as absent, not as forbidden.
		ex, _ := sk.(sink.Exister)
		if there, err := ex.Exists(ctx, "_doctor/absent.json"); err != nil || there {
			return fmt.Errorf("%s=batches needs to read back what it writes, and asking for an absent object failed (%v): grant the identity read on the sink (Blob: Storage Blob Data Contributor; S3: s3:GetObject on the prefix and s3:ListBucket on the bucket)", config.EnvExportLayout, err)
		}
	}
	if s, ok := sk.(sink.Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

func vaultFix(cfg *config.Config, err error) string {
	var ve *credentials.VaultError
	if errors.As(err, &ve) {
		switch ve.StatusCode {
		case 0:
			if fix := netFix(err, config.EnvKeyVaultURL); fix != "" {
				return fix
			}
			return fmt.Sprintf("make %s (%s) reachable from here: its URI, DNS, the vault's firewall or private endpoint; and check %s=%s", config.EnvKeyVaultURL, cfg.KeyVaultURL, config.EnvVaultAccess, cfg.VaultAccess)
		case 403:
			return "assign the identity the 'Key Vault Secrets User' role on the vault (az role assignment create --role 'Key Vault Secrets User' --assignee <principal ID> --scope <vault ID>)"
		case 404:
			return fmt.Sprintf("store the app's client secret: az keyvault secret set --vault-name <vault> --name %s --value <secret Value>", cfg.SecretName)
		}
	}
	return "see the message above"
}

func tokenFix(cfg *config.Config, tenant string, err error) string {
	var ee *credentials.EntraError
	if errors.As(err, &ee) && ee.Advice() != "" {
		return ee.Advice()
	}
	if fix := netFix(err, config.EnvAuthorityHost); fix != "" {
		return fix
	}
	return fmt.Sprintf("check %s, %s and that Entra ID (%s) is reachable", config.EnvTenantID, config.EnvClientID, cfg.AuthorityHost)
}

func rolesFix(err error) string {
	var pe *credentials.PermissionError
	if !errors.As(err, &pe) {
		return ""
	}
	if pe.WrongAudience != "" {
		return fmt.Sprintf("set %s and %s for the same API", config.EnvAPI, config.EnvAPIURL)
	}
	var roles []string
	for _, m := range pe.Missing {
		roles = append(roles, m.AnyOf[0])
	}
	fix := fmt.Sprintf("add %s as application permissions, then have an administrator of the tenant open %s", strings.Join(roles, ", "), pe.ConsentURL)
	if !strings.Contains(pe.ConsentURL, "redirect_uri=") {
		fix += " (register a Web redirect URI on the app and set " + config.EnvConsentRedirectURI + " to it: Entra ID sends the administrator there after consent)"
	}
	return fix
}

func apiFix(cfg *config.Config, err error) string {
	var ae *defender.APIError
	switch {
	case errors.As(err, &ae) && ae.Advice != "":
		return ae.Advice
	case errors.As(err, &ae) && ae.StatusCode == 403:
		return "grant the app's permissions with admin consent, and check the tenant has Microsoft Defender XDR"
	}
	if fix := netFix(err, config.EnvAPIURL); fix != "" {
		return fix
	}
	return fmt.Sprintf("make %s reachable from here", cfg.APIURL)
}

// netFix names what a transport failure means, or returns "": a server
// certificate this machine does not trust (a private CA, the devstack's) or
// nothing listening where setting points. Some SDK errors keep only the
// text of the transport's error, so the text is read where the chain ends.
func netFix(err error, setting string) string {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknown) || errors.As(err, &verify) || strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		return "the server's TLS certificate is not trusted here: put the CA that issued it in the file SSL_CERT_FILE names " +
			"(for the devstack, its ca.pem: `source .local/devstack.env` sets SSL_CERT_FILE)"
	}
	addr := ""
	var op *net.OpError
	if errors.Is(err, syscall.ECONNREFUSED) && errors.As(err, &op) && op.Addr != nil {
		addr = op.Addr.String()
	} else if m := refused.FindStringSubmatch(err.Error()); m != nil {
		addr = m[1]
	}
	if addr == "" {
		return ""
	}
	if host, _, e := net.SplitHostPort(addr); e == nil && net.ParseIP(host).IsLoopback() {
		return fmt.Sprintf("nothing listens at %s: if %s points at the devstack, it is not running (start it with make devstack, then source .local/devstack.env)", addr, setting)
	}
	return fmt.Sprintf("nothing listens at %s: check %s and that the service is up", addr, setting)
}

var refused = regexp.MustCompile(`dial tcp ([^ ]+): connect: connection refused`)

func storageFix(setting, value string) string {
	value = config.RedactURL(value) // a SAS is a secret
	if strings.HasPrefix(value, "file://") {
		return fmt.Sprintf("%s=%s must be a directory this process can create and write", setting, value)
	}
	return fmt.Sprintf("check %s=%s exists, and that the identity has 'Storage Blob Data Contributor' on it (or the S3 write permission)", setting, value)
}
