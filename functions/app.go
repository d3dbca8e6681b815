// Package functions wires the configuration, the shared services and the
// functions into one function.App, which the custom handler and the Lambda
// bootstrap serve. Each function lives in its own folder and declares
// itself there (a function.Descriptor named Function); make build writes its
// function.json from that declaration.
package functions

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"

	huntingquery "github.com/defender-functions/defender-functions/functions/hunting-query"
	incidentexport "github.com/defender-functions/defender-functions/functions/incident-export"
	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
	"github.com/defender-functions/defender-functions/shared/awssecret"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/failure"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/queue"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// Functions are the app's functions, as each declares itself beside its
// code.
var Functions = []function.Descriptor{incidentexport.Function, incidentexport.TenantFunction, huntingquery.Function, ticketwebhook.Function}

// Requirements lists the application permissions that the named functions
// need on api, from their descriptors.
func Requirements(api config.API, names ...string) []credentials.RoleRequirement {
	var out []credentials.RoleRequirement
	for _, d := range Functions {
		if !slices.Contains(names, d.Name) {
			continue
		}
		roles := d.Roles.Graph
		if api == config.XDR {
			roles = d.Roles.XDR
		}
		if len(roles) > 0 {
			out = append(out, credentials.RoleRequirement{Function: d.Name, AnyOf: roles})
		}
	}
	return out
}

// Options replace what production builds itself (tests).
type Options struct {
	HTTPClient *http.Client
	// Cache is the token cache; nil makes one the app owns.
	Cache  *credentials.Cache
	Limits defender.Limits
}

// FromEnv builds the app from the process environment. A configuration
// problem does not stop the process (the host must still see it ready): a
// problem with a shared setting fails every function, one with a function's
// own settings that function alone; each answer names the settings to fix.
func FromEnv(log *slog.Logger) *function.App {
	// developer is doctor -as-me's, chosen on an operator's machine: a
	// deployed app that took it from its settings would run as whoever is
	// signed in to az on its host.
	if v, _ := os.LookupEnv(config.EnvVaultAccess); v == string(config.VaultDeveloper) {
		err := fmt.Errorf("%s=%s is for doctor -as-me on an operator's machine, not a deployed app: use managed-identity (Azure), workload-identity, client-certificate or aws-federation", config.EnvVaultAccess, v)
		log.Error("Defender Functions is not configured.", "err", err)
		return Broken(err, log)
	}
	app, err := New(os.LookupEnv, log, nil)
	if err != nil {
		log.Error("Defender Functions is not configured.", "err", err)
		return Broken(err, log)
	}
	return app
}

// New builds the app from settings. It performs no network I/O.
func New(lookup func(string) (string, bool), log *slog.Logger, opts *Options) (*function.App, error) {
	// The shared services log with the context of the work they do; this
	// handler adds the invocation's ID to their lines.
	log = slog.New(function.LogHandler(log.Handler()))
	cfg, err := config.Load(lookup)
	if cfg == nil {
		return nil, err
	}
	if err != nil {
		// Only some functions' own settings are wrong: those answer with
		// their problems, the others run.
		log.Error("Some functions are not configured.", "err", err)
	}
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = credentials.DefaultHTTPClient()
	}
	p := newParts(cfg, o.HTTPClient, log)
	creds, err := credentials.New(p.reg, &credentials.Options{HTTPClient: o.HTTPClient, Cache: o.Cache, Logger: log})
	if err != nil {
		return nil, err
	}
	app := &function.App{Logger: log, Flush: startTelemetry(cfg, lookup, log)}
	// The app owns the process's shared state: the token cache (inside
	// creds) and the pacers every client of a tenant shares.
	pacers := defender.NewPacers()
	var clients []incidentexport.Tenant
	for _, t := range cfg.Tenants {
		c, err := NewClient(cfg, t, creds.Source(t), &defender.Options{HTTPClient: o.HTTPClient, Limits: o.Limits, Logger: log, Pacers: pacers})
		if err != nil {
			return nil, err
		}
		clients = append(clients, incidentexport.Tenant{Name: t, Client: c})
	}
	export, err := p.exporter(clients)
	exportRun, exportTask := function.TimerFunc(nil), function.MessageFunc(nil)
	if cause := configured(cfg, incidentexport.Function, err); cause != nil {
		exportRun = func(context.Context, function.Timer) error { return cause }
		exportTask = func(context.Context, function.Message) error { return cause }
	} else {
		exportRun, exportTask = export.Run, export.Export
	}
	app.HandleTimer(incidentexport.Function, exportRun)
	app.HandleQueue(incidentexport.TenantFunction, exportTask)

	huntServe, err := hunter(cfg, clients)
	if err != nil {
		return nil, err
	}
	if cause := configured(cfg, huntingquery.Function, nil); cause != nil {
		huntServe = unavailable(huntingquery.Function, cause)
	}
	app.HandleHTTP(huntingquery.Function, huntServe)

	webhookServe, err := p.receiver(clients)
	if cause := configured(cfg, ticketwebhook.Function, err); cause != nil {
		webhookServe = unavailable(ticketwebhook.Function, cause)
	}
	app.HandleHTTP(ticketwebhook.Function, webhookServe)
	return app, nil
}

// startTelemetry starts the OTLP exporters when OTEL_EXPORTER_OTLP_ENDPOINT
// is set, and returns their flush.
func startTelemetry(cfg *config.Config, lookup func(string) (string, bool), log *slog.Logger) func(context.Context) error {
	if cfg.OTLPEndpoint == "" {
		return nil
	}
	platform := "azure.functions"
	if v, _ := lookup(config.EnvLambdaFunctionName); v != "" {
		platform = "aws.lambda"
	}
	t, err := telemetry.Start(context.Background(), telemetry.Options{ServiceName: cfg.OTelServiceName, Platform: platform, Version: defender.Version})
	if err != nil {
		// The functions run without it: telemetry is not their work.
		log.Error("Telemetry is off: its exporters did not start.", "err", err)
		return nil
	}
	return t.Flush
}

func hunter(cfg *config.Config, tenants []incidentexport.Tenant) (function.HTTPFunc, error) {
	catalog, err := huntingquery.BuiltinCatalog()
	if err != nil {
		return nil, err
	}
	h := &huntingquery.Hunter{Catalog: catalog, Clients: map[string]defender.Client{}, DefaultTenant: cfg.Tenants[0],
		AllowAdhoc: cfg.HuntingAllowAdhoc, RequiredRole: cfg.HuntingRequiredRole, AdhocRole: cfg.HuntingAdhocRole, TenantRoles: cfg.HuntingTenantRoles,
		MaxRows: cfg.HuntingMaxRows, Timeout: cfg.HuntingTimeout}
	for _, t := range tenants {
		h.Clients[t.Name] = t.Client
	}
	return h.Serve, nil
}

// parts are what the functions share and New builds once, on first use:
// the app registration, the Azure identity (Blob Storage, Storage queues
// and Logs Ingestion take the same one), the Blob options and the state
// store (the export's checkpoints and the webhook's ledger live in one).
type parts struct {
	cfg   *config.Config
	reg   credentials.Registration
	hc    *http.Client
	log   *slog.Logger
	blob  func() (state.BlobOptions, error)
	store func() (state.Store, error)
}

func newParts(cfg *config.Config, hc *http.Client, log *slog.Logger) *parts {
	p := &parts{cfg: cfg, reg: Registration(cfg), hc: hc, log: log}
	p.blob = sync.OnceValues(func() (state.BlobOptions, error) { return blobOptions(cfg, p.reg, hc) })
	p.store = sync.OnceValues(func() (state.Store, error) {
		blob, err := p.blob()
		if err != nil {
			return nil, err
		}
		return state.Open(cfg.StateStore, blob)
	})
	return p
}

// configured says why function d cannot run: problems with its own
// settings, or what building it found (err), or nil.
func configured(cfg *config.Config, d function.Descriptor, err error) error {
	p := cfg.GroupProblems[d.Settings]
	switch {
	case len(p) > 0 && err != nil:
		return fmt.Errorf("%s is not configured: %s; %w", d.Name, strings.Join(p, "; "), err)
	case len(p) > 0:
		return fmt.Errorf("%s is not configured: %s", d.Name, strings.Join(p, "; "))
	case err != nil:
		return fmt.Errorf("%s is not configured: %w", d.Name, err)
	}
	return nil
}

// unavailable answers every call as failure.NotConfigured says (500, no
// Retry-After: only the operator can fix it); the functions whose settings
// are right are not affected. The answer says what to fix, except to the
// callers of a signed function, who have not proved who they are: they read
// that the function is not configured, and the operator finds the rest in
// the log line of the answer's correlation ID.
func unavailable(d function.Descriptor, cause error) function.HTTPFunc {
	msg := cause.Error()
	f := failure.NotConfigured(d.Name)
	return func(ctx context.Context, _ *function.HTTPRequest) *function.HTTPResponse {
		function.Logger(ctx).Error(d.Name+" is not configured.", "function", d.Name, "err", msg)
		if d.HTTP.Signed {
			return function.Text(f.Status, f.Message+"; the operator's log has the details (correlation ID "+function.InvocationID(ctx)+")")
		}
		return function.Text(f.Status, msg)
	}
}

// Registration is the app registration that cfg's settings describe, as
// the credentials take it.
func Registration(cfg *config.Config) credentials.Registration {
	return credentials.Registration{API: cfg.API, Resource: cfg.Resource, ClientID: cfg.ClientID, Tenants: cfg.Tenants,
		AuthorityHost: cfg.AuthorityHost, ConsentRedirectURI: cfg.ConsentRedirectURI, TokenVersion: cfg.TokenVersion, Credential: cfg.Credential, ClientSecret: cfg.ClientSecret,
		AssertionAlg: cfg.AssertionAlg, KeyVaultURL: cfg.KeyVaultURL, SecretName: cfg.SecretName, SecretTTL: cfg.SecretTTL,
		VaultAccess: cfg.VaultAccess, ManagedIdentityClientID: cfg.ManagedIdentityClientID, VaultTenantID: cfg.VaultTenantID,
		VaultClientID: cfg.VaultClientID, VaultCertificatePath: cfg.VaultCertificatePath, VaultCertificatePass: cfg.VaultCertificatePass,
		FederatedTokenFile: cfg.FederatedTokenFile}
}

// NewClient is the API client that cfg's settings describe, for one
// tenant: DEFENDER_API, DEFENDER_API_URL and DEFENDER_RATE_LIMITS become
// the client's arguments and options here, and nowhere else. Limits set in
// o win (tests).
func NewClient(cfg *config.Config, tenant string, src credentials.Source, o *defender.Options) (defender.Client, error) {
	opts := defender.Options{}
	if o != nil {
		opts = *o
	}
	if opts.Limits == nil && cfg.RateLimits != nil {
		opts.Limits = defender.Limits{}
		for b, rs := range cfg.RateLimits {
			for _, r := range rs {
				opts.Limits[b] = append(opts.Limits[b], defender.Rate{Requests: r.Requests, Per: r.Per})
			}
		}
	}
	c, err := defender.New(defender.API(cfg.API), cfg.APIURL, tenant, src, &opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config.EnvAPIURL, err)
	}
	return c, nil
}

func (p *parts) receiver(tenants []incidentexport.Tenant) (function.HTTPFunc, error) {
	cfg := p.cfg
	if cfg.StateStore == "" {
		return nil, fmt.Errorf("it needs %s (file:///path or an Azure Blob container URL) to remember deliveries", config.EnvStateStore)
	}
	var mapping *ticketwebhook.Mapping
	var err error
	if cfg.WebhookMapping != "" {
		mapping, err = ticketwebhook.ParseMapping([]byte(cfg.WebhookMapping), config.EnvWebhookMapping)
	} else {
		mapping, err = ticketwebhook.LoadMapping(cfg.WebhookMappingFile)
	}
	if err != nil {
		return nil, err
	}
	keys, err := WebhookKeys(cfg, p.log)
	if err != nil {
		return nil, err
	}
	st, err := p.store()
	if err != nil {
		return nil, err
	}
	rc := &ticketwebhook.Receiver{Mapping: mapping, Keys: keys, Clients: map[string]defender.Client{}, DefaultTenant: cfg.Tenants[0],
		State: st, Tolerance: cfg.WebhookTolerance, RetryWindow: cfg.WebhookRetryWindow, DedupeTTL: cfg.WebhookDedupeTTL,
		Timeout: cfg.WebhookTimeout, MaxBody: cfg.WebhookMaxBody}
	for _, t := range tenants {
		rc.Clients[t.Name] = t.Client
	}
	return rc.Serve, nil
}

// WebhookKeys are the providers' keys: from the settings, or read at run
// time from AWS Secrets Manager.
func WebhookKeys(cfg *config.Config, log *slog.Logger) (ticketwebhook.Keys, error) {
	if cfg.WebhookSecretsARN != "" {
		src, err := awssecret.New(cfg.WebhookSecretsARN, &awssecret.Options{TTL: cfg.WebhookSecretsTTL, Region: cfg.S3Region, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvWebhookSecretsARN, err)
		}
		return &ticketwebhook.SecretKeys{Secret: src}, nil
	}
	keys := ticketwebhook.StaticKeys{}
	for provider, s := range cfg.WebhookSecrets {
		k, err := ticketwebhook.ParseKeys(provider, s.Reveal())
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", config.EnvWebhookSecretPrefix, strings.ToUpper(provider), err)
		}
		keys[provider] = k
	}
	return keys, nil
}

func (p *parts) exporter(tenants []incidentexport.Tenant) (*incidentexport.Exporter, error) {
	cfg := p.cfg
	var missing []string
	if cfg.ExportSink == "" {
		missing = append(missing, config.EnvExportSink+" (file:///path, an Azure Blob container URL, or s3://bucket/prefix)")
	}
	if cfg.StateStore == "" {
		missing = append(missing, config.EnvStateStore+" (file:///path or an Azure Blob container URL)")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("incident-export needs %v", missing)
	}
	blob, err := p.blob()
	if err != nil {
		return nil, err
	}
	sk, err := openSink(cfg, p.reg, p.hc, blob, p.log)
	if err != nil {
		return nil, err
	}
	st, err := p.store()
	if err != nil {
		return nil, err
	}
	e := &incidentexport.Exporter{Tenants: tenants, Sink: sk, State: st, Lookback: cfg.ExportLookback, PageSize: cfg.ExportPageSize, Concurrency: cfg.ExportConcurrency,
		MaxRun: cfg.ExportMaxRun, Lag: cfg.ExportLag, Batched: cfg.ExportBatched, BatchEvery: cfg.ExportBatchEvery}
	if _, ok := sk.(sink.Exister); cfg.ExportBatched && !ok {
		return nil, fmt.Errorf("%s=batches writes objects: use a file, Blob or S3 sink (%s=%s is a SIEM, which takes rows)", config.EnvExportLayout, config.EnvExportSink, cfg.ExportSink)
	}
	switch {
	case config.ExportQueueIsSQS(cfg.ExportQueue):
		q, err := queue.NewSQS(cfg.ExportQueue, cfg.S3Region)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvExportQueue, err)
		}
		e.Queue = q
	case cfg.ExportQueue != "":
		q, err := AzureQueue(cfg, cfg.ExportQueue, blob)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvExportQueue, err)
		}
		e.Queue = q
	}
	return e, nil
}

// Sink is the sink EXPORT_SINK names, reached as the settings say: Blob
// containers as BlobOptions, a Logs Ingestion stream with the process's
// identity (the managed identity in Azure), a Splunk collector with its
// token read from Key Vault.
func Sink(cfg *config.Config, hc *http.Client, blob state.BlobOptions, log *slog.Logger) (sink.Sink, error) {
	return openSink(cfg, Registration(cfg), hc, blob, log)
}

func openSink(cfg *config.Config, reg credentials.Registration, hc *http.Client, blob state.BlobOptions, log *slog.Logger) (sink.Sink, error) {
	o := sink.Options{Blob: blob, S3: sink.S3Options{Region: cfg.S3Region, Endpoint: cfg.S3Endpoint}}
	switch kind, _ := config.ClassifySink(cfg.ExportSink); kind {
	case config.SinkLogs:
		// The identity Blob Storage uses, when it uses one.
		cred := blob.Credential
		if cred == nil {
			var err error
			if cred, err = credentials.AzureCredential(reg, hc); err != nil {
				return nil, fmt.Errorf("%s: a Logs Ingestion stream needs an identity: %w", config.EnvExportSink, err)
			}
		}
		o.Logs = sink.LogsOptions{Credential: cred, HTTPClient: credentials.SameOrigin(hc), MaxBytes: cfg.ExportBatchBytes}
	case config.SinkSplunk:
		tok, err := credentials.NewVaultSecret(reg, cfg.SplunkTokenSecret, config.EnvSplunkTokenSecret, &credentials.Options{HTTPClient: hc, Logger: log})
		if err != nil {
			return nil, err
		}
		o.Splunk = sink.SplunkOptions{Token: tok, HTTPClient: credentials.SameOrigin(hc), Ack: cfg.SplunkAck, AckTimeout: cfg.SplunkAckTimeout, MaxBytes: cfg.ExportBatchBytes, Index: cfg.SplunkIndex}
	}
	return sink.Open(cfg.ExportSink, o)
}

// BlobOptions follow the Functions conventions: AzureWebJobsStorage as a
// connection string (Azurite, development), or identity-based: the managed
// identity in Azure, the bootstrap app of KEY_VAULT_CREDENTIAL elsewhere
// (on Lambda the state can live in an Azure Blob container).
func BlobOptions(cfg *config.Config, hc *http.Client) (state.BlobOptions, error) {
	return blobOptions(cfg, Registration(cfg), hc)
}

func blobOptions(cfg *config.Config, reg credentials.Registration, hc *http.Client) (state.BlobOptions, error) {
	o := state.BlobOptions{ConnectionString: cfg.StorageConnStr.Reveal(), HTTPClient: credentials.SameOrigin(hc)}
	if o.ConnectionString == "" {
		cred, err := credentials.AzureCredential(reg, hc)
		if err != nil {
			return o, fmt.Errorf("blob storage: no AzureWebJobsStorage connection string, and no identity: %w", err)
		}
		o.Credential = cred
	}
	return o, nil
}

// AzureQueue is the Storage queue name in AzureWebJobsStorage's account,
// reached the way BlobOptions reaches its containers.
func AzureQueue(cfg *config.Config, name string, blob state.BlobOptions) (*queue.Azure, error) {
	return queue.NewAzure(name, queue.AzureOptions{ConnectionString: cfg.StorageConnStr.Reveal(), Account: cfg.StorageAccount,
		ServiceURL: cfg.StorageQueueURI, Credential: blob.Credential, HTTPClient: blob.HTTPClient})
}

// Broken is the app of a process whose configuration is wrong.
func Broken(cause error, log *slog.Logger) *function.App {
	cause = fmt.Errorf("Defender Functions is not configured: %w", cause)
	app := &function.App{Logger: log}
	for _, d := range Functions {
		switch {
		case d.HTTP != nil:
			app.HandleHTTP(d, unavailable(d, cause))
		case d.Queue != nil:
			app.HandleQueue(d, func(context.Context, function.Message) error { return cause })
		default:
			app.HandleTimer(d, func(context.Context, function.Timer) error { return cause })
		}
	}
	return app
}
