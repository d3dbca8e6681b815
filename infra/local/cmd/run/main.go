// Command run is `make run`: it starts the devstack in-process and walks the
// original guide's flow with the product's own code paths, printing each
// step plainly. It needs no Azure tenant.
package main

import (
	"context"
	"encoding/base64"
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
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
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

	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.HTTPClient())
	for _, api := range []struct{ name, resource, url string }{
		{"Microsoft Graph security API", devstack.GraphResource, s.GraphURL + "/v1.0/security/incidents?$top=5&$orderby=lastUpdateDateTime%20desc"},
		{"Defender XDR API", devstack.XDRResource, s.XDRURL + "/api/incidents?$top=5"},
	} {
		fmt.Printf("== %s\n", api.name)
		cfg := clientcredentials.Config{ClientID: devstack.DefaultClientID, ClientSecret: s.ClientSecret(devstack.DefaultClientID),
			TokenURL: s.EntraURL + "/" + devstack.DefaultTenantID + "/oauth2/v2.0/token", Scopes: []string{api.resource + "/.default"},
			AuthStyle: oauth2.AuthStyleInParams}
		tok, err := cfg.Token(ctx)
		if err != nil {
			return err
		}
		roles, aud := decode(tok.AccessToken)
		fmt.Printf("app-only token acquired: aud=%s roles=%s expires=%s\n", aud, strings.Join(roles, ","), tok.Expiry.Format(time.RFC3339))
		req, _ := http.NewRequest("GET", api.url, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := s.HTTPClient().Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var page struct{ Value []map[string]any }
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("list incidents: %d: %w", resp.StatusCode, err)
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

// decode reads the claims the guide tells you to check (it prints no token).
func decode(jwt string) ([]string, string) {
	parts := strings.Split(jwt, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Roles []string `json:"roles"`
		Aud   string   `json:"aud"`
	}
	json.Unmarshal(b, &c)
	return c.Roles, c.Aud
}
