package function

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// Descriptor declares a function once, beside its code. Everything else is
// derived from it: the app's routing (App.HandleHTTP, App.HandleTimer), the
// Function App's function.json (written by make build), the application
// permissions the credential checks and doctor ask for, and the templates'
// tests.
type Descriptor struct {
	// Name is the function's name in Azure: its folder in the Function App.
	Name string
	// HTTP binds an HTTP function, Timer a timer function; exactly one is set.
	HTTP  *HTTPBinding
	Timer *TimerBinding
	// Roles are the application permissions the function's app needs.
	Roles Roles
}

// HTTPBinding is an HTTP trigger.
type HTTPBinding struct {
	// Route is the path under /api/, e.g. "ticket-webhook/{provider}".
	Route string
	// Methods are lower-case, as function.json spells them.
	Methods []string
	// AuthLevel is the platform key requirement: "function" or "anonymous".
	AuthLevel string
	// Signed: a caller proves who it is by signing the body, so an answer
	// before the signature is checked says nothing about the deployment.
	Signed bool
}

// TimerBinding is a timer trigger.
type TimerBinding struct {
	// Schedule is an NCRONTAB expression or an %APP_SETTING% reference.
	Schedule string
}

// Roles are, for each API, the application permissions any one of which
// the function needs, the least privileged first. A function that calls no
// API leaves them empty.
type Roles struct {
	Graph, XDR []string
}

// FunctionJSON is the function's function.json, as the Functions host reads
// it. Timer runs are not run on startup (a restart must not export twice)
// and use the schedule monitor (a run missed while the app was down fires
// once, past due).
func (d Descriptor) FunctionJSON() ([]byte, error) {
	type binding struct {
		Name         string   `json:"name"`
		Type         string   `json:"type"`
		Direction    string   `json:"direction"`
		AuthLevel    string   `json:"authLevel,omitempty"`
		Methods      []string `json:"methods,omitempty"`
		Route        string   `json:"route,omitempty"`
		Schedule     string   `json:"schedule,omitempty"`
		RunOnStartup *bool    `json:"runOnStartup,omitempty"`
		UseMonitor   *bool    `json:"useMonitor,omitempty"`
	}
	var b []binding
	switch {
	case d.HTTP != nil && d.Timer == nil:
		b = []binding{
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: d.HTTP.AuthLevel, Methods: d.HTTP.Methods, Route: d.HTTP.Route},
			{Name: "res", Type: "http", Direction: "out"},
		}
	case d.Timer != nil && d.HTTP == nil:
		no, yes := false, true
		b = []binding{{Name: "timer", Type: "timerTrigger", Direction: "in", Schedule: d.Timer.Schedule, RunOnStartup: &no, UseMonitor: &yes}}
	default:
		return nil, fmt.Errorf("function %q: a descriptor sets exactly one of HTTP and Timer", d.Name)
	}
	out, err := json.MarshalIndent(struct {
		Bindings []binding `json:"bindings"`
	}{b}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// HandleHTTP serves f as the HTTP function d declares. Every answer carries
// the invocation's ID (HeaderCorrelationID), which every log line of the
// invocation carries too: a caller quotes it, the operator finds the
// details the answer leaves out.
func (a *App) HandleHTTP(d Descriptor, f HTTPFunc) {
	if a.HTTP == nil {
		a.HTTP = map[string]HTTPRoute{}
	}
	a.HTTP[d.Name] = HTTPRoute{Route: d.HTTP.Route, Methods: d.HTTP.Methods, AuthLevel: d.HTTP.AuthLevel, Func: func(ctx context.Context, r *HTTPRequest) *HTTPResponse {
		resp := f(ctx, r)
		if id := InvocationID(ctx); id != "" && resp != nil {
			if resp.Header == nil {
				resp.Header = http.Header{}
			}
			resp.Header.Set(HeaderCorrelationID, id)
		}
		return resp
	}}
}

// HeaderCorrelationID carries the invocation's ID on every HTTP answer.
const HeaderCorrelationID = "X-Correlation-Id"

// HandleTimer runs f as the timer function d declares.
func (a *App) HandleTimer(d Descriptor, f TimerFunc) {
	if a.Timers == nil {
		a.Timers = map[string]TimerSchedule{}
	}
	a.Timers[d.Name] = TimerSchedule{Schedule: d.Timer.Schedule, Func: f}
}
