package functions_test

import (
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/credentials"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/defender-functions/defender-functions/shared/webhook"
)

// One failure reads the same in every HTTP function: Key Vault refusing the
// app's identity is a configuration to fix, 500 with no Retry-After, in
// hunting-query as in ticket-webhook (which answered 503 "retry in 30 s",
// so a ticketing system retried it for ever).
func TestOneFailureOneAnswer(t *testing.T) {
	s := devstack.Start(t, devstack.Options{})
	dir := t.TempDir()
	cert := filepath.Join(dir, "reader.pem")
	os.WriteFile(cert, []byte(s.ClientCertificatePEM(devstack.ReaderClientID)), 0o600)
	key := []byte("a-generic-webhook-key-0123456789")
	m := s.Settings()
	// A bootstrap app without a vault role: Key Vault answers 403.
	m["KEY_VAULT_CREDENTIAL"], m["KEY_VAULT_CLIENT_ID"], m["KEY_VAULT_CERTIFICATE_PATH"] = "client-certificate", devstack.ReaderClientID, cert
	m["STATE_STORE"], m["EXPORT_SINK"] = "file://"+filepath.Join(dir, "state"), "file://"+filepath.Join(dir, "export")
	m["WEBHOOK_SECRET_GENERIC"] = "whsec_" + base64.StdEncoding.EncodeToString(key)
	app, err := functions.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, slog.New(slog.NewJSONHandler(devstack.AuditLog(), nil)),
		&functions.Options{HTTPClient: s.HTTPClient(), Cache: credentials.NewCache(nil)})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"ticket.updated","data":{"incidentId":"1001","ticket":"OPS-7","status":"resolved"}}`)
	now := time.Now()
	delivery := http.Header{"Content-Type": {"application/json"}}
	delivery.Set(webhook.HeaderID, "msg_kv")
	delivery.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	delivery.Set(webhook.HeaderSignature, webhook.SignStandard(key, "msg_kv", now, body))
	ctx := function.WithInvocation(context.Background(), app.Log(), "t")
	for name, resp := range map[string]*function.HTTPResponse{
		"hunting-query": app.HTTP["hunting-query"].Func(ctx, &function.HTTPRequest{Method: "POST", Header: http.Header{"Content-Type": {"application/json"}},
			Body: []byte(`{"name":"failed-logons"}`)}),
		"ticket-webhook": app.HTTP["ticket-webhook"].Func(ctx, &function.HTTPRequest{Method: "POST", Params: map[string]string{"provider": "generic"},
			Header: delivery, Body: body}),
	} {
		if resp.Status != 500 || resp.Header.Get("Retry-After") != "" || !strings.Contains(string(resp.Body), `"code":"CredentialsRejected"`) {
			t.Errorf("%s: %d Retry-After %q %s", name, resp.Status, resp.Header.Get("Retry-After"), resp.Body)
		}
		if strings.Contains(string(resp.Body), devstack.ReaderClientID) || strings.Contains(string(resp.Body), "KEY_VAULT") {
			t.Errorf("%s: the answer discloses the deployment: %s", name, resp.Body)
		}
	}
}
