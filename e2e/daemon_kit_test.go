package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// proc is a zosfs-agent process started by a test; it is ended by pid at cleanup.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

// startProc starts zosfs-agent with args, logging to a file in the test's temp dir.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startBinary(t, name, binary, nil, args...)
}

// startBinary starts bin with args, its stderr (and its stdout, unless stdout is given)
// going to a log file in the test's temp dir; it is stopped at cleanup.
func startBinary(t *testing.T, name, bin string, stdout io.Writer, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{}), log: logf}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", name, tail(string(out), 4000))
		}
		logf.Close()
	})
	return p
}

// stop signals the process and waits for it; SIGKILL if it does not end in 15 s.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// testHub is a real hub process on loopback.
type testHub struct {
	*proc
	URL   string
	Token string
	data  string
	port  int
}

// runHub starts `zosfs-agent hub` on a free loopback port with a token.
func runHub(t *testing.T) *testHub {
	t.Helper()
	h := &testHub{data: t.TempDir(), Token: "test-token-" + strconv.Itoa(os.Getpid()), port: storetest.FreePort(t)}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(h.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.URL = fmt.Sprintf("http://127.0.0.1:%d", h.port)
	h.proc = startProc(t, "hub", "hub", "--data", h.data, "--listen", fmt.Sprintf("127.0.0.1:%d", h.port), "--token-file", tokenFile)
	testkit.WaitForProcess(t, "the hub to answer /health", 20*time.Second, h.exited, func() bool {
		resp, err := http.Get(h.URL + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	t.Setenv("ZOSFS_HUB_TOKEN", h.Token)
	return h
}

// testDaemon is a real daemon process with its own data dir and API socket.
type testDaemon struct {
	*proc
	Data   string
	Socket string
	args   []string
	t      *testing.T
	// mountpoints the test made, detached at cleanup if still mounted
	mountpoints []string
}

// runDaemon starts `zosfs-agent daemon` with extra args (e.g. --hub URL).
func runDaemon(t *testing.T, extra ...string) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &testDaemon{Data: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "agent.sock"), t: t}
	// Loopback only, no mDNS: tests never send traffic beyond this machine.
	d.args = append([]string{"daemon", "--data", d.Data, "--api", d.Socket, "--log-level", "debug",
		"--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"}, extra...)
	d.start()
	return d
}

func (d *testDaemon) start() {
	d.t.Helper()
	d.proc = startProc(d.t, "daemon", d.args...)
	testkit.WaitForProcess(d.t, "the daemon to answer on its API socket", 30*time.Second, d.exited, func() bool {
		_, err := d.client().Status(d.t.Context())
		return err == nil
	})
	d.t.Cleanup(d.unmountLeftovers)
}

// restart starts the daemon again on the same data dir and socket.
func (d *testDaemon) restart() { d.start() }

func (d *testDaemon) client() *api.Client { return api.NewClient(d.Socket) }

// cli runs a zosfs-agent command against this daemon.
func (d *testDaemon) cli(t *testing.T, args ...string) string {
	t.Helper()
	return agent(t, append([]string{args[0], "--api", d.Socket}, args[1:]...)...)
}

// status returns the daemon's status through the CLI's JSON.
func (d *testDaemon) status(t *testing.T) api.Status {
	t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(d.cli(t, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// unmountLeftovers detaches the test's mountpoints if a mount is still there (after a
// failure or a kill), so that a test never leaves mounts behind.
func (d *testDaemon) unmountLeftovers() {
	for _, mp := range d.mountpoints {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

// mountFlist mounts ref through the daemon at a new directory and returns it.
func (d *testDaemon) mountFlist(t *testing.T, ref string, extra ...string) string {
	t.Helper()
	mp := t.TempDir()
	d.mountpoints = append(d.mountpoints, mp)
	d.cli(t, append(append([]string{"mount"}, extra...), ref, mp)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.client().Unmount(ctx, mp)
	})
	return mp
}
