package function_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/defender-functions/defender-functions/shared/function"
)

// A descriptor handed to the wrong Handle method stops the process at its
// start, saying which, instead of failing every request it routes.
func TestHandleChecksTheBinding(t *testing.T) {
	timer := function.Descriptor{Name: "incident-export", Timer: &function.TimerBinding{Schedule: "0 */5 * * * *"}}
	for name, register := range map[string]func(*function.App){
		"HTTP": func(a *function.App) {
			a.HandleHTTP(timer, func(context.Context, *function.HTTPRequest) *function.HTTPResponse { return nil })
		},
		"Queue": func(a *function.App) {
			a.HandleQueue(timer, func(context.Context, function.Message) error { return nil })
		},
	} {
		got := func() (p any) {
			defer func() { p = recover() }()
			register(&function.App{})
			return nil
		}()
		want := fmt.Sprintf("function %q is registered as a %s function but declares no %s binding", "incident-export", name, name)
		if got != want {
			t.Errorf("%s: panic %v, want %q", name, got, want)
		}
	}
	a := &function.App{}
	a.HandleTimer(timer, func(context.Context, function.Timer) error { return nil })
	if a.Timers["incident-export"].Timer.Schedule != "0 */5 * * * *" {
		t.Errorf("the timer is routed %+v", a.Timers["incident-export"])
	}
}
