// Package infra_test checks the deployment templates against the code: the
// settings the code reads, the runtime, handler and resources.
package infra_test

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/lambdahandler"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/cloudformation/serverless"
	"github.com/awslabs/goformation/v7/intrinsics"
	"gopkg.in/yaml.v3"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/awsidentity"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
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

// Platform settings the templates may carry besides the code's. Not those
// Flex Consumption deprecates (flexDeprecated): the runtime and the package
// are functionAppConfig's.
var platform = map[string]bool{
	"APPLICATIONINSIGHTS_CONNECTION_STRING": true, "AzureWebJobsStorage__credential": true,
	"AzureWebJobsStorage__blobServiceUri": true, "AzureWebJobsStorage__queueServiceUri": true, "AzureWebJobsStorage__tableServiceUri": true,
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
	for name, ev := range fn.Events {
		switch {
		case ev.Type == "SQS":
			// SAM gives an SQS event's role AWSLambdaSQSQueueExecutionRole:
			// receive and delete on every queue of the account.
			t.Errorf("event %s is an SQS event: declare an AWS::Lambda::EventSourceMapping (TestSAMTransformedSQS)", name)
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
	// receive (the Lambda handler's DefaultMaxReceiveCount), a visibility
	// timeout of six times the function's, the function allowed to send to it
	// and given its URL (the mapping that hands them back:
	// TestSAMTransformedSQS).
	raw, _ := os.ReadFile("aws/template.yaml")
	for _, want := range []string{
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
		"requireAuthentication: true", "unauthenticatedClientAction: 'Return401'",
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
		// The export's fan-out: the queue, named to the code, and its poison
		// queue (who may do what on them: TestBicepRoleAssignments).
		"resource exportQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01'", "name: 'incident-export'\n}",
		"resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01'", "name: '${exportQueue.name}-poison'\n}",
		"{ name: 'EXPORT_QUEUE'\n          value: exportQueue.name }"} {
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

// docs/settings.md names every setting, and nothing else.
func TestReadmeSettings(t *testing.T) {
	b, err := os.ReadFile("../docs/settings.md")
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
	compare(t, "docs/settings.md", got, nil)
}

// With DefenderCredential=aws-federation the AWS deployment holds no secret
// and no private key: no layer, no certificate path, no vault, no secret in
// the environment, no parameter that takes one; the role may ask STS for a
// JWT for Entra ID's token exchange, and nothing else of STS.
func TestSAMTemplateSecretless(t *testing.T) {
	raw, _ := os.ReadFile("aws/template.yaml")
	for _, mode := range []string{"keyvault-secret", "aws-federation"} {
		t.Run(mode, func(t *testing.T) {
			tpl, err := openSAM(&intrinsics.ProcessorOptions{EvaluateConditions: true, ParameterOverrides: map[string]any{
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

// bicepResource is one of main.bicep's resources: its type (without the API
// version) and its body, up to the closing brace in the first column.
type bicepResource struct{ Type, Body string }

func bicepResources(t *testing.T, b string) map[string]bicepResource {
	t.Helper()
	out := map[string]bicepResource{}
	for _, m := range regexp.MustCompile(`(?m)^resource (\w+) '([^'@]+)@[^']+' = [^\n]*\{\n`).FindAllStringSubmatchIndex(b, -1) {
		end := strings.Index(b[m[1]:], "\n}\n")
		if end < 0 {
			t.Fatalf("resource %s has no closing brace", b[m[2]:m[3]])
		}
		out[b[m[2]:m[3]]] = bicepResource{Type: b[m[4]:m[5]], Body: b[m[1] : m[1]+end]}
	}
	if len(out) < 20 {
		t.Fatalf("only %d resources found in main.bicep", len(out))
	}
	return out
}

// bicepParam is a parameter's decorators (name → argument) and default.
func bicepParam(t *testing.T, b, name string) (decorators map[string]string, def string) {
	t.Helper()
	lines := strings.Split(b, "\n")
	for i, l := range lines {
		rest, ok := strings.CutPrefix(l, "param "+name+" ")
		if !ok {
			continue
		}
		if _, d, ok := strings.Cut(rest, " = "); ok {
			def = d
		}
		decorators = map[string]string{}
		for j := i - 1; j >= 0 && strings.HasPrefix(lines[j], "@"); j-- {
			if m := regexp.MustCompile(`^@(\w+)\((.*)\)$`).FindStringSubmatch(lines[j]); m != nil {
				decorators[m[1]] = m[2]
			}
		}
		return decorators, def
	}
	t.Fatalf("main.bicep has no parameter %s", name)
	return nil, ""
}

func readBicep(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("azure/main.bicep")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// excludedBy is App Service Authentication's matching of an excluded path,
// as its file-based configuration reference shows it ("/path1",
// "/path3/subpath/*"): a path is excluded by an entry that is the path
// itself, or that ends in /* and begins the path. Nothing else is a prefix
// (MicrosoftDocs/azure-docs#86514). Case is ignored here, which can only make
// an exclusion look wider than it is.
func excludedBy(path, entry string) bool {
	if prefix, ok := strings.CutSuffix(entry, "*"); ok && strings.HasSuffix(prefix, "/") {
		return len(path) >= len(prefix) && strings.EqualFold(path[:len(prefix)], prefix)
	}
	return strings.EqualFold(path, entry)
}

// With huntingRequiredRole, App Service Authentication answers 401 to any
// request without a token, except on the excluded paths: every route of
// ticket-webhook (a signed function: the signature is its authentication)
// must be excluded, for each provider, and no other function's route.
func TestBicepEasyAuthExcludedPaths(t *testing.T) {
	for _, c := range []struct {
		path, entry string
		want        bool
	}{
		{"/api/ticket-webhook/jira", "/api/ticket-webhook", false}, // the finding: a literal path is no prefix
		{"/api/ticket-webhook", "/api/ticket-webhook", true},
		{"/api/ticket-webhook/jira", "/api/ticket-webhook/*", true},
		{"/api/ticket-webhookx/jira", "/api/ticket-webhook/*", false},
		{"/api/hunting-query", "/api/ticket-webhook/*", false},
	} {
		if got := excludedBy(c.path, c.entry); got != c.want {
			t.Fatalf("excludedBy(%q, %q) = %v, want %v", c.path, c.entry, got, c.want)
		}
	}
	b := readBicep(t)
	auth := bicepResources(t, b)["auth"]
	m := regexp.MustCompile(`excludedPaths: \[([^\]]*)\]`).FindStringSubmatch(auth.Body)
	if auth.Type != "Microsoft.Web/sites/config" || m == nil {
		t.Fatalf("the auth resource (%s) has no excludedPaths", auth.Type)
	}
	var excluded []string
	for _, e := range regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(m[1], -1) {
		excluded = append(excluded, e[1])
	}
	// Routes are under host.json's routePrefix, "api" unless it says otherwise.
	var host struct {
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	hj, err := os.ReadFile("../host.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(hj, &host); err != nil {
		t.Fatal(err)
	}
	prefix := "/api/"
	if p := host.Extensions.HTTP.RoutePrefix; p != nil {
		prefix = "/" + strings.Trim(*p, "/") + "/"
	}
	providers := config.WebhookProviders
	signed := 0
	for _, d := range functions.Functions {
		if d.HTTP == nil {
			continue
		}
		paths := []string{prefix + d.HTTP.Route}
		if strings.Contains(d.HTTP.Route, "{provider}") {
			paths = nil
			for _, p := range providers {
				paths = append(paths, prefix+strings.ReplaceAll(d.HTTP.Route, "{provider}", p))
			}
		}
		if d.HTTP.Signed {
			signed++
		}
		for _, path := range paths {
			if strings.Contains(path, "{") {
				t.Fatalf("%s: route parameter with no values to try: %s", d.Name, path)
			}
			hit := slices.ContainsFunc(excluded, func(e string) bool { return excludedBy(path, e) })
			switch {
			case d.HTTP.Signed && !hit:
				t.Errorf("%s: %s is not excluded by %q: every delivery is answered 401 before its signature is checked", d.Name, path, excluded)
			case !d.HTTP.Signed && hit:
				t.Errorf("%s: %s is excluded by %q: it would take requests without a token", d.Name, path, excluded)
			}
		}
	}
	if signed == 0 {
		t.Fatal("no signed HTTP function: ticket-webhook's descriptor changed")
	}
}

// A second deployment into a recreated resource group meets its soft-deleted
// vault (purge protection keeps the name for the retention period): the
// vault can be recovered (createMode recover) or given another name, and the
// name the references use is the vault's, whichever it is.
func TestBicepKeyVaultName(t *testing.T) {
	b := readBicep(t)
	dec, def := bicepParam(t, b, "keyVaultName")
	if def != "''" || dec["maxLength"] != "24" {
		t.Errorf("keyVaultName: default %s, @maxLength(%s); want '' (the derived name) and 24 (Key Vault's limit)", def, dec["maxLength"])
	}
	dec, def = bicepParam(t, b, "keyVaultCreateMode")
	if def != "'default'" || dec["allowed"] != "['default', 'recover']" {
		t.Errorf("keyVaultCreateMode: default %s, @allowed(%s)", def, dec["allowed"])
	}
	vault := bicepResources(t, b)["vault"]
	for _, want := range []string{"name: vaultName\n", "createMode: keyVaultCreateMode\n", "enablePurgeProtection: true\n"} {
		if !strings.Contains(vault.Body, want) {
			t.Errorf("the vault lacks %q", want)
		}
	}
	for _, want := range []string{
		"var vaultName = !empty(keyVaultName) ? keyVaultName : take('${namePrefix}-kv-${suffix}', 24)\n",
		"var vaultUri = 'https://${vaultName}${environment().suffixes.keyvaultDns}/'\n",
		"output keyVaultName string = vault.name\n",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("main.bicep lacks %q", want)
		}
	}
	// Every Key Vault reference names the vault by vaultName.
	refs := regexp.MustCompile(`@Microsoft\.KeyVault\(VaultName=([^;]*);`).FindAllStringSubmatch(b, -1)
	if len(refs) < 3 {
		t.Fatalf("%d Key Vault references", len(refs))
	}
	for _, r := range refs {
		if r[1] != "${vaultName}" {
			t.Errorf("a Key Vault reference names the vault %s", r[1])
		}
	}
}

// The role names of the GUIDs main.bicep assigns.
var azureRoles = map[string]string{
	"4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
	"b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
	"a4417e6f-fecd-4de8-b567-7b0420556985": "Key Vault Certificates Officer",
	"b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
	"ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
	"19e7f393-937e-4f77-808e-94535e297925": "Storage Queue Data Reader",
	"974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
	"c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
	"3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}

// Every role main.bicep assigns, and nothing more: the system-assigned
// identity (the host) has its storage and the queue trigger's queues, the
// user-assigned one (the functions, and the Key Vault references through
// keyVaultReferenceIdentity) what the code does, the operator the vault's
// secrets and what doctor -as-me reads and writes. Nothing account-wide but the host's storage.
func TestBicepRoleAssignments(t *testing.T) {
	b := readBicep(t)
	want := []struct{ who, role, scope, why string }{
		{"host", "Storage Blob Data Owner", "storage", "host storage, as Functions documents it (leases, timers, keys, the Flex deployment container)"},
		{"host", "Storage Queue Data Contributor", "exportQueue", "the queue trigger: receive, delete, and update (lease renewal, release after a failure)"},
		{"host", "Storage Queue Data Message Sender", "poisonQueue", "a task that failed maxDequeueCount times is moved there"},
		{"functions", "Key Vault Secrets User", "vault", "the Defender app's secret, and the Key Vault references"},
		{"functions", "Storage Queue Data Message Sender", "exportQueue", "the timer's tasks and a tenant's continuation (shared/queue Send)"},
		{"functions", "Storage Queue Data Reader", "exportQueue", "doctor peeks at the waiting tasks"},
		{"functions", "Storage Queue Data Reader", "poisonQueue", "doctor peeks at the poison queue"},
		{"functions", "Storage Blob Data Contributor", "exportsContainer", "the blob sink"},
		{"functions", "Storage Blob Data Contributor", "stateContainer", "checkpoints and webhook deliveries"},
		{"functions", "Monitoring Metrics Publisher", "incidentRule", "the Logs Ingestion sink"},
		{"operator", "Key Vault Secrets Officer", "vault", "stores the secrets"},
		{"operator", "Key Vault Certificates Officer", "vault", "stores the certificate"},
		{"operator", "Storage Blob Data Contributor", "exportsContainer", "doctor -as-me writes its check object to the sink"},
		{"operator", "Storage Blob Data Contributor", "stateContainer", "doctor -as-me writes its check object to the state store"},
		{"operator", "Storage Queue Data Reader", "exportQueue", "doctor -as-me peeks at the waiting tasks"},
		{"operator", "Storage Queue Data Reader", "poisonQueue", "doctor -as-me peeks at the poison queue"},
	}
	guids := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^var (\w+) = '([0-9a-f-]{36})'$`).FindAllStringSubmatch(b, -1) {
		guids[m[1]] = m[2]
	}
	principals := map[string]string{"app.identity.principalId": "host", "identity.properties.principalId": "functions", "operatorPrincipalId": "operator"}
	got := map[string]bool{}
	for name, r := range bicepResources(t, b) {
		if r.Type != "Microsoft.Authorization/roleAssignments" {
			continue
		}
		scope := regexp.MustCompile(`(?m)^  scope: (\w+)$`).FindStringSubmatch(r.Body)
		role := regexp.MustCompile(`roleDefinitionId: subscriptionResourceId\('Microsoft.Authorization/roleDefinitions', (\w+)\)`).FindStringSubmatch(r.Body)
		who := regexp.MustCompile(`principalId: ([\w.]+)`).FindStringSubmatch(r.Body)
		id := regexp.MustCompile(`name: guid\((\w+)\.id, [\w.]+, (\w+)\)`).FindStringSubmatch(r.Body)
		if scope == nil || role == nil || who == nil || id == nil || azureRoles[guids[role[1]]] == "" || principals[who[1]] == "" {
			t.Errorf("role assignment %s: unreadable (scope %v, role %v, principal %v, name %v)", name, scope, role, who, id)
			continue
		}
		// Its name follows its scope and role: a copied block that kept
		// another's name would collide, or replace it.
		if id[1] != scope[1] || id[2] != role[1] {
			t.Errorf("role assignment %s: named guid(%s.id, …, %s), assigned %s on %s", name, id[1], id[2], role[1], scope[1])
		}
		got[fmt.Sprintf("%s: %s on %s", principals[who[1]], azureRoles[guids[role[1]]], scope[1])] = true
	}
	for _, w := range want {
		g := fmt.Sprintf("%s: %s on %s", w.who, w.role, w.scope)
		if !got[g] {
			t.Errorf("no role assignment %s (%s)", g, w.why)
		}
		delete(got, g)
	}
	for g := range got {
		t.Errorf("role assignment %s: more than the code uses", g)
	}
	// The platform resolves Key Vault references as the system-assigned
	// identity unless the site names another: it has no vault role now.
	if app := bicepResources(t, b)["app"]; !strings.Contains(app.Body, "\n    keyVaultReferenceIdentity: identity.id\n") {
		t.Error("the site does not resolve its Key Vault references with the user-assigned identity (keyVaultReferenceIdentity)")
	}
}

// App settings Flex Consumption deprecates ("Flex Consumption plan
// deprecations", Functions app settings reference): the runtime, the
// package and the scale-out limit are functionAppConfig's.
var flexDeprecated = []string{"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
	"WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
	"SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD"}

// Flex Consumption: no deprecated app setting, and a scale-out limit the
// plan accepts (40 at least).
func TestBicepFlexConsumption(t *testing.T) {
	b := readBicep(t)
	for _, m := range regexp.MustCompile(`\{\s*name:\s*'([A-Za-z0-9_]+)'\s*\n?\s*value:`).FindAllStringSubmatch(b, -1) {
		if slices.Contains(flexDeprecated, m[1]) {
			t.Errorf("main.bicep sets %s, which Flex Consumption deprecates", m[1])
		}
	}
	for _, name := range flexDeprecated {
		if platform[name] {
			t.Errorf("the templates test allows %s, which Flex Consumption deprecates", name)
		}
	}
	dec, def := bicepParam(t, b, "maximumInstanceCount")
	lo, err1 := strconv.Atoi(dec["minValue"])
	d, err2 := strconv.Atoi(def)
	if err1 != nil || err2 != nil || lo < 40 || d < lo {
		t.Errorf("maximumInstanceCount: @minValue(%s), default %s; the plan takes 40 at least", dec["minValue"], def)
	}
	if !strings.Contains(bicepResources(t, b)["app"].Body, "scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount,") {
		t.Error("the site's scale-out limit is not maximumInstanceCount")
	}
}

// stsAsked is what the code asks AWS STS for: GetWebIdentityToken as
// credentials.New's aws-federation source makes it (its default lifetime and
// algorithm, the public cloud's audience), against a stand-in for STS.
func stsAsked(t *testing.T) url.Values {
	t.Helper()
	requests := make(chan url.Values, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		select {
		case requests <- form:
		default:
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<GetWebIdentityTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetWebIdentityTokenResult><WebIdentityToken>x</WebIdentityToken></GetWebIdentityTokenResult></GetWebIdentityTokenResponse>`)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	for k, v := range map[string]string{"AWS_ENDPOINT_URL_STS": srv.URL, "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
		"AWS_SECRET_ACCESS_KEY": "example", "AWS_SESSION_TOKEN": "", "AWS_CONFIG_FILE": dir + "/none", "AWS_SHARED_CREDENTIALS_FILE": dir + "/none",
		"AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true"} {
		t.Setenv(k, v)
	}
	src, err := awsidentity.New(awsidentity.Options{Audience: credentials.TokenExchangeAudience(config.DefaultAuthorityHost)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatalf("GetWebIdentityToken: %v", err)
	}
	asked := <-requests
	if asked.Get("Action") != "GetWebIdentityToken" {
		t.Fatalf("asked STS %v", asked)
	}
	return asked
}

// The execution role's grants are bounded by what the code asks for: the
// JWT's lifetime (sts:DurationSeconds, besides audience and algorithm), and
// the bucket listable only under the export prefix (s3:prefix: the export
// asks whether a batch landed by listing its key as a prefix).
func TestSAMTemplateConditions(t *testing.T) {
	tpl, err := openSAM(&intrinsics.ProcessorOptions{EvaluateConditions: true, ParameterOverrides: map[string]any{
		"DefenderCredential": "aws-federation", "ExportLayout": "batches"}})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := tpl.GetServerlessFunctionWithName("DefenderFunctions")
	if err != nil {
		t.Fatal(err)
	}
	var policies []struct {
		Statement []struct {
			Action    any
			Condition map[string]map[string]any
		}
	}
	raw, _ := json.Marshal(fn.Policies)
	if err := json.Unmarshal(raw, &policies); err != nil {
		t.Fatal(err)
	}
	conditions := map[string]map[string]map[string]any{}
	for _, p := range policies {
		for _, s := range p.Statement {
			if a, ok := s.Action.(string); ok {
				conditions[a] = s.Condition
			}
		}
	}
	asked := stsAsked(t)
	duration, _ := strconv.Atoi(asked.Get("DurationSeconds"))
	sts := conditions["sts:GetWebIdentityToken"]
	if got := sts["NumericLessThanEquals"]["sts:DurationSeconds"]; fmt.Sprint(got) != strconv.Itoa(duration) || duration == 0 {
		t.Errorf("sts:GetWebIdentityToken: sts:DurationSeconds ≤ %v, want ≤ %d, what the code asks for", got, duration)
	}
	if got := sts["StringEquals"]["sts:SigningAlgorithm"]; got != asked.Get("SigningAlgorithm") {
		t.Errorf("sts:GetWebIdentityToken: sts:SigningAlgorithm %v, the code asks for %s", got, asked.Get("SigningAlgorithm"))
	}
	if got := sts["ForAllValues:StringEquals"]["sts:IdentityTokenAudience"]; got != asked.Get("Audience.member.1") {
		t.Errorf("sts:GetWebIdentityToken: sts:IdentityTokenAudience %v, the code asks for %s", got, asked.Get("Audience.member.1"))
	}
	// The export prefix, as shared/sink reads EXPORT_SINK's s3://bucket/prefix.
	u, err := url.Parse(fn.Environment.Variables["EXPORT_SINK"])
	if err != nil || u.Scheme != "s3" || strings.Trim(u.Path, "/") == "" {
		t.Fatalf("EXPORT_SINK %q is not s3://bucket/prefix", fn.Environment.Variables["EXPORT_SINK"])
	}
	list := conditions["s3:ListBucket"]
	if len(list) != 1 || fmt.Sprint(list["StringLike"]) != fmt.Sprint(map[string]any{"s3:prefix": strings.Trim(u.Path, "/") + "/*"}) {
		t.Errorf("s3:ListBucket is not held to the export prefix %s/: condition %v", strings.Trim(u.Path, "/"), list)
	}
}

// samTransform is the template as sam deploy hands it to CloudFormation:
// the SAM translator's output (the one cfn-lint brings), the function's
// local CodeUri replaced by an S3 one as the package step does.
func samTransform(t *testing.T) map[string]any {
	t.Helper()
	const script = `
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse
from samtranslator.public.exceptions import InvalidDocumentException
class NoManagedPolicies:
    def load(self): return {}
tpl = yaml_parse(open(sys.argv[1]).read())
for r in tpl.get("Resources", {}).values():
    p = r.get("Properties") or {}
    if r.get("Type") == "AWS::Serverless::Function" and isinstance(p.get("CodeUri"), str):
        p["CodeUri"] = "s3://bucket/code.zip"
try:
    out = transform(tpl, {}, NoManagedPolicies())
except InvalidDocumentException as e:
    sys.exit("\n".join(str(c) for c in e.causes))
json.dump(out, sys.stdout)
`
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is not installed: pip install 'cfn-lint>=1.51' brings the SAM translator")
	}
	cmd := exec.Command(py, "-c", script, "aws/template.yaml")
	cmd.Env = append(os.Environ(), "AWS_DEFAULT_REGION=us-east-1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the SAM translator (pip install 'cfn-lint>=1.51' brings it): %v\n%s", err, stderr.String())
	}
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// statements are every IAM statement under v (inside Fn::If too).
func statements(v any) []map[string]any {
	var out []map[string]any
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["Effect"]; ok {
			if _, ok := v["Action"]; ok {
				return []map[string]any{v}
			}
		}
		for _, e := range v {
			out = append(out, statements(e)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, statements(e)...)
		}
	}
	return out
}

// The function takes the export's tasks from that one queue: after SAM's
// transform no role carries an SQS managed policy (an SQS event attaches
// AWSLambdaSQSQueueExecutionRole, receive and delete on every queue of the
// account), every SQS grant names ExportTasks, and the mapping hands its
// tasks to the function a few at a time with partial batch responses.
func TestSAMTransformedSQS(t *testing.T) {
	doc := samTransform(t)
	resources, _ := doc["Resources"].(map[string]any)
	queueArn := `{"Fn::GetAtt":["ExportTasks","Arn"]}`
	received := map[string]bool{}
	var mappings []string
	for name, r := range resources {
		r, _ := r.(map[string]any)
		props, _ := r["Properties"].(map[string]any)
		switch r["Type"] {
		case "AWS::IAM::Role":
			managed, _ := json.Marshal(props["ManagedPolicyArns"])
			if strings.Contains(strings.ToLower(string(managed)), "sqs") {
				t.Errorf("role %s has an SQS managed policy: %s", name, managed)
			}
			for _, s := range statements(props["Policies"]) {
				var actions []string
				switch a := s["Action"].(type) {
				case string:
					actions = []string{a}
				case []any:
					for _, e := range a {
						actions = append(actions, fmt.Sprint(e))
					}
				}
				res, _ := json.Marshal(s["Resource"])
				for _, a := range actions {
					if !strings.HasPrefix(strings.ToLower(a), "sqs:") {
						continue
					}
					// doctor, run as the function, reads the dead-letter
					// queue's attributes, and nothing else of it.
					dlq := string(res) == `{"Fn::GetAtt":["ExportTaskDeadLetters","Arn"]}` && a == "sqs:GetQueueAttributes"
					if !dlq && (!strings.Contains(string(res), "ExportTasks") || strings.Contains(string(res), `"*"`)) {
						t.Errorf("role %s: %s on %s, not on ExportTasks alone", name, a, res)
					}
					if string(res) == queueArn {
						received[a] = true
					}
				}
			}
		case "AWS::Lambda::EventSourceMapping":
			mappings = append(mappings, name)
			got, _ := json.Marshal(map[string]any{"arn": props["EventSourceArn"], "fn": props["FunctionName"], "batch": props["BatchSize"], "types": props["FunctionResponseTypes"]})
			want := `{"arn":` + queueArn + `,"batch":4,"fn":{"Ref":"DefenderFunctions"},"types":["ReportBatchItemFailures"]}`
			if string(got) != want {
				t.Errorf("mapping %s: %s, want %s", name, got, want)
			}
		}
	}
	// What Lambda's poller needs on the queue, the managed policy's actions.
	for _, a := range []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"} {
		if !received[a] {
			t.Errorf("the role lacks %s on ExportTasks", a)
		}
	}
	if len(mappings) != 1 {
		t.Errorf("event source mappings %v, want the export's tasks", mappings)
	}
}

// openSAM parses the SAM template with options. goformation reads a
// resource's (or an output's) Condition key as the Condition intrinsic and
// puts the condition's value in the resource's place, which then fails to
// parse; those keys are set aside here (TestSAMAlarms checks them on the SAM
// translator's output).
func openSAM(opts *intrinsics.ProcessorOptions) (*cloudformation.Template, error) {
	raw, err := os.ReadFile("aws/template.yaml")
	if err != nil {
		return nil, err
	}
	return goformation.ParseYAMLWithOptions(regexp.MustCompile(`(?m)^    Condition: \w+\n`).ReplaceAll(raw, nil), opts)
}

// asJSON is v as compact JSON, for comparing parts of a template.
func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// exportLog is what incident-export's code logs: each message logged at a
// level (Error("…") → "ERROR …"), and for each attribute key the
// expressions logged as its value.
type exportLog struct {
	messages map[string]bool
	values   map[string][]string
}

// readExportLog reads functions/incident-export's source (tests left out):
// the alarms read its log lines, so the fields they name must be its own.
func readExportLog(t *testing.T) exportLog {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("../functions/incident-export/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no source in functions/incident-export (%v)", err)
	}
	l := exportLog{messages: map[string]bool{}, values: map[string][]string{}}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Keys are literals followed by their value, in a log call's
		// arguments or in a slice of them (behind's args).
		pairs := func(list []ast.Expr) {
			for i := 0; i+1 < len(list); i++ {
				if k, ok := list[i].(*ast.BasicLit); ok && k.Kind == token.STRING {
					key, _ := strconv.Unquote(k.Value)
					l.values[key] = append(l.values[key], types.ExprString(list[i+1]))
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				pairs(n.Args)
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || len(n.Args) == 0 || !slices.Contains([]string{"Debug", "Info", "Warn", "Error"}, sel.Sel.Name) {
					return true
				}
				if m, ok := n.Args[0].(*ast.BasicLit); ok && m.Kind == token.STRING {
					msg, _ := strconv.Unquote(m.Value)
					l.messages[strings.ToUpper(sel.Sel.Name)+" "+msg] = true
				}
			case *ast.CompositeLit:
				pairs(n.Elts)
			}
			return true
		})
	}
	return l
}

// lagKeys are the attributes that carry the export's lag in seconds: each
// must be logged, and only as a whole number of seconds of a duration.
func checkLagKeys(t *testing.T, l exportLog, keys []string) {
	t.Helper()
	if len(keys) == 0 {
		t.Fatal("no lag field read")
	}
	for _, k := range keys {
		if len(l.values[k]) == 0 {
			t.Errorf("the lag field %q is not logged by incident-export", k)
		}
		for _, v := range l.values[k] {
			if !strings.HasPrefix(v, "int(") || !strings.HasSuffix(v, ".Seconds())") {
				t.Errorf("incident-export logs %q as %s, not a duration's whole seconds", k, v)
			}
		}
	}
}

// With AlarmTopicArn the SAM template raises an alarm on the dead-letter
// queue, on the function's errors, on failed tenant exports and on the
// export's lag, each notifying the topic; without it there is none of them
// and the function keeps Lambda's own log group. Checked on the SAM
// translator's output: what CloudFormation deploys.
func TestSAMAlarms(t *testing.T) {
	doc := samTransform(t)
	resources, _ := doc["Resources"].(map[string]any)
	conditions, _ := doc["Conditions"].(map[string]any)
	if got := asJSON(conditions["HasAlarms"]); got != `{"Fn::Not":[{"Fn::Equals":[{"Ref":"AlarmTopicArn"},""]}]}` {
		t.Fatalf("HasAlarms is %s, not AlarmTopicArn given", got)
	}
	prop := func(name string) (map[string]any, map[string]any) {
		r, _ := resources[name].(map[string]any)
		p, _ := r["Properties"].(map[string]any)
		return r, p
	}
	// The function logs to the stack's group with alarms, to Lambda's without.
	if _, fn := prop("DefenderFunctions"); asJSON(fn["LoggingConfig"]) != `{"Fn::If":["HasAlarms",{"LogGroup":{"Ref":"FunctionLogs"}},{"Ref":"AWS::NoValue"}]}` {
		t.Errorf("the function's LoggingConfig is %s", asJSON(fn["LoggingConfig"]))
	}
	if r, _ := prop("FunctionLogs"); r["Type"] != "AWS::Logs::LogGroup" || r["DeletionPolicy"] != "Retain" {
		t.Errorf("FunctionLogs: %s, want a log group kept on deletion", asJSON(r))
	}
	ns := `{"Fn::Sub":"DefenderFunctions/${AWS::StackName}"}`
	lagFilters := []string{`{ $.behind_s >= 0 } → $.behind_s`, `{ $.lag_s >= 0 } → $.lag_s`}
	for _, c := range []struct {
		alarm, namespace, metric, dimensions, statistic, threshold, operator string
		period                                                               float64
		filters                                                              []string // pattern → value of the metric filters feeding a log metric
		missing                                                              string   // TreatMissingData
	}{
		{"DeadLetterAlarm", `"AWS/SQS"`, "ApproximateNumberOfMessagesVisible", `[{"Name":"QueueName","Value":{"Fn::GetAtt":["ExportTaskDeadLetters","QueueName"]}}]`,
			"Maximum", `{"Ref":"AlarmDeadLetterThreshold"}`, "GreaterThanOrEqualToThreshold", 300, nil, "notBreaching"},
		{"FunctionErrorsAlarm", `"AWS/Lambda"`, "Errors", `[{"Name":"FunctionName","Value":{"Ref":"DefenderFunctions"}}]`,
			"Sum", `{"Ref":"AlarmFailureThreshold"}`, "GreaterThanOrEqualToThreshold", 1800, nil, "notBreaching"},
		{"ExportFailuresAlarm", ns, "ExportFailures", "null", "Sum", `{"Ref":"AlarmFailureThreshold"}`, "GreaterThanOrEqualToThreshold", 1800,
			[]string{`{ $.msg = "Tenant export failed." } → 1`}, "notBreaching"},
		{"ExportLagAlarm", ns, "ExportLagSeconds", "null", "Maximum", `{"Ref":"AlarmLagSeconds"}`, "GreaterThanThreshold", 900, lagFilters, "notBreaching"},
		// No lag line in an hour, nothing at all included: the export stopped.
		{"ExportStalledAlarm", ns, "ExportLagSeconds", "null", "SampleCount", "1", "LessThanThreshold", 3600, lagFilters, "breaching"},
	} {
		t.Run(c.alarm, func(t *testing.T) {
			r, p := prop(c.alarm)
			if r["Type"] != "AWS::CloudWatch::Alarm" || r["Condition"] != "HasAlarms" {
				t.Fatalf("%s: type %v, condition %v; want an alarm made with AlarmTopicArn only", c.alarm, r["Type"], r["Condition"])
			}
			got := asJSON(map[string]any{"ns": p["Namespace"], "metric": p["MetricName"], "dims": p["Dimensions"], "stat": p["Statistic"],
				"threshold": p["Threshold"], "op": p["ComparisonOperator"], "period": p["Period"], "missing": p["TreatMissingData"],
				"alarm": p["AlarmActions"], "ok": p["OKActions"]})
			want := `{"alarm":[{"Ref":"AlarmTopicArn"}],"dims":` + c.dimensions + `,"metric":"` + c.metric + `","missing":"` + c.missing + `","ns":` + c.namespace +
				`,"ok":[{"Ref":"AlarmTopicArn"}],"op":"` + c.operator + `","period":` + strconv.FormatFloat(c.period, 'f', -1, 64) + `,"stat":"` + c.statistic +
				`","threshold":` + c.threshold + `}`
			if got != want {
				t.Errorf("%s:\n got %s\nwant %s", c.alarm, got, want)
			}
			// The log metric's filters: on the function's group, made with it.
			var filters []string
			for name, r := range resources {
				r, _ := r.(map[string]any)
				p, _ := r["Properties"].(map[string]any)
				if r["Type"] != "AWS::Logs::MetricFilter" {
					continue
				}
				tr, _ := p["MetricTransformations"].([]any)
				if len(tr) != 1 {
					t.Fatalf("metric filter %s: %d transformations", name, len(tr))
				}
				m, _ := tr[0].(map[string]any)
				if asJSON(m["MetricNamespace"]) != c.namespace || m["MetricName"] != c.metric {
					continue
				}
				if r["Condition"] != "HasAlarms" || asJSON(p["LogGroupName"]) != `{"Ref":"FunctionLogs"}` {
					t.Errorf("metric filter %s: condition %v, log group %s", name, r["Condition"], asJSON(p["LogGroupName"]))
				}
				filters = append(filters, fmt.Sprint(p["FilterPattern"], " → ", m["MetricValue"]))
			}
			sort.Strings(filters)
			if fmt.Sprint(filters) != fmt.Sprint(c.filters) {
				t.Errorf("%s reads the filters %q, want %q", c.alarm, filters, c.filters)
			}
		})
	}
	// Nothing of the alarms is made without the topic.
	for name, r := range resources {
		r, _ := r.(map[string]any)
		if typ := fmt.Sprint(r["Type"]); (strings.HasPrefix(typ, "AWS::CloudWatch::") || strings.HasPrefix(typ, "AWS::Logs::")) && r["Condition"] != "HasAlarms" {
			t.Errorf("%s (%s) is made without AlarmTopicArn", name, typ)
		}
	}
}

// The metric filters and the log queries read fields the code writes: the
// message of a failed tenant export (at ERROR, under slog's message key) and
// the lag's keys, in seconds. A renamed message or key fails here, not
// silently in production.
func TestAlarmLogFieldsInCode(t *testing.T) {
	l := readExportLog(t)
	doc := samTransform(t)
	resources, _ := doc["Resources"].(map[string]any)
	exact := regexp.MustCompile(`^\{ \$\.(\w+) = "([^"*]+)" \}$`)
	numeric := regexp.MustCompile(`^\{ \$\.(\w+) >= 0 \}$`)
	var samLag []string
	for name, r := range resources {
		r, _ := r.(map[string]any)
		if r["Type"] != "AWS::Logs::MetricFilter" {
			continue
		}
		p, _ := r["Properties"].(map[string]any)
		pattern := fmt.Sprint(p["FilterPattern"])
		value := fmt.Sprint(p["MetricTransformations"].([]any)[0].(map[string]any)["MetricValue"])
		switch m, n := exact.FindStringSubmatch(pattern), numeric.FindStringSubmatch(pattern); {
		case m != nil:
			if m[1] != slog.MessageKey || !l.messages["ERROR "+m[2]] {
				t.Errorf("metric filter %s (%s): incident-export logs no error %q under %q", name, pattern, m[2], slog.MessageKey)
			}
		case n != nil:
			if value != "$."+n[1] {
				t.Errorf("metric filter %s matches %s and counts %s", name, n[1], value)
			}
			samLag = append(samLag, n[1])
		default:
			t.Errorf("metric filter %s: pattern %s is neither a message nor a number", name, pattern)
		}
	}
	checkLagKeys(t, l, samLag)
	// Azure's lag rule reads the same keys from the same lines.
	lag := bicepResources(t, readBicep(t))["lagAlert"].Body
	var azureLag []string
	for _, m := range regexp.MustCompile(`todouble\(line\.(\w+)\)`).FindAllStringSubmatch(lag, -1) {
		azureLag = append(azureLag, m[1])
	}
	checkLagKeys(t, l, azureLag)
	sort.Strings(samLag)
	sort.Strings(azureLag)
	if fmt.Sprint(samLag) != fmt.Sprint(azureLag) {
		t.Errorf("the lag is read from %v on AWS and %v on Azure", samLag, azureLag)
	}
	for _, k := range azureLag {
		if !strings.Contains(lag, `message contains \'"`+k+`"\'`) {
			t.Errorf("the lag rule does not select the lines carrying %s", k)
		}
	}
}

// The API versions main.bicep deploys, each one Azure publishes for its type
// (the ARM template reference, learn.microsoft.com/azure/templates): no
// Bicep compiler runs offline to catch a mistyped one.
var bicepAPIVersions = map[string][]string{
	"Microsoft.Authorization/roleAssignments":                   {"2022-04-01"},
	"Microsoft.Insights/components":                             {"2020-02-02"},
	"Microsoft.Insights/dataCollectionRules":                    {"2023-03-11"},
	"Microsoft.Insights/scheduledQueryRules":                    {"2021-08-01", "2023-12-01"},
	"Microsoft.KeyVault/vaults":                                 {"2023-07-01"},
	"Microsoft.KeyVault/vaults/secrets":                         {"2023-07-01"},
	"Microsoft.ManagedIdentity/userAssignedIdentities":          {"2023-01-31"},
	"Microsoft.OperationalInsights/workspaces":                  {"2023-09-01"},
	"Microsoft.OperationalInsights/workspaces/tables":           {"2022-10-01"},
	"Microsoft.Storage/storageAccounts":                         {"2023-05-01"},
	"Microsoft.Storage/storageAccounts/blobServices":            {"2023-05-01"},
	"Microsoft.Storage/storageAccounts/blobServices/containers": {"2023-05-01"},
	"Microsoft.Storage/storageAccounts/managementPolicies":      {"2023-05-01"},
	"Microsoft.Storage/storageAccounts/queueServices":           {"2023-05-01"},
	"Microsoft.Storage/storageAccounts/queueServices/queues":    {"2023-05-01"},
	"Microsoft.Web/serverfarms":                                 {"2024-04-01"},
	"Microsoft.Web/sites":                                       {"2024-04-01"},
	"Microsoft.Web/sites/config":                                {"2024-04-01"},
}

func TestBicepAPIVersions(t *testing.T) {
	for _, m := range regexp.MustCompile(`(?m)^resource (\w+) '([^'@]+)@([^']+)'`).FindAllStringSubmatch(readBicep(t), -1) {
		if !slices.Contains(bicepAPIVersions[m[2]], m[3]) {
			t.Errorf("resource %s: %s@%s is not a type and API version known here (%v)", m[1], m[2], m[3], bicepAPIVersions[m[2]])
		}
	}
}

// With alertActionGroupId the Bicep makes a log search alert per failure:
// failed export runs, a task moved to the poison queue, the lag past its
// threshold; each over the app's Application Insights, notifying the action
// group, its threshold a parameter. Without it, none.
func TestBicepAlerts(t *testing.T) {
	b := readBicep(t)
	res := bicepResources(t, b)
	if dec, def := bicepParam(t, b, "alertActionGroupId"); def != "''" || dec["description"] == "" {
		t.Errorf("alertActionGroupId: default %s; want '' (no alert rules), described", def)
	}
	if !strings.Contains(b, "\nvar alerting = !empty(alertActionGroupId)\n") {
		t.Error("main.bicep lacks var alerting = !empty(alertActionGroupId)")
	}
	// Application Insights is workspace-based and the app's (the host writes
	// requests and traces there).
	if ai := res["insights"]; !strings.Contains(ai.Body, "WorkspaceResourceId: logs.id") ||
		!strings.Contains(res["app"].Body, "{ name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'\n          value: insights.properties.ConnectionString }") {
		t.Error("Application Insights is not workspace-based, or not the app's (APPLICATIONINSIGHTS_CONNECTION_STRING)")
	}
	// The export's functions, as the descriptors name them: a timer and a queue trigger.
	var export []string
	for _, d := range functions.Functions {
		if d.Timer != nil || d.Queue != nil {
			export = append(export, "'"+d.Name+"'")
		}
	}
	sort.Strings(export)
	for _, c := range []struct {
		name, param, def, query, aggregation, operator, window string
		every                                                  string // evaluationFrequency
	}{
		{"failureAlert", "alertFailureThreshold", "3", "requests | where name in (" + strings.ReplaceAll(strings.Join(export, ", "), "'", `\'`) + ") and success == false",
			"Count", "GreaterThanOrEqual", "PT30M", "PT5M"},
		{"poisonAlert", "alertPoisonThreshold", "1", `traces | where message contains "Moving message to queue \'${poisonQueue.name}\'"`,
			"Count", "GreaterThanOrEqual", "PT15M", "PT5M"},
		{"lagAlert", "alertLagSeconds", "7200", `traces | where message contains \'"lag_s"\' or message contains \'"behind_s"\' | `,
			"Maximum", "GreaterThan", "PT15M", "PT5M"},
		// No lag line in an hour: the export stopped (a fixed threshold, no parameter).
		{"stalledAlert", "", "1", `traces | where message contains \'"lag_s"\' or message contains \'"behind_s"\''` + "\n",
			"Count", "LessThan", "PT1H", "PT15M"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, ok := res[c.name]
			if !ok || r.Type != "Microsoft.Insights/scheduledQueryRules" {
				t.Fatalf("no scheduled query rule %s (%s)", c.name, r.Type)
			}
			if !regexp.MustCompile(`(?m)^resource ` + c.name + ` '[^']+' = if \(alerting\) \{$`).MatchString(b) {
				t.Errorf("%s is not made only with alertActionGroupId (if (alerting))", c.name)
			}
			threshold := c.def
			if c.param != "" {
				dec, def := bicepParam(t, b, c.param)
				if def != c.def || dec["minValue"] == "" {
					t.Errorf("%s: default %s, @minValue(%s); want %s and a minimum", c.param, def, dec["minValue"], c.def)
				}
				threshold = c.param
			}
			for _, want := range []string{
				"\n    scopes: [ insights.id ]\n", "\n    actions: { actionGroups: [ alertActionGroupId ] }\n", "\n    autoMitigate: true\n",
				"\n          query: '" + c.query, "\n          timeAggregation: '" + c.aggregation + "'\n", "\n          operator: '" + c.operator + "'\n",
				"\n          threshold: " + threshold + "\n", "\n    windowSize: '" + c.window + "'\n", "\n    evaluationFrequency: '" + c.every + "'\n",
			} {
				if !strings.Contains(r.Body, want) {
					t.Errorf("%s lacks %q", c.name, want)
				}
			}
			if c.aggregation != "Count" && !strings.Contains(r.Body, "\n          metricMeasureColumn: 'lag_s'\n") {
				t.Errorf("%s aggregates %s of no column", c.name, c.aggregation)
			}
		})
	}
	n := 0
	for _, r := range res {
		if r.Type == "Microsoft.Insights/scheduledQueryRules" {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d scheduled query rules; the table above has 4", n)
	}
	// The poison rule matches the host's own line for a task it moves, as
	// the local host's contract table quotes it from the Storage Queues
	// extension, for the queue the Bicep makes.
	contracts, err := os.ReadFile("local/funchost/CONTRACTS.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(contracts), `"Message has reached MaxDequeueCount of {0}. Moving message to queue '{1}'."`) {
		t.Error("the host's poison line, which poisonAlert matches, is no longer what CONTRACTS.md quotes")
	}
	if !strings.Contains(b, "resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {\n  parent: queueService\n  name: '${exportQueue.name}-poison'\n}") {
		t.Error("poisonQueue is not the export queue's -poison queue")
	}
}
