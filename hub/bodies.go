package hub

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of the bounds on request bodies (Config.BodyStallTimeout, MaxBodiesPerClient).
const (
	// DefaultBodyStallTimeout is how long a client may send nothing of a body it
	// announced. A thin uplink still sends something every few seconds; a stalled or
	// hostile client is cut and its socket freed.
	DefaultBodyStallTimeout = 30 * time.Second
	// DefaultMaxBodiesPerClient bounds the requests with a body that one client address
	// has in flight. push sends 4 blocks at once, so 16 leaves room for several pushers
	// behind one address.
	DefaultMaxBodiesPerClient = 16
)

// guardBodies bounds what a client can hold with request bodies: each body must make
// progress within Config.BodyStallTimeout (also when the handler does not read it and the
// server drains it), and one address has at most Config.MaxBodiesPerClient of them in
// flight; past that it gets 429 at once.
func (s *Server) guardBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		b := &stallBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: s.cfg.BodyStallTimeout}
		b.extend() // before anything, so that even the drain of a refused body is bounded
		client := clientAddr(r)
		if !s.bodies.acquire(client) {
			w.Header().Set("Connection", "close")
			s.refuse(w, r, http.StatusTooManyRequests, "too many requests with a body in flight from this address")
			return
		}
		defer s.bodies.release(client)
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

// stallBody is a request body whose every read must come within timeout of the last one
// that made progress (a read deadline on the connection, moved forward as bytes come).
type stallBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
}

func (b *stallBody) extend() { b.rc.SetReadDeadline(time.Now().Add(b.timeout)) }

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		// The whole body is in: the connection's reads from now on are the server's
		// own (noticing a client that goes away), which must not time out.
		b.rc.SetReadDeadline(time.Time{})
	case n > 0:
		b.extend()
	}
	return n, err
}

// clientAddr is the address a request came from, without its port.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// clientLimiter counts what each client address has in flight, up to max.
type clientLimiter struct {
	mu  sync.Mutex
	max int
	n   map[string]int
}

func (l *clientLimiter) acquire(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[client] >= l.max {
		return false
	}
	if l.n == nil {
		l.n = map[string]int{}
	}
	l.n[client]++
	return true
}

func (l *clientLimiter) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[client]--; l.n[client] <= 0 {
		delete(l.n, client)
	}
}
