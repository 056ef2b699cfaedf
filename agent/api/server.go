package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// maxRequestBody bounds a request body: requests are small JSON objects.
const maxRequestBody = 64 << 10

// ErrBadRequest marks Backend errors caused by the request (answered 400); ErrNotFound
// marks a missing thing (404); ErrConflict a state clash such as a busy mountpoint (409).
var (
	ErrBadRequest = errors.New("bad request")
	ErrNotFound   = errors.New("not found")
	ErrConflict   = errors.New("conflict")
)

// NewHandler serves the API over b.
func NewHandler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status(r.Context())
		reply(w, log, st, err)
	})
	mux.HandleFunc("POST /v1/mounts", func(w http.ResponseWriter, r *http.Request) {
		var req MountRequest
		if err := decode(w, r, &req); err != nil {
			reply(w, log, nil, err)
			return
		}
		m, err := b.Mount(r.Context(), req)
		reply(w, log, m, err)
	})
	mux.HandleFunc("DELETE /v1/mounts", func(w http.ResponseWriter, r *http.Request) {
		mp := r.URL.Query().Get("mountpoint")
		if mp == "" {
			reply(w, log, nil, fmt.Errorf("%w: mountpoint is required", ErrBadRequest))
			return
		}
		reply(w, log, struct{}{}, b.Unmount(r.Context(), mp))
	})
	mux.HandleFunc("POST /v1/pull", func(w http.ResponseWriter, r *http.Request) {
		var req PullRequest
		if err := decode(w, r, &req); err != nil {
			reply(w, log, nil, err)
			return
		}
		// Progress streams as JSON lines; the status is sent before the outcome is known,
		// so the last line carries Done or Error.
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		var mu sync.Mutex
		send := func(p PullProgress) {
			mu.Lock()
			defer mu.Unlock()
			enc.Encode(p)
			if flusher != nil {
				flusher.Flush()
			}
		}
		last, err := b.Pull(r.Context(), req.Ref, send)
		if err != nil {
			last.Error = err.Error()
		}
		last.Done = true
		send(last)
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON value", ErrBadRequest)
	}
	return nil
}

func reply(w http.ResponseWriter, log *slog.Logger, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadRequest):
			code = http.StatusBadRequest
		case errors.Is(err, ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, ErrConflict):
			code = http.StatusConflict
		}
		if code == http.StatusInternalServerError {
			log.Warn("api request failed", "err", err)
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(Error{Error: err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// Listen opens the unix socket at path with mode 0600, creating its directory. A socket
// file left by a dead daemon is replaced; one a live daemon answers on is an error.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another daemon is listening there", path)
	}
	// Only a stale socket is removed: a path that names anything else is the user's.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// drain discards what is left of a body so the connection can be reused.
func drain(r io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(r, maxRequestBody))
	r.Close()
}
