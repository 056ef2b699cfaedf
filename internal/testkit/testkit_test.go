package testkit

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf and Skipf record the message and end the
// goroutine, as the real ones do.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder in a goroutine of its own and returns the recorder.
func run(t *testing.T, f func(tb testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestUnavailable(t *testing.T) {
	t.Setenv("CI", "")
	r := run(t, func(tb testing.TB) { Unavailable(tb, "no %s", "frobnicator") })
	if r.skip != "no frobnicator" || r.fatal != "" {
		t.Errorf("without CI: skip %q, fatal %q; want a skip", r.skip, r.fatal)
	}
	t.Setenv("CI", "1")
	r = run(t, func(tb testing.TB) { Unavailable(tb, "no %s", "frobnicator") })
	if r.fatal != "no frobnicator" || r.skip != "" {
		t.Errorf("under CI: skip %q, fatal %q; want a failure", r.skip, r.fatal)
	}
}

func TestNeedCommand(t *testing.T) {
	t.Setenv("CI", "")
	if p := NeedCommand(t, "sh"); !filepath.IsAbs(p) {
		t.Errorf("NeedCommand(sh) = %q, want an absolute path", p)
	}
	r := run(t, func(tb testing.TB) { NeedCommand(tb, "no-such-command-zosfs") })
	if !strings.Contains(r.skip, "no-such-command-zosfs") {
		t.Errorf("missing command: skip %q, fatal %q", r.skip, r.fatal)
	}
}

func TestWaitFor(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, "three polls", 5*time.Second, func() bool { return n.Add(1) >= 3 })

	start := time.Now()
	r := run(t, func(tb testing.TB) { WaitFor(tb, "never", 120*time.Millisecond, func() bool { return false }) })
	if want := "timed out after 120ms waiting for never"; r.fatal != want {
		t.Errorf("fatal %q, want %q", r.fatal, want)
	}
	if d := time.Since(start); d < 120*time.Millisecond {
		t.Errorf("gave up after %v, before the limit", d)
	}

	exited := make(chan struct{})
	close(exited)
	start = time.Now()
	r = run(t, func(tb testing.TB) {
		WaitForProcess(tb, "the hub", time.Minute, exited, func() bool { return false })
	})
	if want := "the process exited while waiting for the hub"; r.fatal != want {
		t.Errorf("fatal %q, want %q", r.fatal, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("waited %v after the process exited", d)
	}
	// Done and then exited is done.
	WaitForProcess(t, "a last word", time.Minute, exited, func() bool { return true })
}

// outputRecorder is a testing.TB whose output is a buffer and whose cleanups run when
// the test says so.
type outputRecorder struct {
	testing.TB
	out      bytes.Buffer
	cleanups []func()
}

func (r *outputRecorder) Output() io.Writer { return &r.out }
func (r *outputRecorder) Cleanup(f func())  { r.cleanups = append(r.cleanups, f) }

// TestLoggerQuiet: what is logged after the test's cleanup is dropped (written to the
// finished test's output, it would land in its parent's, or panic).
func TestLoggerQuiet(t *testing.T) {
	r := &outputRecorder{TB: t}
	l := Logger(r)
	l.Debug("below the level")
	l.Info("during the test")
	for _, f := range slices.Backward(r.cleanups) {
		f()
	}
	l.Warn("after the test")
	got := r.out.String()
	if !strings.Contains(got, "during the test") || strings.Contains(got, "below the level") || strings.Contains(got, "after the test") {
		t.Errorf("output:\n%s", got)
	}
}

func TestFindAttrs(t *testing.T) {
	dir := t.TempDir()
	odd := "tab\there\nnewline"
	if err := os.WriteFile(filepath.Join(dir, odd), []byte("12345"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("somewhere else", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	got := FindAttrs(t, dir)
	if len(got) != 3 {
		t.Fatalf("%d entries, want 3: %+v", len(got), got)
	}
	if e := got[""]; e.Type != "d" {
		t.Errorf("root: %+v", e)
	}
	if e := got[odd]; e.Type != "f" || e.Mode != "640" || e.Size != "5" || e.Nlink != "1" || e.Target != "" {
		t.Errorf("%q: %+v", odd, e)
	}
	if e := got["link"]; e.Type != "l" || e.Target != "somewhere else" {
		t.Errorf("link: %+v", e)
	}
	if e := got[odd]; e.UID != fmt.Sprint(os.Getuid()) {
		t.Errorf("%q: uid %s, want %d", odd, e.UID, os.Getuid())
	}
}

func TestCompareFind(t *testing.T) {
	e := FindEntry{Type: "f", Mode: "644", Size: "1", Nlink: "1"}
	want := map[string]FindEntry{"": {Type: "d"}, "a": e, "b": e, "c": e}
	got := map[string]FindEntry{"": {Type: "d"}, "a": e, "c": {Type: "f", Mode: "600", Size: "1", Nlink: "1"}, "d": e}
	r := &errRecorder{TB: t}
	CompareFind(r, got, want)
	if len(r.errs) != 3 || !strings.Contains(r.errs[0], `"b" missing`) || !strings.Contains(r.errs[1], `"c": {Type:f Mode:600`) || !strings.Contains(r.errs[2], `"d" unexpected`) {
		t.Errorf("errors:\n%s", strings.Join(r.errs, "\n"))
	}
	r = &errRecorder{TB: t}
	CompareFind(r, want, want)
	if len(r.errs) != 0 {
		t.Errorf("same trees: %q", r.errs)
	}
}

// errRecorder is a testing.TB that records its errors.
type errRecorder struct {
	testing.TB
	errs []string
}

func (r *errRecorder) Helper()           {}
func (r *errRecorder) Error(args ...any) { r.errs = append(r.errs, fmt.Sprint(args...)) }
func (r *errRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
