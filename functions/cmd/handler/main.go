// Command handler is the Azure Functions custom handler: it serves every
// function to the Functions host on FUNCTIONS_CUSTOMHANDLER_PORT.
package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/customhandler"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	// From the start: a stop asked for while the app is built is a stop.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
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
	ready := make(chan struct{})
	go func() {
		h = customhandler.New(functions.FromEnv(log), customhandler.Options{TrustEasyAuth: os.Getenv("WEBSITE_AUTH_ENABLED") == "True", MaxDequeueCount: maxDequeue})
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
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		// Serve returns by itself only when accepting fails.
		log.Error("The handler stopped serving.", "err", err)
		stopTelemetry(ready, log)
		os.Exit(1)
	case <-ctx.Done():
	}
	// Running invocations finish (a timer run stops before its deadline),
	// then their telemetry goes: Serve returned as the shutdown began, and
	// returning from main then would have cut both short.
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget-telemetryShare)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("Invocations were still running when the handler stopped.", "err", err)
	}
	stopTelemetry(ready, log)
}

// The handler's shutdown, invocations and telemetry together, stays within
// 25 s (the host's grace period is not ours to read); telemetry's share is
// taken last, so that a collector that hangs costs at most that.
const (
	shutdownBudget = 25 * time.Second
	telemetryShare = 3 * time.Second
)

// stopTelemetry exports what the telemetry holds and stops it, within its
// share of the shutdown.
func stopTelemetry(ready <-chan struct{}, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), telemetryShare)
	defer cancel()
	select {
	case <-ready: // the app starts the telemetry as it is built
	case <-ctx.Done():
		return
	}
	if err := telemetry.Installed().Shutdown(ctx); err != nil {
		log.Warn("Telemetry not exported.", "err", err)
	}
}
