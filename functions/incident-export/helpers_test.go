package incidentexport_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	incidentexport "github.com/defender-functions/defender-functions/functions/incident-export"
	"github.com/defender-functions/defender-functions/internal/devstack"
)

// exported reads a file sink: (incident, lastUpdate) → how many objects hold it.
func exported(t testing.TB, dir, tenant string) map[string]int {
	t.Helper()
	got := map[string]int{}
	root := filepath.Join(dir, tenant)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasSuffix(p, ".tmp") || strings.HasSuffix(p, ".ndjson.gz") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var in struct {
			ID                 string            `json:"id"`
			IncidentID         json.Number       `json:"incidentId"`
			LastUpdateDateTime time.Time         `json:"lastUpdateDateTime"`
			LastUpdateTime     time.Time         `json:"lastUpdateTime"`
			Alerts             []json.RawMessage `json:"alerts"`
		}
		if err := json.Unmarshal(b, &in); err != nil {
			t.Fatalf("%s is not one JSON incident: %v", p, err)
		}
		id, lu := in.ID, in.LastUpdateDateTime
		if id == "" {
			id, lu = string(in.IncidentID), in.LastUpdateTime
		}
		if len(in.Alerts) == 0 {
			t.Fatalf("%s has no alerts", p)
		}
		// The name is derived from the content.
		want := id + "_" + lu.UTC().Format("20060102T150405.0000000Z") + ".json"
		if filepath.Base(p) != want {
			t.Fatalf("%s holds %s", p, want)
		}
		got[id+"@"+lu.UTC().Format(time.RFC3339Nano)]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// missingCurrent counts the incidents updated since `since` whose current
// version is not among got.
func missingCurrent(s *devstack.Stack, got map[string]int, tenantID string, since time.Time) int {
	missing := 0
	for _, v := range s.Incidents(tenantID) {
		if v.LastUpdate.Before(since) {
			continue
		}
		if got[strconv.FormatInt(v.ID, 10)+"@"+v.LastUpdate.UTC().Format(time.RFC3339Nano)] != 1 {
			missing++
		}
	}
	return missing
}

// verify proves the sink against the devstack: no version twice, nothing
// the devstack did not produce, and the current version of every incident
// updated since `since`.
func verify(t testing.TB, s *devstack.Stack, dir, tenantName, tenantID string, since time.Time) int {
	t.Helper()
	got := exported(t, dir, tenantName)
	produced := map[string]bool{}
	for id, versions := range s.History(tenantID) {
		for _, v := range versions {
			produced[strconv.FormatInt(id, 10)+"@"+v.UTC().Format(time.RFC3339Nano)] = true
		}
	}
	for k, n := range got {
		if n != 1 {
			t.Fatalf("version %s exported %d times", k, n)
		}
		if !produced[k] {
			t.Fatalf("version %s was never produced by the devstack", k)
		}
	}
	missing := missingCurrent(s, got, tenantID, since)
	if missing > 0 {
		// Each missing incident's history beside what the sink holds of
		// it: which version was lost, and what was written instead.
		history := s.History(tenantID)
		var lines []string
		for _, v := range s.Incidents(tenantID) {
			id := strconv.FormatInt(v.ID, 10)
			if v.LastUpdate.Before(since) || got[id+"@"+v.LastUpdate.UTC().Format(time.RFC3339Nano)] == 1 || len(lines) == 5 {
				continue
			}
			var written []string
			for k := range got {
				if strings.HasPrefix(k, id+"@") {
					written = append(written, strings.TrimPrefix(k, id+"@"))
				}
			}
			sort.Strings(written)
			lines = append(lines, fmt.Sprintf("incident %s: current %s, history %v, in the sink %v", id, v.LastUpdate.UTC().Format(time.RFC3339Nano), history[v.ID], written))
		}
		t.Fatalf("%d incidents' current versions are missing from the sink:\n%s", missing, strings.Join(lines, "\n"))
	}
	return len(got)
}

// unbatch reads a batched sink's objects: every .ndjson.gz beside its
// manifest (the count and SHA-256 agree), each line a version, no version
// in two objects or twice in one. It writes each version to a file named
// as the per-version layout names it, for verify, and returns the directory
// and how many batch objects it read.
func unbatch(t testing.TB, root string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	where := map[string]string{} // version → the object holding it
	objects := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() || !strings.HasSuffix(p, ".ndjson.gz") {
			return nil
		}
		objects++
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mb, err := os.ReadFile(filepath.Join(root, "_manifests", strings.TrimSuffix(rel, ".ndjson.gz")+".json"))
		if err != nil {
			t.Fatalf("%s has no manifest: %v", rel, err)
		}
		var m incidentexport.Manifest
		if err := json.Unmarshal(mb, &m); err != nil {
			t.Fatalf("%s's manifest: %v", rel, err)
		}
		sum := sha256.Sum256(raw)
		if m.Object != filepath.ToSlash(rel) || m.Bytes != int64(len(raw)) || m.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("%s's manifest does not describe it: %+v", rel, m)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s is not gzip: %v", rel, err)
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, 16<<20)
		lines := 0
		for sc.Scan() {
			lines++
			var in struct {
				ID                 string      `json:"id"`
				IncidentID         json.Number `json:"incidentId"`
				LastUpdateDateTime time.Time   `json:"lastUpdateDateTime"`
				LastUpdateTime     time.Time   `json:"lastUpdateTime"`
			}
			if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
				t.Fatalf("%s line %d is not one JSON incident: %v", rel, lines, err)
			}
			id, lu := in.ID, in.LastUpdateDateTime
			if id == "" {
				id, lu = string(in.IncidentID), in.LastUpdateTime
			}
			if lu.Before(m.First) || lu.After(m.Last) {
				t.Fatalf("%s holds %s@%s, outside its manifest's %s..%s", rel, id, lu, m.First, m.Last)
			}
			name := filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(rel)))), lu.UTC().Format("2006/01/02"), id+"_"+lu.UTC().Format("20060102T150405.0000000Z")+".json")
			if prev, ok := where[name]; ok {
				t.Fatalf("version %s@%s is in %s and in %s", id, lu.UTC().Format(time.RFC3339Nano), prev, rel)
			}
			where[name] = rel
			f := filepath.Join(dir, name)
			os.MkdirAll(filepath.Dir(f), 0o755)
			os.WriteFile(f, sc.Bytes(), 0o644)
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if lines != m.Versions {
			t.Fatalf("%s holds %d versions, its manifest says %d", rel, lines, m.Versions)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir, objects
}
