package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The audit finds a leaked value anywhere in any log, and passes clean logs.
func TestAudit(t *testing.T) {
	token := "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2dyYXBoIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
	secret := "Xq8~devstack-client-secret-9f3a"
	for _, c := range []struct {
		name string
		log  string
		want int
	}{
		{"clean", `{"msg":"token acquired","tenant":"t"}` + "\n", 0},
		{"token in a JSON log line", `{"msg":"request","authorization":"Bearer ` + token + `"}`, 1},
		{"secret at the very end", "client_secret=" + secret, 1},
		{"both", token + " " + secret, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "issued-1.txt"), []byte(token+"\n"+secret+"\nshort\n"), 0o600)
			os.WriteFile(filepath.Join(dir, "logs-1.txt"), []byte(c.log), 0o600)
			out, _ := os.Create(filepath.Join(t.TempDir(), "out"))
			defer out.Close()
			n, err := audit(dir, out)
			if err != nil || n != c.want {
				t.Fatalf("found %d (%v), want %d", n, err, c.want)
			}
		})
	}
	if _, err := audit(t.TempDir(), os.Stdout); err == nil {
		t.Fatal("an empty audit passes")
	}
}
