package devstack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TB is the part of testing.TB the helpers use. It is spelled out so that
// the devstack does not import package testing: it is linked only into tests
// and the local tools, never into what ships.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Setenv(key, value string)
}

// Start starts a devstack for a test or benchmark and stops it when tb
// ends. Unless opts.Limits says otherwise, it serves without rate limits:
// tests that exercise throttling opt in with DocumentedLimits.
func Start(tb TB, opts Options) *Stack {
	tb.Helper()
	if opts.Limits == nil {
		opts.Limits = NoLimits
	}
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// StartProcess runs the devstack command as its own process, so a benchmark
// measures the app alone, and returns the settings it wrote. It stops when
// tb ends. flags are the command's (-incidents, -no-rate-limits, …); the
// changer is off unless flags set -change-every.
func StartProcess(tb TB, flags ...string) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	bin := filepath.Join(dir, "devstack")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/defender-functions/defender-functions/infra/local/cmd/devstack").CombinedOutput(); err != nil {
		tb.Fatalf("build the devstack: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append([]string{"-dir", dir, "-change-every", "0"}, flags...)...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	envFile := filepath.Join(dir, "devstack.env")
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(envFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("the devstack did not start")
		}
	}
	env := map[string]string{}
	raw, err := os.ReadFile(envFile)
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env
}

// UseAWS points the AWS SDK's default chain of this process at the
// devstack, as Lambda's variables point it at the execution role: the
// role's credentials and region, the endpoints, the CA (AWS_CA_BUNDLE), and
// no shared config or credentials file. It lasts until tb ends.
func (s *Stack) UseAWS(tb TB) {
	tb.Helper()
	dir := tb.TempDir()
	ca := filepath.Join(dir, "devstack-ca.pem")
	if err := os.WriteFile(ca, s.CACertPEM(), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Setenv("AWS_CA_BUNDLE", ca)
	tb.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	tb.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	for k, v := range s.AWSSettings() {
		tb.Setenv(k, v)
	}
}

// LogBuffer keeps the log output of the code under test, written from its
// goroutines or a child's output pipe while the test reads it.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *LogBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *LogBuffer) Reset()         { l.mu.Lock(); defer l.mu.Unlock(); l.b.Reset() }

// Records are the JSON log records whose msg is msg, in order (lines that
// are not JSON are passed over).
func (l *LogBuffer) Records(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(l.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// FakeAzureCLI puts a stand-in for the Azure CLI (name "az") or the Azure
// Developer CLI ("azd") in dir, modelled on what azidentity runs and parses
// (azure_cli_credential.go: `az account get-access-token -o json --resource
// R [--tenant T]`, reading accessToken and expires_on;
// azure_developer_cli_credential.go: `azd auth token -o json --no-prompt
// --scope S [--tenant-id T]`, reading token and expiresOn). Asked exactly
// want, it prints stdout; asked anything else (or with no stdout) it fails
// as a signed-out tool does, with stderr. Each command line goes to
// dir/<name>.log. Shell builtins only: tests run some with PATH holding
// nothing else.
func FakeAzureCLI(tb testing.TB, dir, name, want, stdout, stderr string) {
	tb.Helper()
	if stdout == "" {
		want = "(signed out: no command gets a token)"
	}
	q := func(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'" }
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %s\nif [ \"$*\" = %s ]; then\n  printf '%%s' %s\n  exit 0\nfi\nprintf '%%s\\n' %s >&2\nexit 1\n",
		q(filepath.Join(dir, name+".log")), q(want), q(stdout), q(stderr))
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
}

// OperatorVaultToken is a token the Key Vault accepts, as an operator's own
// sign-in (az login) would give: the vault-reader app's, from Entra ID.
func (s *Stack) OperatorVaultToken(tb testing.TB) string {
	tb.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {VaultReaderClientID},
		"client_secret": {s.ClientSecret(VaultReaderClientID)}, "scope": {s.VaultResource() + "/.default"}}
	resp, err := s.HTTPClient().PostForm(s.EntraURL+"/"+DefaultTenantID+"/oauth2/v2.0/token", form)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		tb.Fatalf("no vault token: %v (HTTP %d)", err, resp.StatusCode)
	}
	return tok.AccessToken
}
