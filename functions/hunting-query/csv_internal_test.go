package huntingquery

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/defender-functions/defender-functions/shared/defender"
)

// A text cell a spreadsheet would run as a formula is neutralized; numbers,
// booleans, nulls and plain text pass as they are.
func TestCSVRowNeutralizesFormulas(t *testing.T) {
	schema := []defender.Column{{Name: "A"}, {Name: "B"}}
	for _, tc := range []struct {
		row  string
		want []string
	}{
		{`{"A":"=HYPERLINK(\"http://x\",\"y\")","B":"+1+1"}`, []string{`'=HYPERLINK("http://x","y")`, "'+1+1"}},
		{`{"A":"-2+3","B":"@SUM(A1)"}`, []string{"'-2+3", "'@SUM(A1)"}},
		{`{"A":"\t=1","B":"\r=1"}`, []string{"'\t=1", "'\r=1"}},
		{`{"A":-5,"B":2.5}`, []string{"-5", "2.5"}},
		{`{"A":"powershell.exe -enc","B":true}`, []string{"powershell.exe -enc", "true"}},
		{`{"A":"","B":null}`, []string{"", ""}},
		{`{"A":"a=b"}`, []string{"a=b", ""}},
	} {
		if got := csvRow(schema, json.RawMessage(tc.row)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.row, got, tc.want)
		}
	}
}

// A column's name is a cell too: an ad hoc query chooses it.
func TestCSVHeaderNeutralizesFormulas(t *testing.T) {
	got := csvHeader([]defender.Column{{Name: "Timestamp"}, {Name: "=HYPERLINK(\"http://x\")"}, {Name: "@cmd"}})
	if want := []string{"Timestamp", `'=HYPERLINK("http://x")`, "'@cmd"}; !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}
