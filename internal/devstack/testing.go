package devstack

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
