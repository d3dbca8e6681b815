package loopback_test

import (
	"errors"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/loopback"
)

// Start hands a process a port, waits for it to listen, starts one that
// exits first again on another port, and kills one that never gets ready.
func TestStart(t *testing.T) {
	var ports []int
	_, err := loopback.Start(func(port int) *exec.Cmd {
		ports = append(ports, port)
		return exec.Command("sh", "-c", "exit 1") // as a process whose port was taken
	}, loopback.Accepts, 5*time.Second)
	if !errors.Is(err, loopback.ErrExited) || len(ports) != 3 {
		t.Fatalf("a process that exits: %v after %d starts", err, len(ports))
	}

	var slow *exec.Cmd
	_, err = loopback.Start(func(int) *exec.Cmd {
		slow = exec.Command("sleep", "60")
		return slow
	}, loopback.Accepts, 300*time.Millisecond)
	if err == nil || errors.Is(err, loopback.ErrExited) || slow.ProcessState == nil {
		t.Fatalf("a process that never listens: %v, still running: %v", err, slow.ProcessState == nil)
	}

	p, err := loopback.Start(func(port int) *exec.Cmd {
		return exec.Command("python3", "-m", "http.server", strconv.Itoa(port), "--bind", "127.0.0.1")
	}, loopback.Accepts, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Cmd.Process.Kill(); <-p.Exited }()
	if !loopback.Accepts(p.Port) {
		t.Fatal("ready but not listening")
	}
}

// CPUBusy counts a busy loop's time as busy, and busy time never exceeds
// the total.
func TestCPUBusy(t *testing.T) {
	busy0, total0 := loopback.CPUBusy()
	if total0 == 0 || busy0 > total0 {
		t.Fatalf("busy %d of %d", busy0, total0)
	}
	// Spin for 300 ms: at 100 ticks a second, about 30 busy ticks.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	busy1, total1 := loopback.CPUBusy()
	if busy1-busy0 < 15 || busy1-busy0 > total1-total0 {
		t.Fatalf("a 300 ms spin: %d busy ticks of %d", busy1-busy0, total1-total0)
	}
}
