package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// readmeBlocks returns the README's fenced blocks that follow a
// "<!-- readme-test: name -->" line, by name: what a newcomer is told to
// run, and what they are told they will see.
func readmeBlocks(t *testing.T, root string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]string{}
	name, in := "", false
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "<!-- readme-test: "):
			name = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- readme-test: "), " -->")
		case name != "" && !in && strings.HasPrefix(line, "```"):
			in = true
			blocks[name] = []string{}
		case in && line == "```":
			in, name = false, ""
		case in:
			blocks[name] = append(blocks[name], line)
		}
	}
	for _, want := range []string{"run", "run-output", "serve", "serve-commands"} {
		if len(blocks[want]) == 0 {
			t.Fatalf("README.md has no block marked readme-test: %s", want)
		}
	}
	return blocks
}

var digits = regexp.MustCompile(`[0-9]+`)

// matches says whether the output holds the README's sample lines in
// order. Numbers, ports and times differ from run to run, so digits
// compare as digits; a sample line ending in "…" is a line cut short.
func matches(sample []string, out string) (missing string) {
	lines := strings.Split(digits.ReplaceAllString(out, "0"), "\n")
	i := 0
	for _, s := range sample {
		if strings.TrimSpace(s) == "" {
			continue
		}
		s = digits.ReplaceAllString(s, "0")
		prefix, cut := strings.CutSuffix(s, "…")
		for ; i < len(lines); i++ {
			if lines[i] == s || cut && strings.HasPrefix(lines[i], prefix) {
				break
			}
		}
		if i == len(lines) {
			return s
		}
		i++
	}
	return ""
}

// The README's quick start, run as printed from the repository's root:
// `make run` ends by itself, with what the README says it prints.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole product: make test runs it")
	}
	root := emulators.RepoRoot(t)
	blocks := readmeBlocks(t, root)
	var out bytes.Buffer
	for _, command := range blocks["run"] {
		cmd := exec.Command("bash", "-c", command)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", command, err, out.String())
		}
	}
	if m := matches(blocks["run-output"], out.String()); m != "" {
		t.Errorf("make run did not print the README's line %q (digits as 0); it printed:\n%s", m, out.String())
	}
}

// The README's -serve steps, as printed: make run RUN_ARGS=-serve keeps
// running and prints the README's commands; run from another shell they
// answer as the README says; Ctrl-C stops everything cleanly.
func TestReadmeServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole product: make test runs it")
	}
	root := emulators.RepoRoot(t)
	blocks := readmeBlocks(t, root)
	if len(blocks["serve"]) != 1 {
		t.Fatalf("the README's serve block is one command, not %q", blocks["serve"])
	}
	os.Remove(filepath.Join(root, ".local", serveFile)) // a secret of this run, not an earlier one
	serve := exec.Command("bash", "-c", blocks["serve"][0])
	serve.Dir = root
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches make and what it started
	pr, pw, _ := os.Pipe()
	serve.Stdout, serve.Stderr = pw, pw
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	exited := make(chan error, 1)
	var printed devstack.LogBuffer // written by the reader, read by the test
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			fmt.Fprintln(&printed, sc.Text())
			if !signalled && strings.Contains(sc.Text(), "Ctrl-C to stop") {
				signalled = true
				ready <- true
			}
		}
		if !signalled {
			ready <- false
		}
		exited <- serve.Wait()
	}()
	defer syscall.Kill(-serve.Process.Pid, syscall.SIGKILL)
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("make run RUN_ARGS=-serve ended before serving:\n%s", printed.String())
		}
	case <-time.After(10 * time.Minute):
		t.Fatalf("make run RUN_ARGS=-serve not serving after 10 minutes:\n%s", printed.String())
	}
	got := printed.String()
	want := "  " + strings.Join(blocks["serve-commands"], "\n  ") + "\n"
	if !strings.Contains(got, want) {
		t.Errorf("-serve does not print the README's commands:\n%s\nit printed:\n%s", want, got)
	}
	fi, err := os.Stat(filepath.Join(root, ".local", serveFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v: want mode 0600", serveFile, err, fi.Mode().Perm())
	}

	script := exec.Command("bash", "-e", "-c", strings.Join(blocks["serve-commands"], "\n"))
	script.Dir = root
	var answers, errs bytes.Buffer
	script.Stdout, script.Stderr = &answers, &errs
	if err := script.Run(); err != nil {
		t.Fatalf("the README's commands: %v\n%s%s", err, answers.String(), errs.String())
	}
	lines := strings.Split(strings.TrimSuffix(answers.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want three answers (hunting, export, Jira), got %d:\n%s", len(lines), answers.String())
	}
	var hunt struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &hunt); err != nil || len(hunt.Results) == 0 {
		t.Errorf("hunting answered %.300s (%v): want rows", lines[0], err)
	}
	if lines[1] != "202" {
		t.Errorf("export now answered %q, want 202", lines[1])
	}
	var jira struct {
		Status  string   `json:"status"`
		Updated []string `json:"updated"`
	}
	if err := json.Unmarshal([]byte(lines[2]), &jira); err != nil || jira.Status != "applied" || len(jira.Updated) == 0 || jira.Updated[0] != "status" {
		t.Errorf("the Jira delivery answered %s (%v): want applied, the status updated", lines[2], err)
	}
	env, _ := os.ReadFile(filepath.Join(root, ".local", serveFile))
	for line := range strings.Lines(string(env)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export WEBHOOK_SECRET_JIRA="); ok && strings.Contains(got+answers.String(), v) {
			t.Error("the webhook secret was printed")
		}
	}

	// Ctrl-C: the terminal interrupts the whole group. make dies of the
	// signal, as it does in a terminal; what it started (run, the
	// devstack, the host, the handler) stops, and nothing is left behind.
	syscall.Kill(-serve.Process.Pid, syscall.SIGINT)
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT) {
			t.Errorf("after Ctrl-C: %v\n%s", err, printed.String())
		}
	case <-time.After(time.Minute):
		t.Errorf("still running a minute after Ctrl-C:\n%s", printed.String())
	}
	for deadline := time.Now().Add(30 * time.Second); syscall.Kill(-serve.Process.Pid, 0) == nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("processes of make run RUN_ARGS=-serve still run 30 s after Ctrl-C")
			break
		}
	}
}

// The README's sample output matches what was printed, in order, digits as
// digits and "…" as a cut; anything else is a mismatch.
func TestMatches(t *testing.T) {
	out := "a 12 b\nnoise\nthe sink holds 81 versions, e.g. x/1.json\nz"
	for _, c := range []struct {
		sample  []string
		missing string
	}{
		{[]string{"a 3 b", "", "the sink holds 7 versions, e.g. …"}, ""},
		{[]string{"a 3 b", "z"}, ""},
		{[]string{"z", "a 3 b"}, "a 0 b"},                                    // out of order
		{[]string{"the sink holds 7 versions"}, "the sink holds 0 versions"}, // a cut not marked
		{[]string{"a 3 c"}, "a 0 c"},
	} {
		if got := matches(c.sample, out); got != c.missing {
			t.Errorf("matches(%q) = %q, want %q", c.sample, got, c.missing)
		}
	}
}

// A sink or layout make run does not have is refused before anything
// starts, naming what to use.
func TestCheckSink(t *testing.T) {
	for _, c := range []struct{ sink, layout, err string }{
		{"file", "versions", ""},
		{"s3", "batches", ""},
		{"splunk", "versions", ""},
		{"splunk", "batches", "LAYOUT=batches writes objects, and SINK=splunk is a SIEM, which takes rows: use SINK=file, blob or s3 with it"},
		{"logs", "batches", "LAYOUT=batches writes objects, and SINK=logs is a SIEM, which takes rows: use SINK=file, blob or s3 with it"},
		{"nope", "versions", "SINK=nope: use file, blob, s3, logs or splunk"},
		{"file", "rows", "LAYOUT=rows: use versions (one object per incident version) or batches (one compressed object per batch)"},
	} {
		err := checkSink(c.sink, c.layout)
		if got := fmt.Sprint(err); err == nil && c.err != "" || err != nil && got != c.err {
			t.Errorf("checkSink(%s, %s) = %v, want %q", c.sink, c.layout, err, c.err)
		}
	}
}
