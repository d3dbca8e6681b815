package defender

import "io"

// DecodeKeysPage decodes a list page as ListOptions.KeysOnly does.
func DecodeKeysPage(api, tenant string, r io.Reader) ([]*Incident, error) {
	var out []*Incident
	_, err := pageDecoder(api, tenant, true)(r, func(in *Incident) { out = append(out, in) })
	return out, err
}
