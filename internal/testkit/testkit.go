// Package testkit holds the helpers the project's tests share: skipping (or, under CI,
// failing) a test whose requirements are missing, a logger into the test's output,
// polling for a condition, find(1)'s view of a tree and its comparison with another's. It imports nothing of the project.
package testkit

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Unavailable ends a test that cannot run here: it fails under CI (the environment
// variable CI non-empty), where everything the tests need is installed and a skip would
// hide a broken setup, and skips otherwise. The message says what is missing.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// NeedRoot ends the test (see Unavailable) unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (running as uid %d)", os.Geteuid())
	}
}

// NeedFUSE ends the test (see Unavailable) unless it can make real FUSE mounts: root
// and /dev/fuse.
func NeedFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "FUSE mounts need root (running as uid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Unavailable(t, "FUSE mounts need /dev/fuse: %v", err)
	}
}

// NeedCommand returns the path of the program name on the PATH, or ends the test (see
// Unavailable) when there is none.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "needs %s on the PATH: %v", name, err)
	}
	return p
}

// Writer returns a writer into t's output that drops everything written after its own
// cleanup: goroutines still logging when the test is over must not write to it (the
// output would land in a parent test's, or panic once the top-level test is done). Call
// it before starting what writes to it, so that its cleanup runs after theirs.
func Writer(t testing.TB) io.Writer {
	w := &quietWriter{out: t.Output()}
	t.Cleanup(w.quiet)
	return w
}

type quietWriter struct {
	mu   sync.Mutex
	out  io.Writer
	done bool
}

func (w *quietWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.out.Write(p)
}

func (w *quietWriter) quiet() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// Logger returns a text logger at level Info into t's output (see Writer).
func Logger(t testing.TB) *slog.Logger { return LoggerAt(t, slog.LevelInfo) }

// LoggerAt is Logger with the given minimum level.
func LoggerAt(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: level}))
}

// PollInterval is how often WaitFor and WaitForProcess test their condition.
const PollInterval = 50 * time.Millisecond

// WaitFor polls ok every PollInterval until it holds; the test fails if it does not
// within limit. what names the awaited event ("b to connect to a").
func WaitFor(t testing.TB, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	WaitForProcess(t, what, limit, nil, ok)
}

// WaitForProcess is WaitFor for something a process has to do: the test also fails,
// without waiting longer, as soon as exited is closed (the process ended). A nil exited
// is never closed.
func WaitForProcess(t testing.TB, what string, limit time.Duration, exited <-chan struct{}, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		select {
		case <-exited:
			if ok() { // it did its part, then ended
				return
			}
			t.Fatalf("the process exited while waiting for %s", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(PollInterval)
	}
}

// FindEntry is find(1)'s view of one entry (-printf %y %m %U %G %s %T@ %n %l).
type FindEntry struct{ Type, Mode, UID, GID, Size, Mtime, Nlink, Target string }

// FindAttrs runs find(1) on dir and returns its view of each entry by path relative to
// dir ("" for dir itself). Names may hold any byte but NUL and \001.
func FindAttrs(t testing.TB, dir string) map[string]FindEntry {
	t.Helper()
	// Fields separated by \001, entries by \000: names hold spaces, tabs and newlines.
	out, err := exec.Command("find", dir, "-printf", `%P\001%y\001%m\001%U\001%G\001%s\001%T@\001%n\001%l\000`).Output()
	if err != nil {
		t.Fatalf("find %s: %v", dir, err)
	}
	res := map[string]FindEntry{}
	for _, rec := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		f := strings.Split(rec, "\x01")
		if len(f) != 9 {
			t.Fatalf("find %s: odd record %q", dir, rec)
		}
		res[f[0]] = FindEntry{f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}
	}
	return res
}

// maxReported bounds the differing entries CompareFind reports.
const maxReported = 10

// CompareFind fails t if got and want (FindAttrs of two trees) differ: entries missing
// from got, extra in got, or with other attributes; the first few are reported by path,
// in order, then how many differ in all.
func CompareFind(t testing.TB, got, want map[string]FindEntry) {
	t.Helper()
	paths := slices.Sorted(maps.Keys(want))
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	diffs := 0
	for _, p := range paths {
		g, inGot := got[p]
		w, inWant := want[p]
		var msg string
		switch {
		case !inGot:
			msg = fmt.Sprintf("find: %q missing (want %+v)", p, w)
		case !inWant:
			msg = fmt.Sprintf("find: %q unexpected (%+v)", p, g)
		case g != w:
			msg = fmt.Sprintf("find: %q: %+v, want %+v", p, g, w)
		default:
			continue
		}
		if diffs++; diffs <= maxReported {
			t.Error(msg)
		}
	}
	if diffs > maxReported {
		t.Errorf("find: %d entries differ in all (of %d, want %d)", diffs, len(got), len(want))
	}
}
