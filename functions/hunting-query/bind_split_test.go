package huntingquery

import (
	"testing"
	"testing/fstest"
)

// Bind's precomputed split renders what one regexp pass over the text did.
func TestBindAsRegexpReplace(t *testing.T) {
	cat, err := BuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	extra, err := LoadCatalog(fstest.MapFS{
		"edges.kql": {Data: []byte("// @description edges\n// @param a string = x A.\n// @param b int = 1 B.\n{a}{b} | where X == {a} and {b}{ {a} } {}{1x} {a}")},
		"none.kql":  {Data: []byte("// @description none\nT | take 1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range extra {
		cat[name] = q
	}
	for name, q := range cat {
		values := map[string][]string{}
		lits := map[string]string{}
		for _, p := range q.Params {
			v := map[string]string{"string": `x"y`, "int": "7", "datetime": "2026-11-01T00:00:00Z", "timespan": "2h",
				"guid": "2F6B9C3E-8A41-4D7E-B5C2-9E0F1A7D3C84", "list": "a,b"}[p.Type]
			values[p.Name] = []string{v}
			lits[p.Name], _ = literal(p, []string{v})
		}
		want := placeholder().ReplaceAllStringFunc(q.text, func(m string) string { return lits[m[1:len(m)-1]] })
		got, err := q.Bind(values)
		if err != nil || got != want {
			t.Errorf("%s: %v\n%s\nwant\n%s", name, err, got, want)
		}
		// A Query whose split was not made (built by hand) binds alike.
		bare := *q
		bare.parts = nil
		if got, _ := bare.Bind(values); got != want {
			t.Errorf("%s without parts: %s", name, got)
		}
	}
}
