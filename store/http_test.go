package store_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// serveDir serves a dir store's layout over HTTP, as a plain file server would.
func serveDir(t *testing.T) (*store.Dir, *httptest.Server) {
	t.Helper()
	d := newDir(t)
	srv := httptest.NewServer(http.FileServer(http.Dir(d.Root())))
	t.Cleanup(srv.Close)
	return d, srv
}

func TestHTTPConformance(t *testing.T) {
	storetest.RunReadOnly(t, func(t *testing.T) (store.Store, storetest.Putter) {
		d, srv := serveDir(t)
		s, err := store.Open(t.Context(), srv.URL+"/")
		if err != nil {
			t.Fatal(err)
		}
		return s, d
	})
}

func TestHTTPUnderPathWithAuth(t *testing.T) {
	d := newDir(t)
	var gotUser, gotPass string
	mux := http.NewServeMux()
	fs := http.StripPrefix("/blocks", http.FileServer(http.Dir(d.Root())))
	mux.HandleFunc("/blocks/", func(w http.ResponseWriter, r *http.Request) {
		gotUser, gotPass, _ = r.BasicAuth()
		fs.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	id, data := storetest.ID(32, -1), []byte("hello")
	if err := d.Put(t.Context(), id, data); err != nil {
		t.Fatal(err)
	}
	u := strings.Replace(srv.URL, "http://", "http://alice:s3cr3t@", 1) + "/blocks"
	s, err := store.NewHTTP(u, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.String(), "s3cr3t") {
		t.Errorf("String() shows the password: %s", s)
	}
	got, err := s.Get(t.Context(), id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if gotUser != "alice" || gotPass != "s3cr3t" {
		t.Errorf("basic auth = %q:%q, want alice:s3cr3t", gotUser, gotPass)
	}
}

func TestHTTPFlatFallback(t *testing.T) {
	d, srv := serveDir(t)
	id, data := storetest.ID(16, -1), []byte("legacy")
	if err := os.WriteFile(filepath.Join(d.Root(), id.String()), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := store.NewHTTP(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(t.Context(), id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if ok, err := s.Has(t.Context(), id); !ok || err != nil {
		t.Errorf("Has = %v, %v", ok, err)
	}
}

func TestHTTPErrors(t *testing.T) {
	big := make([]byte, store.MaxBlockSize+10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/00"):
			http.Error(w, "boom", http.StatusInternalServerError)
		case strings.Contains(r.URL.Path, "/01"):
			w.Write(big) // no Content-Length: streamed
		case strings.Contains(r.URL.Path, "/02"):
			w.Header().Set("Content-Length", "999999999")
			w.WriteHeader(http.StatusOK)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	s, err := store.NewHTTP(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, first := range []int{0x00, 0x01, 0x02} {
		_, err := s.Get(t.Context(), storetest.ID(32, first))
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("first byte %02x: err = %v, want a non-NotFound error", first, err)
		} else if !strings.Contains(err.Error(), s.String()) {
			t.Errorf("first byte %02x: error does not name the store: %v", first, err)
		}
	}
	if _, err := s.Get(t.Context(), storetest.ID(32, 0x00)); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("500: error does not give the status: %v", err)
	}
	if ok, err := s.Has(t.Context(), storetest.ID(32, 0x00)); ok || err == nil {
		t.Errorf("Has on 500 = %v, %v; want an error", ok, err)
	}

	// A server that is not there: an error naming the store, without its password.
	gone := httptest.NewServer(http.NotFoundHandler())
	url := strings.Replace(gone.URL, "http://", "http://u:topsecret@", 1)
	gone.Close()
	s2, err := store.NewHTTP(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.Get(t.Context(), storetest.ID(32, -1))
	if err == nil || errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("unreachable server: err = %v", err)
	}
}

// A server that never answers: the caller's deadline ends the call.
func TestHTTPHangingServerHonoursDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	s, err := store.NewHTTP(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.Get(ctx, storetest.ID(32, -1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Get took %v", d)
	}
}
