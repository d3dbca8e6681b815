package customhandler

import (
	"io"
	"net/http"
	"time"
)

// ServerOptions bound what a connection may hold open.
type ServerOptions struct {
	// HeaderTimeout bounds reading a request's headers (default 30 s).
	HeaderTimeout time.Duration
	// BodyTimeout bounds reading its body, from the end of its headers
	// (default 30 s): a body trickling in a byte at a time holds nothing
	// for longer.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that carries no request
	// for that long (default 30 s).
	IdleTimeout time.Duration
}

// NewServer is the server in front of h. An invocation may run for the
// host's functionTimeout, so nothing bounds the handler or its answer: the
// body's deadline is set on the connection for the body alone and cleared
// once it is read (a deadline left on the connection would end the
// server's background read, and with it the request's context, in the
// middle of a long invocation).
func NewServer(h http.Handler, o ServerOptions) *http.Server {
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 30 * time.Second
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	return &http.Server{ReadHeaderTimeout: o.HeaderTimeout, IdleTimeout: o.IdleTimeout,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body != nil && r.Body != http.NoBody {
				rc := http.NewResponseController(w)
				if rc.SetReadDeadline(time.Now().Add(o.BodyTimeout)) == nil {
					r.Body = &deadlineBody{ReadCloser: r.Body, clear: func() { rc.SetReadDeadline(time.Time{}) }}
				}
			}
			h.ServeHTTP(w, r)
		})}
}

// deadlineBody clears the connection's read deadline once the body ends.
type deadlineBody struct {
	io.ReadCloser
	clear   func()
	cleared bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.cleared {
		b.cleared = true
		b.clear()
	}
	return n, err
}
