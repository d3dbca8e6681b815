package customhandler_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/customhandler"
)

// The server closes a connection whose body trickles in or that sits idle,
// and leaves an invocation that outlasts both to finish: its context is not
// cancelled once its body was read.
func TestServerTimeouts(t *testing.T) {
	const body, idle = 300 * time.Millisecond, 400 * time.Millisecond
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	long := make(chan error, 1)
	srv := customhandler.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return // the body's deadline
		}
		if r.URL.Path == "/long" {
			select {
			case <-time.After(3 * body):
				long <- nil
			case <-r.Context().Done():
				long <- r.Context().Err()
			}
		}
		w.Write(b)
	}), customhandler.ServerOptions{BodyTimeout: body, IdleTimeout: idle})
	go srv.Serve(ln)
	defer srv.Close()

	t.Run("a body a byte at a time", func(t *testing.T) {
		c := dial(t, ln)
		io.WriteString(c, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
		start := time.Now()
		for i := 0; i < 100; i++ {
			if _, err := c.Write([]byte("x")); err != nil {
				break
			}
			if closed(c, 100*time.Millisecond) {
				break
			}
		}
		if took := time.Since(start); took > body+time.Second {
			t.Fatalf("the trickling body held the connection %s", took)
		}
	})
	t.Run("an idle keep-alive", func(t *testing.T) {
		c := dial(t, ln)
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		start := time.Now()
		if !closed(c, idle+time.Second) {
			t.Fatalf("an idle connection still open after %s", time.Since(start))
		}
	})
	t.Run("an invocation longer than the timeouts", func(t *testing.T) {
		resp, err := http.Post("http://"+ln.Addr().String()+"/long", "application/json", strings.NewReader(`{"Data":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := <-long; err != nil || string(b) != `{"Data":{}}` {
			t.Fatalf("the long invocation: context %v, answer %q", err, b)
		}
	})
}

func dial(t *testing.T, ln net.Listener) net.Conn {
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closed says whether the server closed c within d.
func closed(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}
