// Command audit is the suite-wide secrets audit of make test: it searches
// every log the test suite captured (DEVSTACK_AUDIT_DIR: the go test output,
// the logs of the code under test, its processes' output) for every secret,
// key and token the devstacks issued, and fails on any hit. It prints only
// counts and file names, never a value.
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// probe is the length of the prefix each issued value is looked up by.
const probe = 16

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: audit <DEVSTACK_AUDIT_DIR>")
		os.Exit(2)
	}
	n, err := audit(os.Args[1], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "audit:", err)
		os.Exit(1)
	}
	if n > 0 {
		os.Exit(1)
	}
}

// audit returns how many issued values appear in the logs.
func audit(dir string, out *os.File) (int, error) {
	issuedFiles, _ := filepath.Glob(filepath.Join(dir, "issued-*.txt"))
	byPrefix := map[string][]string{}
	values := 0
	for _, f := range issuedFiles {
		file, err := os.Open(f)
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(file)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			v := sc.Text()
			if len(v) < probe {
				continue // too short to be a secret or a token
			}
			p := v[:probe]
			if !slices.Contains(byPrefix[p], v) {
				byPrefix[p] = append(byPrefix[p], v)
				values++
			}
		}
		file.Close()
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*"))
	var searched int64
	hits := map[string]int{}
	found := map[string]bool{}
	nlogs := 0
	for _, f := range logs {
		if strings.HasPrefix(filepath.Base(f), "issued-") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		nlogs++
		searched += int64(len(b))
		s := string(b)
		for i := 0; i+probe <= len(s); i++ {
			cands, ok := byPrefix[s[i:i+probe]]
			if !ok {
				continue
			}
			for _, v := range cands {
				if strings.HasPrefix(s[i:], v) && !found[v] {
					found[v] = true
					hits[filepath.Base(f)]++
				}
			}
		}
	}
	if values == 0 || nlogs == 0 || searched == 0 {
		return 0, fmt.Errorf("nothing to audit in %s (%d issued values, %d logs): was DEVSTACK_AUDIT_DIR set for the tests?", dir, values, nlogs)
	}
	fmt.Fprintf(out, "secrets audit: %d secrets, keys and tokens issued by the devstacks; %d logs, %.1f MiB searched; %d found\n",
		values, nlogs, float64(searched)/(1<<20), len(found))
	for f, n := range hits {
		fmt.Fprintf(out, "  FAIL: %s holds %d issued values\n", f, n)
	}
	return len(found), nil
}
