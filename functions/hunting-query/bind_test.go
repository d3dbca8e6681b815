package huntingquery

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestBuiltinCatalog(t *testing.T) {
	c, err := BuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	if len(c) < 12 {
		t.Fatalf("%d queries shipped", len(c))
	}
	for name, q := range c {
		// Every shipped query binds with its defaults and sample values.
		values := map[string][]string{}
		for _, p := range q.Params {
			if p.Required {
				values[p.Name] = []string{map[string]string{"string": "x", "int": "1", "datetime": "2026-11-01T00:00:00Z",
					"timespan": "1d", "guid": "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84", "list": "10.0.0.1,10.0.0.2"}[p.Type]}
			}
		}
		if _, err := q.Bind(values); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// No value of any type can change a query's structure: each is either
// refused or bound as one literal of its type.
func TestInjectionAttempts(t *testing.T) {
	cat, err := LoadCatalog(fstest.MapFS{"q.kql": {Data: []byte(`// @description test
// @param s string A string.
// @param n int = 1 A number.
// @param d datetime = 2026-01-01T00:00:00Z A time.
// @param ts timespan = 1d A span.
// @param g guid = 00000000-0000-0000-0000-000000000000 A GUID.
// @param l list = a A list.
T | where A == {s} and B == {n} and C > {d} and D > ago({ts}) and E == {g} and F in ({l})`)}})
	if err != nil {
		t.Fatal(err)
	}
	q := cat["q"]
	for _, tc := range []struct {
		param, value string
		ok           bool
		bound        string
	}{
		{"s", `x" or 1==1 or A=="`, true, `"x\" or 1==1 or A==\""`},
		{"s", `x\" | take 1 //`, true, `"x\\\" | take 1 //"`},
		{"s", "a\n| project Secret", false, ""},
		{"s", strings.Repeat("a", 1025), false, ""},
		{"s", "{n}", true, `"{n}"`},
		{"s", "a\u2028| project Secret", false, ""},
		{"s", "a\u2029b", false, ""},
		{"s", "a\u0085b", false, ""},
		{"s", "café ünïcode", true, `"café ünïcode"`},
		{"n", "1 or 1==1", false, ""},
		{"n", "1) | take 1 //", false, ""},
		{"n", "-42", true, "-42"},
		{"d", `2026-01-01T00:00:00Z) or (1==1`, false, ""},
		{"d", "2026-01-02T03:04:05+02:00", true, "datetime(2026-01-02T01:04:05Z)"},
		{"ts", "1d) or true or ago(1d", false, ""},
		{"ts", "31d", false, ""},
		{"ts", "90m", true, "90m"},
		{"g", `00000000-0000-0000-0000-000000000000" or "1"=="1`, false, ""},
		{"l", `a", "b") or (1==1`, true, `"a\"", "\"b\") or (1==1"`},
		{"l", "a,b", true, `"a", "b"`},
	} {
		values := map[string][]string{"s": {"x"}}
		values[tc.param] = []string{tc.value}
		got, err := q.Bind(values)
		if (err == nil) != tc.ok {
			t.Errorf("%s=%q: err %v", tc.param, tc.value, err)
			continue
		}
		if tc.ok && !strings.Contains(got, tc.bound) {
			t.Errorf("%s=%q bound as\n%s\nwant %s", tc.param, tc.value, got, tc.bound)
		}
	}
	if _, err := q.Bind(map[string][]string{"nope": {"1"}}); err == nil {
		t.Error("an undeclared parameter was accepted")
	}
	if _, err := q.Bind(nil); err == nil || !strings.Contains(err.Error(), `"s"`) {
		t.Errorf("missing required: %v", err)
	}
	if _, err := LoadCatalog(fstest.MapFS{"bad.kql": {Data: []byte("// @description x\nT | where A == {undeclared}")}}); err == nil {
		t.Error("an undeclared placeholder was accepted")
	}
}

// A placeholder inside a string literal or a comment is refused when the
// catalog loads; one in code, beside literals and comments, is not.
func TestPlaceholderOutsideCode(t *testing.T) {
	for _, tc := range []struct {
		body string
		want string // "" loads
	}{
		{`T | where FileName == "{file}"`, "placeholder {file} is inside a string literal"},
		{`T | where FileName == '{file}'`, "inside a string literal"},
		{`T | where FileName == @"C:\{file}"`, "inside a string literal"},
		{`T | where FileName == h"{file}"`, "inside a string literal"},
		{"T | where FileName == ```\n{file}\n```", "inside a string literal"},
		{"T // keep {file} out\n| where FileName =~ {file}", "placeholder {file} is inside a comment"},
		{`T | where FileName =~ {file}`, ""},
		{`T | where A == "x\"y" and FileName =~ {file} and B == @"C:\"`, ""},
		{`T | where A == "//" and FileName =~ {file}`, ""},
		{`T | where hash == {file}`, ""},
		{`T | extend h = {file}`, ""},
	} {
		_, err := LoadCatalog(fstest.MapFS{"q.kql": {Data: []byte("// @description x\n// @param file string A file.\n" + tc.body)}})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want %q", tc.body, err, tc.want)
		}
	}
}
