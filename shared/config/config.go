// Package config parses Defender Functions' settings (Azure app settings or
// environment variables) once, into one typed struct. Every problem is
// reported at once, each naming the setting and what to put there.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"slices"
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
)

// Secret is a string that never prints: fmt, slog and JSON all see "[redacted]".
type Secret string

func (Secret) String() string                  { return "[redacted]" }
func (Secret) GoString() string                { return "[redacted]" }
func (Secret) LogValue() slog.Value            { return slog.StringValue("[redacted]") }
func (Secret) MarshalJSON() ([]byte, error)    { return []byte(`"[redacted]"`), nil }
func (Secret) MarshalText() ([]byte, error)    { return []byte("[redacted]"), nil }
func (s Secret) Reveal() string                { return string(s) }
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

	// FunctionProblems are the problems of each function's own settings,
	// by function name, when Load found no other: those functions cannot
	// run, the others can.
	FunctionProblems map[string]Problems

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

// Webhook providers, as named in the route ticket-webhook/{provider}.
var WebhookProviders = []string{"jira", "servicenow", "generic"}

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

// nationalGraph maps national-cloud Graph hosts to themselves: their tokens
// carry that host as audience. Every other host (regional XDR hosts, the
// devstack) keeps the public resource.
var nationalGraph = map[string]bool{"graph.microsoft.us": true, "dod-graph.microsoft.us": true, "microsoftgraph.chinacloudapi.cn": true}

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

// The functions whose settings are their own: a problem with one of them
// stops that function only.
const (
	IncidentExport = "incident-export"
	HuntingQuery   = "hunting-query"
	TicketWebhook  = "ticket-webhook"
)

// Load parses the settings that lookup returns. Every problem is reported
// at once, each naming its setting, as Problems. A problem with the settings
// every function shares (the app, its credential, the API) leaves no
// Config; when every problem belongs to one function's own settings, Load
// returns the Config too, with FunctionProblems saying which functions
// cannot run: the others can. Each concern's settings are read by a method
// of reader below.
func Load(lookup func(string) (string, bool)) (*Config, error) {
	r := &reader{lookup: lookup, fn: map[string]Problems{}}
	c := &Config{}
	r.identity(c)
	r.vault(c)
	r.rateLimits(c)
	r.telemetry(c)
	r.scope = IncidentExport
	r.export(c)
	r.scope = HuntingQuery
	r.hunting(c)
	r.scope = TicketWebhook
	r.webhook(c)
	all := append(Problems{}, r.p...)
	for _, f := range []string{IncidentExport, HuntingQuery, TicketWebhook} {
		all = append(all, r.fn[f]...)
	}
	switch {
	case len(r.p) > 0:
		return nil, all
	case len(all) > 0:
		c.FunctionProblems = r.fn
		return c, all
	}
	return c, nil
}

// reader reads settings and collects the problems it finds: the shared
// settings' in p, one function's (scope) in fn.
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
	if strings.HasPrefix(v, "@Microsoft.KeyVault(") {
		r.problem(fmt.Sprintf("%s is an unresolved Key Vault reference: give the Function App's identity the 'Key Vault Secrets User' role on the vault, check the reference's SecretUri, and restart the app", name))
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

// identity: the API, the tenants, the app and its credential, Entra ID.
func (r *reader) identity(c *Config) {
	switch api := strings.ToLower(r.get(EnvAPI, "graph")); api {
	case "graph", "xdr":
		c.API = API(api)
	default:
		r.problem(fmt.Sprintf("%s=%q is not an API: use graph (Microsoft Graph security API) or xdr (Defender XDR API, retired 2027-02-01)", EnvAPI, api))
	}

	if t := r.get(EnvTenantID, ""); t == "" {
		r.problem(EnvTenantID + " is required: the directory (tenant) ID of your Entra ID tenant, or a comma-separated list for a multi-tenant app")
	} else {
		seen := map[string]bool{}
		for _, one := range strings.Split(t, ",") {
			one = strings.TrimSpace(one)
			switch {
			case one == "":
			case !guidRe().MatchString(one) && !domainRe().MatchString(one):
				r.problem(fmt.Sprintf("%s contains %q, which is neither a tenant ID (GUID) nor a domain such as contoso.onmicrosoft.com", EnvTenantID, one))
			case seen[strings.ToLower(one)]:
				r.problem(fmt.Sprintf("%s lists %q twice", EnvTenantID, one))
			default:
				seen[strings.ToLower(one)] = true
				c.Tenants = append(c.Tenants, one)
			}
		}
	}

	c.ClientID = r.get(EnvClientID, "")
	switch {
	case c.ClientID == "":
		r.problem(EnvClientID + " is required: the application (client) ID of the app registration")
	case !guidRe().MatchString(c.ClientID):
		r.problem(fmt.Sprintf("%s=%q is not an application (client) ID: copy the GUID from the app registration's Overview page", EnvClientID, c.ClientID))
	}

	c.Credential = Credential(strings.ToLower(r.get(EnvCredential, string(KeyVaultSecret))))
	switch c.Credential {
	case KeyVaultSecret, KeyVaultCertificate, ManagedIdentityFederation, AWSFederation, EnvSecret:
	default:
		r.problem(fmt.Sprintf("%s=%q is not a credential mode: use keyvault-secret, keyvault-certificate, managed-identity-federation (Azure), aws-federation (AWS) or env-secret", EnvCredential, c.Credential))
	}

	c.SecretName = r.get(EnvSecretName, "defender-client-secret")
	if !nameRe().MatchString(c.SecretName) {
		r.problem(fmt.Sprintf("%s=%q is not a Key Vault secret name (1-127 letters, digits and dashes)", EnvSecretName, c.SecretName))
	}
	c.KeyVaultURL = r.get(EnvKeyVaultURL, "")
	usesVault := c.Credential == KeyVaultSecret || c.Credential == KeyVaultCertificate
	if usesVault {
		if c.KeyVaultURL == "" {
			r.problem(fmt.Sprintf("%s is required with %s=%s: the vault URI, https://<vault>.vault.azure.net/", EnvKeyVaultURL, EnvCredential, c.Credential))
		} else if u, err := url.Parse(c.KeyVaultURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
			r.problem(fmt.Sprintf("%s=%q is not a vault URI: use https://<vault>.vault.azure.net/", EnvKeyVaultURL, RedactURL(c.KeyVaultURL)))
		}
	}
	if secret, ok := r.lookup(EnvClientSecret); ok && secret != "" {
		if c.Credential != EnvSecret {
			r.problem(fmt.Sprintf("%s is set but %s=%s: remove the secret from the settings (keep it in Key Vault) or use env-secret for local development", EnvClientSecret, EnvCredential, c.Credential))
		} else if strings.HasPrefix(secret, "@Microsoft.KeyVault(") {
			r.problem(EnvClientSecret + " is an unresolved Key Vault reference: grant the app's identity access to the vault, or use DEFENDER_CREDENTIAL=keyvault-secret")
		}
		c.ClientSecret = Secret(secret)
	} else if c.Credential == EnvSecret {
		r.problem(fmt.Sprintf("%s is required with %s=env-secret (local development only)", EnvClientSecret, EnvCredential))
	}

	c.AuthorityHost = strings.TrimRight(r.get(EnvAuthorityHost, DefaultAuthorityHost), "/")
	if u, err := url.Parse(c.AuthorityHost); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		r.problem(fmt.Sprintf("%s=%q is not an https URL such as %s", EnvAuthorityHost, RedactURL(c.AuthorityHost), DefaultAuthorityHost))
	}
	c.ConsentRedirectURI = r.get(EnvConsentRedirectURI, "")
	if v := c.ConsentRedirectURI; v != "" {
		if u, err := url.Parse(v); err != nil || u.Host == "" || u.Scheme != "https" && !(u.Scheme == "http" && u.Hostname() == "localhost") {
			r.problem(fmt.Sprintf("%s=%q is not a redirect URI Entra ID accepts: https://…, or http://localhost…, registered on the app as a Web redirect URI", EnvConsentRedirectURI, v))
		}
	}

	switch v := strings.ToLower(r.get(EnvTokenVersion, "v2")); v {
	case "v2", "2":
		c.TokenVersion = 2
	case "v1", "1":
		c.TokenVersion = 1
	default:
		r.problem(fmt.Sprintf("%s=%q: use v2 (scope) or v1 (resource)", EnvTokenVersion, v))
	}

	def := GraphURL
	c.Resource = GraphURL
	if c.API == XDR {
		def, c.Resource = XDRURL, XDRURL
	}
	c.APIURL = strings.TrimRight(r.get(EnvAPIURL, def), "/")
	if u, err := url.Parse(c.APIURL); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.User != nil {
		// No credentials in the URL: the API's only credential is the token.
		r.problem(fmt.Sprintf("%s=%q is not an https base URL such as %s (no user or password in it)", EnvAPIURL, RedactURL(c.APIURL), def))
	} else if c.API == Graph && nationalGraph[u.Hostname()] {
		c.Resource = "https://" + u.Hostname()
	}
}

// vault: the Key Vault that holds the app's credential, and how it is reached.
func (r *reader) vault(c *Config) {
	c.AssertionAlg = strings.ToUpper(r.get(EnvAssertionAlg, "PS256"))
	if c.AssertionAlg != "PS256" && c.AssertionAlg != "RS256" {
		r.problem(fmt.Sprintf("%s=%q: use PS256 (x5t#S256, the current Entra ID form) or RS256 (x5t)", EnvAssertionAlg, c.AssertionAlg))
	}
	c.SecretTTL = time.Hour
	if v := r.get(EnvSecretTTL, ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute || d > 24*time.Hour {
			r.problem(fmt.Sprintf("%s=%q: use a duration between 1m and 24h, such as 1h", EnvSecretTTL, v))
		} else {
			c.SecretTTL = d
		}
	}

	// Azure resources (the vault, Blob Storage) are reached as the Defender
	// app is: with no secret on AWS in aws-federation mode.
	vaultDefault := VaultManagedIdentity
	if c.Credential == AWSFederation {
		vaultDefault = VaultAWSFederation
	}
	c.VaultAccess = VaultAccess(strings.ToLower(r.get(EnvVaultAccess, string(vaultDefault))))
	c.ManagedIdentityClientID = r.get(EnvManagedIdentityClientID, "")
	if c.ManagedIdentityClientID != "" && !guidRe().MatchString(c.ManagedIdentityClientID) {
		r.problem(fmt.Sprintf("%s=%q is not the client ID (GUID) of a user-assigned managed identity; leave it empty for the system-assigned identity", EnvManagedIdentityClientID, c.ManagedIdentityClientID))
	}
	c.VaultTenantID = r.get(EnvVaultTenantID, "")
	if c.VaultTenantID == "" && len(c.Tenants) > 0 {
		c.VaultTenantID = c.Tenants[0]
	}
	c.VaultClientID = r.get(EnvVaultClientID, "")
	c.VaultCertificatePath = r.get(EnvVaultCertificatePath, "")
	if v, ok := r.lookup(EnvVaultCertificatePass); ok {
		c.VaultCertificatePass = Secret(v)
	}
	c.FederatedTokenFile = r.get(EnvFederatedTokenFile, "")
	needsVaultAccess := c.Credential == KeyVaultSecret || c.Credential == KeyVaultCertificate
	switch c.VaultAccess {
	case VaultManagedIdentity:
	case VaultWorkloadIdentity:
		if needsVaultAccess && (c.VaultClientID == "" || c.FederatedTokenFile == "") {
			r.problem(fmt.Sprintf("%s=workload-identity needs %s (the app trusted by Key Vault) and %s (the federated token's path)", EnvVaultAccess, EnvVaultClientID, EnvFederatedTokenFile))
		}
	case VaultCertificate:
		if needsVaultAccess && (c.VaultClientID == "" || c.VaultCertificatePath == "") {
			r.problem(fmt.Sprintf("%s=client-certificate needs %s and %s (a PEM or PFX file with the certificate and its key)", EnvVaultAccess, EnvVaultClientID, EnvVaultCertificatePath))
		}
	case VaultAWSFederation:
		if c.VaultClientID == "" {
			c.VaultClientID = c.ClientID
		}
	default:
		r.problem(fmt.Sprintf("%s=%q: use managed-identity (Azure), workload-identity, client-certificate or aws-federation (hosts outside Azure)", EnvVaultAccess, c.VaultAccess))
	}
	if c.Credential == ManagedIdentityFederation && c.VaultAccess != VaultManagedIdentity {
		r.problem(fmt.Sprintf("%s=managed-identity-federation needs an Azure managed identity; it cannot be combined with %s=%s", EnvCredential, EnvVaultAccess, c.VaultAccess))
	}
	if c.Credential == ManagedIdentityFederation && c.ManagedIdentityClientID == "" {
		// A system-assigned identity cannot be an app's federated credential.
		r.problem(fmt.Sprintf("%s=managed-identity-federation needs %s: the client ID of the user-assigned identity the app trusts (Entra ID accepts no system-assigned identity as a federated credential)", EnvCredential, EnvManagedIdentityClientID))
	}
}

// ExportQueueIsSQS says whether EXPORT_QUEUE names an SQS queue (its URL)
// rather than an Azure Storage queue (a name).
func ExportQueueIsSQS(v string) bool {
	u, err := url.Parse(v)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && strings.Count(strings.Trim(u.Path, "/"), "/") == 1
}

// headerKey is an HTTP header's name (RFC 9110's token).
var headerKey = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// queueName is an Azure Storage queue's name.
var queueName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

// export: incident-export's sink, state, schedule and windows, and storage.
func (r *reader) export(c *Config) {
	c.ExportSink = r.get(EnvExportSink, "")
	c.StateStore = r.get(EnvStateStore, "")
	if c.ExportSink != "" {
		if _, err := ClassifySink(c.ExportSink); err != nil {
			r.problem(fmt.Sprintf("%s=%v", EnvExportSink, err))
		}
	}
	if c.StateStore != "" {
		if k, err := ClassifySink(c.StateStore); err != nil || k != SinkFile && k != SinkBlob {
			r.problem(fmt.Sprintf("%s=%q: use file:///absolute/path or an Azure Blob container URL (https://<account>.blob.core.windows.net/<container>)", EnvStateStore, RedactURL(c.StateStore)))
		}
	}
	c.ExportSchedule = r.get(EnvExportSchedule, "0 */5 * * * *")
	if n := len(strings.Fields(c.ExportSchedule)); n != 6 && n != 5 {
		r.problem(fmt.Sprintf("%s=%q is not an NCRONTAB expression: six fields, {second} {minute} {hour} {day} {month} {day-of-week}, such as 0 */5 * * * *", EnvExportSchedule, c.ExportSchedule))
	}
	c.ExportLookback = r.duration(EnvExportLookback, 7*24*time.Hour, time.Minute, 90*24*time.Hour)
	c.ExportMaxRun = r.duration(EnvExportMaxRun, 4*time.Minute, 10*time.Second, 10*time.Hour)
	c.ExportLag = r.duration(EnvExportLag, 10*time.Minute, 0, 24*time.Hour)
	c.ExportConcurrency = r.integer(EnvExportConcurrency, 8, 1, 64, "use 1 to 64 (tenants exported at once; each has its own rate limits)")
	switch v := r.get(EnvExportLayout, "versions"); v {
	case "versions", "batches":
		c.ExportBatched = v == "batches"
	default:
		r.problem(fmt.Sprintf("%s=%q: use versions (one JSON object per incident version) or batches (one gzip-compressed NDJSON object per checkpoint, with a manifest)", EnvExportLayout, v))
	}
	c.ExportBatchEvery = r.duration(EnvExportBatchEvery, 10*time.Second, 100*time.Millisecond, 10*time.Minute)
	c.ExportQueue = r.get(EnvExportQueue, "")
	if q := c.ExportQueue; q != "" && !ExportQueueIsSQS(q) && (!queueName.MatchString(q) || strings.Contains(q, "--") || strings.HasSuffix(q, "-poison")) {
		r.problem(fmt.Sprintf("%s=%q is neither an Amazon SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>) nor an Azure Storage queue name: 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit (and not the host's -poison queue)", EnvExportQueue, q))
	}
	if v := r.get(EnvExportPageSize, ""); v != "" {
		n, err := strconv.Atoi(v)
		max := 50
		if c.API == XDR {
			max = 100
		}
		if err != nil || n < 1 || n > max {
			r.problem(fmt.Sprintf("%s=%q: use 1 to %d (the %s API's maximum), or leave it empty", EnvExportPageSize, v, max, c.API))
		} else {
			c.ExportPageSize = n
		}
	}
	if v, ok := r.lookup(EnvStorage); ok && v != "" {
		c.StorageConnStr = Secret(v)
	}
	c.StorageAccount = r.get(EnvStorageAccount, "")
	// The host's identity-based form for a queue endpoint that accountName
	// cannot name (a national cloud's).
	if v := r.get(EnvStorageQueueURI, ""); v != "" {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			if i := strings.IndexAny(v, "?#"); i >= 0 {
				v = v[:i] + "?…" // a SAS is a secret
			}
			r.problem(fmt.Sprintf("%s=%q: use the account's queue endpoint, https://<account>.queue.core.windows.net or a national cloud's (no path, no SAS)", EnvStorageQueueURI, v))
		} else {
			c.StorageQueueURI = strings.TrimSuffix(v, "/")
		}
	}
	c.S3Endpoint = r.get(EnvS3Endpoint, "")
	c.S3Region = r.get(EnvAWSRegion, "")
	r.siem(c)
}

// siem: the record sinks' settings (Log Analytics, Splunk).
func (r *reader) siem(c *Config) {
	c.ExportBatchBytes = r.integer(EnvExportBatchBytes, 0, 1<<10, 512<<20, "use a size in bytes from 1024 to 536870912: the largest request body the SIEM takes (Logs Ingestion: 1 MB at most; Splunk: the collector's max_content_length)")
	c.SplunkTokenSecret = r.get(EnvSplunkTokenSecret, "")
	c.SplunkIndex = r.get(EnvSplunkIndex, "")
	switch v := strings.ToLower(r.get(EnvSplunkAck, "false")); v {
	case "true", "false":
		c.SplunkAck = v == "true"
	default:
		r.problem(fmt.Sprintf("%s=%q: use true (the token has indexer acknowledgement on) or false", EnvSplunkAck, v))
	}
	c.SplunkAckTimeout = r.duration(EnvSplunkAckTimeout, 2*time.Minute, time.Second, 10*time.Minute)
	if k, _ := ClassifySink(c.ExportSink); k == SinkSplunk {
		if c.SplunkTokenSecret == "" {
			r.problem(fmt.Sprintf("%s names a Splunk HTTP Event Collector: set %s to the Key Vault secret (in %s) that holds its token", EnvExportSink, EnvSplunkTokenSecret, EnvKeyVaultURL))
		} else if !nameRe().MatchString(c.SplunkTokenSecret) {
			r.problem(fmt.Sprintf("%s=%q is not a Key Vault secret name: 1 to 127 letters, digits and hyphens", EnvSplunkTokenSecret, c.SplunkTokenSecret))
		}
		if c.KeyVaultURL == "" {
			r.problem(fmt.Sprintf("%s names a Splunk HTTP Event Collector, whose token is read from Key Vault: set %s", EnvExportSink, EnvKeyVaultURL))
		}
	}
}

// telemetry: OpenTelemetry's exporter.
func (r *reader) telemetry(c *Config) {
	c.OTLPEndpoint = r.get(EnvOTLPEndpoint, "")
	if v := c.OTLPEndpoint; v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" {
			if err == nil {
				// Neither credentials nor a query are shown.
				u.User, u.RawQuery = nil, ""
				v = u.String()
			}
			r.problem(fmt.Sprintf("%s=%q: use an OTLP/HTTP collector's base URL, http(s)://<host>:4318 (the exporter adds /v1/traces and /v1/metrics); credentials go in %s", EnvOTLPEndpoint, v, EnvOTLPHeaders))
			c.OTLPEndpoint = ""
		}
	}
	if v, ok := r.lookup(EnvOTLPHeaders); ok && v != "" {
		c.OTLPHeaders = Secret(v)
		// As the exporters read it (a pair they cannot read is logged by the
		// SDK with its value, which may be a key): key=value pairs, each
		// value percent-encoded.
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if _, err := url.PathUnescape(val); !ok || !headerKey.MatchString(strings.TrimSpace(k)) || err != nil {
				r.problem(fmt.Sprintf("%s is not a list of key=value pairs separated by commas, each value percent-encoded (%%20 for a space, %%25 for %%; its value is not shown: it may hold a key)", EnvOTLPHeaders))
				break
			}
		}
	}
	c.OTelServiceName = r.get(EnvOTelServiceName, "defender-functions")
}

// rateLimits: the client-side pacing.
func (r *reader) rateLimits(c *Config) {
	switch v := r.get(EnvRateLimits, "documented"); v {
	case "documented":
	case "off":
		c.RateLimits = map[string][]RateLimit{}
	default:
		c.RateLimits = map[string][]RateLimit{}
		for _, part := range strings.Split(v, ",") {
			bucket, spec, ok1 := strings.Cut(strings.TrimSpace(part), "=")
			n, per, ok2 := strings.Cut(spec, "/")
			count, err1 := strconv.Atoi(n)
			d, err2 := time.ParseDuration(per)
			if !ok1 || !ok2 || err1 != nil || err2 != nil || count < 1 || d <= 0 {
				r.problem(fmt.Sprintf("%s=%q: use documented, off, or bucket=N/duration pairs such as security=150/1m,hunting=45/1m", EnvRateLimits, v))
				break
			}
			c.RateLimits[bucket] = append(c.RateLimits[bucket], RateLimit{count, d})
		}
	}
}

// hunting: hunting-query.
func (r *reader) hunting(c *Config) {
	switch v := strings.ToLower(r.get(EnvHuntingAllowAdhoc, "false")); v {
	case "true", "1", "yes":
		c.HuntingAllowAdhoc = true
	case "false", "0", "no":
	default:
		r.problem(fmt.Sprintf("%s=%q: use true or false", EnvHuntingAllowAdhoc, v))
	}
	c.HuntingRequiredRole = r.get(EnvHuntingRequiredRole, "")
	c.HuntingAdhocRole = r.get(EnvHuntingAdhocRole, "")
	c.HuntingTenantRoles = map[string]string{}
	if v := r.get(EnvHuntingTenantRoles, ""); v != "" {
		for _, part := range strings.Split(v, ",") {
			tenant, role, ok := strings.Cut(strings.TrimSpace(part), "=")
			tenant, role = strings.ToLower(strings.TrimSpace(tenant)), strings.TrimSpace(role)
			switch {
			case !ok || tenant == "" || role == "":
				r.problem(fmt.Sprintf("%s=%q: use tenant=role pairs separated by commas, such as contoso.onmicrosoft.com=Hunting.Contoso", EnvHuntingTenantRoles, v))
			case !slices.ContainsFunc(c.Tenants, func(t string) bool { return strings.EqualFold(t, tenant) }):
				r.problem(fmt.Sprintf("%s names %q, which is not in %s (name each tenant as it is written there)", EnvHuntingTenantRoles, tenant, EnvTenantID))
			default:
				c.HuntingTenantRoles[tenant] = role
			}
		}
	}
	if c.HuntingAllowAdhoc && c.HuntingAdhocRole == "" {
		// With the function key alone, whoever holds it could run any KQL.
		r.problem(fmt.Sprintf("%s=true needs %s: the app role a caller must hold to send raw KQL (App Service Authentication or an API Gateway authorizer supplies it)",
			EnvHuntingAllowAdhoc, EnvHuntingAdhocRole))
	}
	c.HuntingMaxRows = r.integer(EnvHuntingMaxRows, 10000, 1, 100000, "use 1 to 100000 (the API returns at most 100,000 rows)")
	// Azure's front end ends an HTTP call at 230 s; API Gateway's HTTP APIs
	// end an integration at 30 s, so on Lambda the default leaves the rows
	// 5 s to stream (a Function URL allows more: set HUNTING_TIMEOUT).
	timeout := 200 * time.Second
	if _, lambda := r.lookup(EnvLambdaFunctionName); lambda {
		timeout = 25 * time.Second
	}
	c.HuntingTimeout = r.duration(EnvHuntingTimeout, timeout, time.Second, 225*time.Second)
}

// webhook: ticket-webhook.
func (r *reader) webhook(c *Config) {
	c.WebhookSecrets = map[string]Secret{}
	for _, prov := range WebhookProviders {
		name := EnvWebhookSecretPrefix + strings.ToUpper(prov)
		v, ok := r.lookup(name)
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			continue
		}
		if strings.HasPrefix(v, "@Microsoft.KeyVault(") {
			r.problem(name + " is an unresolved Key Vault reference: give the Function App's identity the 'Key Vault Secrets User' role on the vault and restart the app")
			continue
		}
		c.WebhookSecrets[prov] = Secret(v)
	}
	// On Lambda the secrets are read at run time, so that a rotation needs
	// no redeploy; the secret's value is the providers' secrets as JSON.
	c.WebhookSecretsARN = r.get(EnvWebhookSecretsARN, "")
	c.WebhookSecretsTTL = r.duration(EnvWebhookSecretsTTL, 5*time.Minute, 30*time.Second, time.Hour)
	if c.WebhookSecretsARN != "" && len(c.WebhookSecrets) > 0 {
		r.problem(fmt.Sprintf("%s and %s* are both set: keep one (the ARN's secret holds every provider's)", EnvWebhookSecretsARN, EnvWebhookSecretPrefix))
	}
	c.WebhookMappingFile = r.get(EnvWebhookMappingFile, "")
	// A deployed app has no place for a file of its own: the mapping can be
	// the setting's value (or a Key Vault reference the platform resolves).
	c.WebhookMapping = r.get(EnvWebhookMapping, "")
	switch {
	case c.WebhookMapping != "" && c.WebhookMappingFile != "":
		r.problem(fmt.Sprintf("%s and %s are both set: keep one", EnvWebhookMapping, EnvWebhookMappingFile))
	case len(c.WebhookMapping) > 64<<10:
		r.problem(fmt.Sprintf("%s is larger than 64 KiB", EnvWebhookMapping))
	}
	c.WebhookTolerance = r.duration(EnvWebhookTolerance, 5*time.Minute, 30*time.Second, 15*time.Minute)
	c.WebhookRetryWindow = r.duration(EnvWebhookRetryWindow, 2*time.Hour, time.Minute, 48*time.Hour)
	c.WebhookDedupeTTL = r.duration(EnvWebhookDedupeTTL, 7*24*time.Hour, time.Hour, 90*24*time.Hour)
	c.WebhookTimeout = r.duration(EnvWebhookTimeout, 25*time.Second, time.Second, 225*time.Second)
	if min := c.WebhookRetryWindow + c.WebhookTolerance; c.WebhookDedupeTTL < min {
		// A delivery still accepted after the ledger forgot it would be
		// applied again (undoing what an analyst changed since).
		r.problem(fmt.Sprintf("%s=%s is shorter than %s + %s (%s): a redelivery after it would be applied again; use at least %s",
			EnvWebhookDedupeTTL, c.WebhookDedupeTTL, EnvWebhookRetryWindow, EnvWebhookTolerance, min, min))
	}
	c.WebhookMaxBody = r.integer(EnvWebhookMaxBody, 1<<20, 1024, 16<<20, "use a size in bytes from 1024 to 16777216, such as 1048576")
}

// IsProblems reports whether err is a configuration error.
func IsProblems(err error) bool {
	var p Problems
	return errors.As(err, &p)
}
