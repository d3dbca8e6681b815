package doctor_test

import (
	"context"
	"net"
	"net/http"
	"regexp"
	"testing"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

// dnsServer is the resolver's address in a lookup's error: the machine's
// (resolv.conf), whichever server answered.
var dnsServer = regexp.MustCompile(` on [^ ]+: no such host`)

// nxdomainClient trusts the devstack and resolves names with Go's own
// resolver against a DNS server on loopback that answers every query
// "no such name" (NXDOMAIN), as a public resolver answers a typo: the
// result does not depend on this machine's network or DNS.
func nxdomainClient(t *testing.T, s *devstack.Stack) *http.Client {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			// The query back, as a response: QR set, RD kept, RA set, RCODE 3.
			resp := append([]byte(nil), buf[:n]...)
			resp[2] = 0x80 | resp[2]&0x01
			resp[3] = 0x80 | 3
			pc.WriteTo(resp, from)
		}
	}()
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	tr := s.Transport()
	tr.Proxy = nil
	tr.DialContext = (&net.Dialer{Resolver: resolver}).DialContext
	return &http.Client{Transport: tr}
}
