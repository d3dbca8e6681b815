package huntingquery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// decodeRequest reads every body as json.Decoder with DisallowUnknownFields
// does: the same request, the same error text.
func TestDecodeRequestAsEncodingJSON(t *testing.T) {
	bodies := []string{
		`{"name":"process-by-name","parameters":{"file":"powershell.exe"}}`,
		`{"query":"AlertInfo | take 1","timespan":"P7D","tenant":"contoso.onmicrosoft.com"}`,
		`  {"name":"x"}  `, `{"name":"x"} trailing`, `{"name":"x"}{"name":"y"}`, `{}`, `null`, ``, ` `, `[]`, `"x"`, `1`,
		`{"name":`, `{"name":"x"`, `{"name":"x",}`, `{"name" "x"}`, `{"name":"x","limit":5}`, `{"Name":"x"}`, `{"NAME":"x"}`,
		`{"n\u0061me":"x"}`, `{"name":"x","name":"y"}`, `{"name":null}`, `{"name":"x","name":null}`, `{"name":1}`, `{"name":true}`,
		`{"name":["x"]}`, `{"name":{"a":1}}`, `{"query":"T | where A == \"x\" | take 1"}`, `{"query":"a\\b\/c\n\t\u00e9\u2028"}`,
		`{"query":"\ud800"}`, `{"query":"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\te"}`, `{"query":"\\x"}`, `{"query":"a\"b\\c\/d\b\f\n\r\te"}`, `{"query":"\ud83d\ude00"}`, `{"query":"\ude00\ud83d"}`, `{"query":"\u0000"}`, "{\"query\":\"a\xffb\"}",
		"{\"query\":\"caf\xc3\xa9\"}", "{\"query\":\"a\x01b\"}", `{"parameters":null}`, `{"parameters":{}}`, `{"parameters":[]}`, `{"parameters":"x"}`,
		`{"parameters":{"a":"x","b":5,"c":["x","y"],"d":null,"e":true,"f":{"g":[1, 2 ]},"h":-1.5e3}}`,
		`{"parameters":{"a":"x","a":"y"}}`, `{"parameters":{"\u0061":"x"}}`, "{\"parameters\":{\"a\xff\":\"x\"}}", `{"parameters":{"a":"x\"y"}}`,
		`{"parameters":{"a":"x"},"parameters":{"b":"y"}}`, `{"parameters":{"a":1,}}`, `{"parameters":{"a":01}}`, `{"parameters":{"a":[1,]}}`,
		"\ufeff{\"name\":\"x\"}", `{"name":"x"` + "\n}", "{\n\t\"name\" : \"x\" ,\r\n \"tenant\":\"t\"\n}",
	}
	// The usual bodies take the fast path.
	for _, b := range bodies[:2] {
		if _, ok := quickRequest([]byte(b)); !ok {
			t.Errorf("%s: not read by quickRequest", b)
		}
	}
	for _, b := range bodies {
		var want request
		dec := json.NewDecoder(bytes.NewReader([]byte(b)))
		dec.DisallowUnknownFields()
		werr := dec.Decode(&want)
		got, gerr := decodeRequest([]byte(b))
		if fmt.Sprint(werr) != fmt.Sprint(gerr) || werr == nil && !reflect.DeepEqual(want, got) {
			t.Errorf("%q:\n got %#v %v\nwant %#v %v", b, got, gerr, want, werr)
		}
	}
}

// paramValues decodes what it always did.
func TestParamValuesAsBefore(t *testing.T) {
	before := func(in map[string]json.RawMessage) (map[string][]string, error) {
		out := map[string][]string{}
		for k, raw := range in {
			var s string
			var n json.Number
			var list []string
			switch {
			case json.Unmarshal(raw, &s) == nil:
				out[k] = []string{s}
			case json.Unmarshal(raw, &n) == nil:
				out[k] = []string{n.String()}
			case json.Unmarshal(raw, &list) == nil:
				out[k] = list
			default:
				return nil, fmt.Errorf("parameter %q must be a string, a number or a list of strings", k)
			}
		}
		return out, nil
	}
	for _, raw := range []string{`"x"`, `"a\"b"`, `"\u00e9"`, "\"a\xffb\"", `null`, `5`, `-1.5e3`, `0`, `["a","b"]`, `[]`, `[null]`, `[1]`,
		`true`, `{}`, ` "x"`, "\t5", ``, `"`, `"5"`} {
		in := map[string]json.RawMessage{"p": json.RawMessage(raw)}
		want, werr := before(in)
		got, gerr := paramValues(in)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) || !reflect.DeepEqual(want, got) && werr == nil {
			t.Errorf("%q: got %q %v, want %q %v", raw, got, gerr, want, werr)
		}
	}
}
