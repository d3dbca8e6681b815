package defender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// HuntResult streams an advanced-hunting result: the schema first, then the
// rows one at a time, so 100k rows cost the memory of one.
type HuntResult struct {
	Schema []Column
	// Stats are the XDR API's query statistics (nil on Graph).
	Stats json.RawMessage

	body     io.ReadCloser
	dec      *jsontext.Decoder
	buffered []json.RawMessage // rows that came before the schema
	done     bool
}

// Next returns the next row as the API sent it (a JSON object keyed by
// column), or io.EOF after the last.
func (h *HuntResult) Next() (json.RawMessage, error) {
	if len(h.buffered) > 0 {
		return h.NextRaw() // already a copy
	}
	row, err := h.NextRaw()
	if err != nil {
		return nil, err
	}
	return bytes.Clone(row), nil
}

// NextRaw is Next without the copy, for a caller that writes each row out
// at once: the row is valid only until the next call to Next, NextRaw or
// Close (it is the decoder's buffer). A copy per row is an allocation per
// row, and the garbage collector's work, for nothing.
func (h *HuntResult) NextRaw() (json.RawMessage, error) {
	if len(h.buffered) > 0 {
		r := h.buffered[0]
		h.buffered = h.buffered[1:]
		return r, nil
	}
	if h.done {
		return nil, io.EOF
	}
	if h.dec.PeekKind() == ']' {
		h.done = true
		if err := expectKind(h.dec, ']'); err != nil {
			return nil, err
		}
		// Drain the rest of the object so the connection can be reused.
		for h.dec.PeekKind() != '}' {
			if _, err := h.dec.ReadToken(); err != nil {
				break
			}
			if err := h.dec.SkipValue(); err != nil {
				break
			}
		}
		return nil, io.EOF
	}
	row, err := h.dec.ReadValue()
	if err != nil {
		h.done = true
		return nil, err
	}
	return json.RawMessage(row), nil
}

// Close releases the connection.
func (h *HuntResult) Close() error {
	if h.body == nil {
		return nil
	}
	return h.body.Close()
}

func hunt(ctx context.Context, t *transport, u string, body []byte) (*HuntResult, error) {
	var res *HuntResult
	_, err := t.do(ctx, request{method: "POST", url: u, body: body, bucket: "hunting", keepBody: true,
		// A 429 goes back to the caller with its Retry-After: hunting is
		// interactive, and the API counts CPU as well as calls.
		retry429: false,
		handle: func(resp *http.Response) error {
			h := &HuntResult{body: resp.Body, dec: jsontext.NewDecoder(resp.Body, readOptions)}
			if err := h.start(); err != nil {
				return err
			}
			res = h
			return nil
		}})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// start reads up to the first row. Graph sends schema then results, XDR
// Stats, Schema, Results; rows that arrive before the schema are buffered.
func (h *HuntResult) start() error {
	if err := expectKind(h.dec, '{'); err != nil {
		return err
	}
	inResults := false
	for h.dec.PeekKind() != '}' {
		key, err := h.dec.ReadToken()
		if err != nil {
			return err
		}
		switch strings.ToLower(key.String()) {
		case "schema":
			var cols []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				NameX string `json:"Name"`
				TypeX string `json:"Type"`
			}
			if err := jsonv2.UnmarshalDecode(h.dec, &cols); err != nil {
				return err
			}
			for _, c := range cols {
				n, ty := c.Name, c.Type
				if n == "" {
					n, ty = c.NameX, c.TypeX
				}
				h.Schema = append(h.Schema, Column{Name: n, Type: ty})
			}
			if inResults {
				h.done = true
				return nil
			}
		case "stats":
			v, err := h.dec.ReadValue()
			if err != nil {
				return err
			}
			h.Stats = bytes.Clone(v)
		case "results":
			if err := expectKind(h.dec, '['); err != nil {
				return err
			}
			if h.Schema != nil {
				return nil
			}
			// Results before the schema: buffer them, then look for it.
			for h.dec.PeekKind() != ']' {
				row, err := h.dec.ReadValue()
				if err != nil {
					return err
				}
				h.buffered = append(h.buffered, bytes.Clone(row))
			}
			if err := expectKind(h.dec, ']'); err != nil {
				return err
			}
			inResults = true
		default:
			if err := h.dec.SkipValue(); err != nil {
				return err
			}
		}
	}
	if !inResults {
		return errors.New("hunting response has no results")
	}
	h.done = true
	return nil
}
