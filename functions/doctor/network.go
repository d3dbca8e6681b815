package doctor

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
)

// listening looks for another setting's service answering on this
// machine, when nothing listens at addr there: it returns that address and
// setting, or "" when none answers (the devstack is not running).
func (k *checkup) listening(addr string) (string, string) {
	cfg := k.cfg
	for _, s := range []struct{ setting, value string }{
		{config.EnvAuthorityHost, cfg.AuthorityHost}, {config.EnvAPIURL, cfg.APIURL}, {config.EnvKeyVaultURL, cfg.KeyVaultURL},
		{config.EnvExportSink, cfg.ExportSink}, {config.EnvStateStore, cfg.StateStore},
	} {
		other := hostPort(s.value)
		if other == "" || other == addr {
			continue
		}
		if host, _, _ := net.SplitHostPort(other); !net.ParseIP(host).IsLoopback() {
			continue
		}
		d := net.Dialer{Timeout: time.Second}
		if c, err := d.DialContext(k.ctx, "tcp", other); err == nil {
			c.Close()
			return other, s.setting
		}
	}
	return "", ""
}

// hostPort is an http(s) URL's host and port, the scheme's by default; ""
// for any other value.
func hostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// form is the shape of setting's value, for a name that does not resolve.
func (k *checkup) form(setting string) string {
	const blob = "https://<account>.blob.core.windows.net/<container>"
	switch setting {
	case config.EnvKeyVaultURL:
		return "https://<vault-name>.vault.azure.net/"
	case config.EnvAuthorityHost:
		return config.DefaultAuthorityHost
	case config.EnvAPIURL:
		if k.cfg.API == config.XDR {
			return "https://api.security.microsoft.com"
		}
		return "https://graph.microsoft.com"
	case config.EnvExportSink:
		switch kind, _ := config.ClassifySink(k.cfg.ExportSink); kind {
		case config.SinkSplunk:
			return "https://<host>:8088/services/collector/event"
		case config.SinkLogs:
			return "https://<endpoint>.<region>.ingest.monitor.azure.com/dataCollectionRules/<dcr-…>/streams/Custom-DefenderIncidents"
		}
		return blob
	case config.EnvStateStore:
		return blob
	}
	return "what the platform sets"
}

// reach sends one plain request (no credential, no retry) to the origin
// of raw: any HTTP answer means the service is reachable and its
// certificate trusted; the error says why not.
func (k *checkup) reach(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/", nil)
	if err != nil {
		return err
	}
	resp, err := k.o.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
