// Package loopback picks the ports of the local processes that must be told
// a port before they listen: the custom handler (as the Functions host starts
// it), Azurite and s3rver.
package loopback

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Port returns a loopback TCP port that is free now, chosen below the
// kernel's ephemeral range. A port from bind(0), closed and handed to a
// child, lies in that range, where any listener on :0 or outgoing connection
// on the machine may take it before the child binds: a parallel test's
// httptest server once did, and the child's readiness probe was answered by
// the wrong server (404 on the function's route). Below the range only
// another caller of Port can collide, one chance in thousands, and a caller
// that sees its child exit picks again.
func Port() (int, error) {
	lo := ephemeralLow()
	const from = 10000
	if lo <= from+1000 {
		// An unusual range: fall back to what the kernel hands out.
		return kernelPort()
	}
	for range 200 {
		p := from + rand.IntN(lo-from)
		ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	return 0, errors.New("loopback: no free port below the ephemeral range after 200 tries")
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default, 32768, where /proc does not say).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 32768
}

func kernelPort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("loopback: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
