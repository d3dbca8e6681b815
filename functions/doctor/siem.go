package doctor

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/advice"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
)

// siemSink checks a SIEM sink (Logs Ingestion, Splunk HEC) in two steps,
// each failure with its own fix: one plain request to its origin (is it
// reachable, is its certificate trusted: the sink's own client retries a
// refused connection until the deadline and then says only that), then
// the sink's empty request (the token or identity, the rule or the path).
func (k *checkup) siemSink(kind config.SinkKind, blob state.BlobOptions) {
	r, cfg := k.r, k.cfg
	shown := config.RedactURL(cfg.ExportSink)
	c, cancel := k.step()
	defer cancel()
	if err := k.reach(c, cfg.ExportSink); err != nil {
		fix := k.netFix(err, config.EnvExportSink)
		if fix == "" {
			fix = advice.Say(advice.NoAnswer, advice.Vars{"addr": hostPort(cfg.ExportSink), "setting": config.EnvExportSink})
		}
		r.fail("sink", fmt.Errorf("sink: the %s at %s was not reached: %w", kind, shown, err), fix)
		return
	}
	if kind == config.SinkLogs && k.identityFailure(r, "sink", config.EnvExportSink, k.identityToken(c, blob)) {
		return
	}
	err := checkSink(c, cfg, k.o.HTTPClient, blob)
	switch {
	case err == nil:
		r.ok("sink", "%s takes this app's records (an empty request was accepted; nothing written)", shown)
	case k.identityFailure(r, "sink", config.EnvExportSink, err):
	default:
		r.fail("sink", err, k.siemFix(kind, err))
	}
}

// siemFix is the fix for a SIEM's answer, or for the collector's token
// that could not be read from Key Vault.
func (k *checkup) siemFix(kind config.SinkKind, err error) string {
	var ve *credentials.VaultError
	if errors.As(err, &ve) {
		return k.vaultFix(err)
	}
	status := 0
	var he *sink.HECError
	if errors.As(err, &he) {
		status = he.StatusCode
	} else if m := logsStatus.FindStringSubmatch(err.Error()); m != nil {
		// The Logs sink keeps the status in its text only.
		fmt.Sscan(m[1], &status)
	}
	switch {
	case status == 0:
		if fix := k.netFix(err, config.EnvExportSink); fix != "" {
			return fix
		}
		return seeAbove
	case kind == config.SinkSplunk && (status == 401 || status == 403):
		return advice.Say(advice.SplunkToken, advice.Vars{"secret": k.cfg.SplunkTokenSecret})
	case kind == config.SinkSplunk && status == 404:
		return advice.Say(advice.SplunkNotCollector, advice.Vars{"value": config.RedactURL(k.cfg.ExportSink)})
	case kind == config.SinkSplunk && he != nil && he.Code == 7:
		return advice.Say(advice.SplunkIndex, nil)
	case kind == config.SinkLogs && (status == 401 || status == 403):
		return advice.Say(advice.LogsForbidden, advice.Vars{"rule": logsRule.FindString(k.cfg.ExportSink)})
	case kind == config.SinkLogs && status == 404:
		return advice.Say(advice.LogsNotFound, nil)
	}
	return advice.Say(advice.SIEMRefused, advice.Vars{"status": fmt.Sprint(status)})
}

var (
	logsStatus = regexp.MustCompile(`\(?HTTP (\d{3})\b`)
	logsRule   = regexp.MustCompile(`dcr-[0-9A-Za-z]+`)
)

// identityToken asks the identity a Logs Ingestion sink uses for a token:
// the ingestion client sends its request first and, refused, reports the
// 401 without the credential's error, which says why there was no token.
func (k *checkup) identityToken(ctx context.Context, blob state.BlobOptions) error {
	cred := blob.Credential
	if cred == nil {
		var err error
		if cred, err = credentials.AzureCredential(functions.Registration(k.cfg), k.o.HTTPClient); err != nil {
			return err
		}
	}
	_, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://monitor.azure.com/.default"}})
	return err
}
