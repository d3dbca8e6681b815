package devstack

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// This file is a small interpreter for the subset of KQL that SOC queries
// use most: where, project, extend, summarize (count, dcount, min, max, sum,
// avg) by, order/sort by, take/limit, top N by, distinct, count. It answers
// unsupported syntax with the service's own 400 text, so clients are tested
// against real error paths.

type column struct {
	Name string
	Type string // KQL type: datetime, string, long, int, bool, real, timespan
}

type relation struct {
	cols []column
	rows [][]any
}

func (r *relation) index(name string) int {
	for i, c := range r.cols {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// kqlError is a semantic or syntax error, shown to the caller as a 400.
type kqlError struct{ msg string }

func (e *kqlError) Error() string { return e.msg }

func kerr(format string, a ...any) error { return &kqlError{fmt.Sprintf(format, a...)} }

// --- lexer ---

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tTimespan
	tOp
)

type token struct {
	kind tokKind
	text string
	num  float64
	dur  time.Duration
}

func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case unicode.IsSpace(rune(c)):
			i++
		case c == '/' && i+1 < len(src) && src[i+1] == '/':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'':
			j := i + 1
			var sb strings.Builder
			for j < len(src) && src[j] != c {
				if src[j] == '\\' && j+1 < len(src) {
					j++
					switch src[j] {
					case 'n':
						sb.WriteByte('\n')
					case 't':
						sb.WriteByte('\t')
					default:
						sb.WriteByte(src[j])
					}
				} else {
					sb.WriteByte(src[j])
				}
				j++
			}
			if j >= len(src) {
				return nil, kerr("Syntax error: SYN0002: A recognition error occurred. Unterminated string literal at position %d.", i)
			}
			toks = append(toks, token{kind: tString, text: sb.String()})
			i = j + 1
		case c >= '0' && c <= '9':
			j := i
			for j < len(src) && (src[j] >= '0' && src[j] <= '9' || src[j] == '.') {
				j++
			}
			n, err := strconv.ParseFloat(src[i:j], 64)
			if err != nil {
				return nil, kerr("Syntax error: invalid number '%s'.", src[i:j])
			}
			k := j
			for k < len(src) && unicode.IsLetter(rune(src[k])) {
				k++
			}
			if unit := src[j:k]; unit != "" {
				mult := map[string]time.Duration{"d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second, "ms": time.Millisecond}[unit]
				if mult == 0 {
					return nil, kerr("Syntax error: invalid timespan literal '%s'.", src[i:k])
				}
				toks = append(toks, token{kind: tTimespan, text: src[i:k], dur: time.Duration(n * float64(mult))})
			} else {
				toks = append(toks, token{kind: tNumber, text: src[i:j], num: n})
			}
			i = k
		case unicode.IsLetter(rune(c)) || c == '_':
			j := i
			for j < len(src) && (unicode.IsLetter(rune(src[j])) || unicode.IsDigit(rune(src[j])) || src[j] == '_' || src[j] == '-' && j+1 < len(src) && unicode.IsLetter(rune(src[j+1])) && strings.HasPrefix(src[i:], "project-")) {
				j++
			}
			if src[i:j] == "in" && j < len(src) && src[j] == '~' { // in~, case-insensitive in
				j++
			}
			toks = append(toks, token{kind: tIdent, text: src[i:j]})
			i = j
		default:
			for _, op := range []string{"==", "!=", "<=", ">=", "=~", "!~", "!has", "!contains", "!in", "!startswith", "|", ",", "(", ")", "<", ">", "=", "+", "-", "*", "/", "[", "]"} {
				if strings.HasPrefix(src[i:], op) {
					toks = append(toks, token{kind: tOp, text: op})
					i += len(op)
					goto next
				}
			}
			return nil, kerr("Syntax error: SYN0002: A recognition error occurred. Unexpected character '%c' at position %d.", c, i)
		next:
		}
	}
	return append(toks, token{kind: tEOF}), nil
}

// --- parser and evaluator ---

type parser struct {
	toks []token
	pos  int
	now  time.Time
}

func (p *parser) peek() token { return p.toks[p.pos] }
func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tEOF {
		p.pos++
	}
	return t
}
func (p *parser) isOp(s string) bool { t := p.peek(); return t.kind == tOp && t.text == s }
func (p *parser) isIdent(s string) bool {
	t := p.peek()
	return t.kind == tIdent && strings.EqualFold(t.text, s)
}
func (p *parser) expectOp(s string) error {
	if !p.isOp(s) {
		return kerr("Syntax error: expected '%s' but found '%s'.", s, p.peek().text)
	}
	p.next()
	return nil
}

// expr is a compiled scalar expression over one row.
type expr struct {
	typ  string
	eval func(row []any) any
	name string // a column reference's name, for default output names
}

// runKQL runs a query over the tables, limited to rows whose Timestamp lies in [from, to].
func (t *tables) run(query string, from, to, now time.Time) (*relation, error) {
	toks, err := lex(query)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, now: now}
	first := p.next()
	if first.kind != tIdent {
		return nil, kerr("Syntax error: a query must start with a table name.")
	}
	src := t.byName[first.text]
	if src == nil {
		return nil, kerr("'%s' operator: Failed to resolve table or column expression named '%s'. Fix semantic errors in your query.", "table", first.text)
	}
	rel := &relation{cols: src.cols}
	if ti := src.index("Timestamp"); ti >= 0 {
		for _, row := range src.rows {
			ts := row[ti].(time.Time)
			if !ts.Before(from) && !ts.After(to) {
				rel.rows = append(rel.rows, row)
			}
		}
	} else {
		rel.rows = src.rows
	}
	for !p.isEOF() {
		if err := p.expectOp("|"); err != nil {
			return nil, err
		}
		op := p.next()
		if op.kind != tIdent {
			return nil, kerr("Syntax error: expected a query operator after '|'.")
		}
		name := strings.ToLower(op.text)
		if name == "order" || name == "sort" {
			if !p.isIdent("by") {
				return nil, kerr("Syntax error: expected 'by' after '%s'.", op.text)
			}
			p.next()
		}
		if rel, err = p.stage(name, rel); err != nil {
			return nil, err
		}
	}
	return rel, nil
}

func (p *parser) isEOF() bool { return p.peek().kind == tEOF }

func (p *parser) stage(name string, in *relation) (*relation, error) {
	switch name {
	case "where", "filter":
		e, err := p.parseExpr(in)
		if err != nil {
			return nil, err
		}
		if e.typ != "bool" {
			return nil, kerr("'where' operator: the predicate must be Boolean.")
		}
		out := &relation{cols: in.cols}
		for _, row := range in.rows {
			if v, _ := e.eval(row).(bool); v {
				out.rows = append(out.rows, row)
			}
		}
		return out, nil
	case "project", "extend":
		var cols []column
		var exprs []expr
		if name == "extend" {
			for i, c := range in.cols {
				i := i
				cols = append(cols, c)
				exprs = append(exprs, expr{typ: c.Type, eval: func(r []any) any { return r[i] }})
			}
		}
		for {
			colName := ""
			if t := p.peek(); t.kind == tIdent && p.toks[p.pos+1].kind == tOp && p.toks[p.pos+1].text == "=" {
				colName = t.text
				p.pos += 2
			}
			e, err := p.parseExpr(in)
			if err != nil {
				return nil, err
			}
			if colName == "" {
				colName = e.name
			}
			if colName == "" {
				colName = fmt.Sprintf("Column%d", len(cols)+1)
			}
			if j := indexCol(cols, colName); j >= 0 {
				cols[j], exprs[j] = column{colName, e.typ}, e
			} else {
				cols = append(cols, column{colName, e.typ})
				exprs = append(exprs, e)
			}
			if !p.isOp(",") {
				break
			}
			p.next()
		}
		out := &relation{cols: cols, rows: make([][]any, len(in.rows))}
		for i, row := range in.rows {
			nr := make([]any, len(exprs))
			for j, e := range exprs {
				nr[j] = e.eval(row)
			}
			out.rows[i] = nr
		}
		return out, nil
	case "take", "limit":
		n, err := p.count()
		if err != nil {
			return nil, err
		}
		return &relation{cols: in.cols, rows: in.rows[:min(n, len(in.rows))]}, nil
	case "order", "sort":
		return p.sortBy(in, -1)
	case "top":
		n, err := p.count()
		if err != nil {
			return nil, err
		}
		if !p.isIdent("by") {
			return nil, kerr("Syntax error: expected 'by' after 'top %d'.", n)
		}
		p.next()
		return p.sortBy(in, n)
	case "distinct":
		var idx []int
		var cols []column
		for {
			t := p.next()
			i := in.index(t.text)
			if t.kind != tIdent || i < 0 {
				return nil, kerr("'distinct' operator: Failed to resolve scalar expression named '%s'.", t.text)
			}
			idx, cols = append(idx, i), append(cols, in.cols[i])
			if !p.isOp(",") {
				break
			}
			p.next()
		}
		out := &relation{cols: cols}
		seen := map[string]bool{}
		for _, row := range in.rows {
			nr := make([]any, len(idx))
			for j, i := range idx {
				nr[j] = row[i]
			}
			k := fmt.Sprint(nr...)
			if !seen[k] {
				seen[k] = true
				out.rows = append(out.rows, nr)
			}
		}
		return out, nil
	case "count":
		return &relation{cols: []column{{"Count", "long"}}, rows: [][]any{{int64(len(in.rows))}}}, nil
	case "summarize":
		return p.summarize(in)
	}
	return nil, kerr("Syntax error: the query operator '%s' is not supported by the devstack's KQL subset (where, project, extend, summarize, order by, sort by, take, limit, top, distinct, count).", name)
}

func indexCol(cols []column, name string) int {
	for i, c := range cols {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func (p *parser) count() (int, error) {
	t := p.next()
	if t.kind != tNumber || t.num < 0 || t.num != math.Trunc(t.num) {
		return 0, kerr("Syntax error: expected a row count but found '%s'.", t.text)
	}
	return int(t.num), nil
}

func (p *parser) sortBy(in *relation, top int) (*relation, error) {
	type key struct {
		e    expr
		desc bool
	}
	var keys []key
	for {
		e, err := p.parseExpr(in)
		if err != nil {
			return nil, err
		}
		k := key{e: e, desc: true} // KQL sorts descending by default
		if p.isIdent("asc") {
			p.next()
			k.desc = false
		} else if p.isIdent("desc") {
			p.next()
		}
		keys = append(keys, k)
		if !p.isOp(",") {
			break
		}
		p.next()
	}
	rows := append([][]any(nil), in.rows...)
	sort.SliceStable(rows, func(i, j int) bool {
		for _, k := range keys {
			c := compare(k.e.eval(rows[i]), k.e.eval(rows[j]))
			if c != 0 {
				return (c < 0) != k.desc
			}
		}
		return false
	})
	if top >= 0 && top < len(rows) {
		rows = rows[:top]
	}
	return &relation{cols: in.cols, rows: rows}, nil
}

type agg struct {
	name string
	fn   string
	arg  expr
}

func (p *parser) summarize(in *relation) (*relation, error) {
	var aggs []agg
	for !p.isIdent("by") && !p.isEOF() && !p.isOp("|") {
		name := ""
		if t := p.peek(); t.kind == tIdent && p.toks[p.pos+1].kind == tOp && p.toks[p.pos+1].text == "=" {
			name = t.text
			p.pos += 2
		}
		fn := p.next()
		f := strings.ToLower(fn.text)
		if fn.kind != tIdent || !map[string]bool{"count": true, "dcount": true, "min": true, "max": true, "sum": true, "avg": true}[f] {
			return nil, kerr("'summarize' operator: unsupported aggregation '%s' (count, dcount, min, max, sum, avg).", fn.text)
		}
		if err := p.expectOp("("); err != nil {
			return nil, err
		}
		a := agg{name: name, fn: f}
		if !p.isOp(")") {
			e, err := p.parseExpr(in)
			if err != nil {
				return nil, err
			}
			a.arg = e
		} else if f != "count" {
			return nil, kerr("'summarize' operator: %s() needs an argument.", f)
		}
		if err := p.expectOp(")"); err != nil {
			return nil, err
		}
		if a.name == "" {
			a.name = map[string]string{"count": "count_", "dcount": "dcount_", "min": "min_", "max": "max_", "sum": "sum_", "avg": "avg_"}[f] + a.arg.name
		}
		aggs = append(aggs, a)
		if !p.isOp(",") {
			break
		}
		p.next()
	}
	var by []expr
	var byCols []column
	if p.isIdent("by") {
		p.next()
		for {
			name := ""
			if t := p.peek(); t.kind == tIdent && p.toks[p.pos+1].kind == tOp && p.toks[p.pos+1].text == "=" {
				name = t.text
				p.pos += 2
			}
			e, err := p.parseExpr(in)
			if err != nil {
				return nil, err
			}
			if name == "" {
				name = e.name
			}
			by, byCols = append(by, e), append(byCols, column{name, e.typ})
			if !p.isOp(",") {
				break
			}
			p.next()
		}
	}
	type group struct {
		keys  []any
		state []any
		sets  []map[any]bool
		n     []int64
	}
	groups := map[string]*group{}
	var order []string
	for _, row := range in.rows {
		keys := make([]any, len(by))
		for i, e := range by {
			keys[i] = e.eval(row)
		}
		k := fmt.Sprint(keys...)
		g := groups[k]
		if g == nil {
			g = &group{keys: keys, state: make([]any, len(aggs)), sets: make([]map[any]bool, len(aggs)), n: make([]int64, len(aggs))}
			groups[k] = g
			order = append(order, k)
		}
		for i, a := range aggs {
			var v any
			if a.arg.eval != nil {
				v = a.arg.eval(row)
			}
			switch a.fn {
			case "count":
				g.n[i]++
			case "dcount":
				if g.sets[i] == nil {
					g.sets[i] = map[any]bool{}
				}
				g.sets[i][v] = true
			case "min":
				if g.state[i] == nil || compare(v, g.state[i]) < 0 {
					g.state[i] = v
				}
			case "max":
				if g.state[i] == nil || compare(v, g.state[i]) > 0 {
					g.state[i] = v
				}
			case "sum", "avg":
				f, _ := toFloat(v)
				s, _ := g.state[i].(float64)
				g.state[i] = s + f
				g.n[i]++
			}
		}
	}
	cols := append([]column(nil), byCols...)
	for _, a := range aggs {
		t := "long"
		switch a.fn {
		case "min", "max":
			t = a.arg.typ
		case "sum", "avg":
			t = "real"
		}
		cols = append(cols, column{a.name, t})
	}
	out := &relation{cols: cols}
	for _, k := range order {
		g := groups[k]
		row := append([]any(nil), g.keys...)
		for i, a := range aggs {
			switch a.fn {
			case "count":
				row = append(row, g.n[i])
			case "dcount":
				row = append(row, int64(len(g.sets[i])))
			case "avg":
				row = append(row, g.state[i].(float64)/float64(g.n[i]))
			default:
				row = append(row, g.state[i])
			}
		}
		out.rows = append(out.rows, row)
	}
	return out, nil
}

// Expressions, lowest precedence first: or, and, comparison, additive, multiplicative, unary, primary.

func (p *parser) parseExpr(in *relation) (expr, error) { return p.parseOr(in) }

func (p *parser) parseOr(in *relation) (expr, error) {
	l, err := p.parseAnd(in)
	if err != nil {
		return l, err
	}
	for p.isIdent("or") {
		p.next()
		r, err := p.parseAnd(in)
		if err != nil {
			return r, err
		}
		a, b := l, r
		l = expr{typ: "bool", eval: func(row []any) any { x, _ := a.eval(row).(bool); y, _ := b.eval(row).(bool); return x || y }}
	}
	return l, nil
}

func (p *parser) parseAnd(in *relation) (expr, error) {
	l, err := p.parseCmp(in)
	if err != nil {
		return l, err
	}
	for p.isIdent("and") {
		p.next()
		r, err := p.parseCmp(in)
		if err != nil {
			return r, err
		}
		a, b := l, r
		l = expr{typ: "bool", eval: func(row []any) any { x, _ := a.eval(row).(bool); y, _ := b.eval(row).(bool); return x && y }}
	}
	return l, nil
}

var stringOps = map[string]func(a, b string) bool{
	"has":         func(a, b string) bool { return hasTerm(a, b) },
	"!has":        func(a, b string) bool { return !hasTerm(a, b) },
	"contains":    func(a, b string) bool { return strings.Contains(strings.ToLower(a), strings.ToLower(b)) },
	"!contains":   func(a, b string) bool { return !strings.Contains(strings.ToLower(a), strings.ToLower(b)) },
	"contains_cs": strings.Contains,
	"startswith":  func(a, b string) bool { return strings.HasPrefix(strings.ToLower(a), strings.ToLower(b)) },
	"!startswith": func(a, b string) bool { return !strings.HasPrefix(strings.ToLower(a), strings.ToLower(b)) },
	"endswith":    func(a, b string) bool { return strings.HasSuffix(strings.ToLower(a), strings.ToLower(b)) },
	"=~":          strings.EqualFold,
	"!~":          func(a, b string) bool { return !strings.EqualFold(a, b) },
}

// hasTerm is KQL's has: b occurs in a as a whole term (case-insensitive).
func hasTerm(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	for i := 0; ; {
		j := strings.Index(a[i:], b)
		if j < 0 {
			return false
		}
		s, e := i+j, i+j+len(b)
		if (s == 0 || !isWord(a[s-1])) && (e == len(a) || !isWord(a[e])) {
			return true
		}
		i = s + 1
	}
}

func isWord(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func (p *parser) parseCmp(in *relation) (expr, error) {
	l, err := p.parseAdd(in)
	if err != nil {
		return l, err
	}
	t := p.peek()
	op := t.text
	if t.kind == tIdent {
		op = strings.ToLower(op)
	}
	if t.kind == tOp && (op == "!has" || op == "!contains" || op == "!startswith") {
		// lexed as one operator already
	}
	switch {
	case (t.kind == tOp && (op == "==" || op == "!=" || op == "<" || op == "<=" || op == ">" || op == ">=")):
		p.next()
		r, err := p.parseAdd(in)
		if err != nil {
			return r, err
		}
		a, b := l, r
		return expr{typ: "bool", eval: func(row []any) any {
			x, y := a.eval(row), b.eval(row)
			if x == nil || y == nil {
				return op == "!=" && (x != nil || y != nil)
			}
			c := compare(x, y)
			switch op {
			case "==":
				return c == 0
			case "!=":
				return c != 0
			case "<":
				return c < 0
			case "<=":
				return c <= 0
			case ">":
				return c > 0
			}
			return c >= 0
		}}, nil
	case stringOps[op] != nil && (t.kind == tIdent || t.kind == tOp):
		p.next()
		r, err := p.parseAdd(in)
		if err != nil {
			return r, err
		}
		fn, a, b := stringOps[op], l, r
		return expr{typ: "bool", eval: func(row []any) any { return fn(toStr(a.eval(row)), toStr(b.eval(row))) }}, nil
	case op == "in" || op == "!in" || op == "in~":
		p.next()
		if err := p.expectOp("("); err != nil {
			return expr{}, err
		}
		var set []expr
		for !p.isOp(")") {
			e, err := p.parseAdd(in)
			if err != nil {
				return e, err
			}
			set = append(set, e)
			if p.isOp(",") {
				p.next()
			} else if !p.isOp(")") {
				return expr{}, kerr("Syntax error: expected ',' or ')' in the 'in' list.")
			}
		}
		p.next()
		neg, fold, a := op == "!in", op == "in~", l
		return expr{typ: "bool", eval: func(row []any) any {
			x := a.eval(row)
			for _, e := range set {
				y := e.eval(row)
				if fold && strings.EqualFold(toStr(x), toStr(y)) || !fold && x != nil && compare(x, y) == 0 {
					return !neg
				}
			}
			return neg
		}}, nil
	case op == "between":
		return expr{}, kerr("Syntax error: 'between' is not supported by the devstack's KQL subset.")
	}
	return l, nil
}

func (p *parser) parseAdd(in *relation) (expr, error) {
	l, err := p.parseMul(in)
	if err != nil {
		return l, err
	}
	for p.isOp("+") || p.isOp("-") {
		op := p.next().text
		r, err := p.parseMul(in)
		if err != nil {
			return r, err
		}
		l = arith(op, l, r)
	}
	return l, nil
}

func (p *parser) parseMul(in *relation) (expr, error) {
	l, err := p.parseUnary(in)
	if err != nil {
		return l, err
	}
	for p.isOp("*") || p.isOp("/") {
		op := p.next().text
		r, err := p.parseUnary(in)
		if err != nil {
			return r, err
		}
		l = arith(op, l, r)
	}
	return l, nil
}

func arith(op string, a, b expr) expr {
	typ := "real"
	switch {
	case a.typ == "datetime" && b.typ == "timespan":
		typ = "datetime"
	case a.typ == "datetime" && b.typ == "datetime":
		typ = "timespan"
	case a.typ == "timespan" && b.typ == "timespan":
		typ = "timespan"
	case (a.typ == "long" || a.typ == "int") && (b.typ == "long" || b.typ == "int") && op != "/":
		typ = "long"
	}
	return expr{typ: typ, eval: func(row []any) any {
		x, y := a.eval(row), b.eval(row)
		switch xv := x.(type) {
		case time.Time:
			switch yv := y.(type) {
			case time.Duration:
				if op == "-" {
					return xv.Add(-yv)
				}
				return xv.Add(yv)
			case time.Time:
				return xv.Sub(yv)
			}
			return nil
		case time.Duration:
			if yv, ok := y.(time.Duration); ok {
				if op == "-" {
					return xv - yv
				}
				return xv + yv
			}
			return nil
		}
		fx, ok1 := toFloat(x)
		fy, ok2 := toFloat(y)
		if !ok1 || !ok2 {
			return nil
		}
		var r float64
		switch op {
		case "+":
			r = fx + fy
		case "-":
			r = fx - fy
		case "*":
			r = fx * fy
		default:
			if fy == 0 {
				return nil
			}
			r = fx / fy
		}
		if typ == "long" {
			return int64(r)
		}
		return r
	}}
}

func (p *parser) parseUnary(in *relation) (expr, error) {
	if p.isIdent("not") {
		p.next()
		if err := p.expectOp("("); err != nil {
			return expr{}, err
		}
		e, err := p.parseExpr(in)
		if err != nil {
			return e, err
		}
		if err := p.expectOp(")"); err != nil {
			return expr{}, err
		}
		return expr{typ: "bool", eval: func(row []any) any { v, _ := e.eval(row).(bool); return !v }}, nil
	}
	if p.isOp("-") {
		p.next()
		e, err := p.parsePrimary(in)
		if err != nil {
			return e, err
		}
		return arith("-", expr{typ: e.typ, eval: func([]any) any { return int64(0) }}, e), nil
	}
	return p.parsePrimary(in)
}

func (p *parser) parsePrimary(in *relation) (expr, error) {
	t := p.next()
	switch t.kind {
	case tString:
		v := t.text
		return expr{typ: "string", eval: func([]any) any { return v }}, nil
	case tNumber:
		if strings.Contains(t.text, ".") {
			v := t.num
			return expr{typ: "real", eval: func([]any) any { return v }}, nil
		}
		v := int64(t.num)
		return expr{typ: "long", eval: func([]any) any { return v }}, nil
	case tTimespan:
		v := t.dur
		return expr{typ: "timespan", eval: func([]any) any { return v }}, nil
	case tOp:
		if t.text == "(" {
			e, err := p.parseExpr(in)
			if err != nil {
				return e, err
			}
			return e, p.expectOp(")")
		}
	case tIdent:
		if p.isOp("(") {
			return p.call(t.text, in)
		}
		switch strings.ToLower(t.text) {
		case "true", "false":
			v := strings.EqualFold(t.text, "true")
			return expr{typ: "bool", eval: func([]any) any { return v }}, nil
		}
		i := in.index(t.text)
		if i < 0 {
			return expr{}, kerr("Failed to resolve scalar expression named '%s'. Fix semantic errors in your query.", t.text)
		}
		return expr{typ: in.cols[i].Type, name: t.text, eval: func(row []any) any { return row[i] }}, nil
	}
	return expr{}, kerr("Syntax error: SYN0002: A recognition error occurred. Unexpected '%s'.", t.text)
}

func (p *parser) call(name string, in *relation) (expr, error) {
	p.next() // (
	var args []expr
	if name == "datetime" || name == "todatetime" && p.peek().kind != tString {
		// datetime(2024-01-01T00:00:00Z): the literal is raw text up to ')'.
		var sb strings.Builder
		for !p.isOp(")") && !p.isEOF() {
			sb.WriteString(p.next().text)
		}
		p.next()
		raw := sb.String()
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02", "2006-01-0215:04:05"} {
			if tm, err := time.Parse(layout, raw); err == nil {
				tm = tm.UTC()
				return expr{typ: "datetime", eval: func([]any) any { return tm }}, nil
			}
		}
		return expr{}, kerr("Syntax error: invalid datetime literal '%s'.", raw)
	}
	for !p.isOp(")") {
		e, err := p.parseExpr(in)
		if err != nil {
			return e, err
		}
		args = append(args, e)
		if p.isOp(",") {
			p.next()
		} else if !p.isOp(")") {
			return expr{}, kerr("Syntax error: expected ',' or ')' in the arguments of %s().", name)
		}
	}
	p.next()
	need := func(n int) error {
		if len(args) != n {
			return kerr("'%s': function expects %d argument(s), got %d.", name, n, len(args))
		}
		return nil
	}
	now := p.now
	switch strings.ToLower(name) {
	case "ago":
		if err := need(1); err != nil {
			return expr{}, err
		}
		a := args[0]
		return expr{typ: "datetime", eval: func(row []any) any {
			d, _ := a.eval(row).(time.Duration)
			return now.Add(-d)
		}}, nil
	case "now":
		return expr{typ: "datetime", eval: func([]any) any { return now }}, nil
	case "tolower", "toupper":
		if err := need(1); err != nil {
			return expr{}, err
		}
		a, up := args[0], strings.EqualFold(name, "toupper")
		return expr{typ: "string", eval: func(row []any) any {
			if up {
				return strings.ToUpper(toStr(a.eval(row)))
			}
			return strings.ToLower(toStr(a.eval(row)))
		}}, nil
	case "tostring":
		if err := need(1); err != nil {
			return expr{}, err
		}
		a := args[0]
		return expr{typ: "string", eval: func(row []any) any { return toStr(a.eval(row)) }}, nil
	case "strlen":
		if err := need(1); err != nil {
			return expr{}, err
		}
		a := args[0]
		return expr{typ: "long", eval: func(row []any) any { return int64(len(toStr(a.eval(row)))) }}, nil
	case "isempty", "isnotempty":
		if err := need(1); err != nil {
			return expr{}, err
		}
		a, want := args[0], strings.EqualFold(name, "isempty")
		return expr{typ: "bool", eval: func(row []any) any { return (toStr(a.eval(row)) == "") == want }}, nil
	case "strcat":
		return expr{typ: "string", eval: func(row []any) any {
			var sb strings.Builder
			for _, a := range args {
				sb.WriteString(toStr(a.eval(row)))
			}
			return sb.String()
		}}, nil
	case "bin":
		if err := need(2); err != nil {
			return expr{}, err
		}
		a, b := args[0], args[1]
		return expr{typ: a.typ, name: a.name, eval: func(row []any) any {
			switch v := a.eval(row).(type) {
			case time.Time:
				d, _ := b.eval(row).(time.Duration)
				if d <= 0 {
					return v
				}
				return time.Unix(0, v.UnixNano()/int64(d)*int64(d)).UTC()
			default:
				x, _ := toFloat(v)
				y, _ := toFloat(b.eval(row))
				if y == 0 {
					return nil
				}
				return math.Floor(x/y) * y
			}
		}}, nil
	}
	return expr{}, kerr("Failed to resolve function '%s'. The devstack's KQL subset has ago, now, datetime, tolower, toupper, tostring, strlen, isempty, isnotempty, strcat, bin.", name)
}

func toStr(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Time:
		return ts(x)
	default:
		return fmt.Sprint(x)
	}
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// compare orders two values of (ideally) the same type; nil sorts first.
func compare(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	switch x := a.(type) {
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y)
		}
	case time.Duration:
		if y, ok := b.(time.Duration); ok {
			return cmpOrdered(x, y)
		}
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y)
		}
	case bool:
		if y, ok := b.(bool); ok {
			if x == y {
				return 0
			}
			if !x {
				return -1
			}
			return 1
		}
	}
	fx, ok1 := toFloat(a)
	fy, ok2 := toFloat(b)
	if ok1 && ok2 {
		return cmpOrdered(fx, fy)
	}
	return strings.Compare(toStr(a), toStr(b))
}

func cmpOrdered[T int64 | float64 | time.Duration](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
