// Command minimal is BenchmarkStartToReady's baseline: the least a custom
// handler can be, a net/http server answering the host's readiness probe.
package main

import (
	"net"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	if err := http.ListenAndServe(net.JoinHostPort("127.0.0.1", os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT")), nil); err != nil {
		os.Exit(1)
	}
}
