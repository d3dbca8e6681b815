package advice

import (
	"bytes"
	"errors"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/defender-functions/defender-functions/shared/config"
)

var update = flag.Bool("update", false, "rewrite docs/TROUBLESHOOTING.md from the table")

const doc = "../../docs/TROUBLESHOOTING.md"

// The page is the table: a change to either without the other fails here.
// go generate ./shared/advice (or this test with -update) rewrites it.
func TestTroubleshootingDoc(t *testing.T) {
	want := Markdown()
	if *update {
		if err := os.WriteFile(doc, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatalf("%v: run go generate ./shared/advice", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
		for i := range max(len(gl), len(wl)) {
			var g, w []byte
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if !bytes.Equal(g, w) {
				t.Fatalf("docs/TROUBLESHOOTING.md differs from the table at line %d:\n have %q\n want %q\nrun go generate ./shared/advice", i+1, g, w)
			}
		}
	}
}

// Every Key constant has exactly one entry, every entry a key, an area of
// the page, the page's fields, and words for each of its placeholders.
func TestTable(t *testing.T) {
	keys := keyConstants(t)
	seen := map[Key]int{}
	for _, e := range Table {
		seen[e.Key]++
	}
	for _, k := range keys {
		if seen[k] != 1 {
			t.Errorf("key %q has %d entries, want 1", k, seen[k])
		}
	}
	if len(Table) != len(keys) {
		t.Errorf("%d entries for %d keys", len(Table), len(keys))
	}
	areas := map[*Area]bool{}
	for _, a := range Areas {
		areas[a] = true
	}
	used := map[*Area]bool{}
	for _, e := range Table {
		if !areas[e.Area] {
			t.Errorf("%s: area not on the page", e.Key)
		}
		used[e.Area] = true
		if e.Error == "" || e.Means == "" || e.Do == "" {
			t.Errorf("%s: Error, Means and Do are all said on the page", e.Key)
		}
		for _, p := range e.placeholders() {
			if Placeholders[p] == "" {
				t.Errorf("%s: placeholder {%s} has no words in Placeholders", e.Key, p)
			}
		}
	}
	for _, a := range Areas {
		if !used[a] {
			t.Errorf("area %q has no entry", a.Title)
		}
	}
}

func TestSay(t *testing.T) {
	if got, want := Say(SecretWrong, Vars{"where": "DEFENDER_CLIENT_SECRET"}),
		"the client secret is wrong (AADSTS7000215): DEFENDER_CLIENT_SECRET must hold a current secret's Value (not its Secret ID) from the app registration's Certificates & secrets page"; got != want {
		t.Errorf("Say = %q, want %q", got, want)
	}
	if got, want := Say(InvalidScope, Vars{"code": "70011"}),
		"the scope is not valid for client credentials (AADSTS70011): it must be the API's resource followed by /.default; check DEFENDER_API_URL"; got != want {
		t.Errorf("Say = %q, want %q", got, want)
	}
	// The API's advice, word for word as APIError carried it before the table.
	for _, c := range []struct {
		k    Key
		v    Vars
		want string
	}{
		{APIForbiddenRoles, Vars{"roles": "SecurityIncident.Read.All or SecurityIncident.ReadWrite.All"},
			"grant the app one of the application permissions SecurityIncident.Read.All or SecurityIncident.ReadWrite.All and have an administrator consent"},
		{APIUnauthorized, nil, "the API rejected the token twice: check that the token's audience matches DEFENDER_API and DEFENDER_API_URL"},
		{APIThrottled, nil, "the API's rate limit was reached"},
	} {
		if got := Say(c.k, c.v); got != c.want {
			t.Errorf("Say(%s) = %q, want %q", c.k, got, c.want)
		}
	}
	// Without a Tag the text is the fix alone; a missing value reads as on the page.
	if got, want := Say(NothingListens, Vars{"addr": "10.0.0.1:443"}), "nothing listens at 10.0.0.1:443: check <setting> and that the service is up"; got != want {
		t.Errorf("Say = %q, want %q", got, want)
	}
}

// config cannot import this package (it imports config), so its problems
// with unresolved Key Vault references carry the table's words through
// config's constants: each of the three places config finds one says the
// entry's text, exactly.
func TestConfigUnresolvedReferences(t *testing.T) {
	const ref = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/)"
	base := []string{config.EnvTenantID, "11111111-2222-4333-8444-555555555555", config.EnvClientID, "66666666-7777-4888-9999-000000000000",
		config.EnvCredential, "env-secret", config.EnvClientSecret, "s3cr3t"}
	for _, c := range []struct {
		set, to string
		want    string
	}{
		{config.EnvTenantID, ref, config.EnvTenantID + " is an unresolved Key Vault reference: " + Say(UnresolvedReference, nil)},
		{config.EnvWebhookSecretPrefix + "JIRA", ref, config.EnvWebhookSecretPrefix + "JIRA is an unresolved Key Vault reference: " + Say(UnresolvedReference, nil)},
		{config.EnvClientSecret, ref, config.EnvClientSecret + " is an unresolved Key Vault reference: " + Say(UnresolvedSecret, nil)},
	} {
		env := map[string]string{}
		for i := 0; i < len(base); i += 2 {
			env[base[i]] = base[i+1]
		}
		env[c.set] = c.to
		_, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		var p config.Problems
		if !errors.As(err, &p) || !slices.Contains(p, c.want) {
			t.Errorf("%s: problems %v, want %q among them", c.set, err, c.want)
		}
	}
}

// keyConstants reads the Key constants declared in table.go.
func keyConstants(t *testing.T) []Key {
	f, err := parser.ParseFile(token.NewFileSet(), "table.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var keys []Key
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Type == nil {
			return true
		}
		if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Key" {
			return true
		}
		for _, v := range vs.Values {
			s, err := strconv.Unquote(v.(*ast.BasicLit).Value)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, Key(s))
		}
		return true
	})
	if len(keys) == 0 {
		t.Fatal("no Key constants found in table.go")
	}
	return keys
}
