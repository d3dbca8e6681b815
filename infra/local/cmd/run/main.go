// Command run is `make run`: it starts the devstack in-process, points the
// product's own configuration at it (as an Azure Function App would get its
// app settings), and walks the original guide's flow with the product's code:
// the secret from Key Vault through the managed identity, an app-only token,
// the token's roles checked, incidents listed. It needs no Azure tenant.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/credentials"
)

func main() {
	serve := flag.Bool("serve", false, "keep the devstack running after the demo (Ctrl-C to stop)")
	dir := flag.String("dir", ".local", "where the devstack writes its settings")
	flag.Parse()
	if err := run(*dir, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(1)
	}
}

func run(dir string, serve bool) error {
	s, err := devstack.New(devstack.Options{Dir: dir, ChangeEvery: 2 * time.Second})
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Printf("devstack up: Entra ID %s, Key Vault %s, Graph %s, XDR %s\n", s.EntraURL, s.KeyVaultURL, s.GraphURL, s.XDRURL)
	fmt.Printf("settings written to %s/devstack.env\n\n", dir)
	// The app settings, as the Functions host would set them.
	for k, v := range s.Settings() {
		os.Setenv(k, v)
	}
	ctx := context.Background()
	for _, api := range []struct{ name, kind, url, list string }{
		{"Microsoft Graph security API", "graph", s.GraphURL, "/v1.0/security/incidents?$top=5&$orderby=lastUpdateDateTime%20desc"},
		{"Defender XDR API", "xdr", s.XDRURL, "/api/incidents?$top=5"},
	} {
		fmt.Printf("== %s\n", api.name)
		os.Setenv(config.EnvAPI, api.kind)
		os.Setenv(config.EnvAPIURL, api.url)
		cfg, err := config.FromEnv()
		if err != nil {
			return err
		}
		creds, err := credentials.New(cfg, nil)
		if err != nil {
			return err
		}
		tenant := cfg.Tenants[0]
		tok, err := creds.Source(tenant).Token(ctx)
		if err != nil {
			return err
		}
		claims, err := credentials.ParseClaims(tok.AccessToken)
		if err != nil {
			return err
		}
		fmt.Printf("secret read from Key Vault %q with the managed identity; app-only token acquired\n", cfg.SecretName)
		fmt.Printf("  aud=%s roles=%s expires=%s\n", claims.Audience, strings.Join(claims.Roles, ","), tok.Expiry.Format(time.RFC3339))
		if err := credentials.CheckRoles(cfg, tenant, claims, credentials.IncidentExport, credentials.HuntingQuery, credentials.TicketWebhook); err != nil {
			fmt.Println("  permission check:", err)
		} else {
			fmt.Println("  permission check: the roles cover incident-export, hunting-query and ticket-webhook")
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", cfg.APIURL+api.list, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := credentials.DefaultHTTPClient().Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var page struct{ Value []map[string]any }
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("list incidents: HTTP %d: %w", resp.StatusCode, err)
		}
		for _, in := range page.Value {
			id, name, status, updated := in["id"], in["displayName"], in["status"], in["lastUpdateDateTime"]
			if id == nil {
				id, name, status, updated = in["incidentId"], in["incidentName"], in["status"], in["lastUpdateTime"]
			}
			fmt.Printf("  incident %-8v %-10v %-28v %v\n", id, status, updated, name)
		}
		fmt.Println()
	}
	if !serve {
		return nil
	}
	fmt.Println("serving; Ctrl-C to stop")
	sctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-sctx.Done()
	return nil
}
