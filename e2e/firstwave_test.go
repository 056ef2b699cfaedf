package e2e

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/internal/testkit"
)

// Size of the first-wave flist: files of random bytes (nothing compresses, so the stored
// bytes are the plain bytes plus a little).
const (
	firstWaveFiles    = 50
	firstWaveFileSize = 4 << 20 // 50 × 4 MiB = 200 MiB
)

// TestFirstWave: five daemons on loopback, connected to each other, cold-start the same
// flist at the same moment. They agree on one designated fetcher per block (rendezvous
// hashing over the site), so the hub sends each block about once: the bytes all five
// fetched from the hub are at most 1.1× the flist's unique stored bytes. Every byte read
// matches the source. Twice: daemons with --hub (~200 MiB), and daemons with no hub that
// read through the flist's routes (mounted by URL; a smaller flist).
func TestFirstWave(t *testing.T) {
	for _, tc := range []struct {
		name    string
		withHub bool
		files   int
	}{
		{"hubs", true, firstWaveFiles},
		{"routes only", false, firstWaveFiles / 4},
	} {
		t.Run(tc.name, func(t *testing.T) { testFirstWave(t, tc.withHub, tc.files) })
	}
}

func testFirstWave(t *testing.T, withHub bool, files int) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	want := map[string][sha256.Size]byte{}
	rng := rand.NewChaCha8([32]byte{'w', 'a', 'v', 'e'})
	buf := make([]byte, firstWaveFileSize)
	for i := range files {
		rng.Read(buf)
		name := fmt.Sprintf("f%02d", i)
		if err := os.WriteFile(filepath.Join(src, name), buf, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = sha256.Sum256(buf)
	}
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	unique := dirBytes(t, filepath.Join(h.data, "blocks"))
	ref := cid
	if !withHub {
		ref = h.URL + "/flists/" + cid // the flist's routes name the hub's blocks
	}

	// A full mesh, each daemon bootstrapped to those started before it.
	const n = 5
	var daemons []*testDaemon
	var boot []string
	for range n {
		var args []string
		if withHub {
			args = append(args, "--hub", h.URL)
		}
		for _, b := range boot {
			args = append(args, "--bootstrap", b)
		}
		d := runDaemon(t, args...)
		daemons = append(daemons, d)
		boot = append(boot, d.bootstrapAddr(t))
	}
	for _, d := range daemons {
		d.waitPeers(t, n-1)
	}
	mounts := make([]string, n)
	for i, d := range daemons {
		mounts[i] = d.mountFlist(t, ref)
	}
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for _, mp := range mounts {
		wg.Go(func() {
			<-start
			errs <- readAndCheck(mp, want)
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var fromHub, fromPeers, fetchedFor int64
	for i, d := range daemons {
		st := d.status(t)
		t.Logf("daemon %d: %d bytes from the hub, %d from peers, served %+v", i, st.Fetched.Hub, st.Fetched.Peers, st.Served)
		fromHub += st.Fetched.Hub
		fromPeers += st.Fetched.Peers
		fetchedFor += st.Served.FetchedFor
	}
	if fetchedFor == 0 {
		t.Error("no daemon fetched a block for another as its designated fetcher")
	}
	ratio := float64(fromHub) / float64(unique)
	t.Logf("5 daemons read %d MiB each in %v: the hub sent %.2f× the unique %d bytes; peers %d bytes",
		files*firstWaveFileSize>>20, time.Since(began).Round(time.Millisecond), ratio, unique, fromPeers)
	if ratio > 1.1 {
		t.Errorf("the hub sent %d bytes for %d unique ones (%.2f×, want ≤ 1.1×)", fromHub, unique, ratio)
	}
	if ratio < 0.99 {
		t.Errorf("the hub sent %d bytes, less than the %d unique ones: the accounting is wrong", fromHub, unique)
	}
}

// readAndCheck reads every file of want under mp, in name order (nodes booting the same
// workload read the same files in the same order: the first wave's worst case), and
// compares its SHA-256.
func readAndCheck(mp string, want map[string][sha256.Size]byte) error {
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		f, err := os.Open(filepath.Join(mp, name))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(mp, name), err)
		}
		if [sha256.Size]byte(h.Sum(nil)) != want[name] {
			return fmt.Errorf("%s: content differs from the source", filepath.Join(mp, name))
		}
	}
	return nil
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		fi, err := e.Info()
		if err == nil {
			total += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}
