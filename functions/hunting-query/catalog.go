// Package huntingquery is the hunting-query function: advanced hunting over
// HTTP for SOAR playbooks, scripts and analyst tools, so they run KQL
// without holding Defender credentials. The safe path is the easy one:
// named catalog queries with typed parameters, bound as KQL literals so no
// value can change a query's structure; ad-hoc KQL only when a setting
// allows it.
package huntingquery

import (
	"bufio"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
)

//go:embed queries/*.kql
var builtin embed.FS

// Param is a declared query parameter.
type Param struct {
	Name        string `json:"name"`
	Type        string `json:"type"` // string, int, datetime, timespan, guid, list
	Default     string `json:"default,omitempty"`
	Required    bool   `json:"required"`
	Description string `json:"description"`
}

// Query is one catalog query.
type Query struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Params      []Param  `json:"parameters"`
	Roles       []string `json:"roles,omitempty"`
	text        string
	// parts is text split at its placeholders once, when it is loaded:
	// Bind then runs no regexp.
	parts []segment
}

// segment is a run of a query's text: KQL as written (param < 0), or the
// placeholder of Params[param].
type segment struct {
	text  string
	param int
}

// Catalog is the set of named queries.
type Catalog map[string]*Query

var (
	paramLine = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^//\s*@param\s+([A-Za-z][A-Za-z0-9_]*)\s+(string|int|datetime|timespan|guid|list)(?:\s*=\s*(\S+))?\s*(.*)$`)
	})
	placeholder = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\{([A-Za-z][A-Za-z0-9_]*)\}`) })
	nameRe      = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`) })
)

// BuiltinCatalog is the catalog shipped with the product.
func BuiltinCatalog() (Catalog, error) {
	sub, _ := fs.Sub(builtin, "queries")
	return LoadCatalog(sub)
}

// LoadCatalog reads every .kql file of fsys. Each file declares its
// description, parameters and allowed roles in // @ comments at its top; a
// placeholder {name} must name a declared parameter.
func LoadCatalog(fsys fs.FS) (Catalog, error) {
	c := Catalog{}
	files, err := fs.Glob(fsys, "*.kql")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		q, err := parseQuery(strings.TrimSuffix(path.Base(f), ".kql"), string(b))
		if err != nil {
			return nil, fmt.Errorf("catalog %s: %w", f, err)
		}
		c[q.Name] = q
	}
	return c, nil
}

func parseQuery(name, src string) (*Query, error) {
	if !nameRe().MatchString(name) {
		return nil, fmt.Errorf("query name %q: use lower-case letters, digits and dashes", name)
	}
	q := &Query{Name: name}
	var body []string
	sc := bufio.NewScanner(strings.NewReader(src))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "// @description "):
			q.Description = strings.TrimSpace(strings.TrimPrefix(trimmed, "// @description "))
		case strings.HasPrefix(trimmed, "// @roles "):
			for _, r := range strings.Split(strings.TrimPrefix(trimmed, "// @roles "), ",") {
				if r = strings.TrimSpace(r); r != "" {
					q.Roles = append(q.Roles, r)
				}
			}
		case strings.HasPrefix(trimmed, "// @param"):
			m := paramLine().FindStringSubmatch(trimmed)
			if m == nil {
				return nil, fmt.Errorf("bad parameter line %q: use // @param <name> <string|int|datetime|timespan|guid|list> [= default] description", trimmed)
			}
			p := Param{Name: m[1], Type: m[2], Default: m[3], Required: m[3] == "", Description: m[4]}
			if p.Default != "" {
				if _, err := literal(p, []string{p.Default}); err != nil {
					return nil, fmt.Errorf("parameter %s: default: %w", p.Name, err)
				}
			}
			q.Params = append(q.Params, p)
		case strings.HasPrefix(trimmed, "// @"):
			return nil, fmt.Errorf("unknown directive %q", trimmed)
		default:
			body = append(body, line)
		}
	}
	q.text = strings.TrimSpace(strings.Join(body, "\n"))
	if q.text == "" || q.Description == "" {
		return nil, fmt.Errorf("a query needs a body and a // @description")
	}
	for _, m := range placeholder().FindAllStringSubmatch(q.text, -1) {
		if q.param(m[1]) == nil {
			return nil, fmt.Errorf("placeholder {%s} is not a declared parameter", m[1])
		}
	}
	if err := placeholdersInCode(q.text); err != nil {
		return nil, err
	}
	sort.Slice(q.Params, func(i, j int) bool { return q.Params[i].Name < q.Params[j].Name })
	q.parts = q.split()
	return q, nil
}

// split cuts the text at each placeholder, as the placeholder regexp finds
// them.
func (q *Query) split() []segment {
	var parts []segment
	last := 0
	for _, m := range placeholder().FindAllStringSubmatchIndex(q.text, -1) {
		if m[0] > last {
			parts = append(parts, segment{text: q.text[last:m[0]], param: -1})
		}
		parts = append(parts, segment{param: slices.IndexFunc(q.Params, func(p Param) bool { return p.Name == q.text[m[2]:m[3]] })})
		last = m[1]
	}
	if last < len(q.text) {
		parts = append(parts, segment{text: q.text[last:], param: -1})
	}
	return parts
}

// placeholdersInCode refuses a placeholder inside a string literal or a
// comment. A value is bound as a whole quoted literal: written inside
// quotes ("{file}"), the literal's own quotes would end the string and the
// rest of the value would be KQL.
func placeholdersInCode(text string) error {
	inside := kqlNonCode(text)
	for _, loc := range placeholder().FindAllStringIndex(text, -1) {
		if what := inside[loc[0]]; what != "" {
			return fmt.Errorf("placeholder %s is inside a %s: write it alone (it is bound as a quoted literal), as in where FileName =~ {file}", text[loc[0]:loc[1]], what)
		}
	}
	return nil
}

// kqlNonCode says, for each byte of a KQL text, whether it lies in a
// string literal ("…", '…', verbatim @"…" and @'…', multi-line ```…```)
// or a // comment: "" for code.
func kqlNonCode(text string) []string {
	out := make([]string, len(text))
	for i := 0; i < len(text); {
		start := i
		var what string
		switch {
		case strings.HasPrefix(text[i:], "//"):
			what = "comment"
			i = len(text)
			if j := strings.IndexByte(text[start:], '\n'); j >= 0 {
				i = start + j
			}
		case strings.HasPrefix(text[i:], "```"):
			what = "string literal"
			i = len(text)
			if j := strings.Index(text[start+3:], "```"); j >= 0 {
				i = start + 3 + j + 3
			}
		case prefixedLiteral(text, i):
			// Verbatim @"…" (no escapes) or obfuscated h"…" literals.
			what = "string literal"
			if text[i] == '@' {
				i = len(text)
				if j := strings.IndexByte(text[start+2:], text[start+1]); j >= 0 {
					i = start + 2 + j + 1
				}
			} else {
				i = endQuoted(text, start+1)
			}
		case text[i] == '"' || text[i] == '\'':
			what = "string literal"
			i = endQuoted(text, start)
		default:
			i++
			continue
		}
		for k := start; k < i; k++ {
			out[k] = what
		}
	}
	return out
}

// prefixedLiteral reports whether a literal with a prefix (@, h or H)
// opens at i: the prefix then a quote, and no identifier before it.
func prefixedLiteral(text string, i int) bool {
	if i+1 >= len(text) || text[i+1] != '"' && text[i+1] != '\'' || !strings.ContainsRune("@hH", rune(text[i])) {
		return false
	}
	if i == 0 {
		return true
	}
	c := text[i-1]
	return !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
}

// endQuoted is the end of the quoted literal that opens at start, with
// backslash escapes; an unterminated one runs to the end.
func endQuoted(text string, start int) int {
	q := text[start]
	for i := start + 1; i < len(text); i++ {
		switch text[i] {
		case '\\':
			i++
		case q:
			return i + 1
		}
	}
	return len(text)
}

func (q *Query) param(name string) *Param {
	for i := range q.Params {
		if q.Params[i].Name == name {
			return &q.Params[i]
		}
	}
	return nil
}

// Bind renders the query with its parameters as KQL literals. Unknown
// parameters, missing required ones and values of the wrong type are
// refused, naming the parameter.
func (q *Query) Bind(values map[string][]string) (string, error) {
	for name := range values {
		if q.param(name) == nil {
			return "", fmt.Errorf("query %s has no parameter %q", q.Name, name)
		}
	}
	lits := make([]string, len(q.Params))
	size := len(q.text)
	for i, p := range q.Params {
		v, ok := values[p.Name]
		if !ok || len(v) == 0 {
			if p.Required {
				return "", fmt.Errorf("parameter %q (%s) is required: %s", p.Name, p.Type, p.Description)
			}
			v = []string{p.Default}
		}
		lit, err := literal(p, v)
		if err != nil {
			return "", fmt.Errorf("parameter %q: %w", p.Name, err)
		}
		lits[i] = lit
		size += len(lit)
	}
	parts := q.parts
	if parts == nil {
		parts = q.split()
	}
	// One pass over the query text: a value is never scanned for placeholders.
	var b strings.Builder
	b.Grow(size)
	for _, s := range parts {
		switch {
		case s.param >= 0:
			b.WriteString(lits[s.param])
		case s.text != "":
			b.WriteString(s.text)
		}
	}
	return b.String(), nil
}
