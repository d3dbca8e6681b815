// Package functions wires the configuration, the shared services and the
// functions into one function.App, which the custom handler and the Lambda
// bootstrap serve. Each function lives in its own folder beside its
// function.json, named as it is named in Azure.
package functions

import (
	"context"
	"log/slog"
	"net/http"
	"os"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/function"
)

// Names of the functions, as in Azure.
const (
	IncidentExport = "incident-export"
	HuntingQuery   = "hunting-query"
	TicketWebhook  = "ticket-webhook"
)

// FromEnv builds the app from the process environment. A configuration
// problem does not stop the process (the host must still see it ready): every
// function then fails with the problem, which names the settings to fix.
func FromEnv(log *slog.Logger) *function.App {
	app, err := New(os.LookupEnv, log)
	if err != nil {
		log.Error("configuration", "error", err.Error())
		return Broken(err, log)
	}
	return app
}

// New builds the app from settings. It performs no I/O.
func New(lookup func(string) (string, bool), log *slog.Logger) (*function.App, error) {
	cfg, err := config.Load(lookup)
	if err != nil {
		return nil, err
	}
	_ = cfg
	return &function.App{HTTP: map[string]function.HTTPRoute{}, Timers: map[string]function.TimerSchedule{}, Logger: log}, nil
}

// Broken is the app of a process whose configuration is wrong.
func Broken(cause error, log *slog.Logger) *function.App {
	msg := "Defender Functions is not configured: " + cause.Error()
	httpFail := func(context.Context, *function.HTTPRequest) *function.HTTPResponse {
		return function.Text(http.StatusInternalServerError, msg)
	}
	return &function.App{Logger: log,
		HTTP: map[string]function.HTTPRoute{
			HuntingQuery:  {Route: "hunting-query", Methods: []string{"get", "post"}, AuthLevel: "function", Func: httpFail},
			TicketWebhook: {Route: "ticket-webhook/{provider}", Methods: []string{"post"}, AuthLevel: "function", Func: httpFail},
		},
		Timers: map[string]function.TimerSchedule{
			IncidentExport: {Schedule: "%EXPORT_SCHEDULE%", Func: func(context.Context, function.Timer) error { return cause }},
		}}
}
