package advice

import "github.com/defender-functions/defender-functions/shared/config"

// The page's sections, in order.
var (
	Entra = &Area{Title: "Entra ID: the app's token",
		Intro: "The functions ask Entra ID for an app-only token (client credentials) per tenant. A refusal is printed as\n" +
			"`entra id refused a token for app <client ID> in tenant <tenant>: <advice> (HTTP <status> <error>, AADSTS<code>, trace ID …, correlation ID …)`;\n" +
			"the trace and correlation IDs are what Microsoft support asks for."}
	Federation = &Area{Title: "Federated credentials (no secret)",
		Intro: "With `" + config.EnvCredential + "=managed-identity-federation` or `aws-federation` the app proves itself with a token\n" +
			"from the managed identity or from AWS, which Entra ID matches against the app's federated identity credentials\n" +
			"(docs/app-registration.md §4). `doctor` prints that token's issuer, subject and audience: the app needs a\n" +
			"federated credential with exactly these."}
	KeyVault = &Area{Title: "Key Vault",
		Intro: "With a secret or certificate in Key Vault, the functions read it with the identity `" + config.EnvVaultAccess + "` names\n" +
			"(the Function App's managed identity by default)."}
	Certificates = &Area{Title: "Certificates",
		Intro: "With `" + config.EnvCredential + "=keyvault-certificate`, `doctor` checks the certificate Key Vault holds now and whether\n" +
			"the app registration has it. Key Vault's renewal makes a version that nobody uploaded: docs/certificate-rotation.md."}
	Permissions = &Area{Title: "Permissions and consent",
		Intro: "The token's `roles` must cover what every enabled function needs (docs/app-registration.md §2), granted with an\n" +
			"administrator's consent in each tenant."}
	API = &Area{Title: "Defender API",
		Intro: "An error from the Microsoft Graph security API or the Defender XDR API is printed as\n" +
			"`<api> API: <method> <path>: HTTP <status> <code>: <message> (retry after …); <advice> [request <request ID>]`."}
	Network = &Area{Title: "Network and TLS",
		Intro: "A service that cannot be reached at all: the same advice for Key Vault, Entra ID, the API and the managed\n" +
			"identity endpoint, naming the setting that points there."}
	Storage = &Area{Title: "State store, sink and queue",
		Intro: "Where the functions write: the state store (checkpoints, webhook deliveries), the export's sink, and the\n" +
			"export's fan-out queue. `doctor` writes `_doctor/check.json` to a file, Blob or S3 sink and an empty request to a SIEM."}
	Listing = &Area{Title: "Incident listing (doctor's probe)",
		Intro: "With the export on, `doctor` probes read-only what the export depends on in the tenant's incident listing. Most\n" +
			"of its lines are notes about how the tenant behaves; these two fail the check."}
	Configuration = &Area{Title: "Configuration",
		Intro: "The settings themselves: `doctor` prints each problem with a setting as a `config` failure, whose message says\n" +
			"what to change."}
)

// Areas are the page's sections in order.
var Areas = []*Area{Entra, Federation, KeyVault, Certificates, Permissions, API, Network, Storage, Listing, Configuration}

// The table's keys.
const (
	SecretWrong          Key = "entra-secret-wrong"
	SecretExpired        Key = "entra-secret-expired"
	NoCredential         Key = "entra-no-credential"
	NotInTenant          Key = "entra-not-in-tenant"
	AssertionRejected    Key = "entra-assertion-rejected"
	TenantNotFound       Key = "entra-tenant-not-found"
	ResourceNotInTenant  Key = "entra-resource-not-in-tenant"
	InvalidScope         Key = "entra-invalid-scope"
	MissingParameter     Key = "entra-missing-parameter"
	EntraUnavailable     Key = "entra-unavailable"
	TokenFailed          Key = "entra-token-failed"
	FederatedAWS         Key = "federation-aws"
	FederatedMI          Key = "federation-managed-identity"
	FederatedClock       Key = "federation-clock"
	IdentityNotAssigned  Key = "federation-identity-not-assigned"
	VaultUnreachable     Key = "vault-unreachable"
	VaultForbidden       Key = "vault-forbidden"
	VaultUnauthorized    Key = "vault-unauthorized"
	VaultSecretNotFound  Key = "vault-secret-not-found"
	NoManagedIdentity    Key = "identity-none-here"
	CertUnregistered     Key = "certificate-unregistered"
	CertNotUploaded      Key = "certificate-not-uploaded"
	CertUnreadable       Key = "certificate-unreadable"
	CertExpired          Key = "certificate-expired"
	CertExpiring         Key = "certificate-expiring"
	MissingRoles         Key = "roles-missing"
	ConsentRedirect      Key = "roles-consent-redirect"
	WrongAudience        Key = "roles-wrong-audience"
	NoConsent            Key = "roles-no-consent"
	APIForbiddenRoles    Key = "api-forbidden-roles"
	APIForbidden         Key = "api-forbidden"
	APIUnauthorized      Key = "api-unauthorized"
	APIThrottled         Key = "api-throttled"
	APIUnreachable       Key = "api-unreachable"
	TLSUntrusted         Key = "net-tls-untrusted"
	DevstackDown         Key = "net-devstack-down"
	NothingListens       Key = "net-nothing-listens"
	WrongPort            Key = "net-wrong-port"
	NameNotResolved      Key = "net-name-not-resolved"
	DNSFailed            Key = "net-dns-failed"
	NoAnswer             Key = "net-no-answer"
	StorageIdentity      Key = "storage-identity"
	DirectoryNotWritable Key = "storage-directory"
	StoreNotWritable     Key = "storage-not-writable"
	SinkReadBack         Key = "storage-sink-read-back"
	SplunkToken          Key = "siem-splunk-token"
	SplunkNotCollector   Key = "siem-splunk-not-collector"
	SplunkIndex          Key = "siem-splunk-index"
	LogsForbidden        Key = "siem-logs-forbidden"
	LogsNotFound         Key = "siem-logs-not-found"
	SIEMRefused          Key = "siem-refused"
	QueueRoles           Key = "queue-roles"
	PoisonTasks          Key = "queue-poison"
	SQSUnreachable       Key = "queue-sqs-unreachable"
	SQSNoRedrive         Key = "queue-sqs-no-redrive"
	SQSDeadLetters       Key = "queue-sqs-dead-letters"
	PageTooLarge         Key = "listing-page-size"
	FilterEdges          Key = "listing-filter-edges"
	CredentialsSettings  Key = "config-credentials"
	WebhookNoProvider    Key = "config-webhook-no-provider"
	UnresolvedReference  Key = "config-unresolved-reference"
	UnresolvedSecret     Key = "config-unresolved-client-secret"
)

// Placeholders say what each placeholder is filled with.
var Placeholders = map[string]string{
	"where":          "where the client secret is read: `the Key Vault secret \"<name>\"` (`" + config.EnvSecretName + "`), or `" + config.EnvClientSecret + "`",
	"tenant":         "the tenant the token was asked for",
	"consent_url":    "the tenant's admin-consent link for the app",
	"which":          "`, thumbprint <hex>` when Entra ID names the key it did not find",
	"secret":         "the Key Vault secret's name (`" + config.EnvSecretName + "`, or the setting the error names)",
	"upload":         "the `az keyvault certificate download … && az ad app credential reset … --append` command for the current version",
	"code":           "the AADSTS number",
	"description":    "Entra ID's own description of the error",
	"audience":       "the token exchange audience of the cloud: `api://AzureADTokenExchange` (US Government and China have their own)",
	"authority":      "Entra ID's host (`" + config.EnvAuthorityHost + "`)",
	"identity":       "the user-assigned identity's client ID (`" + config.EnvManagedIdentityClientID + "`)",
	"vault_url":      "the vault's URI (`" + config.EnvKeyVaultURL + "`)",
	"vault_access":   "the vault access mode (`" + config.EnvVaultAccess + "`)",
	"ttl":            "how long a credential read from Key Vault is kept (`" + config.EnvSecretTTL + "`)",
	"roles":          "the application permissions: those the request or the functions need",
	"api_url":        "the API's base URL (`" + config.EnvAPIURL + "`)",
	"addr":           "the address a connection was refused at",
	"setting":        "the setting that points there",
	"secret_setting": "the setting that names the secret (`" + config.EnvSecretName + "`, `" + config.EnvSplunkTokenSecret + "` …)",
	"value":          "that setting's value (a SAS in it is redacted)",
	"queue":          "the export's queue (`" + config.EnvExportQueue + "`)",
	"host":           "the host name in the setting",
	"form":           "the form the setting's value takes (`https://<vault-name>.vault.azure.net/` for `" + config.EnvKeyVaultURL + "` …)",
	"reason":         "the resolver's own words",
	"other":          "the address where another setting's service answers on this machine",
	"other_setting":  "the setting that points there",
	"service":        "the service the setting points at (the vault, Entra ID, the API, the sink)",
	"rule":           "the data collection rule's immutable ID (`dcr-…`) in `" + config.EnvExportSink + "`",
	"status":         "the HTTP status the service answered",
}

// Table is every entry, in the page's order within each area.
var Table = []Entry{
	// Entra ID. The AADSTS codes are Entra's; each one's text names the
	// setting or the page of the app registration to look at.
	{Key: SecretWrong, Area: Entra, Error: "AADSTS7000215: invalid client secret",
		Means: "the client secret is wrong", Tag: "AADSTS7000215",
		Do:   "{where} must hold a current secret's Value (not its Secret ID) from the app registration's Certificates & secrets page",
		More: "The functions read the secret again from Key Vault once after this refusal, in case it was rotated meanwhile."},
	{Key: SecretExpired, Area: Entra, Error: "AADSTS7000222: the client secret has expired",
		Means: "the client secret has expired", Tag: "AADSTS7000222",
		Do: "create a new client secret on the app registration and store its Value in {where}"},
	{Key: NoCredential, Area: Entra, Error: "AADSTS7000218: no client credential",
		Means: "no client credential was sent", Tag: "AADSTS7000218",
		Do: "check " + config.EnvCredential},
	{Key: NotInTenant, Area: Entra, Error: "AADSTS700016: application not found in the tenant",
		Means: "the application is not in this tenant", Tag: "AADSTS700016",
		Do:   "check " + config.EnvClientID + " and " + config.EnvTenantID + ", and have an administrator of tenant {tenant} grant consent: {consent_url}",
		More: "For a partner app serving several tenants this is a tenant that has not consented yet: `doctor`'s table shows it as not consented, with its link."},
	{Key: AssertionRejected, Area: Entra, Error: "AADSTS700027: client assertion rejected",
		Means: "the client assertion was rejected", Tag: "AADSTS700027",
		Do: "upload the certificate (public part) to the app registration's Certificates & secrets page, and check the machine's clock"},
	{Key: TenantNotFound, Area: Entra, Error: "AADSTS90002: tenant not found",
		Means: "the tenant was not found", Tag: "AADSTS90002",
		Do: "check " + config.EnvTenantID + ", and " + config.EnvAuthorityHost + " for national clouds"},
	{Key: ResourceNotInTenant, Area: Entra, Error: "AADSTS500011: resource principal not found",
		Means: "the API's resource is not in the tenant", Tag: "AADSTS500011",
		Do: "check " + config.EnvAPI + " and " + config.EnvAPIURL + "; for the XDR API the tenant must have Microsoft Defender XDR"},
	{Key: InvalidScope, Area: Entra, Error: "AADSTS1002012 or AADSTS70011: invalid scope",
		Means: "the scope is not valid for client credentials", Tag: "AADSTS{code}",
		Do: "it must be the API's resource followed by /.default; check " + config.EnvAPIURL},
	{Key: MissingParameter, Area: Entra, Error: "AADSTS900144: a required parameter is missing",
		Means: "the token request lacked a required parameter", Tag: "AADSTS900144",
		Do: "{description}"},
	{Key: EntraUnavailable, Area: Entra, Error: "HTTP 429 or 5xx, or temporarily_unavailable, from Entra ID",
		Means: "Entra ID is unavailable right now",
		Do:    "Entra ID is unavailable right now; the request will be retried on the next call ({description})"},
	{Key: TokenFailed, Area: Entra, Error: "doctor: `token` fails with no AADSTS code",
		Means: "no token came and Entra ID did not say why: the request did not reach it, or its answer was not Entra ID's",
		Do:    "check " + config.EnvTenantID + ", " + config.EnvClientID + " and that Entra ID ({authority}) is reachable"},

	// Federated credentials.
	{Key: FederatedAWS, Area: Federation, Error: "AADSTS70021, AADSTS700211, AADSTS700212 or AADSTS700213 with aws-federation",
		Means: "no federated credential of the app matches the AWS token", Tag: "AADSTS{code}: {description}",
		Do: "add one with the AWS account's issuer URL (aws iam get-outbound-web-identity-federation-info), subject the execution role's ARN (arn:aws:iam::<account>:role/<name>), audience {audience}"},
	{Key: FederatedMI, Area: Federation, Error: "AADSTS70021, AADSTS700211, AADSTS700212 or AADSTS700213 with managed-identity-federation",
		Means: "no federated credential matches the managed identity's token", Tag: "AADSTS{code}",
		Do: "add a federated identity credential to the app registration with issuer {authority}/<tenant>/v2.0, subject the user-assigned identity's principal (object) ID, audience {audience}; check that the identity is the one " + config.EnvManagedIdentityClientID + " names"},
	{Key: FederatedClock, Area: Federation, Error: "AADSTS700024: the federated token is outside its valid time",
		Means: "the federated token was outside its valid time", Tag: "AADSTS700024",
		Do: "check this host's clock (NTP); Entra ID compares it with its own"},
	{Key: IdentityNotAssigned, Area: Federation, Error: "doctor: `federation` fails with managed-identity-federation",
		Means: "the managed identity endpoint gave no token for the user-assigned identity",
		Do:    "assign the user-assigned identity {identity} to the Function App (the Bicep does), or set " + config.EnvManagedIdentityClientID + " to the client ID of one that is"},

	// Key Vault.
	{Key: VaultUnreachable, Area: KeyVault, Error: "doctor: `key vault` fails without an answer from the vault",
		Means: "the vault was not reached",
		Do:    "make " + config.EnvKeyVaultURL + " ({vault_url}) reachable from here: its URI, DNS, the vault's firewall or private endpoint; and check " + config.EnvVaultAccess + "={vault_access}"},
	{Key: VaultForbidden, Area: KeyVault, Error: "HTTP 403 from Key Vault (Forbidden, ForbiddenByRbac)",
		Means: "the identity may not read the secret",
		Do: "assign the identity the 'Key Vault Secrets User' role on the vault (az role assignment create --role 'Key Vault Secrets User' --assignee <principal ID> --scope <vault ID>); " +
			"on a vault that uses access policies instead, give the identity one that allows Get on secrets",
		More: "A new role assignment can take a few minutes to apply."},
	{Key: VaultUnauthorized, Area: KeyVault, Error: "HTTP 401 from Key Vault",
		Means: "the vault rejected the identity's token",
		Do:    "check that the identity belongs to the vault's tenant"},
	{Key: VaultSecretNotFound, Area: KeyVault, Error: "HTTP 404 from Key Vault (SecretNotFound)",
		Means: "the vault has no secret of that name",
		Do:    "create it (az keyvault secret set --vault-name <vault> --name {secret} --value <its value>), or set {secret_setting} to the secret's name"},
	{Key: NoManagedIdentity, Area: KeyVault, Error: "doctor: no managed identity is available here",
		Means: "a setting is reached with the Function App's managed identity, and this machine has none: it is not the deployed app (no IDENTITY_ENDPOINT), and no Azure instance metadata endpoint gave a token",
		Do:    "run doctor on the deployed Function App (its SSH console), where the managed identity is, or sign in as yourself (see doctor -help)",
		More: "Every later check that needs the identity (the state store, the sink, the queue) is then skipped with \"needs a managed identity\":\n" +
			"no role is missing, there is no identity to hold one."},

	// Certificates.
	{Key: CertUnregistered, Area: Certificates, Error: "AADSTS700027: the key was not found (keyvault-certificate)",
		Means: "the certificate that signed the client assertion is not registered on the app", Tag: "AADSTS700027, key not found{which}",
		Do:   "Key Vault's current version of {secret} was never uploaded (did its policy renew it?): upload the certificate: {upload} (docs/certificate-rotation.md)",
		More: "Until it is uploaded the functions sign with the newest older version that Entra ID accepts, if one is still valid."},
	{Key: CertNotUploaded, Area: Certificates, Error: "doctor: `certificate` fails: not registered on the app (AADSTS700027)",
		Means: "Key Vault's current version of the certificate is not on the app registration",
		Do:    "upload the current version: {upload}"},
	{Key: CertUnreadable, Area: Certificates, Error: "doctor: `certificate` fails reading the certificate",
		Means: "the secret does not hold a certificate with its private key",
		Do:    "store the certificate with its private key (PEM or PFX) in {secret}"},
	{Key: CertExpired, Area: Certificates, Error: "doctor: `certificate` fails: Entra ID refuses an expired certificate",
		Means: "Key Vault's current certificate has expired",
		Do:    "create a new version and upload it: docs/certificate-rotation.md"},
	{Key: CertExpiring, Area: Certificates, Error: "doctor: `certificate` WARN: under 30 days left",
		Means: "the current certificate ends within 30 days",
		Do:    "create the next version now and upload it (docs/certificate-rotation.md): the functions move to it within " + config.EnvSecretTTL + " ({ttl}) of its upload"},

	// Permissions.
	{Key: MissingRoles, Area: Permissions, Error: "doctor: `roles` fails: the app lacks application permissions",
		Means: "the token's roles do not cover what the enabled functions need",
		Do:    "add {roles} as application permissions, then have an administrator of the tenant open {consent_url}",
		More: "On the app registration's API permissions page they are under Add a permission > Microsoft Graph, or, for the XDR API\n" +
			"(`" + config.EnvAPI + "=xdr`), APIs my organization uses > Microsoft Threat Protection; then Application permissions."},
	{Key: ConsentRedirect, Area: Permissions, Error: "AADSTS500113: no reply address after admin consent",
		Means: "the admin-consent link names no redirect URI, so Entra ID has nowhere to send the administrator once consent is granted",
		Do:    "register a Web redirect URI on the app and set " + config.EnvConsentRedirectURI + " to it: Entra ID sends the administrator there after consent",
		More:  "`doctor` adds this to the admin-consent advice when " + config.EnvConsentRedirectURI + " is not set. The consent is granted anyway."},
	{Key: WrongAudience, Area: Permissions, Error: "doctor: `roles` fails: the token is for another API",
		Means: "the token was issued for another API than the one the functions call",
		Do:    "set " + config.EnvAPI + " and " + config.EnvAPIURL + " for the same API"},
	{Key: NoConsent, Area: Permissions, Error: "doctor: `roles` fails: the token carries no roles at all",
		Means: "no application permission of the app is granted in the tenant: admin consent was never given there, or was revoked",
		Do:    "the token carries no roles: have an administrator of tenant {tenant} grant admin consent to the app's application permissions ({roles}): {consent_url}",
		More: "The devstack rehearses it: `POST /control/consent?withdraw=roles` (and `?restore`), or one permission with\n" +
			"`POST /control/roles?withdraw=<role>`."},

	// Defender API.
	{Key: APIForbiddenRoles, Area: API, Error: "HTTP 403 from the API naming the roles it needs",
		Means: "the app lacks an application permission the request needs",
		Do:    "grant the app one of the application permissions {roles} and have an administrator consent"},
	{Key: APIForbidden, Area: API, Error: "HTTP 403 from the API naming no role",
		Means: "the API refused the app without saying which permission is missing",
		Do:    "grant the app's permissions with admin consent, and check the tenant has Microsoft Defender XDR"},
	{Key: APIUnauthorized, Area: API, Error: "HTTP 401 from the API",
		Means: "the API refused the token, a fresh one too",
		Do:    "the API rejected the token twice: check that the token's audience matches " + config.EnvAPI + " and " + config.EnvAPIURL},
	{Key: APIThrottled, Area: API, Error: "HTTP 429 from the API",
		Means: "the app's request quota in the tenant is used up for now",
		Do:    "the API's rate limit was reached",
		More: "Incident reads and writes wait out a 429 when the wait the API asks for fits the request's deadline; a hunting\n" +
			"query's 429 goes back to its caller with its `Retry-After`. The error says `(retry after …)`. `" + config.EnvRateLimits + "`\n" +
			"paces the functions below the documented limits."},
	{Key: APIUnreachable, Area: API, Error: "doctor: `api` fails without an answer from the API",
		Means: "the API was not reached",
		Do:    "make {api_url} reachable from here"},

	// Network.
	{Key: TLSUntrusted, Area: Network, Error: "x509: certificate signed by unknown authority",
		Means: "the server's TLS certificate was issued by a CA this machine does not trust (a private CA, a proxy's, the devstack's)",
		Do: "the server's TLS certificate is not trusted here: put the CA that issued it in the file SSL_CERT_FILE names " +
			"(for the devstack, its ca.pem: `make doctor` loads .local/devstack.env, which sets SSL_CERT_FILE)"},
	{Key: DevstackDown, Area: Network, Error: "connection refused on a loopback address",
		Means: "nothing listens on this machine where the setting points: usually the devstack is not running",
		Do:    "nothing listens at {addr}: if {setting} points at the devstack, it is not running (start it with make devstack, then run make doctor, which loads .local/devstack.env)"},
	{Key: NothingListens, Area: Network, Error: "connection refused",
		Means: "nothing listens where the setting points",
		Do:    "nothing listens at {addr}: check {setting} and that the service is up"},
	{Key: WrongPort, Area: Network, Error: "connection refused on a loopback address while the devstack runs",
		Means: "nothing listens at the setting's host and port, while another setting's service answers on this machine: the port is wrong",
		Do:    "nothing listens at {addr}, while {other_setting} answers at {other} on this machine (the devstack runs): check the port in {setting} against the {service}'s (the devstack writes them to .local/devstack.env)"},
	{Key: NameNotResolved, Area: Network, Error: "no such host",
		Means: "the host name in the setting does not resolve: a typo, or a private endpoint's name outside its private DNS zone",
		Do:    "the name {host} does not resolve: check its spelling in {setting}, whose form is {form} (a private endpoint's name resolves only where its private DNS zone is linked)"},
	{Key: DNSFailed, Area: Network, Error: "a DNS lookup failed without an answer",
		Means: "this machine's DNS server did not answer whether the name exists",
		Do:    "the name {host} could not be looked up ({reason}): check this machine's DNS servers, then {setting}"},
	{Key: NoAnswer, Area: Network, Error: "i/o timeout connecting",
		Means: "nothing answered at the setting's host and port before the timeout: a firewall dropping the connection, or a wrong host or port",
		Do:    "no answer from {addr}: check the host and port in {setting}, and that a firewall between lets this machine through"},

	// Storage.
	{Key: StorageIdentity, Area: Storage, Error: "doctor: `storage` or `queue` fails before reaching storage",
		Means: "no way to reach the storage account is configured",
		Do:    "set " + config.EnvStorage + " or give the app a managed identity"},
	{Key: DirectoryNotWritable, Area: Storage, Error: "doctor: `state store` or `sink` fails on a file:// URL",
		Means: "the directory cannot be created or written by this process",
		Do:    "{setting}={value} must be a directory this process can create and write"},
	{Key: StoreNotWritable, Area: Storage, Error: "doctor: `state store` or `sink` fails on Blob Storage or S3",
		Means: "the container or bucket is missing, or the identity may not write to it",
		Do:    "check {setting}={value} exists, and that the identity has 'Storage Blob Data Contributor' on it (or the S3 write permission)"},
	{Key: SinkReadBack, Area: Storage, Error: "doctor: `sink` fails with " + config.EnvExportLayout + "=batches: asking for an absent object failed",
		Means: "the export cannot read back what it wrote, which it does after a crash to learn whether its batch landed",
		Do:    "grant the identity read on the sink (Blob: Storage Blob Data Contributor; S3: s3:GetObject on the prefix and s3:ListBucket on the bucket)"},
	{Key: SplunkToken, Area: Storage, Error: "doctor: `sink` fails: the HTTP Event Collector refuses the token (HTTP 401 or 403)",
		Means: "the collector does not know the token in the Key Vault secret, or the token is disabled",
		Do:    "store the Token Value of an enabled HEC token in the Key Vault secret {secret} (" + config.EnvSplunkTokenSecret + "): Splunk's Settings > Data inputs > HTTP Event Collector lists them"},
	{Key: SplunkNotCollector, Area: Storage, Error: "doctor: `sink` fails: HTTP 404 from the HTTP Event Collector's URL",
		Means: "what answers at the URL's host and port is not an HTTP Event Collector, or HEC is off",
		Do:    "no HTTP Event Collector answers at {value}: check the host and port in " + config.EnvExportSink + " (HEC listens on 8088 unless set otherwise, not Splunk Web's 8000) and that HEC is on (Settings > Data inputs > HTTP Event Collector > Global Settings)"},
	{Key: SplunkIndex, Area: Storage, Error: "doctor: `sink` fails: the HTTP Event Collector refuses the index (code 7)",
		Means: "the token may not write to the index " + config.EnvSplunkIndex + " names",
		Do:    "set " + config.EnvSplunkIndex + " to one of the token's allowed indexes, or add it to them (or leave it empty for the token's default)"},
	{Key: LogsForbidden, Area: Storage, Error: "doctor: `sink` fails: Logs Ingestion refuses the identity (HTTP 401 or 403)",
		Means: "the identity may not ingest through the data collection rule",
		Do:    "assign the identity 'Monitoring Metrics Publisher' on data collection rule {rule} (az role assignment create --role 'Monitoring Metrics Publisher' --assignee <principal ID> --scope <the rule's resource ID>); a new assignment can take 30 minutes to apply"},
	{Key: LogsNotFound, Area: Storage, Error: "doctor: `sink` fails: HTTP 404 from Logs Ingestion",
		Means: "the endpoint knows no data collection rule with that immutable ID, or the rule has no such stream",
		Do:    "set " + config.EnvExportSink + " to the rule's logs ingestion endpoint, its immutable ID (dcr-…) and a stream it declares (Custom-DefenderIncidents): the rule's JSON View in the portal shows all three"},
	{Key: SIEMRefused, Area: Storage, Error: "doctor: `sink` fails: another HTTP answer from the SIEM",
		Means: "the SIEM answered the empty request with an error",
		Do:    "the SIEM answered HTTP {status}: a 5xx or 429 is the service's own trouble (the export retries it); check the service's health, then run doctor again"},
	{Key: QueueRoles, Area: Storage, Error: "doctor: `queue` fails reading the Azure queue",
		Means: "the queue is missing or the identities lack their queue roles",
		Do:    "the host's identity needs Storage Queue Data Contributor on {queue} and Message Sender on {queue}-poison, the functions' identity Storage Queue Data Message Sender on {queue} and Reader on both (the Bicep assigns them)"},
	{Key: PoisonTasks, Area: Storage, Error: "doctor: `queue` fails: tasks in the -poison queue",
		Means: "a tenant's export failed on every delivery of its task, and the tenant is no longer exported",
		Do:    "the log line \"Tenant export failed on the message's last delivery\" names each cause; fix it (the tenants' checks above), then move the tasks back to {queue} or delete them (the next round enqueues every tenant again)"},
	{Key: SQSUnreachable, Area: Storage, Error: "doctor: `queue` fails reading the SQS queue",
		Means: "the SQS queue is not there or doctor's AWS identity may not read its attributes",
		Do:    "set " + config.EnvExportQueue + " to the stack's queue URL (its ExportTasks), and give doctor's AWS identity sqs:GetQueueAttributes on the queue and its dead-letter queue"},
	{Key: SQSNoRedrive, Area: Storage, Error: "doctor: `queue` fails: the SQS queue has no redrive policy",
		Means: "a tenant that keeps failing is delivered again until its task expires, and no dead-letter queue shows it",
		Do:    "give the queue a dead-letter queue (the SAM template's ExportTasks has one, maxReceiveCount 5)"},
	{Key: SQSDeadLetters, Area: Storage, Error: "doctor: `queue` fails: tasks in the dead-letter queue",
		Means: "a tenant's export failed on every delivery of its task, and the tenant is no longer exported",
		Do:    "the log line \"Tenant export failed on the message's last delivery\" names each tenant and cause; fix it (the tenants' checks above), then redrive the tasks to {queue} (the SQS console's \"Start DLQ redrive\") or purge them (the next round enqueues every tenant again)"},

	// Listing.
	{Key: PageTooLarge, Area: Listing, Error: "doctor: `listing` fails at the export's page size ($top)",
		Means: "the tenant refuses a page as large as the export asks for",
		Do:    "set " + config.EnvExportPageSize + " lower"},
	{Key: FilterEdges, Area: Listing, Error: "doctor: `listing` fails: $filter on the last update is not exact at its edges",
		Means: "a window of last updates did not hold exactly the incidents it should",
		Do:    "the export's windows would lose or repeat versions at their edges; run doctor again (the incident may have changed), and report it if it persists"},

	// Configuration.
	{Key: CredentialsSettings, Area: Configuration, Error: "doctor: `credentials` fails",
		Means: "the credentials could not be built from the settings",
		Do:    "check " + config.EnvVaultAccess + " and the identity settings it needs"},
	{Key: WebhookNoProvider, Area: Configuration, Error: "doctor: `webhook keys` fails: the secret turns no provider on",
		Means: "the secret " + config.EnvWebhookSecretsARN + " names holds no key for Jira, ServiceNow or a Standard Webhooks sender",
		Do:    `store {"jira": "…", "servicenow": "whsec_…", "generic": "whsec_…"} in it`},
	// The words of these two are config's: it cannot import this package,
	// which imports it (config/vaultref.go says more).
	{Key: UnresolvedReference, Area: Configuration, Error: "A setting is an unresolved Key Vault reference (@Microsoft.KeyVault(…))",
		Means: "the platform could not read the secret the setting's Key Vault reference names, and passed the reference on as the setting's value",
		Do:    config.UnresolvedReferenceAdvice,
		More:  "The platform resolves references when the app starts: restarting it makes it try again once access is granted."},
	{Key: UnresolvedSecret, Area: Configuration, Error: config.EnvClientSecret + " is an unresolved Key Vault reference",
		Means: "with " + config.EnvCredential + "=env-secret the client secret is the setting's value, and the platform could not read the Key Vault secret it references",
		Do:    config.UnresolvedClientSecretAdvice},
}
