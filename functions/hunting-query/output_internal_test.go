package huntingquery

import (
	"encoding/json"
	"testing"

	"github.com/defender-functions/defender-functions/shared/defender"
)

// One csvCells reused row after row gives what decoding each row afresh
// into a map gave: nothing of a row leaks into the next.
func TestCSVCellsReused(t *testing.T) {
	before := func(schema []defender.Column, row json.RawMessage) []string {
		var m map[string]json.RawMessage
		json.Unmarshal(row, &m)
		out := make([]string, len(schema))
		for i, c := range schema {
			v := m[c.Name]
			var s string
			if json.Unmarshal(v, &s) == nil {
				out[i] = neutralize(s)
			} else if string(v) != "null" {
				out[i] = string(v)
			}
		}
		return out
	}
	schema := []defender.Column{{Name: "A"}, {Name: "B"}}
	var c csvCells
	for _, row := range []string{`{"A":"=1","B":2}`, `{"A":"x"}`, `null`, `{"B":"y"}`, `not json`, `[1]`, `{"A":"caf\u00e9","B":"a\"b"}`,
		"{\"A\":\"\xff\"}", `{"A":"x","A":"-y"}`, `{"A":{"b": 1},"B":[1, 2]}`, `{"A":"\ud800"}`, `{"A":"",`} {
		want := before(schema, json.RawMessage(row))
		got := c.fill(schema, json.RawMessage(row))
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s: %q, want %q", row, got, want)
		}
	}
}
