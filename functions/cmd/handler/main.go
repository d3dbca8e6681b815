// Command handler is the Azure Functions custom handler: it serves every
// function to the Functions host on FUNCTIONS_CUSTOMHANDLER_PORT.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/function"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	port := os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT")
	if port == "" {
		port = "8080"
	}
	// Listen first: the host probes GET / from the moment it starts the
	// process, and building the app (no network I/O) can go on meanwhile;
	// invocations wait the millisecond or two until it is ready. "tcp4":
	// the host calls 127.0.0.1, and "tcp" would first probe the IPv6 stack.
	ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Error("The handler cannot listen on its port.", "port", port, "err", err)
		os.Exit(1)
	}
	// A queue message's last delivery is the host's maxDequeueCount-th.
	maxDequeue, err := customhandler.HostMaxDequeueCount(".", os.Getenv)
	if err != nil {
		log.Error("The host's queue settings are unreadable.", "err", err)
		os.Exit(1)
	}
	var h http.Handler
	var app *function.App
	ready := make(chan struct{})
	go func() {
		app = functions.FromEnv(log)
		h = customhandler.New(app, customhandler.Options{TrustEasyAuth: os.Getenv("WEBSITE_AUTH_ENABLED") == "True", MaxDequeueCount: maxDequeue})
		close(ready)
	}()
	srv := customhandler.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.WriteHeader(http.StatusOK) // the host's readiness probe, whatever the method
			return
		}
		<-ready
		h.ServeHTTP(w, r)
	}), customhandler.ServerOptions{})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		// Let running invocations finish (a timer run stops before its deadline).
		sctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-ready
		if app.Flush != nil {
			app.Flush(sctx) // the telemetry of the last invocations
		}
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("The handler stopped serving.", "err", err)
		os.Exit(1)
	}
}
