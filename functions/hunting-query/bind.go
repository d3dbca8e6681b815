package huntingquery

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	timespanRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9]{1,6})(d|h|m|s)$`) })
	guidRe     = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	})
)

const (
	maxString   = 1024
	maxListLen  = 100
	maxTimespan = 30 * 24 * time.Hour // advanced hunting keeps 30 days
)

// literal renders a parameter's value as a KQL literal of its type. Only
// these shapes are produced: a quoted string with \ and " escaped, a decimal
// integer, datetime(RFC 3339), a timespan such as 7d, or a parenthesized
// list of quoted strings. Nothing the caller sends is pasted raw.
func literal(p Param, vs []string) (string, error) {
	if p.Type != "list" && len(vs) != 1 {
		return "", fmt.Errorf("expected one %s value, got %d", p.Type, len(vs))
	}
	switch p.Type {
	case "string":
		return quote(vs[0])
	case "int":
		n, err := strconv.ParseInt(strings.TrimSpace(vs[0]), 10, 64)
		if err != nil {
			return "", fmt.Errorf("%q is not an integer", vs[0])
		}
		return strconv.FormatInt(n, 10), nil
	case "datetime":
		t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(vs[0]))
		if err != nil {
			return "", fmt.Errorf("%q is not an RFC 3339 date and time such as 2026-11-26T13:00:00Z", vs[0])
		}
		return "datetime(" + t.UTC().Format(time.RFC3339Nano) + ")", nil
	case "timespan":
		m := timespanRe().FindStringSubmatch(strings.TrimSpace(vs[0]))
		if m == nil {
			return "", fmt.Errorf("%q is not a timespan such as 7d, 12h, 30m or 90s", vs[0])
		}
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second}[m[2]]
		if d := time.Duration(n) * unit; d <= 0 || d > maxTimespan {
			return "", fmt.Errorf("%q is outside 1s..30d, the window advanced hunting keeps", vs[0])
		}
		return m[1] + m[2], nil
	case "guid":
		if !guidRe().MatchString(strings.TrimSpace(vs[0])) {
			return "", fmt.Errorf("%q is not a GUID", vs[0])
		}
		return `"` + strings.ToLower(strings.TrimSpace(vs[0])) + `"`, nil
	case "list":
		var items []string
		for _, v := range vs {
			for _, item := range strings.Split(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					items = append(items, item)
				}
			}
		}
		if len(items) == 0 || len(items) > maxListLen {
			return "", fmt.Errorf("a list needs 1 to %d values", maxListLen)
		}
		out := make([]string, len(items))
		for i, item := range items {
			q, err := quote(item)
			if err != nil {
				return "", err
			}
			out[i] = q
		}
		return strings.Join(out, ", "), nil
	}
	return "", fmt.Errorf("unknown type %s", p.Type)
}

// quote makes a KQL string literal. Control characters and the Unicode
// line separators are refused rather than escaped: no legitimate value
// needs them.
func quote(s string) (string, error) {
	if len(s) > maxString {
		return "", fmt.Errorf("longer than %d characters", maxString)
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f:
			return "", fmt.Errorf("contains a control character")
		case r == '\u2028' || r == '\u2029':
			// Line and paragraph separators end a line inside a KQL string.
			return "", fmt.Errorf("contains a line separator (U+%04X)", r)
		case r == '\\' || r == '"':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}
