package huntingquery

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/defender-functions/defender-functions/shared/defender"
)

// writers are the answers' write buffers, reused: a new 32 KiB buffer per
// request was the largest allocation on the path, and the collector's work.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// writeResult streams the rows in format, stopping after max rows (the JSON
// and NDJSON forms say when rows were left out). It stops at the first failed
// write (the caller went away) and returns it; a failure of the upstream
// stream comes first. JSON and NDJSON pass each row through as the API sent
// it; only CSV decodes them.
func writeResult(w io.Writer, format string, res *defender.HuntResult, max int, out *outcome) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil) // holds no caller's writer while pooled
		writers.Put(bw)
	}()
	var cw *csv.Writer
	var cells csvCells
	switch format {
	case "application/json":
		schema, _ := json.Marshal(res.Schema)
		bw.WriteString(`{"schema":`)
		bw.Write(schema)
		bw.WriteString(`,"results":[`)
	case "text/csv":
		cw = csv.NewWriter(bw)
		cw.Write(csvHeader(res.Schema))
	}
	truncated := false
	for {
		row, err := res.NextRaw()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if out.rows == max {
			truncated = true
			break
		}
		out.rows++
		// bufio.Writer's errors stick: the first failed write fails every
		// later one, so one check per row finds it.
		var werr error
		switch format {
		case "application/json":
			if out.rows > 1 {
				bw.WriteByte(',')
			}
			_, werr = bw.Write(row)
		case "application/x-ndjson":
			bw.Write(row)
			werr = bw.WriteByte('\n')
		case "text/csv":
			werr = cw.Write(cells.fill(res.Schema, row))
		}
		if werr != nil {
			return werr
		}
	}
	switch format {
	case "application/json":
		fmt.Fprintf(bw, `],"truncated":%t,"stats":{"rows":%d,"maxRows":%d}}`, truncated, out.rows, max)
	case "application/x-ndjson":
		if truncated {
			fmt.Fprintf(bw, "{\"@truncated\":true,\"rows\":%d}\n", out.rows)
		}
	case "text/csv":
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// neutralize keeps a spreadsheet from running a text cell as a formula:
// one that begins with =, +, -, @, a tab or a carriage return is prefixed
// with a single quote (OWASP's CSV injection advice). Numbers are JSON
// numbers in the rows, not text, and pass as they are.
func neutralize(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// csvHeader is the columns' names, neutralized as cells are: an ad hoc
// query names its columns (project ['=HYPERLINK(…)'] = …).
func csvHeader(schema []defender.Column) []string {
	names := make([]string, len(schema))
	for i, c := range schema {
		names[i] = neutralize(c.Name)
	}
	return names
}

func csvRow(schema []defender.Column, row json.RawMessage) []string {
	var c csvCells
	return c.fill(schema, row)
}

// csvCells turns rows into CSV records; its map and record are reused
// from row to row (csv.Writer keeps neither).
type csvCells struct {
	m   map[string]json.RawMessage
	out []string
}

func (c *csvCells) fill(schema []defender.Column, row json.RawMessage) []string {
	if c.m == nil {
		c.m = make(map[string]json.RawMessage, len(schema))
	}
	clear(c.m)
	json.Unmarshal(row, &c.m) // a row that is not an object leaves it empty
	if c.out == nil {
		c.out = make([]string, len(schema))
	}
	for i, col := range schema {
		v := c.m[col.Name]
		var s string
		switch {
		case plainString(v):
			c.out[i] = neutralize(string(v[1 : len(v)-1]))
		case json.Unmarshal(v, &s) == nil:
			c.out[i] = neutralize(s)
		case string(v) != "null":
			c.out[i] = string(v)
		default:
			c.out[i] = ""
		}
	}
	return c.out
}

// plainString reports whether v is a JSON string that decodes to its own
// bytes: no escapes, no control characters, valid UTF-8.
func plainString(v json.RawMessage) bool {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return false
	}
	inner := v[1 : len(v)-1]
	for _, c := range inner {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(inner)
}
