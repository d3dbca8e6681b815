package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ExportQueueIsSQS says whether EXPORT_QUEUE names an SQS queue (its URL)
// rather than an Azure Storage queue (a name).
func ExportQueueIsSQS(v string) bool {
	u, err := url.Parse(v)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && strings.Count(strings.Trim(u.Path, "/"), "/") == 1
}

// queueName is an Azure Storage queue's name. Compiled when first used, not
// at every start of a process that may never read EXPORT_QUEUE.
var queueName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`) })

// export: incident-export's sink, state, schedule and windows, and storage.
func (r *reader) export(c *Config) {
	c.ExportSink = r.get(EnvExportSink, "")
	c.StateStore = r.get(EnvStateStore, "")
	if c.ExportSink != "" {
		if _, err := ClassifySink(c.ExportSink); err != nil {
			r.problem(fmt.Sprintf("%s=%v", EnvExportSink, err))
		}
	}
	if c.StateStore != "" {
		if k, err := ClassifySink(c.StateStore); err != nil || k != SinkFile && k != SinkBlob {
			r.problem(fmt.Sprintf("%s=%q: use file:///absolute/path or an Azure Blob container URL (https://<account>.blob.core.windows.net/<container>)", EnvStateStore, RedactURL(c.StateStore)))
		}
	}
	c.ExportSchedule = r.get(EnvExportSchedule, "0 */5 * * * *")
	if n := len(strings.Fields(c.ExportSchedule)); n != 6 && n != 5 {
		r.problem(fmt.Sprintf("%s=%q is not an NCRONTAB expression: six fields, {second} {minute} {hour} {day} {month} {day-of-week}, such as 0 */5 * * * *", EnvExportSchedule, c.ExportSchedule))
	}
	c.ExportLookback = r.duration(EnvExportLookback, 7*24*time.Hour, time.Minute, 90*24*time.Hour)
	c.ExportMaxRun = r.duration(EnvExportMaxRun, 4*time.Minute, 10*time.Second, 10*time.Hour)
	c.ExportLag = r.duration(EnvExportLag, 10*time.Minute, 0, 24*time.Hour)
	c.ExportConcurrency = r.integer(EnvExportConcurrency, 8, 1, 64, "use 1 to 64 (tenants exported at once; each has its own rate limits)")
	switch v := r.get(EnvExportLayout, "versions"); v {
	case "versions", "batches":
		c.ExportBatched = v == "batches"
	default:
		r.problem(fmt.Sprintf("%s=%q: use versions (one JSON object per incident version) or batches (one gzip-compressed NDJSON object per checkpoint, with a manifest)", EnvExportLayout, v))
	}
	c.ExportBatchEvery = r.duration(EnvExportBatchEvery, 10*time.Second, 100*time.Millisecond, 10*time.Minute)
	c.ExportQueue = r.get(EnvExportQueue, "")
	if q := c.ExportQueue; q != "" && !ExportQueueIsSQS(q) && (!queueName().MatchString(q) || strings.Contains(q, "--") || strings.HasSuffix(q, "-poison")) {
		r.problem(fmt.Sprintf("%s=%q is neither an Amazon SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>) nor an Azure Storage queue name: 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit (and not the host's -poison queue)", EnvExportQueue, q))
	}
	if v := r.get(EnvExportPageSize, ""); v != "" {
		n, err := strconv.Atoi(v)
		max := 50
		if c.API == XDR {
			max = 100
		}
		if err != nil || n < 1 || n > max {
			r.problem(fmt.Sprintf("%s=%q: use 1 to %d (the %s API's maximum), or leave it empty", EnvExportPageSize, v, max, c.API))
		} else {
			c.ExportPageSize = n
		}
	}
	if v, ok := r.lookup(EnvStorage); ok && v != "" {
		c.StorageConnStr = Secret(v)
	}
	c.StorageAccount = r.get(EnvStorageAccount, "")
	// The host's identity-based form for a queue endpoint that accountName
	// cannot name (a national cloud's).
	if v := r.get(EnvStorageQueueURI, ""); v != "" {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			if i := strings.IndexAny(v, "?#"); i >= 0 {
				v = v[:i] + "?…" // a SAS is a secret
			}
			r.problem(fmt.Sprintf("%s=%q: use the account's queue endpoint, https://<account>.queue.core.windows.net or a national cloud's (no path, no SAS)", EnvStorageQueueURI, v))
		} else {
			c.StorageQueueURI = strings.TrimSuffix(v, "/")
		}
	}
	c.S3Endpoint = r.get(EnvS3Endpoint, "")
	c.S3Region = r.get(EnvAWSRegion, "")
	r.siem(c)
}

// siem: the record sinks' settings (Log Analytics, Splunk).
func (r *reader) siem(c *Config) {
	c.ExportBatchBytes = r.integer(EnvExportBatchBytes, 0, 1<<10, 512<<20, "use a size in bytes from 1024 to 536870912: the largest request body the SIEM takes (Logs Ingestion: 1 MB at most; Splunk: the collector's max_content_length)")
	c.SplunkTokenSecret = r.get(EnvSplunkTokenSecret, "")
	c.SplunkIndex = r.get(EnvSplunkIndex, "")
	switch v := strings.ToLower(r.get(EnvSplunkAck, "false")); v {
	case "true", "false":
		c.SplunkAck = v == "true"
	default:
		r.problem(fmt.Sprintf("%s=%q: use true (the token has indexer acknowledgement on) or false", EnvSplunkAck, v))
	}
	c.SplunkAckTimeout = r.duration(EnvSplunkAckTimeout, 2*time.Minute, time.Second, 10*time.Minute)
	if k, _ := ClassifySink(c.ExportSink); k == SinkSplunk {
		if c.SplunkTokenSecret == "" {
			r.problem(fmt.Sprintf("%s names a Splunk HTTP Event Collector: set %s to the Key Vault secret (in %s) that holds its token", EnvExportSink, EnvSplunkTokenSecret, EnvKeyVaultURL))
		} else if !nameRe().MatchString(c.SplunkTokenSecret) {
			r.problem(fmt.Sprintf("%s=%q is not a Key Vault secret name: 1 to 127 letters, digits and hyphens", EnvSplunkTokenSecret, c.SplunkTokenSecret))
		}
		if c.KeyVaultURL == "" {
			r.problem(fmt.Sprintf("%s names a Splunk HTTP Event Collector, whose token is read from Key Vault: set %s", EnvExportSink, EnvKeyVaultURL))
		}
	}
}
