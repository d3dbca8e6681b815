// Package config parses Defender Functions' settings (Azure app settings or
// environment variables) once, into one typed struct. Every problem is
// reported at once, each naming the setting and what to put there.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// API selects the Defender backend.
type API string

const (
	// Graph is the Microsoft Graph security API (the default).
	Graph API = "graph"
	// XDR is the Defender XDR API at api.security.microsoft.com, retired by
	// Microsoft on 2027-02-01; selectable for migration only.
	XDR API = "xdr"
)

// Credential is how the Defender app proves its identity to Entra ID.
type Credential string

const (
	KeyVaultSecret            Credential = "keyvault-secret"
	KeyVaultCertificate       Credential = "keyvault-certificate"
	ManagedIdentityFederation Credential = "managed-identity-federation"
	EnvSecret                 Credential = "env-secret"
	// AWSFederation is the Lambda's execution role's JWT from AWS STS
	// (IAM outbound identity federation), trusted by the app: no secret.
	AWSFederation Credential = "aws-federation"
)

// VaultAccess is how the process authenticates to Key Vault.
type VaultAccess string

const (
	// VaultManagedIdentity is the Function App's managed identity (Azure).
	VaultManagedIdentity VaultAccess = "managed-identity"
	// VaultWorkloadIdentity is federation from a token file (hosts outside Azure).
	VaultWorkloadIdentity VaultAccess = "workload-identity"
	// VaultCertificate is a bootstrap app's certificate (hosts outside Azure, e.g. AWS Lambda).
	VaultCertificate VaultAccess = "client-certificate"
	// VaultAWSFederation is the execution role's JWT from AWS STS, trusted
	// by KEY_VAULT_CLIENT_ID's app (by default the Defender app itself).
	VaultAWSFederation VaultAccess = "aws-federation"
	// VaultDeveloper is the operator's own sign-in on their machine (the
	// Azure CLI's, else the Azure Developer CLI's): what doctor -as-me
	// reaches the vault and storage with. Never a deployed app's.
	VaultDeveloper VaultAccess = "developer"
)

// Secret is a string that never prints: fmt, slog and JSON all see "[redacted]".
type Secret string

func (Secret) String() string { return "[redacted]" }

func (Secret) GoString() string { return "[redacted]" }

func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

func (s Secret) Reveal() string { return string(s) }

func (s Secret) Format(f fmt.State, verb rune) { f.Write([]byte("[redacted]")) }

// Config is every setting, parsed and checked.
type Config struct {
	API           API
	Tenants       []string // first is the home tenant
	ClientID      string
	Credential    Credential
	KeyVaultURL   string
	SecretName    string
	ClientSecret  Secret // env-secret only
	AuthorityHost string // no trailing slash
	// ConsentRedirectURI is a Web redirect URI registered on the app, passed
	// in the admin-consent links (DEFENDER_CONSENT_REDIRECT_URI).
	ConsentRedirectURI string
	TokenVersion       int    // 1 or 2
	APIURL             string // no trailing slash
	// Resource is the audience of the API's tokens (scope minus /.default).
	Resource string
	// AssertionAlg signs certificate assertions: PS256 (default) or RS256.
	AssertionAlg string
	// SecretTTL bounds how long a secret read from Key Vault is reused.
	SecretTTL time.Duration

	// How Key Vault is reached.
	VaultAccess             VaultAccess
	ManagedIdentityClientID string // user-assigned identity; empty = system-assigned
	VaultTenantID           string
	VaultClientID           string
	VaultCertificatePath    string
	VaultCertificatePass    Secret
	FederatedTokenFile      string

	// Export and storage settings.
	ExportSink        string        // EXPORT_SINK; required by incident-export
	StateStore        string        // STATE_STORE; required by incident-export and ticket-webhook
	ExportSchedule    string        // EXPORT_SCHEDULE (read by the host through function.json)
	ExportLookback    time.Duration // EXPORT_LOOKBACK: how far back a first run starts
	ExportPageSize    int           // EXPORT_PAGE_SIZE: 0 = the API's maximum
	ExportMaxRun      time.Duration // EXPORT_MAX_RUN: a run stops cleanly by then
	ExportLag         time.Duration // EXPORT_LAG: how late an update may become visible to listings
	ExportConcurrency int           // EXPORT_CONCURRENCY: tenants exported at once
	ExportQueue       string        // EXPORT_QUEUE: the Storage queue's name or SQS queue's URL the timer fans tenants out to
	StorageConnStr    Secret        // AzureWebJobsStorage: Blob connection string (Azurite, development)
	StorageAccount    string        // AzureWebJobsStorage__accountName: identity-based Blob access
	StorageQueueURI   string        // AzureWebJobsStorage__queueServiceUri: identity-based queue endpoint outside Azure's public cloud
	S3Endpoint        string        // EXPORT_S3_ENDPOINT: an S3-compatible endpoint (s3rver, MinIO)
	ExportBatched     bool          // EXPORT_LAYOUT=batches: one gzip NDJSON object per checkpoint, not one per version
	ExportBatchEvery  time.Duration // EXPORT_BATCH_EVERY: how often a batched run writes its batch
	ExportBatchBytes  int           // EXPORT_BATCH_BYTES: a SIEM request's body at most; 0 = the sink's default
	SplunkTokenSecret string        // EXPORT_SPLUNK_TOKEN_SECRET: the Key Vault secret holding the HEC token
	SplunkAck         bool          // EXPORT_SPLUNK_ACK: wait for indexer acknowledgement
	SplunkAckTimeout  time.Duration // EXPORT_SPLUNK_ACK_TIMEOUT: how long a request's acknowledgement is awaited
	SplunkIndex       string        // EXPORT_SPLUNK_INDEX: empty = the token's default index
	S3Region          string        // AWS_REGION

	// OpenTelemetry: on when OTLPEndpoint is set. The SDK reads these
	// variables itself too (and the per-signal ones); they are read here
	// to be checked once, with the others.
	OTLPEndpoint    string // OTEL_EXPORTER_OTLP_ENDPOINT: an OTLP/HTTP collector, http(s)://host:4318
	OTLPHeaders     Secret // OTEL_EXPORTER_OTLP_HEADERS: key=value pairs sent with every export (may hold an API key)
	OTelServiceName string // OTEL_SERVICE_NAME: the service.name resource attribute

	// RateLimits replace the documented client-side limits: nil keeps them,
	// an empty map turns pacing off (DEFENDER_RATE_LIMITS=off).
	RateLimits map[string][]RateLimit

	// GroupProblems are the problems of the settings that only some
	// functions read, by group (ExportSettings …), when Load found no
	// other: the functions that declare the group (function.Descriptor's
	// Settings) cannot run, the others can.
	GroupProblems map[string]Problems

	// hunting-query settings.
	HuntingAllowAdhoc   bool              // HUNTING_ALLOW_ADHOC: accept raw KQL
	HuntingRequiredRole string            // HUNTING_REQUIRED_ROLE: callers must carry it
	HuntingAdhocRole    string            // HUNTING_ADHOC_ROLE: callers of raw KQL must carry it
	HuntingTenantRoles  map[string]string // HUNTING_TENANT_ROLES: tenant (lower case) → the role a caller needs to query it
	HuntingMaxRows      int               // HUNTING_MAX_ROWS: rows returned at most (the rest is flagged truncated)
	HuntingTimeout      time.Duration     // HUNTING_TIMEOUT: below the platform's HTTP limit (230 s in Azure)

	// ticket-webhook settings. A provider without a secret is switched off.
	WebhookSecrets     map[string]Secret // WEBHOOK_SECRET_JIRA, _SERVICENOW, _GENERIC: space-separated for rotation
	WebhookSecretsARN  string            // WEBHOOK_SECRETS_ARN: an AWS Secrets Manager secret holding them all, read at run time
	WebhookSecretsTTL  time.Duration     // WEBHOOK_SECRETS_TTL: how long that secret is served before it is read again
	WebhookMappingFile string            // WEBHOOK_MAPPING_FILE: empty = the built-in mapping
	WebhookMapping     string            // WEBHOOK_MAPPING: the mapping's JSON itself (an app setting or a Key Vault reference)
	WebhookTolerance   time.Duration     // WEBHOOK_TOLERANCE: how far a signed timestamp may be from now
	WebhookRetryWindow time.Duration     // WEBHOOK_RETRY_WINDOW: how old a Jira redelivery may be
	WebhookDedupeTTL   time.Duration     // WEBHOOK_DEDUPE_TTL: how long a delivery ID is remembered
	WebhookMaxBody     int               // WEBHOOK_MAX_BODY: bytes
	WebhookTimeout     time.Duration     // WEBHOOK_TIMEOUT: an unfinished delivery answers 503 by then
}

// The ticketing systems ticket-webhook takes deliveries from, as named in
// its route ticket-webhook/{provider} and in their secrets' settings
// (WEBHOOK_SECRET_JIRA …); ticket-webhook says how each signs and reads.
const (
	WebhookJira       = "jira"
	WebhookServiceNow = "servicenow"
	WebhookGeneric    = "generic"
)

// WebhookProviders are those systems, in the order messages list them.
var WebhookProviders = []string{WebhookJira, WebhookServiceNow, WebhookGeneric}

// RateLimit is "Requests per Per" for one bucket of API operations.
type RateLimit struct {
	Requests int
	Per      time.Duration
}

// Setting names: the public contract.
const (
	EnvAPI                     = "DEFENDER_API"
	EnvTenantID                = "DEFENDER_TENANT_ID"
	EnvClientID                = "DEFENDER_CLIENT_ID"
	EnvCredential              = "DEFENDER_CREDENTIAL"
	EnvKeyVaultURL             = "KEY_VAULT_URL"
	EnvSecretName              = "DEFENDER_SECRET_NAME"
	EnvClientSecret            = "DEFENDER_CLIENT_SECRET"
	EnvAuthorityHost           = "AZURE_AUTHORITY_HOST"
	EnvConsentRedirectURI      = "DEFENDER_CONSENT_REDIRECT_URI"
	EnvTokenVersion            = "DEFENDER_TOKEN_VERSION"
	EnvAPIURL                  = "DEFENDER_API_URL"
	EnvAssertionAlg            = "DEFENDER_ASSERTION_ALG"
	EnvSecretTTL               = "DEFENDER_SECRET_TTL"
	EnvVaultAccess             = "KEY_VAULT_CREDENTIAL"
	EnvManagedIdentityClientID = "MANAGED_IDENTITY_CLIENT_ID"
	EnvVaultTenantID           = "KEY_VAULT_TENANT_ID"
	EnvVaultClientID           = "KEY_VAULT_CLIENT_ID"
	EnvVaultCertificatePath    = "KEY_VAULT_CERTIFICATE_PATH"
	EnvVaultCertificatePass    = "KEY_VAULT_CERTIFICATE_PASSWORD"
	EnvFederatedTokenFile      = "KEY_VAULT_FEDERATED_TOKEN_FILE"
	EnvExportSink              = "EXPORT_SINK"
	EnvStateStore              = "STATE_STORE"
	EnvExportSchedule          = "EXPORT_SCHEDULE"
	EnvExportLookback          = "EXPORT_LOOKBACK"
	EnvExportPageSize          = "EXPORT_PAGE_SIZE"
	EnvExportMaxRun            = "EXPORT_MAX_RUN"
	EnvExportLag               = "EXPORT_LAG"
	EnvExportConcurrency       = "EXPORT_CONCURRENCY"
	EnvExportQueue             = "EXPORT_QUEUE"
	EnvStorage                 = "AzureWebJobsStorage"
	EnvStorageAccount          = "AzureWebJobsStorage__accountName"
	EnvStorageQueueURI         = "AzureWebJobsStorage__queueServiceUri"
	EnvS3Endpoint              = "EXPORT_S3_ENDPOINT"
	EnvExportLayout            = "EXPORT_LAYOUT"
	EnvExportBatchEvery        = "EXPORT_BATCH_EVERY"
	EnvExportBatchBytes        = "EXPORT_BATCH_BYTES"
	EnvSplunkTokenSecret       = "EXPORT_SPLUNK_TOKEN_SECRET"
	EnvSplunkAck               = "EXPORT_SPLUNK_ACK"
	EnvSplunkAckTimeout        = "EXPORT_SPLUNK_ACK_TIMEOUT"
	EnvSplunkIndex             = "EXPORT_SPLUNK_INDEX"
	EnvAWSRegion               = "AWS_REGION"
	EnvLambdaFunctionName      = "AWS_LAMBDA_FUNCTION_NAME" // set by Lambda
	EnvRateLimits              = "DEFENDER_RATE_LIMITS"
	EnvOTLPEndpoint            = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPHeaders             = "OTEL_EXPORTER_OTLP_HEADERS"
	EnvOTelServiceName         = "OTEL_SERVICE_NAME"
	EnvHuntingAllowAdhoc       = "HUNTING_ALLOW_ADHOC"
	EnvHuntingRequiredRole     = "HUNTING_REQUIRED_ROLE"
	EnvHuntingAdhocRole        = "HUNTING_ADHOC_ROLE"
	EnvHuntingTenantRoles      = "HUNTING_TENANT_ROLES"
	EnvHuntingMaxRows          = "HUNTING_MAX_ROWS"
	EnvHuntingTimeout          = "HUNTING_TIMEOUT"
	EnvWebhookSecretPrefix     = "WEBHOOK_SECRET_" // + JIRA, SERVICENOW, GENERIC
	EnvWebhookSecretsARN       = "WEBHOOK_SECRETS_ARN"
	EnvWebhookSecretsTTL       = "WEBHOOK_SECRETS_TTL"
	EnvWebhookMappingFile      = "WEBHOOK_MAPPING_FILE"
	EnvWebhookMapping          = "WEBHOOK_MAPPING"
	EnvWebhookTolerance        = "WEBHOOK_TOLERANCE"
	EnvWebhookRetryWindow      = "WEBHOOK_RETRY_WINDOW"
	EnvWebhookDedupeTTL        = "WEBHOOK_DEDUPE_TTL"
	EnvWebhookMaxBody          = "WEBHOOK_MAX_BODY"
	EnvWebhookTimeout          = "WEBHOOK_TIMEOUT"
)

// Defaults of the public cloud.
const (
	DefaultAuthorityHost = "https://login.microsoftonline.com"
	GraphURL             = "https://graph.microsoft.com"
	XDRURL               = "https://api.security.microsoft.com"
)

// Problems is every configuration problem found, one per setting.
type Problems []string

func (p Problems) Error() string {
	return "configuration: " + strings.Join(p, "; ")
}

var (
	guidRe = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	})
	domainRe = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$`)
	})
	nameRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`) })
)

// FromEnv loads the configuration from the process environment.
func FromEnv() (*Config, error) { return Load(os.LookupEnv) }

// The groups of settings that only some functions read: a problem with
// one stops the functions that declare it, not the others.
const (
	ExportSettings  = "export"
	HuntingSettings = "hunting"
	WebhookSettings = "webhook"
)

// Load parses the settings that lookup returns. Every problem is reported
// at once, each naming its setting, as Problems. A problem with the settings
// every function shares (the app, its credential, the API) leaves no
// Config; when every problem belongs to one function's own settings, Load
// returns the Config too, with GroupProblems saying which functions
// cannot run: the others can. Each concern's settings are read by a method
// of reader below.
func Load(lookup func(string) (string, bool)) (*Config, error) {
	r := &reader{lookup: lookup, fn: map[string]Problems{}}
	c := &Config{}
	r.identity(c)
	r.vault(c)
	r.rateLimits(c)
	r.telemetry(c)
	r.scope = ExportSettings
	r.export(c)
	r.scope = HuntingSettings
	r.hunting(c)
	r.scope = WebhookSettings
	r.webhook(c)
	all := append(Problems{}, r.p...)
	for _, f := range []string{ExportSettings, HuntingSettings, WebhookSettings} {
		all = append(all, r.fn[f]...)
	}
	switch {
	case len(r.p) > 0:
		return nil, all
	case len(all) > 0:
		c.GroupProblems = r.fn
		return c, all
	}
	return c, nil
}

// reader reads settings and collects the problems it finds: the shared
// settings' in p, a group's (scope) in fn.
type reader struct {
	lookup func(string) (string, bool)
	scope  string
	p      Problems
	fn     map[string]Problems
}

func (r *reader) problem(msg string) {
	if r.scope == "" {
		r.p = append(r.p, msg)
		return
	}
	r.fn[r.scope] = append(r.fn[r.scope], msg)
}

// get is a setting's trimmed value, or def when it is unset or empty. An
// unresolved Key Vault reference is a problem (the platform could not read
// the secret), and reads as def.
func (r *reader) get(name, def string) string {
	v, ok := r.lookup(name)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return def
	}
	if isReference(v) {
		r.problem(unresolved(name, UnresolvedReferenceAdvice))
		return def
	}
	return v
}

// integer reads a whole number from lo to hi; a bad one is a problem
// saying what to use.
func (r *reader) integer(name string, def, lo, hi int, use string) int {
	v := r.get(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.problem(fmt.Sprintf("%s=%q: %s", name, v, use))
		return def
	}
	return n
}

// duration is a duration setting within [lo, hi], or def.
func (r *reader) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := r.get(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		r.problem(fmt.Sprintf("%s=%q: use a duration between %s and %s, such as %s", name, v, lo, hi, def))
		return def
	}
	return d
}

// IsProblems reports whether err is a configuration error.
func IsProblems(err error) bool {
	var p Problems
	return errors.As(err, &p)
}
