// Command devstack runs the offline simulator of every cloud service Defender
// Functions talks to, on loopback, until Ctrl-C or SIGTERM. It writes the
// settings that point the app at it to <dir>/devstack.env and
// <dir>/local.settings.json.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

func main() {
	var (
		opts    devstack.Options
		noLimit bool
		verbose bool
	)
	flag.StringVar(&opts.Dir, "dir", ".local", "where to write devstack-ca.pem, devstack.env and local.settings.json")
	flag.Int64Var(&opts.Seed, "seed", 1, "seed of the generated incidents and tables")
	flag.IntVar(&opts.Incidents, "incidents", 300, "incidents in the default tenant at start")
	flag.DurationVar(&opts.ChangeEvery, "change-every", 2*time.Second, "how often incidents change (0 = never)")
	flag.IntVar(&opts.HuntingRows, "hunting-rows", 3000, "events in each advanced-hunting table")
	flag.Float64Var(&opts.TimeScale, "time-scale", 1, "divide the rate-limit windows by this (60: a minute lasts a second)")
	flag.BoolVar(&noLimit, "no-rate-limits", false, "serve without the documented rate limits")
	flag.BoolVar(&opts.Prerender, "prerender", true, "encode every incident at start instead of on first request")
	flag.BoolVar(&opts.DocumentedOrder, "documented-order", false, "list incidents as documented (newest first, $orderby=lastUpdateDateTime honoured) instead of as a live tenant was observed to")
	flag.IntVar(&opts.Ports.Entra, "entra-port", 0, "Entra ID port (0 = any free port)")
	flag.IntVar(&opts.Ports.KeyVault, "keyvault-port", 0, "Key Vault port")
	flag.IntVar(&opts.Ports.Graph, "graph-port", 0, "Microsoft Graph port")
	flag.IntVar(&opts.Ports.XDR, "xdr-port", 0, "Defender XDR API port")
	flag.IntVar(&opts.Ports.Identity, "identity-port", 0, "managed-identity endpoint port")
	flag.IntVar(&opts.Ports.Control, "control-port", 0, "control endpoint port")
	flag.IntVar(&opts.Ports.SecretsManager, "secretsmanager-port", 0, "AWS Secrets Manager port")
	flag.IntVar(&opts.Ports.STS, "sts-port", 0, "AWS STS port")
	flag.IntVar(&opts.Ports.Logs, "logs-port", 0, "Logs Ingestion API (data collection endpoint) port")
	flag.IntVar(&opts.Ports.HEC, "hec-port", 0, "Splunk HTTP Event Collector port")
	flag.BoolVar(&opts.SIEM.HECAck, "hec-ack", false, "turn indexer acknowledgement on for the collector's token")
	flag.BoolVar(&verbose, "v", false, "log every request")
	flag.Parse()

	// Catch the signals before anything is started: a supervisor may send
	// SIGTERM as soon as the env file appears.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts.Logger = log
	if noLimit {
		opts.Limits = devstack.NoLimits
	}
	s, err := devstack.New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
	fmt.Printf(`devstack listening on loopback
  Entra ID            %s   (v2: /{tenant}/oauth2/v2.0/token, v1: /{tenant}/oauth2/token)
  Key Vault           %s
  Microsoft Graph     %s/v1.0/security/...
  Defender XDR API    %s/api/...
  managed identity    %s
  Logs Ingestion      %s
  Splunk HEC          %s   (ack %v; token in Key Vault secret %s)
  control             %s/control/counters
  CA certificate      %s
  settings            %s/devstack.env, %s/local.settings.json
tenants: %s (%d incidents), %s (%d incidents); app %s
Ctrl-C to stop.
`, s.EntraURL, s.KeyVaultURL, s.GraphURL, s.XDRURL, s.IdentityEndpoint, s.LogsStreamURL(), s.HECEventURL(), opts.SIEM.HECAck, devstack.HECTokenSecret, s.ControlURL, s.CAFile(), opts.Dir, opts.Dir,
		devstack.DefaultTenantID, s.IncidentCount(devstack.DefaultTenantID), devstack.PartnerTenantID, s.IncidentCount(devstack.PartnerTenantID), devstack.DefaultClientID)

	<-ctx.Done()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "devstack: stop:", err)
		os.Exit(1)
	}
	fmt.Println("devstack stopped")
}
