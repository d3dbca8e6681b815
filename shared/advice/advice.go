// Package advice is the one table of the errors a user of the functions can
// meet, what each means and what to do about it. The credentials and
// defender packages put its text in their errors, doctor prints it under
// each failure, and docs/TROUBLESHOOTING.md is generated from it, so the
// three cannot say different things.
package advice

//go:generate go test -run TestTroubleshootingDoc -update .

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// Key names an entry of the table.
type Key string

// Area is a section of the troubleshooting page.
type Area struct {
	Title string
	Intro string // markdown
}

// Entry is one error a user can meet. Means, Tag and Do are templates:
// {name} is a placeholder the caller fills from its settings or from the
// error (see Placeholders).
type Entry struct {
	Key  Key
	Area *Area
	// Error is what the user meets, as the page's heading: a code, a
	// status, a doctor check.
	Error string
	// Means says what happened. With a Tag it is the message's first part.
	Means string
	// Tag, when set, puts the meaning and the tag in the text ahead of Do,
	// "Means (Tag): Do": Entra ID's errors, whose own description rarely
	// says what to check. Without one, the error that carries the text
	// already says what happened, and the text is Do alone.
	Tag string
	// Do is what to do.
	Do string
	// More is said on the page only (markdown): background that is too
	// long for a log line.
	More string
}

// Vars fill an entry's placeholders.
type Vars map[string]string

// The table's index and patterns are built on first use: every start of
// the handler and the bootstrap links this package, few print advice.
var placeholderRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\{([a-z_]+)\}`) })

var byKey = sync.OnceValue(func() map[Key]*Entry {
	m := make(map[Key]*Entry, len(Table))
	for i := range Table {
		m[Table[i].Key] = &Table[i]
	}
	return m
})

// Lookup returns the entry of key k.
func Lookup(k Key) (*Entry, bool) {
	e, ok := byKey()[k]
	return e, ok
}

// Say is entry k's text with vars filled in: a placeholder without a value
// reads <name>, as on the page. k must be in the table (a test checks that
// every Key constant is); an unknown key is a programming error.
func Say(k Key, vars Vars) string {
	e, ok := byKey()[k]
	if !ok {
		panic(fmt.Sprintf("advice: no entry %q", k))
	}
	return e.Text(vars)
}

// Text is the entry's text with vars filled in.
func (e *Entry) Text(vars Vars) string {
	do := fill(e.Do, vars)
	if e.Tag == "" {
		return do
	}
	return fill(e.Means, vars) + " (" + fill(e.Tag, vars) + "): " + do
}

func fill(tmpl string, vars Vars) string {
	return placeholderRe().ReplaceAllStringFunc(tmpl, func(p string) string {
		name := p[1 : len(p)-1]
		if v, ok := vars[name]; ok {
			return v
		}
		return "<" + name + ">"
	})
}

// placeholders lists, in order of first use, the placeholders of the
// entry's templates.
func (e *Entry) placeholders() []string {
	var names []string
	seen := map[string]bool{}
	for _, t := range []string{e.Means, e.Tag, e.Do} {
		for _, m := range placeholderRe().FindAllStringSubmatch(t, -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				names = append(names, m[1])
			}
		}
	}
	return names
}

// Markdown is docs/TROUBLESHOOTING.md: the table by area, each entry what it
// means and what to do, the placeholders said in words.
func Markdown() []byte {
	var b strings.Builder
	b.WriteString("# Troubleshooting\n\n")
	b.WriteString("<!-- Generated from shared/advice/table.go by `go generate ./shared/advice`: edit the table, not this page. A test fails while they differ. -->\n\n")
	b.WriteString("Every error below is one the functions or `doctor` can print, with what it means and what to do. The text under\n" +
		"**What to do** is the advice as the error or doctor's `fix:` line prints it (an Entra ID error puts what it means\n" +
		"and its code ahead of it); a word in angle brackets is filled in from the deployment's settings or the error when it\n" +
		"is printed, or is yours to fill in. Run `doctor` (README) first: it checks a deployment in order and prints these\n" +
		"fixes under its failures.\n\n")
	for _, a := range Areas {
		fmt.Fprintf(&b, "- [%s](#%s)\n", a.Title, anchor(a.Title))
	}
	for _, a := range Areas {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n", a.Title, a.Intro)
		for i := range Table {
			e := &Table[i]
			if e.Area != a {
				continue
			}
			fmt.Fprintf(&b, "\n### %s\n\n", e.Error)
			fmt.Fprintf(&b, "**What it means:** %s.\n\n", escape(upperFirst(fill(e.Means, nil))))
			fmt.Fprintf(&b, "**What to do:** %s\n", escape(fill(e.Do, nil)))
			if names := e.placeholders(); len(names) > 0 {
				b.WriteString("\n")
				for _, n := range names {
					fmt.Fprintf(&b, "- `<%s>`: %s\n", n, Placeholders[n])
				}
			}
			if e.More != "" {
				fmt.Fprintf(&b, "\n%s\n", e.More)
			}
		}
	}
	return []byte(b.String())
}

var bracketed = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`<[^<>` + "`" + `]+>`) })

// escape keeps the advice's text literal in markdown: a word in angle
// brackets, which would be read as HTML, becomes code; asterisks and
// brackets, which would be read as emphasis and links, are escaped.
func escape(s string) string {
	s = strings.NewReplacer(`\`, `\\`, "*", `\*`, "[", `\[`).Replace(s)
	return bracketed().ReplaceAllString(s, "`$0`")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// anchor is GitHub's anchor for a heading.
func anchor(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
