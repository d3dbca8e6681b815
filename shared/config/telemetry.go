package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
)

// headerKey is an HTTP header's name (RFC 9110's token), compiled when
// first used, not at every start.
var headerKey = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$") })

// telemetry: OpenTelemetry's exporter.
func (r *reader) telemetry(c *Config) {
	c.OTLPEndpoint = r.get(EnvOTLPEndpoint, "")
	if v := c.OTLPEndpoint; v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" {
			if err == nil {
				// Neither credentials nor a query are shown.
				u.User, u.RawQuery = nil, ""
				v = u.String()
			}
			r.problem(fmt.Sprintf("%s=%q: use an OTLP/HTTP collector's base URL, http(s)://<host>:4318 (the exporter adds /v1/traces and /v1/metrics); credentials go in %s", EnvOTLPEndpoint, v, EnvOTLPHeaders))
			c.OTLPEndpoint = ""
		}
	}
	if v, ok := r.lookup(EnvOTLPHeaders); ok && v != "" {
		c.OTLPHeaders = Secret(v)
		// As the exporters read it (a pair they cannot read is logged by the
		// SDK with its value, which may be a key): key=value pairs, each
		// value percent-encoded.
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if _, err := url.PathUnescape(val); !ok || !headerKey().MatchString(strings.TrimSpace(k)) || err != nil {
				r.problem(fmt.Sprintf("%s is not a list of key=value pairs separated by commas, each value percent-encoded (%%20 for a space, %%25 for %%; its value is not shown: it may hold a key)", EnvOTLPHeaders))
				break
			}
		}
	}
	c.OTelServiceName = r.get(EnvOTelServiceName, "defender-functions")
}
