package funchost_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/infra/build"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/funchost"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/queue"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

// appDir lays out a Function App as make build does, with the real handler.
func appDir(t testing.TB) string {
	t.Helper()
	dir, root := t.TempDir(), emulators.RepoRoot(t)
	if err := build.Local(root, filepath.Join(dir, "handler"), build.Handler, build.AzureTags); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(root, "host.json"), filepath.Join(dir, "host.json"))
	for _, d := range functions.Functions {
		fj, err := d.FunctionJSON()
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(dir, d.Name), 0o755)
		if err := os.WriteFile(filepath.Join(dir, d.Name, "function.json"), fj, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func copyFile(t testing.TB, src, dst string) {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func settings(s *devstack.Stack, dir string, kv ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range s.Settings() {
		env = append(env, k+"="+v)
	}
	env = append(env, "EXPORT_SINK=file://"+filepath.Join(dir, "export"), "STATE_STORE=file://"+filepath.Join(dir, "state"))
	return append(env, kv...)
}

func exportedFiles(dir string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "export", devstack.DefaultTenantID, "*", "*", "*", "*.json"))
	return len(files)
}

// Timers fire on their NCRONTAB schedule (read from the app setting) and on
// demand, through the host's envelope, on the real handler.
func TestTimers(t *testing.T) {
	app := appDir(t)
	dir := t.TempDir()
	s := devstack.Start(t, devstack.Options{Incidents: 200, Dir: filepath.Join(dir, "local")})
	h, err := funchost.Start(funchost.Options{AppDir: app, Env: settings(s, dir, "EXPORT_SCHEDULE=*/1 * * * * *"), Stdout: devstack.AuditLog(), Stderr: devstack.AuditLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for deadline := time.Now().Add(20 * time.Second); exportedFiles(dir) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the schedule never fired the export")
		}
	}
	res, err := h.Run(context.Background(), "incident-export")
	if err != nil || res.Status != 200 || len(res.Logs) != 1 || !strings.HasPrefix(res.Logs[0], "incident-export completed in ") {
		t.Fatalf("run: %v %+v", err, res)
	}
	resp, err := http.Post(h.URL+"/admin/functions/incident-export", "application/json", strings.NewReader(`{"input":""}`))
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("admin run: %v %d", err, resp.StatusCode)
	}
	if _, err := h.Run(context.Background(), "hunting-query"); err == nil {
		t.Fatal("ran an HTTP function as a timer")
	}
}

// HTTP reaches the handler forwarded or as the envelope; both give the same
// answer. A misconfigured app answers 500 naming the settings to fix.
func TestHTTPModes(t *testing.T) {
	app := appDir(t)
	for _, forwarding := range []bool{true, false} {
		h, err := funchost.Start(funchost.Options{AppDir: app, Env: []string{"PATH=" + os.Getenv("PATH")}, Forwarding: &forwarding, NoTimers: true,
			Stdout: devstack.AuditLog(), Stderr: devstack.AuditLog()})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			method, path string
			status       int
			body         string
		}{
			{"GET", "/api/hunting-query?name=x", 500, "Defender Functions is not configured: configuration: DEFENDER_TENANT_ID is required"},
			// Its callers sign their deliveries: nothing said before that.
			{"POST", "/api/ticket-webhook/jira", 500, "ticket-webhook is not configured; the operator's log has the details (correlation ID "},
			{"GET", "/api/ticket-webhook/jira", 405, ""},
			{"GET", "/api/nothing", 404, ""},
		} {
			req, _ := http.NewRequest(tc.method, h.URL+tc.path, strings.NewReader(`{"a":1}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.HasPrefix(string(b), tc.body) {
				t.Errorf("forwarding=%v %s %s: %d %q", forwarding, tc.method, tc.path, resp.StatusCode, b)
			}
		}
		h.Close()
	}
}

// A problem with one function's own settings stops that function alone: a
// webhook secret whose Key Vault reference the platform could not resolve
// (the order of the README's steps produces one) and raw KQL without its
// role leave the export running; hunting answers 500 naming the setting,
// the webhook (whose callers have not proved who they are) 500 with the
// correlation ID of the log line that says what to fix.
func TestOneFunctionsSettings(t *testing.T) {
	app := appDir(t)
	dir := t.TempDir()
	s := devstack.Start(t, devstack.Options{Incidents: 50, Dir: filepath.Join(dir, "local")})
	logs := &devstack.LogBuffer{}
	h, err := funchost.Start(funchost.Options{AppDir: app, NoTimers: true, Stdout: io.MultiWriter(logs, devstack.AuditLog()), Stderr: devstack.AuditLog(),
		Env: settings(s, dir, "WEBHOOK_SECRET_JIRA=@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/jira-webhook-secret/)", "HUNTING_ALLOW_ADHOC=true")})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	res, err := h.Run(context.Background(), "incident-export")
	if err != nil || res.Status != 200 {
		t.Fatalf("the export: %v %+v", err, res)
	}
	for _, tc := range []struct {
		method, path string
		body         string
		log          string // the log line of the answer's correlation ID holds it
	}{
		{"GET", "/api/hunting-query", "hunting-query is not configured: HUNTING_ALLOW_ADHOC=true needs HUNTING_ADHOC_ROLE", ""},
		{"POST", "/api/ticket-webhook/jira", "ticket-webhook is not configured; the operator's log has the details (correlation ID ",
			"WEBHOOK_SECRET_JIRA is an unresolved Key Vault reference"},
	} {
		req, _ := http.NewRequest(tc.method, h.URL+tc.path, strings.NewReader(`{"a":1}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("X-Correlation-Id")
		if resp.StatusCode != 500 || resp.Header.Get("Retry-After") != "" || !strings.HasPrefix(string(b), tc.body) || id == "" {
			t.Errorf("%s %s: %d %q (correlation ID %q)", tc.method, tc.path, resp.StatusCode, b, id)
		}
		if tc.log == "" {
			continue
		}
		if !strings.Contains(string(b), id) || strings.Contains(string(b), "WEBHOOK_") {
			t.Errorf("%s: the answer %q names the deployment or not its correlation ID %s", tc.path, b, id)
		}
		// The handler's output reaches the host through a pipe, and may
		// come after the answer.
		found := false
		for deadline := time.Now().Add(5 * time.Second); !found && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, line := range strings.Split(logs.String(), "\n") {
				found = found || strings.Contains(line, `"invocation_id":"`+id+`"`) && strings.Contains(line, tc.log)
			}
		}
		if !found {
			t.Errorf("%s: no log line of invocation %s says %q", tc.path, id, tc.log)
		}
	}
}

// docs/deploy-azure.md's steps, in their order, on the real
// handler under the local host: the template deploys the app with Key Vault
// references for the webhook secrets and nothing in the vault yet; the
// operator stores the client secret, then the webhook secret, and restarts
// the app so the platform resolves the reference. At each step what can run
// does, and what cannot says why; at the end every function works.
func TestDeploymentStepsInOrder(t *testing.T) {
	app := appDir(t)
	dir := t.TempDir()
	s := devstack.Start(t, devstack.Options{Incidents: 50, Dir: filepath.Join(dir, "local")})
	const secretName = "defender-client-secret-fresh" // not in the vault until step 2
	jiraRef := "@Microsoft.KeyVault(VaultName=soc-kv;SecretName=jira-webhook-secret)"
	start := func(kv ...string) *funchost.Host {
		h, err := funchost.Start(funchost.Options{AppDir: app, NoTimers: true, Stdout: devstack.AuditLog(), Stderr: devstack.AuditLog(),
			Env: settings(s, dir, append([]string{"DEFENDER_SECRET_NAME=" + secretName}, kv...)...)})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	call := func(h *funchost.Host, method, path string, body []byte, header http.Header) (int, string) {
		req, _ := http.NewRequest(method, h.URL+path, bytes.NewReader(body))
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	jiraSecret := "jira-webhook-secret-for-the-deployment-test"
	jira, err := os.ReadFile(filepath.Join(emulators.RepoRoot(t), "functions", "ticket-webhook", "testdata", "jira-issue-updated-done.json"))
	if err != nil {
		t.Fatal(err)
	}
	jira = bytes.ReplaceAll(jira, []byte("1764165600000"), []byte(strconv.FormatInt(time.Now().UnixMilli(), 10)))
	delivery := http.Header{"Content-Type": {"application/json"}, "X-Atlassian-Webhook-Identifier": {"deploy-1"},
		"X-Hub-Signature": {webhook.SignHub([]byte(jiraSecret), jira)}}
	hunt := []byte(`{"name":"failed-logons"}`)
	json := http.Header{"Content-Type": {"application/json"}}

	// 1. Deployed: nothing in the vault, the webhook's reference unresolved.
	h := start("WEBHOOK_SECRET_JIRA=" + jiraRef)
	if res, _ := h.Run(context.Background(), "incident-export"); res == nil || res.Status != 500 || !strings.Contains(strings.Join(res.Logs, " "), `secret "`+secretName+`" not found`) {
		t.Errorf("step 1, export: %+v", res)
	}
	if st, body := call(h, "POST", "/api/hunting-query", hunt, json); st != 500 || !strings.Contains(body, "CredentialsRejected") {
		t.Errorf("step 1, hunting: %d %s", st, body)
	}
	if st, body := call(h, "POST", "/api/ticket-webhook/jira", jira, delivery); st != 500 || !strings.Contains(body, "ticket-webhook is not configured") {
		t.Errorf("step 1, webhook: %d %s", st, body)
	}
	// 2. The client secret stored (docs/app-registration.md §4): the
	// export and hunting work at once (the vault is read again).
	s.PutSecret(secretName, s.ClientSecret(devstack.DefaultClientID))
	if res, err := h.Run(context.Background(), "incident-export"); err != nil || res.Status != 200 {
		t.Errorf("step 2, export: %v %+v", err, res)
	}
	if st, body := call(h, "POST", "/api/hunting-query", hunt, json); st != 200 {
		t.Errorf("step 2, hunting: %d %s", st, body)
	}
	if st, _ := call(h, "POST", "/api/ticket-webhook/jira", jira, delivery); st != 500 {
		t.Errorf("step 2, webhook: %d", st)
	}
	h.Close()
	// 3. The webhook secret stored and the app restarted: the platform
	// resolves the reference; every function works.
	s.PutSecret("jira-webhook-secret", jiraSecret)
	h = start("WEBHOOK_SECRET_JIRA=" + jiraSecret)
	defer h.Close()
	if res, err := h.Run(context.Background(), "incident-export"); err != nil || res.Status != 200 {
		t.Errorf("step 3, export: %v %+v", err, res)
	}
	if st, body := call(h, "POST", "/api/hunting-query", hunt, json); st != 200 {
		t.Errorf("step 3, hunting: %d %s", st, body)
	}
	if st, body := call(h, "POST", "/api/ticket-webhook/jira", jira, delivery); st != 200 || !strings.Contains(body, `"status":"applied"`) && !strings.Contains(body, `"status":"unchanged"`) {
		t.Errorf("step 3, webhook: %d %s", st, body)
	}
}

// managed-identity-federation through the Functions host and the real
// handler: no secret read anywhere, the user-assigned identity's token is
// the app's credential; an identity not assigned to the app is named.
func TestSecretlessThroughTheHost(t *testing.T) {
	app := appDir(t)
	for _, tc := range []struct {
		name, identity string
		status         int
		says           string
	}{
		{"user-assigned identity", devstack.IdentityClientID, 200, "incident-export completed in "},
		{"identity not assigned", "0d3c5e7a-1b2f-4a6c-9e8d-7f6a5b4c3d2e", 500, "is the identity MANAGED_IDENTITY_CLIENT_ID names assigned to the Function App?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := devstack.Start(t, devstack.Options{Incidents: 50, Dir: filepath.Join(dir, "local")})
			h, err := funchost.Start(funchost.Options{AppDir: app, NoTimers: true, Stdout: devstack.AuditLog(), Stderr: devstack.AuditLog(),
				Env: settings(s, dir, "DEFENDER_CREDENTIAL=managed-identity-federation", "KEY_VAULT_URL=", "MANAGED_IDENTITY_CLIENT_ID="+tc.identity)})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			res, err := h.Run(context.Background(), "incident-export")
			if tc.status == 200 && (err != nil || res.Status != 200 || len(res.Logs) == 0 || !strings.Contains(res.Logs[0], tc.says)) ||
				tc.status != 200 && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("(HTTP %d)", tc.status)) || !strings.Contains(err.Error(), tc.says)) {
				t.Fatalf("run: %v %+v", err, res)
			}
			c := s.Counters()
			if c.Get("keyvault.GET /secrets/{name}/{$}", 0) != 0 || c.Get("msi.GET /msi/token", 0) == 0 {
				t.Fatalf("%d vault reads, %d identity tokens", c.Get("keyvault.GET /secrets/{name}/{$}", 0), c.Get("msi.GET /msi/token", 0))
			}
			if tc.status == 200 && exportedFiles(dir) == 0 {
				t.Fatal("nothing exported")
			}
		})
	}
}

// The export fans out through a Storage queue (Azurite's): the timer only
// enqueues a task per tenant, and the queue trigger delivers them to
// incident-export-tenant on the real handler, as the host's listener does
// (host.json's batch, polling, visibility and maxDequeueCount). A tenant
// whose consent is gone fails on every delivery and lands in the -poison
// queue after the fifth, with one error line; the others are exported
// meanwhile, and the queue is left empty.
func TestQueueFanOut(t *testing.T) {
	app := appDir(t)
	// Failed deliveries come back at once, so that five take seconds.
	hostJSON, _ := os.ReadFile(filepath.Join(app, "host.json"))
	hostJSON = bytes.Replace(hostJSON, []byte(`"visibilityTimeout": "00:00:30"`), []byte(`"visibilityTimeout": "00:00:00"`), 1)
	hostJSON = bytes.Replace(hostJSON, []byte(`"maxPollingInterval": "00:00:02"`), []byte(`"maxPollingInterval": "00:00:00.5"`), 1)
	os.WriteFile(filepath.Join(app, "host.json"), hostJSON, 0o644)

	dir := t.TempDir()
	tenants, ids := devstack.Customers(6, 40)
	poisoned := tenants[2].ID
	tenants[2].Apps = nil // consent withdrawn: every token request fails
	s := devstack.Start(t, devstack.Options{Tenants: tenants, Dir: filepath.Join(dir, "local")})
	az := emulators.StartAzuriteQueues(t)
	q, err := queue.NewAzure("incident-export", queue.AzureOptions{ConnectionString: az.ConnectionString})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Create(context.Background()); err != nil { // as the deployment does
		t.Fatal(err)
	}
	logs := &devstack.LogBuffer{}
	hostLog := &devstack.LogBuffer{}
	env := settings(s, dir, "DEFENDER_TENANT_ID="+strings.Join(ids, ","), "EXPORT_QUEUE=incident-export", "AzureWebJobsStorage="+az.ConnectionString, "EXPORT_LOOKBACK=2160h",
		// The devstack's vault belongs to its default directory, which these tenants replace.
		"DEFENDER_CREDENTIAL=env-secret", "DEFENDER_CLIENT_SECRET="+s.ClientSecret(devstack.DefaultClientID))
	h, err := funchost.Start(funchost.Options{AppDir: app, NoTimers: true, Stdout: io.MultiWriter(logs, devstack.AuditLog()), Stderr: devstack.AuditLog(),
		Logger: slog.New(slog.NewJSONHandler(io.MultiWriter(hostLog, devstack.AuditLog()), nil)), Env: env})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	res, err := h.Run(context.Background(), "incident-export")
	if err != nil || res.Status != 200 {
		t.Fatalf("the timer: %v %+v", err, res)
	}
	poison, _ := queue.NewAzure("incident-export-poison", queue.AzureOptions{ConnectionString: az.ConnectionString})
	var dead []queue.Peeked
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		done := 0
		for _, tn := range tenants {
			if tn.ID != poisoned && tenantFiles(dir, tn.ID) == s.IncidentCount(tn.ID) {
				done++
			}
		}
		dead, _ = poison.Peek(context.Background(), 32)
		left, _ := q.Peek(context.Background(), 32)
		if done == len(tenants)-1 && len(dead) == 1 && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tenants exported, %d in the poison queue, %d left\nhandler:\n%s\nhost:\n%s", done, len(tenants)-1, len(dead), len(left), logs.String(), hostLog.String())
		}
	}
	if !strings.Contains(string(dead[0].Body), `"tenant":"`+poisoned+`"`) {
		t.Fatalf("the poison queue holds %s", dead[0].Body)
	}
	if tenantFiles(dir, poisoned) != 0 {
		t.Fatal("the poisoned tenant wrote files")
	}
	if n := strings.Count(logs.String(), "Tenant export failed on the message's last delivery"); n != 1 {
		t.Fatalf("%d last-delivery lines\n%s", n, logs.String())
	}
	if n := strings.Count(hostLog.String(), "delivered again after the visibility timeout"); n != 4 {
		t.Fatalf("%d redeliveries of the poisoned task, want 4 before the poison queue\n%s", n, hostLog.String())
	}
	// doctor, with the app's settings, names the tenant in the poison queue.
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	var out strings.Builder
	doctor.Run(context.Background(), func(k string) (string, bool) { v, ok := m[k]; return v, ok }, &out, &doctor.Options{HTTPClient: s.HTTPClient()})
	if !strings.Contains(out.String(), "FAIL  queue        1 task in incident-export-poison, no longer exported: tenant "+poisoned) {
		t.Fatalf("doctor does not report the poisoned tenant:\n%s", out.String())
	}
}

func tenantFiles(dir, tenant string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "export", tenant, "*", "*", "*", "*.json"))
	return len(files)
}

// An invocation longer than the lease keeps its message: the host renews
// the lease while the function runs, so the task is not delivered again
// beside itself, and its delete uses the renewed pop receipt.
func TestQueueLeaseRenewed(t *testing.T) {
	app := appDir(t)
	dir := t.TempDir()
	// Each API answer takes 700 ms: the tenant's export outlasts two leases.
	s := devstack.Start(t, devstack.Options{Incidents: 120, Dir: filepath.Join(dir, "local"), Faults: devstack.Faults{LatencyMs: 700}})
	az := emulators.StartAzuriteQueues(t)
	q, _ := queue.NewAzure("incident-export", queue.AzureOptions{ConnectionString: az.ConnectionString})
	if err := q.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs, hostLog := &devstack.LogBuffer{}, &devstack.LogBuffer{}
	h, err := funchost.Start(funchost.Options{AppDir: app, NoTimers: true, QueueLease: 2 * time.Second,
		Stdout: io.MultiWriter(logs, devstack.AuditLog()), Stderr: devstack.AuditLog(),
		Logger: slog.New(slog.NewJSONHandler(io.MultiWriter(hostLog, devstack.AuditLog()), nil)),
		Env:    settings(s, dir, "EXPORT_QUEUE=incident-export", "AzureWebJobsStorage="+az.ConnectionString, "EXPORT_LOOKBACK=2160h", "EXPORT_PAGE_SIZE=20", "DEFENDER_RATE_LIMITS=off")})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	start := time.Now()
	if err := q.Send(context.Background(), [][]byte{[]byte(`{"tenant":"` + devstack.DefaultTenantID + `","round":"2026-12-02T18:00:00Z"}`)}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); exportedFiles(dir) < s.IncidentCount(devstack.DefaultTenantID); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d exported\n%s", exportedFiles(dir), s.IncidentCount(devstack.DefaultTenantID), logs.String())
		}
	}
	// The message is gone once the invocation ends.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if left, _ := q.Peek(context.Background(), 32); len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task is still queued\nhost:\n%s", hostLog.String())
		}
	}
	took := time.Since(start)
	if took < 4*time.Second {
		t.Fatalf("the invocation took %s, not more than two leases: the test proves nothing", took)
	}
	// One invocation, never a second delivery.
	ids := map[string]bool{}
	for _, line := range strings.Split(logs.String(), "\n") {
		var l struct {
			ID string `json:"invocation_id"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.ID != "" {
			ids[l.ID] = true
		}
	}
	if len(ids) != 1 || strings.Contains(hostLog.String(), "renewal failed") || strings.Contains(hostLog.String(), "delete failed") {
		t.Fatalf("%d invocations in %s\nhost:\n%s", len(ids), took, hostLog.String())
	}
}

// Two messages the host poisons without invoking the function, as its queue
// extension does: one that is not base64 (messageEncoding), on its first
// delivery, and one already delivered more often than maxDequeueCount (its
// invocations died past the last one).
func TestQueuePoisonedUnseen(t *testing.T) {
	app := appDir(t)
	dir := t.TempDir()
	s := devstack.Start(t, devstack.Options{Incidents: 10, Dir: filepath.Join(dir, "local")})
	az := emulators.StartAzuriteQueues(t)
	ctx := context.Background()
	raw, err := azqueue.NewQueueClientFromConnectionString(az.ConnectionString, "incident-export", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.EnqueueMessage(ctx, "not base64!", nil); err != nil {
		t.Fatal(err)
	}
	task := base64.StdEncoding.EncodeToString([]byte(`{"tenant":"` + devstack.DefaultTenantID + `","round":"2026-12-02T18:00:00Z"}`))
	if _, err := raw.EnqueueMessage(ctx, task, nil); err != nil {
		t.Fatal(err)
	}
	// The task's five deliveries, each abandoned (an instance killed).
	for i := 0; i < 5; i++ {
		vis := int32(1)
		got, err := raw.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32)), VisibilityTimeout: &vis})
		if err != nil || len(got.Messages) == 0 {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
		time.Sleep(1100 * time.Millisecond)
	}
	logs, hostLog := &devstack.LogBuffer{}, &devstack.LogBuffer{}
	h, err := funchost.Start(funchost.Options{AppDir: app, NoTimers: true, Stdout: io.MultiWriter(logs, devstack.AuditLog()), Stderr: devstack.AuditLog(),
		Logger: slog.New(slog.NewJSONHandler(io.MultiWriter(hostLog, devstack.AuditLog()), nil)),
		Env:    settings(s, dir, "EXPORT_QUEUE=incident-export", "AzureWebJobsStorage="+az.ConnectionString)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	poison, _ := queue.NewAzure("incident-export-poison", queue.AzureOptions{ConnectionString: az.ConnectionString})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		dead, _ := poison.Peek(ctx, 32)
		if len(dead) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d in the poison queue\nhost:\n%s", len(dead), hostLog.String())
		}
	}
	if strings.Contains(logs.String(), "Queue function started.") {
		t.Fatalf("the function was invoked:\n%s", logs.String())
	}
	if !strings.Contains(hostLog.String(), "Message decoding has failed") || !strings.Contains(hostLog.String(), "more than maxDequeueCount") {
		t.Fatalf("the host does not say why:\n%s", hostLog.String())
	}
}
