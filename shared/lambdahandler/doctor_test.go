package lambdahandler_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/defender-functions/defender-functions/shared/lambdahandler"
)

// A {"source":"doctor"} event runs the preflight the bootstrap wires in and
// answers its report; without one the event is unsupported.
func TestDoctorEvent(t *testing.T) {
	report := func(passed bool) func(context.Context, io.Writer) bool {
		return func(_ context.Context, w io.Writer) bool {
			fmt.Fprint(w, "ok    config       fine\nFAIL  token        refused\n      fix: do this\n")
			return passed
		}
	}
	for _, c := range []struct {
		name   string
		doctor func(context.Context, io.Writer) bool
		want   string
	}{
		{"passed", report(true), `{"passed":true,"report":["ok    config       fine","FAIL  token        refused","      fix: do this"]}`},
		{"failed", report(false), `{"passed":false,"report":["ok    config       fine","FAIL  token        refused","      fix: do this"]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := lambdahandler.New(app(&seen{}), lambdahandler.Options{Doctor: c.doctor})
			out, err := h.Invoke(context.Background(), []byte(`{"source":"doctor"}`))
			if err != nil || string(out) != c.want {
				t.Fatalf("got %s, %v; want %s", out, err, c.want)
			}
		})
	}
	h := lambdahandler.New(app(&seen{}), lambdahandler.Options{})
	if out, err := h.Invoke(context.Background(), []byte(`{"source":"doctor"}`)); err == nil {
		t.Fatalf("without Doctor, answered %s", out)
	}
}
