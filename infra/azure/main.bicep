// Defender Functions on Azure: a Linux Flex Consumption Function App running the custom handler
// (dist/azure.zip), its managed identities (system-assigned: the host's storage and its queue
// trigger; user-assigned: the functions' own Key Vault, Blob and queue access, the Key Vault
// references, and the federated credential of defenderCredential=managed-identity-federation),
// a Key Vault (RBAC) holding the Defender app's secret, storage reached by identity (host
// storage, the exports and the state), Application Insights (workspace-based), and with
// alertActionGroupId the alert rules of docs/alerts.md. Deploy with the commands in
// docs/deploy-azure.md.

@description('Location of every resource.')
param location string = resourceGroup().location

@description('Prefix of the resource names (3-11 lower-case letters and digits).')
@minLength(3)
@maxLength(11)
param namePrefix string

@description('graph (Microsoft Graph security API) or xdr (Defender XDR API, retired by Microsoft on 2027-02-01).')
@allowed(['graph', 'xdr'])
param defenderApi string = 'graph'

@description('API base URL; empty: the public cloud\'s (https://graph.microsoft.us for GCC High, a regional XDR host).')
param defenderApiUrl string = ''

@description('Entra ID tenant ID of the Defender tenant (a comma-separated list for a multi-tenant partner app).')
param defenderTenantId string = subscription().tenantId

@description('Application (client) ID of the Defender app registration (docs/app-registration.md).')
param defenderClientId string

@description('How the Defender app proves its identity: its secret (or certificate) in the vault, or no secret at all: the user-assigned identity below, which the app trusts through a federated credential (docs/app-registration.md §4).')
@allowed(['keyvault-secret', 'keyvault-certificate', 'managed-identity-federation'])
param defenderCredential string = 'keyvault-secret'

@description('The app\'s client secret. Leave empty to store it later: az keyvault secret set --name defender-client-secret.')
@secure()
param defenderClientSecret string = ''

@description('Object ID of whoever stores the secrets in the vault (you: az ad signed-in-user show --query id -o tsv; or a group). It gets Key Vault Secrets Officer and Certificates Officer on the vault, and what doctor -as-me needs (Blob Data Contributor on the exports and state containers, Queue Data Reader on the task queues): with an RBAC vault, Owner has no data-plane rights and az keyvault secret set is ForbiddenByRbac. Empty: assign the roles yourself.')
param operatorPrincipalId string = ''

@description('The kind of operatorPrincipalId.')
@allowed(['User', 'Group', 'ServicePrincipal'])
param operatorPrincipalType string = 'User'

@description('A Web redirect URI registered on the Defender app (docs/app-registration.md §3): the admin-consent links doctor prints pass it.')
param defenderConsentRedirectUri string = ''

@description('NCRONTAB schedule of incident-export.')
param exportSchedule string = '0 */5 * * * *'

@description('How far back the first export starts.')
param exportLookback string = '168h'

@description('Where incident-export writes: blob (one JSON file per incident version in the exports container), logAnalytics (rows of the DefenderIncidents_CL table in this deployment\'s workspace, through a data collection rule; turn Microsoft Sentinel on for the workspace to search them there), or splunk (events to splunkHecUrl, its token in the vault as splunk-hec-token).')
@allowed(['blob', 'logAnalytics', 'splunk'])
param exportDestination string = 'blob'

@description('With exportDestination=blob: versions (one JSON blob per incident version) or batches (one gzip-compressed NDJSON blob per checkpoint, with a manifest under _manifests/, for object-store collectors).')
@allowed(['versions', 'batches'])
param exportLayout string = 'versions'

@description('With exportDestination=splunk: the HTTP Event Collector, https://<host>:8088/services/collector/event.')
param splunkHecUrl string = ''

@description('With exportDestination=splunk: wait for indexer acknowledgement (turn it on for the token too).')
param splunkAck bool = false

@description('With exportDestination=splunk: the index (empty: the token\'s default).')
param splunkIndex string = ''

@description('An OTLP/HTTP collector the functions send their metrics and traces to (http(s)://<host>:4318); empty: no OpenTelemetry. For Application Insights, an OpenTelemetry Collector with the azuremonitor exporter given this deployment\'s connection string (docs/telemetry.md).')
param otlpEndpoint string = ''

@description('Role every hunting-query caller must carry (App Service Authentication); empty: function key only.')
param huntingRequiredRole string = ''

@description('The client ID of the API app hunting-query callers get tokens for (docs/app-registration.md §6). Needed with huntingRequiredRole: App Service Authentication then requires its tokens.')
param callerApiClientId string = ''

@description('That API app\'s application ID URI (the audience of v1 tokens). Empty: api://<callerApiClientId>.')
param callerApiIdUri string = ''

@description('The access token version the API app issues (its api.requestedAccessTokenVersion: Entra ID issues v1 unless it says 2); the issuer checked must agree.')
@allowed(['1', '2'])
param callerTokenVersion string = '2'

@description('Role callers of raw KQL must carry.')
param huntingAdhocRole string = ''

@description('tenant=role pairs, comma-separated: the role a hunting-query caller needs per tenant. In a multi-tenant app, a tenant other than the first is queried by nobody without one.')
param huntingTenantRoles string = ''

@description('Accept raw KQL in hunting-query (needs huntingAdhocRole: the function key alone never runs raw KQL).')
param huntingAllowAdhoc bool = false

@description('The ticket-webhook mapping as JSON, read over the built-in one (docs/ticket-webhook.md); a package has no place for a file. Empty: the built-in mapping.')
param webhookMapping string = ''

@description('Webhook providers to turn on; each needs its secret in the vault: jira-webhook-secret, servicenow-webhook-secret, generic-webhook-secret.')
param webhookProviders array = []

@description('Flex Consumption scale-out limit (the plan takes 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('The Key Vault\'s name (globally unique, 3-24 letters, digits and hyphens). Empty: <namePrefix>-kv-<suffix>, the same in every deployment to this resource group. A deleted vault keeps its name through its soft-delete retention (90 days; purge protection forbids purging it sooner): after the group was deleted and made again, either recover that vault (keyVaultCreateMode=recover) or name a new one here (docs/deploy-azure.md).')
@maxLength(24)
param keyVaultName string = ''

@description('default: create the vault, or update it. recover: bring back the soft-deleted vault of that name, with its secrets, once, after its resource group was deleted and made again under the same name and subscription; deploy with default after that (recover fails when there is no deleted vault).')
@allowed(['default', 'recover'])
param keyVaultCreateMode string = 'default'

@description('Resource ID of an action group the alert rules notify (docs/alerts.md): /subscriptions/…/resourceGroups/…/providers/Microsoft.Insights/actionGroups/<name>. Empty: no alert rules.')
param alertActionGroupId string = ''

@description('Failed runs of incident-export and incident-export-tenant in 30 minutes that raise an alert.')
@minValue(1)
param alertFailureThreshold int = 3

@description('Export lag (now minus a tenant\'s checkpoint) in seconds past which an alert is raised; a tenant caught up is about EXPORT_LAG (10 minutes) behind.')
@minValue(1800)
param alertLagSeconds int = 7200

@description('Export tasks moved to the poison queue in 15 minutes that raise an alert (each is a tenant no longer exported).')
@minValue(1)
param alertPoisonThreshold int = 1

var suffix = uniqueString(resourceGroup().id, namePrefix)
var storageName = take('${namePrefix}st${suffix}', 24)
var vaultName = !empty(keyVaultName) ? keyVaultName : take('${namePrefix}-kv-${suffix}', 24)
var appName = '${namePrefix}-func-${suffix}'
var vaultUri = 'https://${vaultName}${environment().suffixes.keyvaultDns}/'
var blobEndpoint = 'https://${storageName}.blob.${environment().suffixes.storage}'
var apiUrl = !empty(defenderApiUrl) ? defenderApiUrl : defenderApi == 'xdr' ? 'https://api.security.microsoft.com' : 'https://graph.microsoft.com'
var kvSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var kvSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var kvCertificatesOfficer = 'a4417e6f-fecd-4de8-b567-7b0420556985'
var blobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var queueDataReader = '19e7f393-937e-4f77-808e-94535e297925'
var queueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var queueMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
// The table's columns, as the export sends them (shared/sink.LogsRow) and
// the rule's stream declares them.
var incidentColumns = [
  { name: 'TimeGenerated', type: 'datetime', description: 'When the export sent the row' }
  { name: 'VersionId', type: 'string', description: 'The version\'s identity, <tenant>/<incident ID>/<lastUpdateDateTime>: the same for every copy of one version (summarize arg_max(TimeGenerated, *) by VersionId, Part keeps one of each row)' }
  { name: 'Tenant', type: 'string', description: 'The Defender tenant, as DEFENDER_TENANT_ID names it' }
  { name: 'IncidentId', type: 'string', description: 'The incident\'s ID' }
  { name: 'LastUpdateDateTime', type: 'datetime', description: 'The version\'s lastUpdateDateTime' }
  { name: 'Incident', type: 'dynamic', description: 'The incident as the API returned it, without its alerts (on part 0)' }
  { name: 'Alerts', type: 'dynamic', description: 'Its alerts, whole: as many as fit in a field (64 KB); an alert larger than that without its evidence (evidenceOmitted)' }
  { name: 'Part', type: 'int', description: 'Which of the version\'s rows this is, from 0' }
  { name: 'Parts', type: 'int', description: 'How many rows the version has: more than one when its alerts do not fit in one' }
]
var webhookSecret = {
  jira: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=jira-webhook-secret)'
  servicenow: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=servicenow-webhook-secret)'
  generic: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=generic-webhook-secret)'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'deployment'
}

resource exportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'exports'
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'state'
}

// The export's fan-out: the timer enqueues a task per tenant, incident-export-tenant takes them
// (the host moves one that fails maxDequeueCount times to incident-export-poison).
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource exportQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'incident-export'
}

// Made here, not by the host: its identity may send to this queue, not create queues.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${exportQueue.name}-poison'
}

// Delivery records of ticket-webhook expire logically after WEBHOOK_DEDUPE_TTL; remove them later.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'webhook-deliveries'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['state/webhook-deliveries/'] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: 30 } } }
          }
        }
      ]
    }
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs-${suffix}'
  location: location
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

// exportDestination=logAnalytics: the table, and the rule whose stream the
// export sends rows to (kind Direct: the rule has its own ingestion endpoint).
resource incidentTable 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = if (exportDestination == 'logAnalytics') {
  parent: logs
  name: 'DefenderIncidents_CL'
  properties: {
    schema: { name: 'DefenderIncidents_CL', columns: incidentColumns }
    retentionInDays: 90
  }
}

resource incidentRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = if (exportDestination == 'logAnalytics') {
  name: '${namePrefix}-dcr-${suffix}'
  location: location
  kind: 'Direct'
  properties: {
    streamDeclarations: { 'Custom-DefenderIncidents': { columns: map(incidentColumns, c => { name: c.name, type: c.type }) } }
    destinations: { logAnalytics: [ { workspaceResourceId: logs.id, name: 'workspace' } ] }
    dataFlows: [ { streams: [ 'Custom-DefenderIncidents' ], destinations: [ 'workspace' ], transformKql: 'source', outputStream: 'Custom-DefenderIncidents_CL' } ]
  }
  dependsOn: [ incidentTable ]
}

var exportSink = exportDestination == 'logAnalytics' ? '${incidentRule.properties.endpoints.logsIngestion}/dataCollectionRules/${incidentRule.properties.immutableId}/streams/Custom-DefenderIncidents' : exportDestination == 'splunk' ? splunkHecUrl : '${blobEndpoint}/exports'

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id }
}

// Alert rules (docs/alerts.md), with alertActionGroupId only: log search
// alerts over Application Insights, which the host fills (requests: each
// invocation; traces: its own log and the handler's stdout, one line each).
// Log search, not metrics: Storage counts queue messages per account, not
// per queue, and the lag gauge leaves only over OTLP.
var alerting = !empty(alertActionGroupId)

// A failed invocation: the handler answers 500 (shared/customhandler) for a
// failed run, a task that failed included (the host delivers it again).
resource failureAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerting) {
  name: '${namePrefix}-alert-failures-${suffix}'
  location: location
  kind: 'LogAlert'
  properties: {
    displayName: 'Defender Functions: incident export failing'
    description: 'incident-export or incident-export-tenant failed ${alertFailureThreshold} times or more in 30 minutes (docs/alerts.md).'
    severity: 1
    enabled: true
    scopes: [ insights.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
    criteria: {
      allOf: [
        {
          query: 'requests | where name in (\'incident-export\', \'incident-export-tenant\') and success == false'
          timeAggregation: 'Count'
          operator: 'GreaterThanOrEqual'
          threshold: alertFailureThreshold
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: [ alertActionGroupId ] }
  }
}

// The host's queue listener logs each task it moves to the poison queue, at
// Warning: "Message has reached MaxDequeueCount of 5. Moving message to queue
// 'incident-export-poison'." (the Storage Queues extension's QueueProcessor,
// CopyMessageToPoisonQueueAsync; infra/local/funchost/CONTRACTS.md), whatever
// the cause: failed deliveries, a message that is no task, one not decodable.
resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerting) {
  name: '${namePrefix}-alert-poison-${suffix}'
  location: location
  kind: 'LogAlert'
  properties: {
    displayName: 'Defender Functions: tenant export task in the poison queue'
    description: 'A tenant\'s export task was moved to ${poisonQueue.name}: that tenant is no longer exported (docs/alerts.md).'
    severity: 1
    enabled: true
    scopes: [ insights.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where message contains "Moving message to queue \'${poisonQueue.name}\'"'
          timeAggregation: 'Count'
          operator: 'GreaterThanOrEqual'
          threshold: alertPoisonThreshold
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: [ alertActionGroupId ] }
  }
}

// The lag, from the handler's log lines (stdout, which the host logs as
// traces): each page written and each run caught up carries lag_s ("Page
// exported.", "Caught up."), a run out of time behind_s ("Stopping before the
// deadline; the next run continues."): now minus the tenant's checkpoint, in
// seconds (functions/incident-export/export.go). The JSON is read from its
// first brace, whatever the host puts before it.
resource lagAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerting) {
  name: '${namePrefix}-alert-lag-${suffix}'
  location: location
  kind: 'LogAlert'
  properties: {
    displayName: 'Defender Functions: incident export lagging'
    description: 'A tenant\'s export is more than ${alertLagSeconds} s behind (docs/alerts.md).'
    severity: 2
    enabled: true
    scopes: [ insights.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where message contains \'"lag_s"\' or message contains \'"behind_s"\' | extend line = parse_json(substring(message, indexof(message, \'{\'))) | extend lag_s = coalesce(todouble(line.lag_s), todouble(line.behind_s)) | where isnotnull(lag_s) | project timestamp, lag_s'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'lag_s'
          operator: 'GreaterThan'
          threshold: alertLagSeconds
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: [ alertActionGroupId ] }
  }
}

// An export that stops altogether (the timer disabled, the app stopped) writes no lag line, which
// the lag rule reads as nothing wrong: an hour without one is an alert of its own. Every run logs
// one per tenant ("Page exported.", "Caught up.").
resource stalledAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerting) {
  name: '${namePrefix}-alert-stalled-${suffix}'
  location: location
  kind: 'LogAlert'
  properties: {
    displayName: 'Defender Functions: incident export stalled'
    description: 'No export run has reported progress for an hour (docs/alerts.md).'
    severity: 2
    enabled: true
    scopes: [ insights.id ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: 'traces | where message contains \'"lag_s"\' or message contains \'"behind_s"\''
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: [ alertActionGroupId ] }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: vaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
    createMode: keyVaultCreateMode
  }
}

resource clientSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(defenderClientSecret)) {
  parent: vault
  name: 'defender-client-secret'
  properties: { value: defenderClientSecret }
}

// The functions' identity. A user-assigned identity because an app
// registration can trust no system-assigned one as a federated credential.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-id-${suffix}'
  location: location
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${namePrefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned, UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // The platform resolves the Key Vault references as the functions' identity,
    // not the system-assigned one (which then needs nothing in the vault).
    keyVaultReferenceIdentity: identity.id
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}/deployment'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: 2048 }
      runtime: { name: 'custom', version: '1.0' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName'
          value: storage.name }
        { name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString }
        { name: 'DEFENDER_API'
          value: defenderApi }
        { name: 'DEFENDER_TENANT_ID'
          value: defenderTenantId }
        { name: 'DEFENDER_CLIENT_ID'
          value: defenderClientId }
        { name: 'DEFENDER_CREDENTIAL'
          value: defenderCredential }
        { name: 'DEFENDER_SECRET_NAME'
          value: defenderCredential == 'keyvault-certificate' ? 'defender-client-cert' : 'defender-client-secret' }
        { name: 'DEFENDER_SECRET_TTL'
          value: '1h' }
        { name: 'DEFENDER_TOKEN_VERSION'
          value: 'v2' }
        { name: 'DEFENDER_API_URL'
          value: apiUrl }
        { name: 'DEFENDER_ASSERTION_ALG'
          value: 'PS256' }
        { name: 'DEFENDER_RATE_LIMITS'
          value: 'documented' }
        { name: 'AZURE_AUTHORITY_HOST'
          value: environment().authentication.loginEndpoint }
        { name: 'DEFENDER_CONSENT_REDIRECT_URI'
          value: defenderConsentRedirectUri }
        { name: 'KEY_VAULT_URL'
          value: vaultUri }
        { name: 'KEY_VAULT_CREDENTIAL'
          value: 'managed-identity' }
        { name: 'MANAGED_IDENTITY_CLIENT_ID'
          value: identity.properties.clientId }
        { name: 'EXPORT_SINK'
          value: exportSink }
        { name: 'OTEL_EXPORTER_OTLP_ENDPOINT'
          value: otlpEndpoint }
        // A collector's API key, if it wants one: a Key Vault reference.
        { name: 'OTEL_EXPORTER_OTLP_HEADERS'
          value: '' }
        { name: 'OTEL_SERVICE_NAME'
          value: appName }
        { name: 'EXPORT_LAYOUT'
          value: exportLayout }
        { name: 'EXPORT_BATCH_EVERY'
          value: '10s' }
        { name: 'EXPORT_BATCH_BYTES'
          value: '' }
        { name: 'EXPORT_SPLUNK_TOKEN_SECRET'
          value: 'splunk-hec-token' }
        { name: 'EXPORT_SPLUNK_ACK'
          value: string(splunkAck) }
        { name: 'EXPORT_SPLUNK_ACK_TIMEOUT'
          value: '2m' }
        { name: 'EXPORT_SPLUNK_INDEX'
          value: splunkIndex }
        { name: 'STATE_STORE'
          value: '${blobEndpoint}/state' }
        { name: 'EXPORT_SCHEDULE'
          value: exportSchedule }
        { name: 'EXPORT_LOOKBACK'
          value: exportLookback }
        { name: 'EXPORT_MAX_RUN'
          value: '4m' }
        { name: 'EXPORT_PAGE_SIZE'
          value: '' }
        { name: 'EXPORT_LAG'
          value: '10m' }
        { name: 'EXPORT_CONCURRENCY'
          value: '8' }
        { name: 'EXPORT_QUEUE'
          value: exportQueue.name }
        { name: 'HUNTING_ALLOW_ADHOC'
          value: string(huntingAllowAdhoc) }
        { name: 'HUNTING_REQUIRED_ROLE'
          value: huntingRequiredRole }
        { name: 'HUNTING_ADHOC_ROLE'
          value: huntingAdhocRole }
        { name: 'HUNTING_TENANT_ROLES'
          value: huntingTenantRoles }
        { name: 'HUNTING_MAX_ROWS'
          value: '10000' }
        { name: 'HUNTING_TIMEOUT'
          value: '200s' }
        { name: 'WEBHOOK_SECRET_JIRA'
          value: contains(webhookProviders, 'jira') ? webhookSecret.jira : '' }
        { name: 'WEBHOOK_SECRET_SERVICENOW'
          value: contains(webhookProviders, 'servicenow') ? webhookSecret.servicenow : '' }
        { name: 'WEBHOOK_SECRET_GENERIC'
          value: contains(webhookProviders, 'generic') ? webhookSecret.generic : '' }
        { name: 'WEBHOOK_MAPPING_FILE'
          value: '' }
        { name: 'WEBHOOK_MAPPING'
          value: webhookMapping }
        { name: 'WEBHOOK_TOLERANCE'
          value: '5m' }
        { name: 'WEBHOOK_RETRY_WINDOW'
          value: '2h' }
        { name: 'WEBHOOK_DEDUPE_TTL'
          value: '168h' }
        { name: 'WEBHOOK_MAX_BODY'
          value: '1048576' }
        { name: 'WEBHOOK_TIMEOUT'
          value: '25s' }
      ]
    }
  }
}

// The functions read the Defender app's secret as the user-assigned identity, and the platform
// resolves the Key Vault references (the webhook secrets) as it (keyVaultReferenceIdentity).
resource identityVaultAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, identity.id, kvSecretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', kvSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Caller roles need App Service Authentication: it validates the caller's
// Entra ID token and hands the handler its roles (X-MS-CLIENT-PRINCIPAL; the
// platform sets WEBSITE_AUTH_ENABLED, which the handler reads). The webhook
// is left out: a delivery's signature is its authentication. An excluded path
// is matched as written, or, ending in /*, as a prefix (App Service's
// file-based configuration reference): /api/ticket-webhook alone excluded
// none of the provider routes, /api/ticket-webhook/{provider}.
var callerIssuer = callerTokenVersion == '1' ? 'https://sts.windows.net/${tenant().tenantId}/' : '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(huntingRequiredRole)) {
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [ '/api/ticket-webhook/*' ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: callerApiClientId
          openIdIssuer: callerIssuer
        }
        validation: {
          allowedAudiences: [ callerApiClientId, empty(callerApiIdUri) ? 'api://${callerApiClientId}' : callerApiIdUri ]
        }
      }
    }
  }
}

// The operator stores the client secret (or certificate) and the webhook secrets.
resource operatorSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: vault
  name: guid(vault.id, operatorPrincipalId, kvSecretsOfficer)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', kvSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorCertificates 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: vault
  name: guid(vault.id, operatorPrincipalId, kvCertificatesOfficer)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', kvCertificatesOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

// doctor, run by the operator with their own sign-in (doctor -as-me, docs/doctor.md), reads and
// writes what the functions do: a check object in the exports and state containers, and a peek
// at the task and -poison queues (the exports container only when it is the sink).
resource operatorExports 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId) && exportDestination == 'blob') {
  scope: exportsContainer
  name: guid(exportsContainer.id, operatorPrincipalId, blobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorState 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: stateContainer
  name: guid(stateContainer.id, operatorPrincipalId, blobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorQueuePeek 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: exportQueue
  name: guid(exportQueue.id, operatorPrincipalId, queueDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataReader)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorPoisonPeek 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: poisonQueue
  name: guid(poisonQueue.id, operatorPrincipalId, queueDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataReader)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

// The host's own storage (leases, timers, keys, the deployment package) needs Blob Data Owner on
// the account, as Functions documents it: the host lists the account's containers and reads its
// blob service properties, which no container-scoped role allows.
resource hostStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, blobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataOwner)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The host's queue listener (AzureWebJobsStorage, the system-assigned identity) takes the tasks
// and moves one that keeps failing to the -poison queue (Message Sender there), on those two
// queues only: nothing account-wide. On the task queue Data Contributor, not the Reader and
// Message Processor Functions lists for a trigger: the listener also updates a message, renewing
// its lease while it runs and releasing it after a failure (Update Message, which neither allows:
// MicrosoftDocs/azure-docs#120932), so a failed task comes back after host.json's visibilityTimeout.
resource hostQueueAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: exportQueue
  name: guid(exportQueue.id, app.id, queueDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataContributor)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostPoisonSend 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: poisonQueue
  name: guid(poisonQueue.id, app.id, queueMessageSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageSender)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The functions (the user-assigned identity) send the tasks: the timer's, and a tenant's continuation.
resource queueSend 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: exportQueue
  name: guid(exportQueue.id, identity.id, queueMessageSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// doctor, with the functions' settings and so their identity, peeks at the tasks waiting and at
// the -poison queue (reads, takes nothing).
resource queuePeek 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: exportQueue
  name: guid(exportQueue.id, identity.id, queueDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource poisonPeek 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: poisonQueue
  name: guid(poisonQueue.id, identity.id, queueDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The exports and the state, by name, so that moving host storage elsewhere keeps them writable.
// The functions write them as the user-assigned identity.
resource exportsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: exportsContainer
  name: guid(exportsContainer.id, identity.id, blobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource stateAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: stateContainer
  name: guid(stateContainer.id, identity.id, blobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The functions send rows as the user-assigned identity.
resource ruleAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (exportDestination == 'logAnalytics') {
  scope: incidentRule
  name: guid(incidentRule.id, identity.id, monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = app.name
output keyVaultName string = vault.name
output hostName string = app.properties.defaultHostName
output principalId string = app.identity.principalId
// The federated credential's subject and issuer (docs/app-registration.md §4).
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output federationIssuer string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'

