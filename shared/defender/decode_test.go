package defender_test

import (
	"io"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/shared/defender"
)

// A list page decodes what the services may send and refuses what no page
// can be, naming the problem; the same with KeysOnly, which reads an
// incident by its own code.
func TestDecodePageEdges(t *testing.T) {
	t.Parallel()
	const lu = `"lastUpdateDateTime":"2026-02-25T16:29:33.1234567Z"`
	for _, tc := range []struct {
		name, api, body string
		wantIDs         string // comma-separated, when it decodes
		wantErr         string // a fragment of the error, when it does not
	}{
		{"empty page", "graph", `{"value":[]}`, "", ""},
		{"envelope fields skipped, nextLink read", "graph", `{"@odata.context":"x","@odata.count":2,"value":[{"id":"1",` + lu + `}],"@odata.nextLink":"https://graph.microsoft.com/next"}`, "1", ""},
		{"unknown and null fields", "graph", `{"value":[{"id":"1",` + lu + `,"assignedTo":null,"customTags":null,"newField":{"a":[1,2]}}]}`, "1", ""},
		{"nested names are not the incident's", "graph", `{"value":[{"alerts":[{"id":"a1","lastUpdateDateTime":"2020-01-01T00:00:00Z"}],"id":"1",` + lu + `,"x":{"id":"y"}}]}`, "1", ""},
		{"a repeated name keeps the last", "graph", `{"value":[{"id":"1","id":"2",` + lu + `}]}`, "2", ""},
		{"invalid UTF-8 in free text", "graph", "{\"value\":[{\"id\":\"1\"," + lu + ",\"displayName\":\"bad \xff byte\"}]}", "1", ""},
		{"whitespace between elements", "graph", "{ \"value\" : [ {\"id\":\"1\"," + lu + "} ,\n {\"id\":\"2\"," + lu + "} ] }", "1,2", ""},
		{"xdr number id", "xdr", `{"value":[{"incidentId":924565,"lastUpdateTime":"2020-09-06T14:46:57.29Z"}]}`, "924565", ""},
		{"xdr id as a string of digits", "xdr", `{"value":[{"incidentId":"924565","lastUpdateTime":"2020-09-06T14:46:57.29Z"}]}`, "924565", ""},
		{"xdr redirect id", "xdr", `{"value":[{"incidentId":2,"redirectIncidentId":1,"lastUpdateTime":"2020-09-06T14:46:57.29Z"}]}`, "2", ""},
		{"truncated", "graph", `{"value":[{"id":"1",` + lu, "", "EOF"},
		{"value is not an array", "graph", `{"value":{"id":"1"}}`, "", "want ["},
		{"not an object", "graph", `[]`, "", "want {"},
		{"nextLink not a string", "graph", `{"value":[],"@odata.nextLink":5}`, "", "want a string"},
		{"missing id", "graph", `{"value":[{` + lu + `}]}`, "", "id or lastUpdateDateTime missing"},
		{"bad time", "graph", `{"value":[{"id":"1","lastUpdateDateTime":"yesterday"}]}`, "", "lastUpdateDateTime"},
		{"xdr id a boolean", "xdr", `{"value":[{"incidentId":true,"lastUpdateTime":"2020-09-06T14:46:57.29Z"}]}`, "", "want a number"},
		{"xdr id not an integer", "xdr", `{"value":[{"incidentId":1.5,"lastUpdateTime":"2020-09-06T14:46:57.29Z"}]}`, "", "is not a number"},
		{"trailing garbage inside", "graph", `{"value":[{"id":"1",` + lu + `} x]}`, "", "invalid character"},
	} {
		for mode, decode := range map[string]func(api, tenant string, r io.Reader) ([]*defender.Incident, error){
			"full": defender.DecodePage, "keys": defender.DecodeKeysPage,
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				got, err := decode(tc.api, "t", strings.NewReader(tc.body))
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, in := range got {
					ids = append(ids, in.ID)
				}
				if s := strings.Join(ids, ","); s != tc.wantIDs {
					t.Fatalf("ids %q, want %q", s, tc.wantIDs)
				}
			})
		}
	}
}
