// Package loopback starts the local processes that must be told a port
// before they listen: the custom handler (as the Functions host starts it),
// Azurite and s3rver.
package loopback

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Process is a child listening on Port.
type Process struct {
	Cmd  *exec.Cmd
	Port int
	// Exited is closed once the process has exited (and been waited for).
	Exited <-chan struct{}
}

// ErrExited is a process that exited before it was ready, on every port
// it was given.
var ErrExited = errors.New("loopback: the process exited before it was ready")

// Start starts the command that command makes for a port from Port, and
// waits up to limit until ready(port) holds while it runs: an answer
// after it exited came from another process. One that exits first (the
// port was taken meanwhile) is started again on another port, three times
// in all. A process that is not ready is killed and waited for.
func Start(command func(port int) *exec.Cmd, ready func(port int) bool, limit time.Duration) (*Process, error) {
	for range 3 {
		port, err := Port()
		if err != nil {
			return nil, err
		}
		cmd := command(port)
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("loopback: start %s: %w", cmd.Path, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		p := &Process{Cmd: cmd, Port: port, Exited: exited}
		switch p.wait(ready, limit) {
		case nil:
			return p, nil
		case ErrExited:
			continue
		default:
			cmd.Process.Kill()
			<-exited
			return nil, fmt.Errorf("loopback: %s was not ready within %s", cmd.Path, limit)
		}
	}
	return nil, ErrExited
}

var errNotReady = errors.New("not ready")

func (p *Process) wait(ready func(port int) bool, limit time.Duration) error {
	running := func() bool {
		select {
		case <-p.Exited:
			return false
		default:
			return true
		}
	}
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !running() {
			return ErrExited
		}
		if ready(p.Port) {
			if !running() {
				return ErrExited
			}
			return nil
		}
	}
	return errNotReady
}

// Accepts reports whether port accepts a TCP connection.
func Accepts(port int) bool {
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err == nil {
		c.Close()
	}
	return err == nil
}

// Port returns a loopback TCP port that is free now, chosen below the
// kernel's ephemeral range. A port from bind(0), closed and handed to a
// child, lies in that range, where any listener on :0 or outgoing connection
// on the machine may take it before the child binds: a parallel test's
// httptest server once did, and the child's readiness probe was answered by
// the wrong server (404 on the function's route). Below the range only
// another caller of Port can collide, one chance in thousands, and a caller
// that sees its child exit picks again.
func Port() (int, error) {
	lo := ephemeralLow()
	const from = 10000
	if lo <= from+1000 {
		// An unusual range: fall back to what the kernel hands out.
		return kernelPort()
	}
	for range 200 {
		p := from + rand.IntN(lo-from)
		ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	return 0, errors.New("loopback: no free port below the ephemeral range after 200 tries")
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default, 32768, where /proc does not say).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 32768
}

func kernelPort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("loopback: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// PeakRSS is a process's high-water resident set (VmHWM) in MiB, or -1
// when it cannot be read (the process is gone, or this is not Linux).
func PeakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return -1
			}
			return float64(kb) / 1024
		}
	}
	return -1
}

// CPUBusy is the machine's CPU time spent busy and in all since boot, in
// clock ticks (/proc/stat's first line; idle and iowait are not busy). Two
// readings give the share of the machine a benchmark used: whether it ran
// out of CPU. Both are 0 when /proc/stat cannot be read.
func CPUBusy() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, f := range fields[1:] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0
		}
		// guest and guest_nice (the 9th and 10th) are counted in user already.
		if i >= 8 {
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// Hung is a listener that accepts connections and never answers, as a
// server that hangs does (a collector, an API): what a client's bounds are
// tested against. It stops, closing what it took, when the test ends.
type Hung struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// NewHung listens on a free loopback port.
func NewHung(tb testing.TB) *Hung {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h := &Hung{Listener: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.conns {
			c.Close()
		}
	})
	return h
}

// Accepted is how many connections it has taken.
func (h *Hung) Accepted() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.conns) }
