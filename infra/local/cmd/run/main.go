// Command run is `make run`: the whole product, locally, with no Azure
// tenant. It starts the devstack, points the app settings at it, starts the
// local Functions host on the Function App that make run lays out (host.json, the
// handler, the function folders) and shows each function working: the token
// flow of the original guide, the incident export run twice, a hunting
// query, and a signed Jira webhook resolving an incident.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/infra/local/funchost"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

func main() {
	serve := flag.Bool("serve", false, "keep everything running after the demo (timers fire on EXPORT_SCHEDULE; Ctrl-C to stop)")
	dir := flag.String("dir", ".local", "where the devstack writes its settings and the export goes")
	app := flag.String("app", ".local/app/azure", "the Function App, as make run lays it out (or make build's dist/azure)")
	sinkKind := flag.String("sink", "file", "where the export goes: file, blob (Azurite), s3 (s3rver), logs (Azure Monitor Logs), splunk (Splunk HEC)")
	layout := flag.String("layout", "versions", "EXPORT_LAYOUT: versions (an object per incident version) or batches")
	flag.Parse()
	if err := run(*dir, *app, *sinkKind, *layout, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(1)
	}
}

func run(dir, appDir, sinkKind, layout string, serve bool) error {
	if err := checkSink(sinkKind, layout); err != nil {
		return err
	}
	s, err := devstack.New(devstack.Options{Dir: dir, ChangeEvery: 2 * time.Second})
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Printf("devstack up: Entra ID %s, Key Vault %s, Graph %s, XDR %s\n", s.EntraURL, s.KeyVaultURL, s.GraphURL, s.XDRURL)
	fmt.Printf("app settings written to %s/devstack.env (and local.settings.json for Azure Functions Core Tools)\n", dir)
	settings := s.Settings()
	k, err := openSink(sinkKind, layout, dir, s, settings)
	if err != nil {
		return err
	}
	defer k.close()
	for _, m := range []map[string]string{settings, k.settings} {
		for key, v := range m {
			os.Setenv(key, v)
		}
	}
	fmt.Printf("export: EXPORT_SINK=%s EXPORT_LAYOUT=%s\n\n", os.Getenv("EXPORT_SINK"), layout)
	// The Jira webhook secret reaches the host through this process's
	// environment; -serve keeps it in dir/serve.env (0600), never printed.
	secret := jiraSecret(dir)
	os.Setenv(config.EnvWebhookSecretPrefix+"JIRA", secret)

	// 1. doctor: the guide's flow with the product's code (secret from Key
	// Vault through the managed identity, token, roles), the API, storage.
	fmt.Println("== doctor (the preflight an operator runs with the app's settings: make doctor)")
	if !doctor.Run(context.Background(), os.LookupEnv, os.Stdout, nil) {
		return fmt.Errorf("doctor failed")
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	creds, err := credentials.New(functions.Registration(cfg), nil)
	if err != nil {
		return err
	}

	// 2. The Function App under the local host.
	fmt.Printf("\n== Function App %s under the local Functions host\n", appDir)
	// The functions' log lines stay quiet during the demo (its lines say
	// what happened) and show once -serve keeps everything running.
	logs := &gate{}
	host, err := funchost.Start(funchost.Options{AppDir: appDir, Env: os.Environ(), NoTimers: !serve, Stdout: logs, Stderr: os.Stderr,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		return fmt.Errorf("%w (make run lays out the app: run it rather than this command alone)", err)
	}
	defer host.Close()
	fmt.Printf("host listening on %s; handler started and ready\n", host.URL)
	if err := exportDemo(s, k, host, cfg, dir); err != nil {
		return err
	}
	if err := huntingDemo(host.URL); err != nil {
		return err
	}
	// 4. Jira resolves an incident through a signed webhook.
	client, err := functions.NewClient(cfg, cfg.Tenants[0], creds.Source(cfg.Tenants[0]), nil)
	if err != nil {
		return err
	}
	if err := jiraDemo(s, cfg, client, host.URL, []byte(secret)); err != nil {
		return err
	}
	if !serve {
		fmt.Print(nextSteps)
		return nil
	}
	open, err := openIncident(s, cfg, client)
	if err != nil {
		return err
	}
	if err := writeServeFile(dir, host.URL, secret, open); err != nil {
		return err
	}
	fmt.Print(serveHowTo(dir, host.URL))
	logs.open(os.Stdout)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

// nextSteps end a demo run: where to go from here.
const nextSteps = `
Next steps:
  make run RUN_ARGS=-serve             keep it running, and call the functions yourself (it prints how)
  make run SINK=splunk                 export to a SIEM instead (SINK=file|blob|s3|logs|splunk, LAYOUT=versions|batches)
  make devstack, then make doctor      the preflight on its own, as an operator runs it
  make test                            every test (about 13 minutes)
  docs/deploy-azure.md, docs/deploy-aws.md   your first deployment
`

// exportDemo runs the export twice, as the timer would, and shows what the
// sink holds after each run and the checkpoint after both.
func exportDemo(s *devstack.Stack, k *sink, host *funchost.Host, cfg *config.Config, dir string) error {
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
		n, sample, err := k.holds(context.Background())
		if err != nil {
			return fmt.Errorf("reading the %s sink: %w", k.name, err)
		}
		if sample != "" {
			sample = ", e.g. " + sample
		}
		fmt.Printf("  the %s sink holds %d incident versions%s\n", k.name, n, sample)
	}
	abs, _ := filepath.Abs(dir)
	cp, _ := os.ReadFile(filepath.Join(abs, "state", "incident-export", "graph", cfg.Tenants[0]+".json"))
	var c struct {
		Since   time.Time `json:"since"`
		Written int       `json:"written"`
	}
	json.Unmarshal(cp, &c)
	fmt.Printf("  checkpoint: since %s, %d versions written in all\n", c.Since.Format(time.RFC3339Nano), c.Written)
	return nil
}

// huntingDemo sends a hunting query, as a SOAR playbook would, through the host.
func huntingDemo(hostURL string) error {
	fmt.Println()
	resp, err := http.Get(hostURL + "/api/hunting-query")
	if err != nil {
		return err
	}
	var cat struct {
		Queries []struct{ Name string } `json:"queries"`
	}
	json.NewDecoder(resp.Body).Decode(&cat)
	resp.Body.Close()
	fmt.Printf("hunting-query catalog: %d named queries (GET %s/api/hunting-query)\n", len(cat.Queries), hostURL)
	body := `{"name":"failed-logons","parameters":{"threshold":3,"lookback":"30d"}}`
	resp, err = http.Post(hostURL+"/api/hunting-query", "application/json", strings.NewReader(body))
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
	return nil
}

// openIncident is an incident a Jira "Done" delivery would still change.
func openIncident(s *devstack.Stack, cfg *config.Config, client defender.Client) (string, error) {
	for _, v := range s.Incidents(cfg.Tenants[0]) {
		in, err := client.Incident(context.Background(), strconv.FormatInt(v.ID, 10))
		if err != nil {
			return "", err
		}
		if in.Status != "resolved" && in.Status != "redirected" {
			return in.ID, nil
		}
	}
	return "", errors.New("the devstack has no open incident left")
}

// jiraDemo sends what Jira Cloud sends when an analyst closes a ticket as
// a false positive and comments, then a redelivery and a forgery.
func jiraDemo(s *devstack.Stack, cfg *config.Config, client defender.Client, hostURL string, secret []byte) error {
	fmt.Println("\n== ticket-webhook: Jira closes SOC-17 as \"Done\", resolution \"False positive\"")
	id, err := openIncident(s, cfg, client)
	if err != nil {
		return err
	}
	in, err := client.Incident(context.Background(), id)
	if err != nil {
		return err
	}
	fmt.Printf("incident %s before: status %s, classification %s, %d comments\n", id, in.Status, in.Classification, len(in.Comments))
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	send := func(name, fixture, delivery string, key []byte) error {
		b, err := os.ReadFile(filepath.Join("functions", "ticket-webhook", "testdata", fixture))
		if err != nil {
			return err
		}
		body := strings.NewReplacer("1764165600000", now, "defender-1001", "defender-"+id, "[Defender 1001]", "[Defender "+id+"]").Replace(string(b))
		req, _ := http.NewRequest("POST", hostURL+"/api/ticket-webhook/jira", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=UTF-8")
		req.Header.Set("X-Atlassian-Webhook-Identifier", delivery)
		req.Header.Set(webhook.HeaderHubSignature, webhook.SignHub(key, []byte(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%-40s HTTP %d %s\n", name, resp.StatusCode, strings.TrimSpace(string(answer)))
		return nil
	}
	for _, d := range []struct {
		name, fixture, delivery string
		key                     []byte
	}{
		{"issue updated (Done, False positive)", "jira-issue-updated-done.json", "run-1", secret},
		{"comment created", "jira-comment-created.json", "run-2", secret},
		{"the comment, redelivered", "jira-comment-created.json", "run-2", secret},
		{"a forged delivery", "jira-issue-updated-done.json", "run-3", []byte("not-the-secret-0123456789")},
	} {
		if err := send(d.name, d.fixture, d.delivery, d.key); err != nil {
			return err
		}
	}
	if in, err = client.Incident(context.Background(), id); err != nil {
		return err
	}
	last := ""
	if len(in.Comments) > 0 {
		last = in.Comments[len(in.Comments)-1].Text
	}
	fmt.Printf("incident %s after: status %s, classification %s, determination %s, %d comments, the last: %q\n", id, in.Status, in.Classification, in.Determination, len(in.Comments), last)
	return nil
}

// gate drops what is written to it until it is opened onto w.
type gate struct {
	mu sync.Mutex
	w  io.Writer
}

func (g *gate) open(w io.Writer) { g.mu.Lock(); g.w = w; g.mu.Unlock() }

func (g *gate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.w == nil {
		return len(p), nil
	}
	return g.w.Write(p)
}
