package main_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/devstack"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
)

// rie runs the built bootstrap under the AWS Lambda Runtime Interface Emulator.
type rie struct {
	url string
	out *bytes.Buffer
}

func startRIE(t *testing.T, env []string) *rie {
	t.Helper()
	emu := emulators.Tool(t, "aws-lambda-rie")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bootstrap")
	build := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(emu, "--runtime-interface-emulator-address", addr, bin)
	cmd.Dir = dir
	cmd.Env = append(env, "AWS_LAMBDA_FUNCTION_TIMEOUT=60", "AWS_LAMBDA_FUNCTION_NAME=defender-functions")
	r := &rie{url: "http://" + addr + "/2015-03-31/functions/function/invocations", out: &bytes.Buffer{}}
	w := io.MultiWriter(r.out, devstack.AuditLog())
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("RIE did not start:\n%s", r.out)
		}
	}
}

func (r *rie) invoke(t *testing.T, payload []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(r.url, "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func fixture(t *testing.T, name string) []byte {
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
	s := devstack.Start(t, devstack.Options{Incidents: 200, Dir: filepath.Join(dir, "local")})
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range s.Settings() {
		env = append(env, k+"="+v)
	}
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
}

// A misconfigured deployment still answers, with the settings to fix.
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
