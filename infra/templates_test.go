// Package infra_test checks the deployment templates against the code: the
// settings the code reads, the runtime, handler and resources.
package infra_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/lambdahandler"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation/serverless"
	"github.com/awslabs/goformation/v7/intrinsics"
	"gopkg.in/yaml.v3"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/sink"
)

// settingsRead is every setting config.Load reads, recorded as it reads.
func settingsRead(t *testing.T) map[string]bool {
	seen := map[string]bool{}
	config.Load(func(k string) (string, bool) { seen[k] = true; return "", false })
	if len(seen) < 40 {
		t.Fatalf("only %d settings recorded", len(seen))
	}
	return seen
}

// Settings that belong to one platform only, and why.
var notOn = map[string]map[string]string{
	"azure": {
		config.EnvClientSecret:         "env-secret is for local development",
		config.EnvVaultClientID:        "Azure reaches Key Vault with the managed identity",
		config.EnvVaultTenantID:        "Azure reaches Key Vault with the managed identity",
		config.EnvVaultCertificatePath: "Azure reaches Key Vault with the managed identity",
		config.EnvVaultCertificatePass: "Azure reaches Key Vault with the managed identity",
		config.EnvFederatedTokenFile:   "Azure reaches Key Vault with the managed identity",
		config.EnvS3Endpoint:           "S3-compatible endpoints are for the emulators",
		config.EnvAWSRegion:            "set by Lambda",
		config.EnvStorage:              "identity-based storage: AzureWebJobsStorage__accountName",
		config.EnvStorageQueueURI:      "the Bicep deploys to Azure's public cloud, named by accountName",
		config.EnvLambdaFunctionName:   "set by Lambda",
		config.EnvWebhookSecretsARN:    "Azure resolves Key Vault references into WEBHOOK_SECRET_*",
		config.EnvWebhookSecretsTTL:    "Azure resolves Key Vault references into WEBHOOK_SECRET_*",
	},
	"aws": {
		config.EnvClientSecret:                       "env-secret is for local development",
		config.EnvManagedIdentityClientID:            "no managed identity on Lambda",
		config.EnvVaultCertificatePass:               "the layer's PEM has no password",
		config.EnvFederatedTokenFile:                 "the certificate is used, not federation",
		config.EnvS3Endpoint:                         "S3-compatible endpoints are for the emulators",
		config.EnvAWSRegion:                          "reserved: Lambda sets it",
		config.EnvStorage:                            "the state's Blob container is reached with the bootstrap app",
		config.EnvStorageAccount:                     "a Functions host setting",
		config.EnvStorageQueueURI:                    "a Functions host setting",
		config.EnvLambdaFunctionName:                 "reserved: Lambda sets it",
		config.EnvWebhookSecretPrefix + "JIRA":       "read at run time from Secrets Manager (WEBHOOK_SECRETS_ARN)",
		config.EnvWebhookSecretPrefix + "SERVICENOW": "read at run time from Secrets Manager (WEBHOOK_SECRETS_ARN)",
		config.EnvWebhookSecretPrefix + "GENERIC":    "read at run time from Secrets Manager (WEBHOOK_SECRETS_ARN)",
	},
}

// Platform settings the templates may carry besides the code's.
var platform = map[string]bool{
	"FUNCTIONS_WORKER_RUNTIME": true, "FUNCTIONS_EXTENSION_VERSION": true, "APPLICATIONINSIGHTS_CONNECTION_STRING": true,
	"AzureWebJobsStorage__credential": true, "AzureWebJobsStorage__blobServiceUri": true, "AzureWebJobsStorage__queueServiceUri": true,
	"AzureWebJobsStorage__tableServiceUri": true, "WEBSITE_RUN_FROM_PACKAGE": true,
}

func compare(t *testing.T, where string, got map[string]bool, skip map[string]string) {
	t.Helper()
	var missing, extra []string
	for name := range settingsRead(t) {
		if _, ok := skip[name]; !ok && !got[name] {
			missing = append(missing, name)
		}
	}
	read := settingsRead(t)
	for name := range got {
		if !read[name] && !platform[name] {
			extra = append(extra, name)
		}
		if reason, ok := skip[name]; ok && got[name] {
			extra = append(extra, name+" ("+reason+")")
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("%s: missing settings %v; settings the code does not read here %v", where, missing, extra)
	}
}

// cfn-lint, with the SAM translator, refuses what sam deploy's transform
// would refuse. It is a Python tool: make test needs it installed.
func TestCfnLint(t *testing.T) {
	bin, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Fatal("cfn-lint is not installed: pip install 'cfn-lint>=1.51' (it brings the SAM translator); make test lints infra/aws/template.yaml with it")
	}
	out, err := exec.Command(bin, "--format", "parseable", "aws/template.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("cfn-lint infra/aws/template.yaml: %v\n%s", err, out)
	}
}

func TestSAMTemplate(t *testing.T) {
	tpl, err := goformation.Open("aws/template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fns := tpl.GetAllServerlessFunctionResources()
	if len(fns) != 1 {
		t.Fatalf("%d functions", len(fns))
	}
	var fn *serverless.Function
	for _, f := range fns {
		fn = f
	}
	if fn.Runtime == nil || *fn.Runtime != "provided.al2023" || fn.Handler == nil || *fn.Handler != "bootstrap" ||
		len(fn.Architectures) != 1 || fn.Architectures[0] != "arm64" {
		t.Fatalf("runtime %v handler %v architectures %v", fn.Runtime, fn.Handler, fn.Architectures)
	}
	if fn.CodeUri == nil || fn.CodeUri.String == nil || *fn.CodeUri.String != "../../dist/lambda/arm64/" {
		t.Fatalf("CodeUri %+v", fn.CodeUri)
	}
	api, err := tpl.GetServerlessHttpApiWithName("HttpApi")
	if err != nil {
		t.Fatal(err)
	}
	defaultAuth := ""
	if api.Auth != nil && api.Auth.DefaultAuthorizer != nil {
		defaultAuth = *api.Auth.DefaultAuthorizer
	}
	routes, auth := map[string]string{}, map[string]string{}
	var sqsEvents []string
	for name, ev := range fn.Events {
		switch {
		case ev.Type == "SQS":
			// goformation knows no FunctionResponseTypes, so it leaves the
			// properties unread: the text is checked below.
			sqsEvents = append(sqsEvents, name)
		case ev.Properties.HttpApiEvent != nil:
			h := ev.Properties.HttpApiEvent
			r := *h.Method + " " + *h.Path
			routes[r], auth[r] = name, defaultAuth
			if h.Auth != nil && h.Auth.Authorizer != nil {
				auth[r] = *h.Auth.Authorizer
			}
		default:
			t.Fatalf("event %s of an unexpected type", name)
		}
	}
	// The export's tasks: one queue, its dead-letter queue after the fifth
	// receive (the Lambda handler's DefaultMaxReceiveCount), a few tasks per invocation with partial batch responses,
	// a visibility timeout of six times the function's, the function
	// allowed to send to it and given its URL.
	if len(sqsEvents) != 1 {
		t.Errorf("SQS events %v, want the export's tasks", sqsEvents)
	}
	raw, _ := os.ReadFile("aws/template.yaml")
	for _, want := range []string{"Queue: !GetAtt ExportTasks.Arn\n            BatchSize: 4\n            FunctionResponseTypes: [ReportBatchItemFailures]",
		"SQSSendMessagePolicy: {QueueName: !GetAtt ExportTasks.QueueName}", "EXPORT_QUEUE: !Ref ExportTasks",
		// The handler's last-delivery line counts to the same receive.
		fmt.Sprintf("deadLetterTargetArn: !GetAtt ExportTaskDeadLetters.Arn\n        maxReceiveCount: %d", lambdahandler.DefaultMaxReceiveCount)} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("template.yaml lacks %q", want)
		}
	}
	tasks, err := tpl.GetSQSQueueWithName("ExportTasks")
	if err != nil {
		t.Fatal(err)
	}
	if fn.Timeout == nil || tasks.VisibilityTimeout == nil || *tasks.VisibilityTimeout < 6**fn.Timeout {
		t.Errorf("the tasks' visibility timeout %v is under six times the function's timeout %v", tasks.VisibilityTimeout, fn.Timeout)
	}
	// The hunting routes need an Entra ID token; the webhook's signature is
	// its authentication. An authorizer of NONE needs a default beside it
	// (else sam deploy's transform refuses the template: cfn-lint E0001).
	for r, want := range map[string]string{"GET /hunting-query": "EntraJwt", "POST /hunting-query": "EntraJwt", "POST /ticket-webhook/{provider}": "NONE"} {
		if auth[r] != want {
			t.Errorf("%s is authorized by %q, want %q", r, auth[r], want)
		}
		if auth[r] == "NONE" && defaultAuth == "" {
			t.Errorf("%s: Authorizer NONE without a DefaultAuthorizer on the API", r)
		}
	}
	// Every HTTP function as its descriptor declares it, and nothing else.
	want := map[string]bool{}
	for _, d := range functions.Functions {
		if d.HTTP == nil {
			continue
		}
		for _, m := range d.HTTP.Methods {
			want[strings.ToUpper(m)+" /"+d.HTTP.Route] = true
		}
	}
	for r := range want {
		if routes[r] == "" {
			t.Errorf("no event for %s (have %v)", r, routes)
		}
	}
	for r := range routes {
		if !want[r] {
			t.Errorf("event %s for no declared function", r)
		}
	}
	// The authorizer's issuer and audiences agree with the API app's token
	// version: v1 from sts.windows.net for the ID URI, v2 from …/v2.0 for
	// the client ID (a v2 issuer refused every v1 token).
	raw, _ = os.ReadFile("aws/template.yaml")
	for _, want := range []string{
		`issuer: !If [CallerV1, !Sub "https://sts.windows.net/${CallerTenantId}/", !Sub "https://login.microsoftonline.com/${CallerTenantId}/v2.0"]`,
		"- !Ref CallerApiClientId", `- !If [HasCallerIdUri, !Ref CallerApiIdUri, !Sub "api://${CallerApiClientId}"]`,
		`CallerV1: !Equals [!Ref CallerTokenVersion, "1"]`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("template.yaml lacks %s", want)
		}
	}
	// Least privilege: the function puts objects under the export prefix
	// (EXPORT_SINK's) and nothing more; the bucket refuses plain HTTP.
	if strings.Contains(string(raw), "S3CrudPolicy:") {
		t.Error("the function has S3CrudPolicy: read, list and delete on the whole bucket")
	}
	for _, want := range []string{
		"Action: s3:PutObject\n              Resource: !Sub \"arn:${AWS::Partition}:s3:::${ExportBucket}/incidents/*\"",
		`EXPORT_SINK: !If [HasSplunk, !Ref SplunkHecUrl, !Sub "s3://${ExportBucket}/incidents"]`,
		"Effect: Deny", `Condition: {Bool: {"aws:SecureTransport": "false"}}`, `Resource: [!GetAtt ExportBucket.Arn, !Sub "${ExportBucket.Arn}/*"]`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("template.yaml lacks %s", want)
		}
	}
	// The webhook's keys are read at run time (a rotation needs no
	// redeploy), from that one secret: nothing is resolved into the
	// environment at deploy time, and no other secret is readable.
	if strings.Contains(string(raw), "{{resolve:") {
		t.Error("template.yaml resolves a secret into the environment at deploy time")
	}
	if n := strings.Count(string(raw), "secretsmanager:"); n != 1 || !strings.Contains(string(raw),
		"Action: secretsmanager:GetSecretValue\n                Resource: !Ref WebhookSecretsArn") {
		t.Errorf("Secrets Manager rights: want GetSecretValue on WebhookSecretsArn alone (%d mentions)", n)
	}
	if !strings.Contains(string(raw), config.EnvWebhookSecretsARN+": !Ref WebhookSecretsArn\n") {
		t.Errorf("%s is not the WebhookSecretsArn parameter", config.EnvWebhookSecretsARN)
	}
	if _, err := tpl.GetS3BucketPolicyWithName("ExportBucketPolicy"); err != nil {
		t.Error(err)
	}
	sched, err := tpl.GetSchedulerScheduleWithName("IncidentExportSchedule")
	if err != nil {
		t.Fatal(err)
	}
	if sched.Target == nil || sched.Target.Input == nil || *sched.Target.Input != `{"source":"scheduler","function":"incident-export"}` {
		t.Fatalf("schedule target %+v", sched.Target)
	}
	if _, err := tpl.GetS3BucketWithName("ExportBucket"); err != nil {
		t.Error(err)
	}
	if _, err := tpl.GetServerlessHttpApiWithName("HttpApi"); err != nil {
		t.Error(err)
	}
	got := map[string]bool{}
	if fn.Environment == nil {
		t.Fatal("no environment")
	}
	for k := range fn.Environment.Variables {
		got[k] = true
	}
	compare(t, "infra/aws/template.yaml", got, notOn["aws"])
	// hunting-query answers inside API Gateway's 30 s, rows included.
	if v, ok := fn.Environment.Variables["HUNTING_TIMEOUT"]; !ok {
		t.Error("HUNTING_TIMEOUT is not set")
	} else if d, err := time.ParseDuration(v); err != nil || d > 25*time.Second {
		t.Errorf("HUNTING_TIMEOUT=%s leaves the rows no time within API Gateway's 30 s", v)
	}
}

// The Bicep file's app settings: name/value pairs in appSettings.
func TestBicepSettings(t *testing.T) {
	b, err := os.ReadFile("azure/main.bicep")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range regexp.MustCompile(`\{\s*name:\s*'([A-Za-z0-9_]+)'\s*\n?\s*value:`).FindAllStringSubmatch(string(b), -1) {
		got[m[1]] = true
	}
	compare(t, "infra/azure/main.bicep", got, notOn["azure"])
	for _, want := range []string{"Microsoft.Web/sites", "FlexConsumption", "'custom'", "SystemAssigned", "Microsoft.KeyVault/vaults",
		"enableRbacAuthorization: true", "4633458b-17de-408a-b874-0445c86b69e6", "Microsoft.Insights/components",
		"ba92f5b4-2d11-453d-a403-e96b0029c9fe", "'exports'", "'state'",
		// The operator can store the secrets: Secrets Officer and Certificates Officer on the vault.
		"param operatorPrincipalId string", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "a4417e6f-fecd-4de8-b567-7b0420556985",
		"if (!empty(operatorPrincipalId))", "principalId: operatorPrincipalId",
		// Caller roles come with App Service Authentication, whose issuer
		// agrees with the API app's token version.
		"resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(huntingRequiredRole))", "name: 'authsettingsV2'",
		"requireAuthentication: true", "unauthenticatedClientAction: 'Return401'", "excludedPaths: [ '/api/ticket-webhook' ]",
		"callerTokenVersion == '1' ? 'https://sts.windows.net/${tenant().tenantId}/' : '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'",
		"allowedAudiences: [ callerApiClientId, empty(callerApiIdUri) ? 'api://${callerApiClientId}' : callerApiIdUri ]",
		// Secretless: a user-assigned identity (no app may trust a system-assigned
		// one as a federated credential), assigned, named to the code, holding
		// the functions' own rights, its subject and issuer given out.
		"resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31'",
		"identity: { type: 'SystemAssigned, UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }",
		"{ name: 'MANAGED_IDENTITY_CLIENT_ID'\n          value: identity.properties.clientId }",
		"@allowed(['keyvault-secret', 'keyvault-certificate', 'managed-identity-federation'])\nparam defenderCredential string = 'keyvault-secret'",
		"{ name: 'DEFENDER_CREDENTIAL'\n          value: defenderCredential }",
		"scope: vault\n  name: guid(vault.id, identity.id, kvSecretsUser)",
		"scope: exportsContainer\n  name: guid(exportsContainer.id, identity.id, blobDataContributor)",
		"scope: stateContainer\n  name: guid(stateContainer.id, identity.id, blobDataContributor)",
		"output identityPrincipalId string = identity.properties.principalId",
		"output federationIssuer string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'",
		// The export's fan-out: the queue, named to the code; the host's
		// listener may take tasks and write the poison queue, the functions'
		// identity send them.
		"resource exportQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01'", "name: 'incident-export'\n}",
		"{ name: 'EXPORT_QUEUE'\n          value: exportQueue.name }",
		"scope: storage\n  name: guid(storage.id, app.id, queueDataContributor)", "var queueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'",
		"scope: exportQueue\n  name: guid(exportQueue.id, identity.id, queueMessageSender)", "var queueMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("main.bicep lacks %s", want)
		}
	}
}

// The Bicep's table and the rule's stream have the columns the Logs
// Ingestion sink sends (sink.LogsRow), with their types; the sink's URL is
// the rule's own endpoint and stream, and the functions' identity may ingest.
func TestBicepLogsTable(t *testing.T) {
	b, err := os.ReadFile("azure/main.bicep")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`\{ name: '(\w+)', type: '(\w+)', description: `).FindAllStringSubmatch(string(b), -1) {
		got[m[1]] = m[2]
	}
	want := map[string]string{}
	rt := reflect.TypeFor[sink.LogsRow]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		typ := map[reflect.Type]string{reflect.TypeFor[time.Time](): "datetime", reflect.TypeFor[string](): "string", reflect.TypeFor[json.RawMessage](): "dynamic", reflect.TypeFor[int](): "int"}[f.Type]
		want[strings.Split(f.Tag.Get("json"), ",")[0]] = typ
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("main.bicep's incidentColumns = %v, want the sink's %v", got, want)
	}
	for _, w := range []string{
		"resource incidentTable 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = if (exportDestination == 'logAnalytics')",
		"name: 'DefenderIncidents_CL'", "kind: 'Direct'",
		"streamDeclarations: { 'Custom-DefenderIncidents': { columns: map(incidentColumns, c => { name: c.name, type: c.type }) } }",
		"outputStream: 'Custom-DefenderIncidents_CL'",
		"'${incidentRule.properties.endpoints.logsIngestion}/dataCollectionRules/${incidentRule.properties.immutableId}/streams/Custom-DefenderIncidents'",
		"scope: incidentRule\n  name: guid(incidentRule.id, identity.id, monitoringMetricsPublisher)",
		"var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'",
		"{ name: 'EXPORT_SINK'\n          value: exportSink }",
	} {
		if !strings.Contains(string(b), w) {
			t.Errorf("main.bicep lacks %s", w)
		}
	}
}

// The README's settings table names every setting, and nothing else.
func TestReadmeSettings(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range regexp.MustCompile("`([A-Za-z0-9_]+)`").FindAllStringSubmatch(first, -1) {
			got[m[1]] = true
		}
	}
	compare(t, "README.md", got, nil)
}

// With DefenderCredential=aws-federation the AWS deployment holds no secret
// and no private key: no layer, no certificate path, no vault, no secret in
// the environment, no parameter that takes one; the role may ask STS for a
// JWT for Entra ID's token exchange, and nothing else of STS.
func TestSAMTemplateSecretless(t *testing.T) {
	raw, _ := os.ReadFile("aws/template.yaml")
	for _, mode := range []string{"keyvault-secret", "aws-federation"} {
		t.Run(mode, func(t *testing.T) {
			tpl, err := goformation.OpenWithOptions("aws/template.yaml", &intrinsics.ProcessorOptions{EvaluateConditions: true, ParameterOverrides: map[string]any{
				"DefenderCredential": mode, "KeyVaultCertificateLayerArn": "arn:aws:lambda:eu-west-1:123456789012:layer:defender-keyvault:1"}})
			if err != nil {
				t.Fatal(err)
			}
			fn, err := tpl.GetServerlessFunctionWithName("DefenderFunctions")
			if err != nil {
				t.Fatal(err)
			}
			env := fn.Environment.Variables
			policies, _ := json.Marshal(fn.Policies)
			federated := mode == "aws-federation"
			if got := strings.Contains(string(policies), "sts:GetWebIdentityToken"); got != federated {
				t.Errorf("sts:GetWebIdentityToken granted: %v", got)
			}
			if !federated {
				if len(fn.Layers) != 1 || env["KEY_VAULT_CERTIFICATE_PATH"] == "" || env["KEY_VAULT_CREDENTIAL"] != "client-certificate" {
					t.Errorf("the vault mode lost its certificate: layers %v, env %v", fn.Layers, env)
				}
				return
			}
			if len(fn.Layers) != 0 {
				t.Errorf("layers %v: a layer could carry a key", fn.Layers)
			}
			if !strings.Contains(string(policies), `"sts:IdentityTokenAudience":"api://AzureADTokenExchange"`) {
				t.Errorf("the JWT's audience is not held to Entra ID's token exchange: %s", policies)
			}
			for k, want := range map[string]string{"DEFENDER_CREDENTIAL": "aws-federation", "KEY_VAULT_CREDENTIAL": "aws-federation", "KEY_VAULT_URL": "", "KEY_VAULT_CERTIFICATE_PATH": ""} {
				if env[k] != want {
					t.Errorf("%s=%q, want %q", k, env[k], want)
				}
			}
			for k, v := range env {
				if strings.Contains(v, "PRIVATE KEY") || strings.Contains(v, "{{resolve:") || k == config.EnvClientSecret || strings.HasPrefix(k, config.EnvWebhookSecretPrefix) {
					t.Errorf("%s holds a secret", k)
				}
			}
		})
	}
	// No parameter takes a secret: the ones without a default are
	// identifiers, and none is NoEcho (the mark of a secret).
	var doc struct {
		Parameters map[string]map[string]any `yaml:"Parameters"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{"DefenderTenantId": true, "DefenderClientId": true, "StateStore": true, "CallerTenantId": true, "CallerApiClientId": true}
	for name, p := range doc.Parameters {
		if _, ok := p["Default"]; !ok && !ids[name] {
			t.Errorf("parameter %s has no default: a federated deployment would have to give it", name)
		}
		if p["NoEcho"] != nil {
			t.Errorf("parameter %s is NoEcho: it takes a secret", name)
		}
	}
}
