// Package e2e holds end-to-end tests that run the real zosfs-agent binary against real
// stores, hubs, daemons and FUSE mounts.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binary is the zosfs-agent built once for the whole package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "zosfs-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "zosfs-agent")
	build := exec.Command("go", "build", "-o", binary, "../cmd/zosfs-agent")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build zosfs-agent:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agent runs zosfs-agent with args and returns its stdout; it fails the test on a
// non-zero exit, showing stderr.
func agent(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := agentResult(t, nil, args...)
	if err != nil {
		t.Fatalf("zosfs-agent %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// agentResult runs zosfs-agent with args and stdin, returning stdout, stderr and the error.
func agentResult(t *testing.T, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
