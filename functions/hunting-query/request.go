package huntingquery

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// decodeRequest reads the body exactly as json.Decoder with
// DisallowUnknownFields does, errors included. The usual body (members
// spelled as declared, each once, strings and a parameters object) is read
// by a pooled jsontext.Decoder, which takes a fraction of the time;
// anything else, or anything it refuses, is left to encoding/json, whose
// answer (its lenient matching, its error text) is the one callers get.
func decodeRequest(body []byte) (request, error) {
	if req, ok := quickRequest(body); ok {
		return req, nil
	}
	var req request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	return req, err
}

var (
	decoders = sync.Pool{New: func() any { return jsontext.NewDecoder(bytes.NewReader(nil)) }}
	noInput  = bytes.NewReader(nil)
)

// quickRequest is decodeRequest's fast path; ok is false when it cannot
// tell what encoding/json would make of body. jsontext is the stricter of
// the two (it refuses invalid UTF-8 and repeated names, which encoding/json
// accepts), never the more lenient, so what it accepts the two read alike.
func quickRequest(body []byte) (req request, ok bool) {
	dec := decoders.Get().(*jsontext.Decoder)
	dec.Reset(bytes.NewBuffer(body))
	defer func() {
		dec.Reset(noInput) // holds no request's body while pooled
		decoders.Put(dec)
	}()
	if dec.PeekKind() != '{' {
		return req, false
	}
	if _, err := dec.ReadToken(); err != nil {
		return req, false
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return req, false
		}
		switch string(name) {
		case `"query"`:
			ok = quickString(dec, &req.Query)
		case `"timespan"`:
			ok = quickString(dec, &req.Timespan)
		case `"tenant"`:
			ok = quickString(dec, &req.Tenant)
		case `"name"`:
			ok = quickString(dec, &req.Name)
		case `"parameters"`:
			ok = quickParams(dec, &req.Parameters)
		default:
			ok = false // another spelling, an escape or an unknown field
		}
		if !ok {
			return req, false
		}
	}
	// The closing brace ends the value; like json.Decoder, what follows it
	// is not read.
	_, err := dec.ReadToken()
	return req, err == nil
}

// quickString reads a string member into *s, or a null (which leaves it
// as it is, as in encoding/json).
func quickString(dec *jsontext.Decoder, s *string) bool {
	switch dec.PeekKind() {
	case 'n':
		_, err := dec.ReadToken()
		return err == nil
	case '"':
		v, err := dec.ReadValue()
		switch {
		case err != nil:
			return false
		case plainString(json.RawMessage(v)):
			*s = string(v[1 : len(v)-1])
			return true
		case bytes.Contains(v, []byte(`\u`)):
			return false // a lone surrogate is encoding/json's to replace
		}
		// The short escapes (\" \\ \n …) mean one thing to both.
		u, err := jsontext.AppendUnquote(nil, v)
		*s = string(u)
		return err == nil
	}
	return false
}

// quickParams reads the parameters object; each value is kept as it was
// sent, as json.RawMessage keeps it.
func quickParams(dec *jsontext.Decoder, m *map[string]json.RawMessage) bool {
	switch dec.PeekKind() {
	case 'n':
		_, err := dec.ReadToken()
		*m = nil
		return err == nil
	case '{':
	default:
		return false
	}
	if _, err := dec.ReadToken(); err != nil {
		return false
	}
	*m = map[string]json.RawMessage{}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil || !plainString(json.RawMessage(name)) {
			return false
		}
		v, err := dec.ReadValue()
		if err != nil {
			return false
		}
		(*m)[string(name[1:len(name)-1])] = bytes.Clone(v)
	}
	_, err := dec.ReadToken()
	return err == nil
}
