package defender

import (
	"io"
	"sync/atomic"
)

// DecodeKeysPage decodes a list page as ListOptions.KeysOnly does.
func DecodeKeysPage(api, tenant string, r io.Reader) ([]*Incident, error) {
	var out []*Incident
	_, err := pageDecoder(api, tenant, true, new(atomic.Int64))(r, func(in *Incident) { out = append(out, in) })
	return out, err
}
