package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/infra/build"

	"github.com/aws/aws-lambda-go/events"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

// rie runs the built bootstrap under the AWS Lambda Runtime Interface Emulator.
type rie struct {
	url  string
	out  *devstack.LogBuffer
	stop func()
}

func startRIE(t testing.TB, env []string) *rie {
	t.Helper()
	return launchRIE(t, buildBootstrap(t), env)
}

// buildBootstrap builds the bootstrap as pack ships it (for this machine).
func buildBootstrap(t testing.TB) string {
	bin := filepath.Join(t.TempDir(), "bootstrap")
	if err := build.Local(emulators.RepoRoot(t), bin, build.Bootstrap, build.LambdaTags); err != nil {
		t.Fatal(err)
	}
	return bin
}

// launchRIE starts the emulator on a built bootstrap; the emulator starts
// the bootstrap itself at the first invocation, as Lambda does.
func launchRIE(t testing.TB, bin string, env []string) *rie {
	t.Helper()
	emu := emulators.Tool(t, "aws-lambda-rie")
	r := &rie{out: &devstack.LogBuffer{}}
	w := io.MultiWriter(r.out, devstack.AuditLog())
	proc, err := loopback.Start(func(port int) *exec.Cmd {
		// The runtime API's port too: its default, 9001, is one for all.
		api, err := loopback.Port()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(emu, "--runtime-interface-emulator-address", "127.0.0.1:"+strconv.Itoa(port),
			"--runtime-api-address", "127.0.0.1:"+strconv.Itoa(api), bin)
		cmd.Dir = filepath.Dir(bin)
		cmd.Env = append(env, "AWS_LAMBDA_FUNCTION_TIMEOUT=60", "AWS_LAMBDA_FUNCTION_NAME=defender-functions")
		cmd.Stdout, cmd.Stderr = w, w
		return cmd
	}, loopback.Accepts, 20*time.Second)
	if err != nil {
		t.Fatalf("RIE: %v\n%s", err, r.out)
	}
	r.url = "http://127.0.0.1:" + strconv.Itoa(proc.Port) + "/2015-03-31/functions/function/invocations"
	r.stop = sync.OnceFunc(func() { proc.Cmd.Process.Kill(); <-proc.Exited })
	t.Cleanup(r.stop)
	return r
}

func (r *rie) invoke(t testing.TB, payload []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(r.url, "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("%v\n%s", err, r.out)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func fixture(t testing.TB, name string) []byte {
	// The Lambda event fixtures live beside the adapter that decodes them.
	b, err := os.ReadFile(filepath.Join(emulators.RepoRoot(t), "shared", "lambdahandler", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The bootstrap, under the real emulator, runs the export on EventBridge
// events and answers HTTP events in API Gateway's shape.
func TestBootstrapUnderRIE(t *testing.T) {
	dir := t.TempDir()
	env := devstackEnv(t, dir, 200)
	env = append(env, "EXPORT_SINK=file://"+filepath.Join(dir, "export"), "STATE_STORE=file://"+filepath.Join(dir, "state"))
	r := startRIE(t, env)

	for _, f := range []string{"eventbridge-scheduled-event.json", "scheduler-input.json"} {
		status, body := r.invoke(t, fixture(t, f))
		var out struct {
			Function string `json:"function"`
			Status   string `json:"status"`
		}
		if status != 200 || json.Unmarshal(body, &out) != nil || out.Function != "incident-export" || out.Status != "completed" {
			t.Fatalf("%s: %d %s\n%s", f, status, body, r.out)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "export", devstack.DefaultTenantID, "*", "*", "*", "*.json"))
	if len(files) == 0 {
		t.Fatal("the scheduled runs exported nothing")
	}
	// HTTP events reach functions by path; this one has none yet.
	for _, f := range []string{"apigw-v2-request-jwt-authorizer.json", "lambda-urls-request.json"} {
		status, body := r.invoke(t, fixture(t, f))
		var resp struct {
			StatusCode int    `json:"statusCode"`
			Body       string `json:"body"`
		}
		if status != 200 || json.Unmarshal(body, &resp) != nil || resp.StatusCode != 404 || resp.Body != "no function at /api/my/path" {
			t.Fatalf("%s: %d %s", f, status, body)
		}
	}
	status, body := r.invoke(t, fixture(t, "s3-event.json"))
	if status != 200 || !strings.Contains(string(body), `"errorMessage":"unsupported event`) {
		t.Fatalf("s3 event: %d %s", status, body)
	}
	// An operator's aws lambda invoke --payload '{"source":"doctor"}': the
	// preflight as the function, its report in the answer.
	status, body = r.invoke(t, []byte(`{"source":"doctor"}`))
	var report struct {
		Passed bool     `json:"passed"`
		Report []string `json:"report"`
	}
	if status != 200 || json.Unmarshal(body, &report) != nil || !report.Passed || len(report.Report) < 5 ||
		!strings.HasPrefix(report.Report[0], "ok    config") || !slices.ContainsFunc(report.Report, func(l string) bool { return strings.HasPrefix(l, "ok    token") }) {
		t.Fatalf("doctor event: %d %s", status, body)
	}
	t.Logf("doctor event: %s", body)
}

// A misconfigured deployment still answers, with the settings to fix: 500,
// a configuration only the operator can fix (shared/failure).
func TestBootstrapMisconfiguredUnderRIE(t *testing.T) {
	r := startRIE(t, []string{"PATH=" + os.Getenv("PATH")})
	ev := fixture(t, "apigw-v2-request-jwt-authorizer.json")
	ev = bytes.Replace(ev, []byte(`"rawPath": "/my/path"`), []byte(`"rawPath": "/hunting-query"`), 1)
	status, body := r.invoke(t, ev)
	var resp struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	if status != 200 || json.Unmarshal(body, &resp) != nil || resp.StatusCode != 500 || !strings.Contains(resp.Body, "DEFENDER_TENANT_ID is required") {
		t.Fatalf("%d %s", status, body)
	}
	status, body = r.invoke(t, fixture(t, "eventbridge-scheduled-event.json"))
	if status != 200 || !strings.Contains(string(body), `DEFENDER_TENANT_ID is required`) || !strings.Contains(string(body), "errorMessage") {
		t.Fatalf("timer: %d %s", status, body)
	}
}

// minimal is the cold start's baseline: an aws-lambda-go handler that
// answers an HTTP API event and does nothing else.
const minimal = "./functions/cmd/bootstrap/testdata/minimal"

// BenchmarkColdStart is the Lambda cold start under the emulator: from the
// first invocation's request (the emulator then starts the bootstrap) to
// its answer, for a request that needs no network (the hunting catalog);
// then a warm invocation. The minimal handler, built the same way, is
// started alternately with the bootstrap (so that whatever else the machine
// does falls on both), 12 cold starts each: the goal is on the ratio of
// the medians, absolute times belonging to the machine. It also reports the
// stripped bootstrap's size.
func BenchmarkColdStart(b *testing.B) {
	env := devstackEnv(b, b.TempDir(), 10)
	bin := buildBootstrap(b)
	base := filepath.Join(b.TempDir(), "bootstrap")
	if err := build.Local(emulators.RepoRoot(b), base, minimal, build.LambdaTags); err != nil {
		b.Fatal(err)
	}
	ev := []byte(`{"version":"2.0","routeKey":"$default","rawPath":"/hunting-query","rawQueryString":"","headers":{},"requestContext":{"http":{"method":"GET","path":"/hunting-query"},"stage":"$default"},"isBase64Encoded":false}`)
	for b.Loop() {
		var cold, warm, minCold, minWarm []time.Duration
		for range 12 {
			c, w := coldStart(b, bin, env, ev)
			cold, warm = append(cold, c), append(warm, w)
			c, w = coldStart(b, base, env, ev)
			minCold, minWarm = append(minCold, c), append(minWarm, w)
		}
		b.ReportMetric(ms(median(cold)), "cold-ms")
		b.ReportMetric(ms(median(warm)), "warm-ms")
		b.ReportMetric(ms(median(minCold)), "minimal-cold-ms")
		b.ReportMetric(ms(median(minWarm)), "minimal-warm-ms")
		b.ReportMetric(float64(median(cold))/float64(median(minCold)), "ratio")
	}
	b.ReportMetric(megabytes(b, bin), "bootstrap-MB")
	b.ReportMetric(megabytes(b, base), "minimal-MB")
}

// coldStart starts an emulator on bin and times its first invocation of ev
// (the cold start) and its second (warm), each answered 200.
func coldStart(b *testing.B, bin string, env []string, ev []byte) (cold, warm time.Duration) {
	r := launchRIE(b, bin, env)
	defer r.stop()
	start := time.Now()
	if st, body := r.invoke(b, ev); st != 200 || !bytes.Contains(body, []byte(`\"statusCode\":200`)) && !bytes.Contains(body, []byte(`"statusCode":200`)) {
		b.Fatalf("cold: %d %s\n%s", st, body, r.out)
	}
	cold = time.Since(start)
	start = time.Now()
	r.invoke(b, ev)
	return cold, time.Since(start)
}

func median(d []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(d))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// megabytes is a file's size in MB (10^6 bytes, as the size goals are stated).
func megabytes(b *testing.B, path string) float64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return float64(fi.Size()) / 1e6
}

// devstackEnv starts a devstack and returns a process environment pointing at it.
func devstackEnv(t testing.TB, dir string, incidents int) []string {
	s := devstack.Start(t, devstack.Options{Incidents: incidents, Dir: filepath.Join(dir, "local")})
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range s.Settings() {
		env = append(env, k+"="+v)
	}
	return env
}

// Under the emulator, the webhook's keys come from Secrets Manager at run
// time (the execution role's variables, as Lambda sets them): a delivery
// is verified with them, and one signed with a key added to the secret
// since is verified at once, with no redeploy.
func TestWebhookKeysFromSecretsManagerUnderRIE(t *testing.T) {
	dir := t.TempDir()
	s := devstack.Start(t, devstack.Options{Incidents: 20, Dir: filepath.Join(dir, "local")})
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "STATE_STORE=file://" + filepath.Join(dir, "state")}
	for k, v := range s.Settings() {
		env = append(env, k+"="+v)
	}
	for k, v := range s.AWSSettings() {
		env = append(env, k+"="+v)
	}
	key1, key2 := make([]byte, 32), make([]byte, 32)
	rand.Read(key1)
	rand.Read(key2)
	whsec := func(keys ...[]byte) string {
		var f []string
		for _, k := range keys {
			f = append(f, "whsec_"+base64.StdEncoding.EncodeToString(k))
		}
		b, _ := json.Marshal(map[string]string{"generic": strings.Join(f, " ")})
		return string(b)
	}
	arn := s.PutAWSSecret("defender/webhooks", whsec(key1))
	r := startRIE(t, append(env, "WEBHOOK_SECRETS_ARN="+arn))

	body, err := os.ReadFile(filepath.Join(emulators.RepoRoot(t), "functions", "ticket-webhook", "testdata", "generic-resolved.json"))
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(key []byte, id string) (int, string) {
		now := time.Now()
		ev := events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "POST /ticket-webhook/{provider}", RawPath: "/ticket-webhook/generic", Body: string(body),
			Headers: map[string]string{"content-type": "application/json", "webhook-id": id, "webhook-timestamp": strconv.FormatInt(now.Unix(), 10),
				"webhook-signature": webhook.SignStandard(key, id, now, body)},
			PathParameters: map[string]string{"provider": "generic"}}
		ev.RequestContext.HTTP.Method = "POST"
		ev.RequestContext.Stage = "$default"
		payload, _ := json.Marshal(ev)
		status, out := r.invoke(t, payload)
		var resp events.APIGatewayV2HTTPResponse
		if status != 200 || json.Unmarshal(out, &resp) != nil {
			t.Fatalf("%d %s\n%s", status, out, r.out)
		}
		return resp.StatusCode, resp.Body
	}
	if code, b := deliver(key1, "msg_rie1"); code != 200 || !strings.Contains(b, `"status":"applied"`) {
		t.Fatalf("signed with the secret's key: %d %s\n%s", code, b, r.out)
	}
	s.PutAWSSecret("defender/webhooks", whsec(key2, key1))
	if code, b := deliver(key2, "msg_rie2"); code != 200 || !strings.Contains(b, `"status":"unchanged"`) {
		t.Fatalf("signed with the key added since: %d %s\n%s", code, b, r.out)
	}
	if code, b := deliver(make([]byte, 32), "msg_rie3"); code != 401 {
		t.Fatalf("forged: %d %s", code, b)
	}
	if n := s.Counters().Get("secretsmanager.GetSecretValue", 200); n != 2 {
		t.Fatalf("Secrets Manager served %d reads; want 2 (the first delivery, then one reread on the new key)", n)
	}
}

// aws-federation under the emulator: no vault, no certificate, no secret;
// the execution role's JWT from STS is the app's credential. A broken link
// (outbound federation off for the account) is named with its fix.
func TestAWSFederationUnderRIE(t *testing.T) {
	dir := t.TempDir()
	s := devstack.Start(t, devstack.Options{Incidents: 30, Dir: filepath.Join(dir, "local")})
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"EXPORT_SINK=file://" + filepath.Join(dir, "export"), "STATE_STORE=file://" + filepath.Join(dir, "state")}
	for k, v := range s.Settings() {
		switch k {
		case "KEY_VAULT_URL", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "DEFENDER_CREDENTIAL", "DEFENDER_SECRET_NAME", "EXPORT_SINK", "STATE_STORE":
			continue // Lambda has no managed identity; this mode no vault
		}
		env = append(env, k+"="+v)
	}
	for k, v := range s.AWSSettings() {
		env = append(env, k+"="+v)
	}
	r := startRIE(t, append(env, "DEFENDER_CREDENTIAL=aws-federation"))
	status, body := r.invoke(t, fixture(t, "scheduler-input.json"))
	if status != 200 || !strings.Contains(string(body), `"status":"completed"`) {
		t.Fatalf("export: %d %s\n%s", status, body, r.out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "export", devstack.DefaultTenantID, "*", "*", "*", "*.json"))
	c := s.Counters()
	if len(files) == 0 || c.Get("sts.GetWebIdentityToken", 200) != 1 || c.Get("msi.GET /msi/token", 0) != 0 || c.Get("keyvault.GET /secrets/{name}/{$}", 0) != 0 {
		t.Fatalf("%d files; %d JWTs from STS, %d managed-identity and %d vault requests", len(files), c.Get("sts.GetWebIdentityToken", 200),
			c.Get("msi.GET /msi/token", 0), c.Get("keyvault.GET /secrets/{name}/{$}", 0))
	}

	s.SetOutboundFederation(false)
	r2 := startRIE(t, append(env, "DEFENDER_CREDENTIAL=aws-federation"))
	ev := []byte(`{"version":"2.0","routeKey":"POST /hunting-query","rawPath":"/hunting-query","rawQueryString":"","headers":{"content-type":"application/json"},"requestContext":{"http":{"method":"POST","path":"/hunting-query"},"stage":"$default","authorizer":{"jwt":{"claims":{"roles":"[Hunting.Run]"},"scopes":null}}},"body":"{\"name\":\"failed-logons\",\"parameters\":{\"threshold\":1,\"lookback\":\"30d\"}}","isBase64Encoded":false}`)
	status, body = r2.invoke(t, ev)
	var resp events.APIGatewayV2HTTPResponse
	if status != 200 || json.Unmarshal(body, &resp) != nil || resp.StatusCode != 500 || !strings.Contains(resp.Body, "CredentialsRejected") {
		t.Fatalf("hunting with federation off: %d %s\n%s", status, body, r2.out)
	}
	if !strings.Contains(r2.out.String(), "aws iam enable-outbound-web-identity-federation") {
		t.Fatalf("the log does not say how to fix it:\n%s", r2.out)
	}
}

// The export fans out through SQS (the devstack's) under the emulator: the
// schedule's run enqueues a task per tenant, and the test is the event
// source mapping, as AWS runs it: it receives up to four tasks (long
// polling, a short visibility timeout), invokes the function with them as
// an SQS event, deletes those the answer does not name in
// batchItemFailures, and leaves the others to come back. A tenant whose
// consent is gone fails on every receive and, past maxReceiveCount (5), is
// moved to the dead-letter queue; the others are exported meanwhile.
func TestQueueFanOutUnderRIE(t *testing.T) {
	dir := t.TempDir()
	tenants, ids := devstack.Customers(6, 30)
	poisoned := tenants[4].ID
	tenants[4].Apps = nil // consent withdrawn
	s := devstack.Start(t, devstack.Options{Tenants: tenants, Dir: filepath.Join(dir, "local")})
	s.UseAWS(t) // the test's own SQS client: the event source mapping
	s.CreateSQSQueue("incident-export-dlq", "", 0)
	url := s.CreateSQSQueue("incident-export", "incident-export-dlq", 5)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "EXPORT_SINK=file://" + filepath.Join(dir, "export"),
		"STATE_STORE=file://" + filepath.Join(dir, "state"), "EXPORT_QUEUE=" + url, "EXPORT_LOOKBACK=2160h", "DEFENDER_TENANT_ID=" + strings.Join(ids, ","),
		// The devstack's vault belongs to its default directory, which these tenants replace.
		"DEFENDER_CREDENTIAL=env-secret", "DEFENDER_CLIENT_SECRET=" + s.ClientSecret(devstack.DefaultClientID)}
	for k, v := range s.Settings() {
		switch k {
		case "DEFENDER_TENANT_ID", "DEFENDER_CREDENTIAL", "EXPORT_SINK", "STATE_STORE":
			continue
		}
		env = append(env, k+"="+v)
	}
	for k, v := range s.AWSSettings() {
		env = append(env, k+"="+v)
	}
	r := startRIE(t, env)
	if status, body := r.invoke(t, fixture(t, "scheduler-input.json")); status != 200 || !strings.Contains(string(body), `"status":"completed"`) {
		t.Fatalf("the schedule: %d %s\n%s", status, body, r.out)
	}
	if n := len(s.SQSMessages("incident-export")); n != len(tenants) {
		t.Fatalf("%d tasks enqueued for %d tenants", n, len(tenants))
	}

	cfg, err := awsconfig.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	q := sqs.NewFromConfig(cfg)
	failures := 0
	for deadline := time.Now().Add(90 * time.Second); len(s.SQSMessages("incident-export")) > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("tasks left: %+v\n%s", s.SQSMessages("incident-export"), r.out)
		}
		got, err := q.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 4, WaitTimeSeconds: 1, VisibilityTimeout: 1,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Messages) == 0 {
			continue
		}
		ev := events.SQSEvent{}
		for _, m := range got.Messages {
			ev.Records = append(ev.Records, events.SQSMessage{MessageId: *m.MessageId, ReceiptHandle: *m.ReceiptHandle, Body: *m.Body, Md5OfBody: *m.MD5OfBody,
				Attributes: m.Attributes, EventSource: "aws:sqs", EventSourceARN: "arn:aws:sqs:" + devstack.AWSRegion + ":" + devstack.AWSAccountID + ":incident-export",
				AWSRegion: devstack.AWSRegion})
		}
		payload, _ := json.Marshal(ev)
		status, body := r.invoke(t, payload)
		var resp events.SQSEventResponse
		if status != 200 || json.Unmarshal(body, &resp) != nil {
			t.Fatalf("SQS batch: %d %s\n%s", status, body, r.out)
		}
		failed := map[string]bool{}
		for _, f := range resp.BatchItemFailures {
			failed[f.ItemIdentifier] = true
			failures++
		}
		for _, m := range got.Messages {
			if !failed[*m.MessageId] {
				if _, err := q.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	dead := s.SQSMessages("incident-export-dlq")
	if len(dead) != 1 || !strings.Contains(dead[0].Body, `"tenant":"`+poisoned+`"`) || dead[0].Receives != 5 || failures != 5 {
		t.Fatalf("dead-letter queue %+v after %d failed deliveries; want the poisoned tenant's task, received 5 times", dead, failures)
	}
	for _, tn := range tenants {
		files, _ := filepath.Glob(filepath.Join(dir, "export", tn.ID, "*", "*", "*", "*.json"))
		if want := s.IncidentCount(tn.ID); tn.ID != poisoned && len(files) != want || tn.ID == poisoned && len(files) != 0 {
			t.Fatalf("tenant %s: %d files of %d incidents", tn.ID, len(files), want)
		}
	}
	if n := strings.Count(r.out.String(), "Tenant export failed on the message's last delivery"); n != 1 {
		t.Fatalf("%d last-delivery lines\n%s", n, r.out)
	}
	// doctor, with the function's settings, finds the dead letter.
	settings := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		settings[k] = v
	}
	var out strings.Builder
	doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := settings[k]; return v, ok }, &out, &doctor.Options{HTTPClient: s.HTTPClient()})
	dlq := s.SQSURL + "/" + devstack.AWSAccountID + "/incident-export-dlq"
	if !strings.Contains(out.String(), "FAIL  queue        1 task in "+dlq+", no longer exported") {
		t.Fatalf("doctor does not report the dead letter:\n%s", out.String())
	}
}
