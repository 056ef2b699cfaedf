package storetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/store"
)

// Real servers for the tests: redis-server standing in for 0-db, and versitygw as S3.
// Each test starts its own on a free loopback port and kills it, by pid, at cleanup.

// NeedTool returns the path of a program the tests need, looked for on the PATH and in
// extraDirs. Missing, it ends the test (testkit.Unavailable: fails under CI, skips
// otherwise), saying how to install it.
func NeedTool(t *testing.T, name, install string, extraDirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range extraDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	testkit.Unavailable(t, "%s not found on PATH (nor in $GOBIN, $(go env GOPATH)/bin); install it with: %s", name, install)
	return ""
}

// GoBinDirs returns $GOBIN and $(go env GOPATH)/bin, where `go install` puts programs.
func GoBinDirs() []string {
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(string(out), "\n") // one line each, GOBIN possibly empty
		if len(lines) >= 1 && strings.TrimSpace(lines[0]) != "" {
			dirs = append(dirs, strings.TrimSpace(lines[0]))
		}
		if len(lines) >= 2 {
			for _, p := range filepath.SplitList(strings.TrimSpace(lines[1])) {
				dirs = append(dirs, filepath.Join(p, "bin"))
			}
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a server's output for error messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartServer runs argv (built for a port) until the port accepts connections, trying a
// few ports in case another process takes the one picked. It returns the address. The
// process is killed by pid when the test ends.
func StartServer(t *testing.T, name string, dir string, argv func(port int) []string) string {
	t.Helper()
	var lastOut string
	for range 3 {
		port := FreePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := argv(port)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill() // by pid: only the process this test started
			<-exited
		}
		if waitListening(addr, exited, 20*time.Second) {
			t.Cleanup(stop)
			return addr
		}
		stop()
		lastOut = out.String()
	}
	t.Fatalf("%s did not start; its output:\n%s", name, lastOut)
	return ""
}

// waitListening waits until addr accepts a connection, the process exits, or the time is up.
func waitListening(addr string, exited <-chan struct{}, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// StartRedis starts a redis-server with no persistence; password "" means none.
// It returns host:port.
func StartRedis(t *testing.T, password string) string {
	t.Helper()
	bin := NeedTool(t, "redis-server", "apt-get install -y redis-server")
	dir := t.TempDir()
	return StartServer(t, "redis-server", dir, func(port int) []string {
		args := []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--protected-mode", "no"}
		if password != "" {
			args = append(args, "--requirepass", password)
		}
		return args
	})
}

const (
	S3Access = "zosfsaccess"
	S3Secret = "zosfs-secret-KEY"
)

// StartVersity starts versitygw with its posix backend in a temporary directory, root
// credentials S3Access / S3Secret. It returns host:port.
func StartVersity(t *testing.T) string {
	t.Helper()
	bin := NeedTool(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0", GoBinDirs()...)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	return StartServer(t, "versitygw", dir, func(port int) []string {
		return []string{bin, "--access", S3Access, "--secret", S3Secret,
			"--port", "127.0.0.1:" + strconv.Itoa(port), "--quiet", "posix", data}
	})
}

var bucketSeq atomic.Int64

// NewBucket creates a fresh bucket on the S3 server at addr and returns its s3:// URL.
func NewBucket(t *testing.T, addr string) string {
	t.Helper()
	name := fmt.Sprintf("blocks-%d", bucketSeq.Add(1))
	client := s3.New(s3.Options{
		Region:       store.S3DefaultRegion,
		BaseEndpoint: aws.String("http://" + addr),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: S3Access, SecretAccessKey: S3Secret}, nil
		}),
	})
	if _, err := client.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return "s3://" + S3Access + ":" + S3Secret + "@" + addr + "/" + name
}

// StartS3 starts a versitygw and returns the s3:// URL of a fresh bucket on it.
func StartS3(t *testing.T) string {
	t.Helper()
	return NewBucket(t, StartVersity(t))
}
