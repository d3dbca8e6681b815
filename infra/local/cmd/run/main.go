// Command run is `make run`: the whole product, locally, with no Azure
// tenant. It starts the devstack, points the app settings at it, starts the
// local Functions host on the built Function App (dist/azure: host.json, the
// handler, the function folders) and shows what exists working: the token
// flow of the original guide, then the incident export run twice.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/devstack"
	"github.com/defender-functions/defender-functions/infra/local/funchost"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
)

func main() {
	serve := flag.Bool("serve", false, "keep everything running after the demo (timers fire on EXPORT_SCHEDULE; Ctrl-C to stop)")
	dir := flag.String("dir", ".local", "where the devstack writes its settings and the export goes")
	app := flag.String("app", "dist/azure", "the built Function App (make build)")
	flag.Parse()
	if err := run(*dir, *app, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(1)
	}
}

func run(dir, appDir string, serve bool) error {
	s, err := devstack.New(devstack.Options{Dir: dir, ChangeEvery: 2 * time.Second})
	if err != nil {
		return err
	}
	defer s.Close()
	abs, _ := filepath.Abs(dir)
	fmt.Printf("devstack up: Entra ID %s, Key Vault %s, Graph %s, XDR %s\n", s.EntraURL, s.KeyVaultURL, s.GraphURL, s.XDRURL)
	fmt.Printf("app settings written to %s/devstack.env (and local.settings.json for Azure Functions Core Tools)\n\n", dir)
	settings := s.Settings()
	for k, v := range settings {
		os.Setenv(k, v)
	}

	// 1. The guide's flow with the product's code: secret from Key Vault, token, roles.
	fmt.Println("== app-only token (the guide's flow)")
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	creds, err := credentials.New(cfg, nil)
	if err != nil {
		return err
	}
	tok, err := creds.Source(cfg.Tenants[0]).Token(context.Background())
	if err != nil {
		return err
	}
	claims, _ := credentials.ParseClaims(tok.AccessToken)
	fmt.Printf("secret read from Key Vault %q with the managed identity; token for %s, roles %s\n", cfg.SecretName, claims.Audience, strings.Join(claims.Roles, ","))
	if err := credentials.CheckRoles(cfg, cfg.Tenants[0], claims, credentials.IncidentExport, credentials.HuntingQuery, credentials.TicketWebhook); err != nil {
		fmt.Println("permission check:", err)
	} else {
		fmt.Println("permission check: the roles cover incident-export, hunting-query and ticket-webhook")
	}

	// 2. The Function App under the local host.
	fmt.Printf("\n== Function App %s under the local Functions host\n", appDir)
	host, err := funchost.Start(funchost.Options{AppDir: appDir, Env: os.Environ(), NoTimers: !serve, Stdout: io.Discard, Stderr: os.Stderr})
	if err != nil {
		return fmt.Errorf("%w (run `make build` first)", err)
	}
	defer host.Close()
	fmt.Printf("host listening on %s; handler started and ready\n", host.URL)

	sinkDir := strings.TrimPrefix(settings["EXPORT_SINK"], "file://")
	for i, what := range []string{"first run (look-back: 7 days)", "second run, after the devstack changed some incidents"} {
		if i == 1 {
			s.Mutate(4)
			s.Mutate(2)
		}
		start := time.Now()
		res, err := host.Run(context.Background(), "incident-export")
		if err != nil {
			return err
		}
		fmt.Printf("incident-export %s: HTTP %d in %s: %s\n", what, res.Status, time.Since(start).Round(time.Millisecond), strings.Join(res.Logs, "; "))
		n, sample := countFiles(sinkDir)
		fmt.Printf("  sink %s holds %d incident versions, e.g. %s\n", settings["EXPORT_SINK"], n, sample)
	}
	cp, _ := os.ReadFile(filepath.Join(abs, "state", "incident-export", "graph", cfg.Tenants[0]+".json"))
	var c struct {
		Since   time.Time `json:"since"`
		Written int       `json:"written"`
	}
	json.Unmarshal(cp, &c)
	fmt.Printf("  checkpoint: since %s, %d versions written in all\n", c.Since.Format(time.RFC3339Nano), c.Written)
	// 3. A hunting query, as a SOAR playbook would send it, through the host.
	fmt.Println()
	resp, err := http.Get(host.URL + "/api/hunting-query")
	if err != nil {
		return err
	}
	var cat struct {
		Queries []struct{ Name string } `json:"queries"`
	}
	json.NewDecoder(resp.Body).Decode(&cat)
	resp.Body.Close()
	fmt.Printf("hunting-query catalog: %d named queries (GET %s/api/hunting-query)\n", len(cat.Queries), host.URL)
	body := `{"name":"failed-logons","parameters":{"threshold":3,"lookback":"30d"}}`
	resp, err = http.Post(host.URL+"/api/hunting-query", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	var hunt struct {
		Results []map[string]any   `json:"results"`
		Stats   struct{ Rows int } `json:"stats"`
	}
	json.NewDecoder(resp.Body).Decode(&hunt)
	resp.Body.Close()
	fmt.Printf("POST %s -> HTTP %d, %d rows\n", body, resp.StatusCode, hunt.Stats.Rows)
	for i, row := range hunt.Results {
		if i == 3 {
			break
		}
		fmt.Printf("  %v: %v failures on %v devices\n", row["AccountName"], row["Failures"], row["Devices"])
	}
	fmt.Println("\nticket-webhook is not built yet (see the open issues).")

	if !serve {
		return nil
	}
	fmt.Printf("\nserving: the export fires on EXPORT_SCHEDULE; POST %s/admin/functions/incident-export runs it now. Ctrl-C to stop.\n", host.URL)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

func countFiles(dir string) (int, string) {
	n, sample := 0, ""
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			n++
			if sample == "" {
				sample, _ = filepath.Rel(dir, p)
			}
		}
		return nil
	})
	return n, sample
}
