package functions_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/function"
)

// KEY_VAULT_CREDENTIAL=developer is doctor -as-me's: a deployed app given it in
// its settings does not start as whoever is signed in to az on its host,
// and says so.
func TestDeveloperAccessRefused(t *testing.T) {
	for k, v := range map[string]string{"DEFENDER_TENANT_ID": "contoso.onmicrosoft.com", "DEFENDER_CLIENT_ID": "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84",
		"KEY_VAULT_URL": "https://kv.vault.azure.net/", "KEY_VAULT_CREDENTIAL": "developer", "EXPORT_SINK": "file://" + t.TempDir(), "STATE_STORE": "file://" + t.TempDir()} {
		t.Setenv(k, v)
	}
	var logs bytes.Buffer
	app := functions.FromEnv(slog.New(slog.NewJSONHandler(&logs, nil)))
	if !strings.Contains(logs.String(), `KEY_VAULT_CREDENTIAL=developer is for doctor -as-me on an operator's machine, not a deployed app`) {
		t.Fatalf("the log does not say why:\n%s", &logs)
	}
	err := app.Timers["incident-export"].Func(context.Background(), function.Timer{})
	if err == nil || !strings.Contains(err.Error(), "KEY_VAULT_CREDENTIAL=developer") {
		t.Fatalf("the export ran, or failed for another reason: %v", err)
	}
}
