package devstack_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The devstack command starts, writes its env file, and stops cleanly on SIGTERM.
func TestCommandStartsAndStops(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "devstack")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/defender-functions/defender-functions/infra/local/cmd/devstack").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-dir", filepath.Join(dir, "local"), "-incidents", "50")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(dir, "local", "devstack.env")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(env); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no env file after 30 s:\n%s", out.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "devstack listening on loopback") || !strings.Contains(out.String(), "devstack stopped") {
		t.Fatalf("output:\n%s", out.String())
	}
}
