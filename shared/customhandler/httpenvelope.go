package customhandler

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/defender-functions/defender-functions/shared/function"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// httpData is Data.req of a non-forwarded HTTP invocation.
type httpData struct {
	URL     string              `json:"Url"`
	Method  string              `json:"Method"`
	Query   jsontext.Value      `json:"Query"`
	Headers map[string][]string `json:"Headers"`
	Params  map[string]string   `json:"Params"`
	Body    jsontext.Value      `json:"Body"`
}

func (h *handler) httpEnvelope(ctx context.Context, w http.ResponseWriter, name string, route function.HTTPRoute, d *httpData) {
	req, err := h.requestFromData(d)
	if err != nil {
		h.fail(ctx, w, name, err)
		return
	}
	var resp *function.HTTPResponse
	if int64(len(req.Body)) > h.opts.MaxBody {
		resp = function.Text(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", h.opts.MaxBody))
	} else {
		resp = route.Func(ctx, req)
	}
	body := resp.Body
	if resp.Stream != nil {
		var b bytes.Buffer
		if err := resp.Stream(&b); err != nil {
			h.fail(ctx, w, name, err)
			return
		}
		body = b.Bytes()
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	headers := map[string]string{}
	for k, v := range resp.Header {
		headers[k] = strings.Join(v, ", ")
	}
	out := map[string]any{"statusCode": strconv.Itoa(status), "headers": headers, "body": string(body)}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(result{Outputs: map[string]any{HTTPOut: out}, Logs: []string{}})
	function.Logger(ctx).Info("HTTP function answered.", "function", name, "status", status, "mode", "envelope")
}

func (h *handler) requestFromData(d *httpData) (*function.HTTPRequest, error) {
	req := &function.HTTPRequest{Method: d.Method, Params: d.Params, Header: http.Header{}, Query: url.Values{}}
	if u, err := url.Parse(d.URL); err == nil {
		req.Path = u.Path
	}
	for k, vs := range d.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	// Query is an object of strings (the docs' sample once showed it as a string).
	if len(d.Query) > 0 && d.Query[0] == '{' {
		var q map[string]string
		if err := jsonv2.Unmarshal(d.Query, &q, decodeOptions); err != nil {
			return nil, fmt.Errorf("HTTP data: Query: %w", err)
		}
		for k, v := range q {
			req.Query.Set(k, v)
		}
	}
	if len(d.Body) > 0 && string(d.Body) != "null" {
		var s string
		if err := jsonv2.Unmarshal(d.Body, &s, decodeOptions); err != nil {
			// A JSON body the host passed as an object.
			req.Body = []byte(d.Body)
		} else {
			req.Body = []byte(s)
			if binaryContent(req.Header.Get("Content-Type")) {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return nil, errors.New("HTTP data: a binary body that is not base64")
				}
				req.Body = b
			}
		}
	}
	req.Principal = h.principal(req.Header)
	return req, nil
}

// binaryContent: the host base64-encodes these bodies.
func binaryContent(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/octet-stream" || strings.HasPrefix(mt, "multipart/")
}

// principal decodes Easy Auth's X-MS-CLIENT-PRINCIPAL, when trusted.
func (h *handler) principal(hdr http.Header) *function.Principal {
	if !h.opts.TrustEasyAuth {
		return nil
	}
	raw := hdr.Get("X-MS-CLIENT-PRINCIPAL")
	if raw == "" || len(raw) > 64<<10 {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil
	}
	var p struct {
		AuthTyp string `json:"auth_typ"`
		NameTyp string `json:"name_typ"`
		RoleTyp string `json:"role_typ"`
		Claims  []struct {
			Typ string `json:"typ"`
			Val string `json:"val"`
		} `json:"claims"`
	}
	if json.Unmarshal(b, &p) != nil {
		return nil
	}
	out := &function.Principal{Source: "easyauth"}
	for _, c := range p.Claims {
		switch {
		case c.Typ == p.RoleTyp || c.Typ == "roles":
			out.Roles = append(out.Roles, c.Val)
		case c.Typ == p.NameTyp && out.Name == "":
			out.Name = c.Val
		}
	}
	if out.Name == "" {
		out.Name = hdr.Get("X-MS-CLIENT-PRINCIPAL-NAME")
	}
	return out
}
