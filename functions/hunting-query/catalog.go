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
	sort.Slice(q.Params, func(i, j int) bool { return q.Params[i].Name < q.Params[j].Name })
	return q, nil
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
	lits := map[string]string{}
	for _, p := range q.Params {
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
		lits[p.Name] = lit
	}
	// One pass over the query text: a value is never scanned for placeholders.
	return placeholder().ReplaceAllStringFunc(q.text, func(m string) string { return lits[m[1:len(m)-1]] }), nil
}
