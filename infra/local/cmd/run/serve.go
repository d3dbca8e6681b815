package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/defender-functions/defender-functions/shared/config"
)

// serveFile holds what another shell needs to reach a -serve run: the
// host's URL and the Jira webhook secret. 0600: the secret signs
// deliveries that change incidents.
const serveFile = "serve.env"

// jiraSecret is the Jira webhook secret the host gets: the environment's
// WEBHOOK_SECRET_JIRA, else the one a previous run kept in dir/serve.env
// (so a shell that sourced it stays right across restarts), else a new one.
func jiraSecret(dir string) string {
	if v := os.Getenv(config.EnvWebhookSecretPrefix + "JIRA"); v != "" {
		return v
	}
	if f, err := os.Open(filepath.Join(dir, serveFile)); err == nil {
		defer f.Close()
		for sc := bufio.NewScanner(f); sc.Scan(); {
			if v, ok := strings.CutPrefix(sc.Text(), "export "+config.EnvWebhookSecretPrefix+"JIRA="); ok && v != "" {
				return v
			}
		}
	}
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// writeServeFile writes dir/serve.env, readable by its owner only: the
// host's URL, the secret (URL-safe base64: no quoting needed) and an
// incident a Jira "Done" delivery still changes.
func writeServeFile(dir, hostURL, secret, incident string) error {
	p := filepath.Join(dir, serveFile)
	body := fmt.Sprintf("# Written by make run RUN_ARGS=-serve: source it in another shell to reach the running functions.\n"+
		"export DF_URL=%s\nexport %sJIRA=%s\nexport DF_INCIDENT=%s\n", hostURL, config.EnvWebhookSecretPrefix, secret, incident)
	tmp := p + ".tmp"
	os.Remove(tmp) // WriteFile keeps an existing file's mode
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// serveHowTo is what -serve prints once everything runs: every function's
// URL with a command that works as printed, from another shell in the
// repository.
func serveHowTo(dir, hostURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nServing. The functions, on the local Functions host at %s:\n", hostURL)
	fmt.Fprintf(&b, "  POST %s/api/hunting-query                 hunting-query (GET lists the catalog)\n", hostURL)
	fmt.Fprintf(&b, "  POST %s/admin/functions/incident-export   incident-export, now (it also fires on EXPORT_SCHEDULE)\n", hostURL)
	fmt.Fprintf(&b, "  POST %s/api/ticket-webhook/jira           ticket-webhook (also /servicenow, /generic)\n", hostURL)
	fmt.Fprintf(&b, "\nFrom another shell in this directory (%s holds the URL and the Jira webhook secret, mode 0600):\n", filepath.Join(dir, serveFile))
	cmds := strings.Replace(serveCommands, ".local/serve.env", filepath.Join(dir, serveFile), 1)
	for _, line := range strings.SplitAfter(cmds, "\n") {
		if line != "" {
			b.WriteString("  " + line)
		}
	}
	b.WriteString("\nThe functions' log lines follow (one audit line per request). Ctrl-C to stop.\n")
	return b.String()
}

// serveCommands are the commands serveHowTo prints, one per line, the
// same for every run (serve.env holds what changes): the README shows them
// and a test runs the README's. The Jira delivery is the fixture of an
// analyst's "Done, False positive", for DF_INCIDENT, signed as Jira signs
// (HMAC-SHA256 of the body, X-Hub-Signature).
const serveCommands = `source .local/serve.env
curl -s -X POST "$DF_URL/api/hunting-query" -H 'Content-Type: application/json' -d '{"name":"failed-logons","parameters":{"threshold":3,"lookback":"30d"}}' -w '\n'
curl -s -X POST "$DF_URL/admin/functions/incident-export" -H 'Content-Type: application/json' -d '{}' -w '%{http_code}\n'
body=$(sed -e "s/1764165600000/$(date +%s)000/" -e "s/1001/$DF_INCIDENT/g" functions/ticket-webhook/testdata/jira-issue-updated-done.json)
curl -s -X POST "$DF_URL/api/ticket-webhook/jira" -H 'Content-Type: application/json' -H "X-Atlassian-Webhook-Identifier: $(date +%s)-$RANDOM" -H "X-Hub-Signature: sha256=$(printf %s "$body" | openssl dgst -sha256 -hmac "$WEBHOOK_SECRET_JIRA" | sed 's/^.* //')" --data-binary "$body" -w '\n'
`
