// Command bench is `make bench`: it runs every benchmark of the module in
// one invocation (baselines beside what they are compared with) and writes
// docs/benchmarks.md, each figure beside the goal its issue set, with SVG
// charts of throughput and memory against size.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	out := flag.String("out", "docs", "where benchmarks.md and its charts go")
	input := flag.String("input", "", "read saved `go test -bench` output instead of running the benchmarks")
	pkgs := flag.String("pkgs", "./...", "packages to benchmark")
	flag.Parse()
	var raw []byte
	if *input != "" {
		b, err := os.ReadFile(*input)
		if err != nil {
			fail(err)
		}
		raw = b
	} else {
		var buf bytes.Buffer
		cmd := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-timeout", "60m", *pkgs)
		cmd.Stdout = io.MultiWriter(os.Stdout, &buf)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fail(fmt.Errorf("go test -bench: %w", err))
		}
		raw = buf.Bytes()
		os.MkdirAll(filepath.Join(*out, "benchmarks"), 0o755)
		os.WriteFile(filepath.Join(*out, "benchmarks", "raw.txt"), raw, 0o644)
	}
	res := Parse(raw)
	if len(res.Values) == 0 {
		fail(fmt.Errorf("no benchmark results in the output"))
	}
	if err := Write(*out, res, machine(res.CPU), time.Now()); err != nil {
		fail(err)
	}
	fmt.Printf("wrote %s\n", filepath.Join(*out, "benchmarks.md"))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// Results are benchmark name (without the -GOMAXPROCS suffix) → unit → value.
type Results struct {
	Values map[string]map[string]float64
	CPU    string
}

// Get returns a value and whether the benchmark reported it.
func (r Results) Get(name, unit string) (float64, bool) {
	v, ok := r.Values[name][unit]
	return v, ok
}

// Parse reads `go test -bench` output.
func Parse(raw []byte) Results {
	r := Results{Values: map[string]map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if cpu, ok := strings.CutPrefix(line, "cpu: "); ok && r.CPU == "" {
			r.CPU = strings.TrimSpace(cpu)
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			m[f[i+1]] = v
		}
		r.Values[name] = m
	}
	return r
}

func machine(cpu string) string {
	if cpu == "" {
		cpu = "unknown CPU"
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", kernel " + strings.TrimSpace(string(b))
	}
	// The export benchmarks' file creation depends on it (see the report).
	disk := ""
	tasks, _ := filepath.Glob("/sys/fs/ext4/*/journal_task")
	for _, t := range tasks {
		if b, err := os.ReadFile(t); err == nil && strings.TrimSpace(string(b)) == "<none>" {
			disk = ", ext4 mounted without a journal"
		}
	}
	return fmt.Sprintf("%s, %d logical CPUs, %s/%s%s%s, %s", cpu, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, kernel, disk, runtime.Version())
}
