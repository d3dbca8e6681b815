package huntingquery

import (
	"regexp"
	"strconv"
	"testing"
	"testing/fstest"
	"time"
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

// The timespan and GUID checks written by hand accept what their regexps did.
func TestShortTimespanAndGUIDAsRegexp(t *testing.T) {
	timespanRe := regexp.MustCompile(`^([0-9]{1,6})(d|h|m|s)$`)
	for _, s := range []string{"1d", "7d", "12h", "30m", "90s", "999999s", "0d", "1234567s", "d", "1", "", "1w", "-1d", "+1d", "1D",
		" 1d", "1.5h", "\u0661d", "00001h", "1dd", "d1"} {
		n, unit, ok := shortTimespan(s)
		m := timespanRe.FindStringSubmatch(s)
		if ok != (m != nil) {
			t.Errorf("%q: %v, regexp %v", s, ok, m != nil)
			continue
		}
		if ok {
			want, _ := strconv.Atoi(m[1])
			wantUnit := map[string]time.Duration{"d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second}[m[2]]
			if n != want || unit != wantUnit {
				t.Errorf("%q: %d %v, want %d %v", s, n, unit, want, wantUnit)
			}
		}
	}
	guidRe := regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	for _, s := range []string{"2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84", "2F6B9C3E-8A41-4D7E-B5C2-9E0F1A7D3C84", "2f6b9c3e8a414d7eb5c29e0f1a7d3c84",
		"2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c8", "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84x", "gf6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84",
		"2f6b9c3e_8a41-4d7e-b5c2-9e0f1a7d3c84", "", "------------------------------------"} {
		if got, want := isGUID(s), guidRe.MatchString(s); got != want {
			t.Errorf("%q: %v, regexp %v", s, got, want)
		}
	}
}
