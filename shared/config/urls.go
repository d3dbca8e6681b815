package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
)

// SinkKind is what an EXPORT_SINK or STATE_STORE URL names.
type SinkKind int

const (
	SinkFile   SinkKind = iota + 1 // file:///absolute/path
	SinkBlob                       // an Azure Blob container
	SinkS3                         // s3://bucket/prefix
	SinkLogs                       // a Logs Ingestion API stream
	SinkSplunk                     // a Splunk HTTP Event Collector endpoint
)

func (k SinkKind) String() string {
	return [...]string{"", "file", "Azure Blob container", "S3", "Logs Ingestion stream", "Splunk HTTP Event Collector"}[k]
}

// ClassifySink is the one reading of a sink URL: configuration validates
// with it, the sink package opens what it says and doctor checks what it
// says. A URL one part read as a Splunk collector and another as a Blob
// container once sent the storage token to the collector; so a URL that
// looks like a collector's or a stream's but is not one that this product
// writes to is refused, never taken for a container.
func ClassifySink(raw string) (SinkKind, error) {
	shown := RedactURL(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return 0, fmt.Errorf("%q is not a URL", shown)
	}
	segs := strings.Split(strings.Trim(u.Path, "/"), "/")
	switch u.Scheme {
	case "file":
		if u.Host != "" || !path.IsAbs(u.Path) {
			return 0, fmt.Errorf("%q: use an absolute path, file:///var/lib/defender-functions/export", shown)
		}
		return SinkFile, nil
	case "s3":
		if u.Host == "" {
			return 0, fmt.Errorf("%q names no bucket: use s3://bucket/prefix", shown)
		}
		return SinkS3, nil
	case "https", "http":
	default:
		return 0, fmt.Errorf("%q: use file:///path, an Azure Blob container URL, s3://bucket/prefix, a Logs Ingestion stream or a Splunk HTTP Event Collector", shown)
	}
	if u.Host == "" {
		return 0, fmt.Errorf("%q names no host", shown)
	}
	if u.User != nil {
		return 0, fmt.Errorf("%q carries credentials in the URL: remove them (the sinks take theirs from the identity, a connection string or Key Vault)", shown)
	}
	switch p := strings.ToLower(strings.Trim(u.Path, "/")); {
	case p == "services/collector" || strings.HasPrefix(p, "services/collector/"):
		if p != "services/collector" && p != "services/collector/event" {
			return 0, fmt.Errorf("%q is a Splunk HTTP Event Collector endpoint this product does not write to: use https://<host>:8088/services/collector/event", shown)
		}
		if u.Scheme != "https" && !loopback(u.Hostname()) {
			return 0, fmt.Errorf("%q: the collector's token would cross the network in the clear; use https", shown)
		}
		return SinkSplunk, nil
	case strings.EqualFold(segs[0], "dataCollectionRules"):
		if u.Scheme != "https" || len(segs) != 4 || segs[1] == "" || segs[2] != "streams" || segs[3] == "" {
			return 0, fmt.Errorf("%q is not a data collection rule's stream: use https://<endpoint>/dataCollectionRules/<immutable ID, dcr-…>/streams/<stream, Custom-…>", shown)
		}
		return SinkLogs, nil
	}
	// A container: https://<account>.blob.core.windows.net/<container>, or
	// path-style, /<account>/<container>, on an emulator's host (Azurite).
	if segs[0] == "" || len(segs) > 2 || len(segs) == 2 && !pathStyleHost(u.Hostname()) {
		return 0, fmt.Errorf("%q is not an Azure Blob container URL: use https://<account>.blob.core.windows.net/<container> (nothing after the container)", shown)
	}
	// A SAS would travel in every request's URL, and so in every error a
	// failed request makes: the app reaches storage with its identity, or
	// with AzureWebJobsStorage (which may hold a SAS).
	if u.RawQuery != "" || u.ForceQuery {
		return 0, fmt.Errorf("%q carries a query (a SAS token?): remove it; the app reaches storage with its identity, or with the connection string in AzureWebJobsStorage", shown)
	}
	return SinkBlob, nil
}

// pathStyleHost is a host that names the account in the path: an IP
// address, localhost, or a name without a dot (a container's, Azurite's).
func pathStyleHost(h string) bool {
	return net.ParseIP(h) != nil || h == "localhost" || !strings.Contains(h, ".")
}

func loopback(h string) bool {
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}

// RedactURL is a URL as it may be shown: no password in its user info and
// no query (a SAS token is a query). Anything that does not parse is cut
// at its first ? or #, and at an @ before the host.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i] + "?…"
		}
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			if j := strings.Index(raw, "://"); j >= 0 && j < i {
				raw = raw[:j+3] + "…@" + raw[i+1:]
			}
		}
		return raw
	}
	hidden := false
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User, hidden = url.UserPassword(u.User.Username(), "REDACTED"), true
		}
	}
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = "…", false
	}
	u.Fragment, u.RawFragment = "", ""
	if hidden {
		return strings.Replace(u.String(), ":REDACTED@", ":…@", 1)
	}
	return u.String()
}
