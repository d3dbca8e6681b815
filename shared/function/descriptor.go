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
	// HTTP binds an HTTP function, Timer a timer function, Queue a queue
	// function; exactly one is set.
	HTTP  *HTTPBinding
	Timer *TimerBinding
	Queue *QueueBinding
	// Roles are the application permissions the function's app needs.
	Roles Roles
	// Settings is the group of settings only some functions read
	// (config.ExportSettings …) that this one needs: a problem there stops
	// it, and the functions that do not declare the group run on.
	Settings string
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

// QueueBinding is a queue trigger.
type QueueBinding struct {
	// Queue is the queue's name or an %APP_SETTING% reference.
	Queue string
	// Connection is the app setting (prefix) that names the storage account
	// on Azure: AzureWebJobsStorage, the host's own.
	Connection string
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
		QueueName    string   `json:"queueName,omitempty"`
		Connection   string   `json:"connection,omitempty"`
	}
	var b []binding
	set := 0
	for _, bound := range []bool{d.HTTP != nil, d.Timer != nil, d.Queue != nil} {
		if bound {
			set++
		}
	}
	switch {
	case set != 1:
	case d.HTTP != nil:
		b = []binding{
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: d.HTTP.AuthLevel, Methods: d.HTTP.Methods, Route: d.HTTP.Route},
			{Name: "res", Type: "http", Direction: "out"},
		}
	case d.Timer != nil:
		no, yes := false, true
		b = []binding{{Name: "timer", Type: "timerTrigger", Direction: "in", Schedule: d.Timer.Schedule, RunOnStartup: &no, UseMonitor: &yes}}
	case d.Queue != nil:
		b = []binding{{Name: "msg", Type: "queueTrigger", Direction: "in", QueueName: d.Queue.Queue, Connection: d.Queue.Connection}}
	}
	if b == nil {
		return nil, fmt.Errorf("function %q: a descriptor sets exactly one of HTTP, Timer and Queue", d.Name)
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
	d.must("HTTP", d.HTTP != nil)
	if a.HTTP == nil {
		a.HTTP = map[string]HTTPRoute{}
	}
	a.HTTP[d.Name] = HTTPRoute{Descriptor: d, Func: func(ctx context.Context, r *HTTPRequest) *HTTPResponse {
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

// HandleQueue runs f as the queue function d declares.
func (a *App) HandleQueue(d Descriptor, f MessageFunc) {
	d.must("Queue", d.Queue != nil)
	if a.Queues == nil {
		a.Queues = map[string]QueueRoute{}
	}
	a.Queues[d.Name] = QueueRoute{Descriptor: d, Func: f}
}

// HandleTimer runs f as the timer function d declares.
func (a *App) HandleTimer(d Descriptor, f TimerFunc) {
	d.must("Timer", d.Timer != nil)
	if a.Timers == nil {
		a.Timers = map[string]TimerRoute{}
	}
	a.Timers[d.Name] = TimerRoute{Descriptor: d, Func: f}
}

// must panics when d is handed to the wrong Handle method: a programming
// error, which must stop the process at its start rather than fail every
// request it routes.
func (d Descriptor) must(binding string, bound bool) {
	if !bound {
		panic(fmt.Sprintf("function %q is registered as a %s function but declares no %s binding", d.Name, binding, binding))
	}
}
