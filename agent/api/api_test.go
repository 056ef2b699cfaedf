package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/agent/api"
)

// fakeBackend is a unit-test fake of the daemon.
type fakeBackend struct{ mountErr error }

func (fakeBackend) Status(context.Context) (api.Status, error) {
	return api.Status{PeerID: "peer", Mounts: []api.Mount{{CID: "c", Mountpoint: "/m"}}}, nil
}

func (b fakeBackend) Mount(_ context.Context, req api.MountRequest) (api.Mount, error) {
	if b.mountErr != nil {
		return api.Mount{}, b.mountErr
	}
	return api.Mount{CID: "cid-of-" + req.Ref, Mountpoint: req.Mountpoint, Writable: req.Writable}, nil
}

func (fakeBackend) Unmount(_ context.Context, mp string) error {
	if mp != "/m" {
		return fmt.Errorf("%w: %s is not mounted", api.ErrNotFound, mp)
	}
	return nil
}

func (fakeBackend) Pull(_ context.Context, ref string, progress func(api.PullProgress)) (api.PullProgress, error) {
	for i := range int64(3) {
		progress(api.PullProgress{CID: "c", Blocks: i, TotalBlocks: 3})
	}
	if ref == "bad" {
		return api.PullProgress{CID: "c", Blocks: 2, TotalBlocks: 3}, errors.New("hub unreachable")
	}
	return api.PullProgress{CID: "c", Blocks: 3, TotalBlocks: 3}, nil
}

func serve(t *testing.T, b api.Backend) (*api.Client, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.NewHandler(b, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return api.NewClient(sock), sock
}

func TestAPIRoundTrip(t *testing.T) {
	c, sock := serve(t, fakeBackend{})
	ctx := t.Context()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.PeerID != "peer" || len(st.Mounts) != 1 {
		t.Errorf("status = %+v, %v", st, err)
	}
	m, err := c.Mount(ctx, api.MountRequest{Ref: "x", Mountpoint: "/mp", Writable: true})
	if err != nil || m.CID != "cid-of-x" || !m.Writable {
		t.Errorf("mount = %+v, %v", m, err)
	}
	if err := c.Unmount(ctx, "/m"); err != nil {
		t.Errorf("unmount: %v", err)
	}
	if err := c.Unmount(ctx, "/other"); err == nil || !strings.Contains(err.Error(), "not mounted") {
		t.Errorf("unmount of a stranger: %v", err)
	}
	var seen []int64
	last, err := c.Pull(ctx, "good", func(p api.PullProgress) { seen = append(seen, p.Blocks) })
	if err != nil || !last.Done || last.Blocks != 3 || len(seen) != 3 {
		t.Errorf("pull = %+v, %v, progress %v", last, err, seen)
	}
	if _, err := c.Pull(ctx, "bad", nil); err == nil || err.Error() != "hub unreachable" {
		t.Errorf("failing pull: err = %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: mountpoint must be absolute", api.ErrBadRequest), "mountpoint must be absolute"},
		{fmt.Errorf("%w: /m is busy", api.ErrConflict), "/m is busy"},
		{errors.New("boom"), "boom"},
	} {
		c, _ := serve(t, fakeBackend{mountErr: tc.err})
		if _, err := c.Mount(t.Context(), api.MountRequest{Ref: "x", Mountpoint: "/m"}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mount error %v: client got %v", tc.err, err)
		}
	}
}

func TestAPIBadRequests(t *testing.T) {
	_, sock := serve(t, fakeBackend{})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialUnix(ctx, sock)
	}}}
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/mounts", "{not json", http.StatusBadRequest},
		{"POST", "/v1/mounts", `{"ref":"x","unknown":1}`, http.StatusBadRequest},
		{"POST", "/v1/mounts", `{"ref":"x","mountpoint":"/m"} {"ref":"y"}`, http.StatusBadRequest},
		{"POST", "/v1/mounts", strings.Repeat("x", 100<<10), http.StatusBadRequest},
		{"DELETE", "/v1/mounts", "", http.StatusBadRequest},
		{"GET", "/v1/nothing", "", http.StatusNotFound},
		{"PUT", "/v1/status", "", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, "http://zosfs"+tc.path, strings.NewReader(tc.body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}

func TestAPINoDaemon(t *testing.T) {
	c := api.NewClient(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := c.Status(t.Context()); err == nil || !strings.Contains(err.Error(), "no daemon listening") {
		t.Errorf("err = %v", err)
	}
}

func TestListenRefusesALiveSocket(t *testing.T) {
	_, sock := serve(t, fakeBackend{})
	if _, err := api.Listen(sock); err == nil {
		t.Error("a second daemon took over a live socket")
	}
	stale := filepath.Join(t.TempDir(), "stale.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false) // as a killed daemon leaves it
	dead.Close()
	l, err := api.Listen(stale)
	if err != nil {
		t.Fatalf("a stale socket file blocked the start: %v", err)
	}
	l.Close()
}

// TestListenKeepsOtherFiles (issue 13, 9): --api naming a regular file or a directory
// is refused, and the file is left as it was.
func TestListenKeepsOtherFiles(t *testing.T) {
	file := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, t.TempDir()} {
		if l, err := api.Listen(p); err == nil {
			l.Close()
			t.Errorf("Listen(%s) took over a path that is not a socket", p)
		} else if !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Listen(%s): %v", p, err)
		}
	}
	if got, err := os.ReadFile(file); err != nil || string(got) != "keep me" {
		t.Errorf("the file after Listen: %q, %v", got, err)
	}
}

func dialUnix(ctx context.Context, sock string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", sock)
}
