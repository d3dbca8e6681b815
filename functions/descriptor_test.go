package functions_test

import (
	"encoding/json"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/function"
)

// functionJSON is what the Functions host reads of a function.json.
type functionJSON struct {
	Bindings []struct {
		Name, Type, Direction, AuthLevel, Route, Schedule, QueueName, Connection string
		Methods                                                                  []string
		RunOnStartup                                                             *bool
		UseMonitor                                                               *bool
	}
}

// Each function's declaration, the function.json written from it, the
// routes the app serves and the roles the checks ask for agree, for the
// working app and for the app of a broken configuration.
func TestDescriptorsAgree(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"DEFENDER_TENANT_ID": "contoso.onmicrosoft.com", "DEFENDER_CLIENT_ID": "2f6b9c3e-8a41-4d7e-b5c2-9e0f1a7d3c84",
		"KEY_VAULT_URL": "https://kv.vault.azure.net/", "EXPORT_SINK": "file://" + dir + "/export", "STATE_STORE": "file://" + dir + "/state"}
	app, err := functions.New(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	apps := map[string]*function.App{"configured": app, "broken": functions.Broken(config.Problems{"x"}, slog.New(slog.DiscardHandler))}

	names := map[string]bool{}
	for _, d := range functions.Functions {
		if names[d.Name] {
			t.Errorf("%s is declared twice", d.Name)
		}
		names[d.Name] = true
		b, err := d.FunctionJSON()
		if err != nil {
			t.Fatal(err)
		}
		var fj functionJSON
		if err := json.Unmarshal(b, &fj); err != nil {
			t.Fatalf("%s: %v", d.Name, err)
		}
		var triggers int
		for _, bd := range fj.Bindings {
			switch bd.Type {
			case "httpTrigger":
				triggers++
				if d.HTTP == nil || bd.Route != d.HTTP.Route || !slices.Equal(bd.Methods, d.HTTP.Methods) || bd.AuthLevel != d.HTTP.AuthLevel || bd.Direction != "in" {
					t.Errorf("%s: function.json binds %+v, the descriptor %+v", d.Name, bd, d.HTTP)
				}
			case "timerTrigger":
				triggers++
				if d.Timer == nil || bd.Schedule != d.Timer.Schedule || bd.RunOnStartup == nil || *bd.RunOnStartup || bd.UseMonitor == nil || !*bd.UseMonitor {
					t.Errorf("%s: function.json binds %+v, the descriptor %+v", d.Name, bd, d.Timer)
				}
			case "queueTrigger":
				triggers++
				if d.Queue == nil || bd.QueueName != d.Queue.Queue || bd.Connection != d.Queue.Connection || bd.Direction != "in" {
					t.Errorf("%s: function.json binds %+v, the descriptor %+v", d.Name, bd, d.Queue)
				}
			case "http":
				if d.HTTP == nil || bd.Direction != "out" {
					t.Errorf("%s: an HTTP output binding on a function that is not HTTP", d.Name)
				}
			default:
				t.Errorf("%s: binding type %q", d.Name, bd.Type)
			}
		}
		if triggers != 1 {
			t.Errorf("%s: %d triggers in function.json", d.Name, triggers)
		}
		for kind, a := range apps {
			if d.HTTP != nil {
				r, ok := a.HTTP[d.Name]
				if !ok || !reflect.DeepEqual(r.Descriptor, d) || r.Func == nil {
					t.Errorf("%s app: %s is routed %+v, declared %+v", kind, d.Name, r, d.HTTP)
				}
				for _, m := range d.HTTP.Methods {
					if name, _, _, _, ok := a.MatchHTTP("/api/"+exampleRoute(d.HTTP.Route), m); !ok || name != d.Name {
						t.Errorf("%s app: %s /api/%s reaches %q", kind, m, exampleRoute(d.HTTP.Route), name)
					}
				}
			} else if d.Queue != nil {
				if q, ok := a.Queues[d.Name]; !ok || !reflect.DeepEqual(q.Descriptor, d) || q.Func == nil {
					t.Errorf("%s app: %s listens to %+v, declared %+v", kind, d.Name, q, d.Queue)
				}
			} else if tm, ok := a.Timers[d.Name]; !ok || !reflect.DeepEqual(tm.Descriptor, d) || tm.Func == nil {
				t.Errorf("%s app: %s is scheduled %+v, declared %+v", kind, d.Name, tm, d.Timer)
			}
		}
		// Every function calls the API: it declares what it needs on both.
		for api, roles := range map[config.API][]string{config.Graph: d.Roles.Graph, config.XDR: d.Roles.XDR} {
			got := functions.Requirements(api, d.Name)
			if len(roles) == 0 || len(got) != 1 || got[0].Function != d.Name || !slices.Equal(got[0].AnyOf, roles) {
				t.Errorf("%s on %s: requirements %+v, declared %v", d.Name, api, got, roles)
			}
		}
	}
	for kind, a := range apps {
		if n := len(a.HTTP) + len(a.Timers) + len(a.Queues); n != len(functions.Functions) {
			t.Errorf("%s app serves %d functions, %d are declared", kind, n, len(functions.Functions))
		}
	}
	// The export's schedule and queue are the settings config reads and checks.
	for _, d := range functions.Functions {
		if d.Timer != nil && d.Timer.Schedule != "%"+config.EnvExportSchedule+"%" {
			t.Errorf("%s: schedule %q is not %%%s%%", d.Name, d.Timer.Schedule, config.EnvExportSchedule)
		}
		if d.Queue != nil && (d.Queue.Queue != "%"+config.EnvExportQueue+"%" || d.Queue.Connection != config.EnvStorage) {
			t.Errorf("%s: queue %+v is not %%%s%% of %s", d.Name, d.Queue, config.EnvExportQueue, config.EnvStorage)
		}
	}
	// Each group of settings config reads for some functions only is one
	// that a function declares, and every function declares one: a problem
	// there stops exactly the functions that read it.
	groups := map[string]bool{}
	for _, d := range functions.Functions {
		groups[d.Settings] = true
	}
	if want := []string{config.ExportSettings, config.HuntingSettings, config.WebhookSettings}; !slices.Equal(slices.Sorted(maps.Keys(groups)), slices.Sorted(slices.Values(want))) {
		t.Errorf("config's groups of settings are %v, the descriptors declare %v", want, slices.Sorted(maps.Keys(groups)))
	}
	if len(functions.Requirements(config.Graph, "no-such-function")) != 0 {
		t.Error("requirements for an undeclared function")
	}
}

// exampleRoute fills a route's parameters: "a/{b}" → "a/x".
func exampleRoute(route string) string {
	out := []byte{}
	skip := false
	for i := 0; i < len(route); i++ {
		switch c := route[i]; {
		case c == '{':
			skip = true
			out = append(out, 'x')
		case c == '}':
			skip = false
		case !skip:
			out = append(out, c)
		}
	}
	return string(out)
}
