package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/internal/fixtures"
	"github.com/zosfs/zosfs-agent/internal/testkit"
)

// storedSize is what the hub sends for a file: the stored size of each of its blocks.
func storedSize(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for off := 0; off < len(data); off += flist.BlockSize {
		_, stored := flist.EncodeBlock(data[off:min(off+flist.BlockSize, len(data))])
		n += int64(len(stored))
	}
	return n
}

// compareFind compares find(1)'s view of a mount with its source's (testkit.FindAttrs):
// every attribute, but a mount's directories have size 0 (the source's are the disk's)
// and its files one link each (an flist has no hard links).
func compareFind(t *testing.T, mp, src string) {
	t.Helper()
	want := testkit.FindAttrs(t, src)
	for p, e := range want {
		if e.Type == "d" {
			e.Size = "0"
		} else {
			e.Nlink = "1"
		}
		want[p] = e
	}
	testkit.CompareFind(t, testkit.FindAttrs(t, mp), want)
}

// diffTrees runs diff -r on two trees, leaving out the special files of
// flisttest.MakeTree (diff would try to read a fifo), whose attributes compareFind checks.
func diffTrees(t *testing.T, a, b string) {
	t.Helper()
	args := []string{"-r", "--no-dereference"}
	for _, special := range []string{"fifo", "socket", "chardev", "blockdev"} {
		args = append(args, "-x", special)
	}
	if out, err := exec.Command("diff", append(args, a, b)...).CombinedOutput(); err != nil {
		t.Errorf("diff -r %s %s: %v\n%s", a, b, err, tail(string(out), 3000))
	}
}

// TestMountLazyFromHub: push a generated tree to a real hub, mount it by CID through a
// real daemon: reading one file fetches exactly its blocks; then the whole tree matches
// the source (diff -r, find attributes, lstat manifest).
func TestMountLazyFromHub(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 11, flisttest.DefaultTreeOptions())
	cid := lastLine(agent(t, "push", "--hub", h.URL, "--name", "test/tree", src))
	d := runDaemon(t, "--hub", h.URL)
	mp := d.mountFlist(t, cid)

	before := d.status(t)
	if before.Fetched.Hub != 0 {
		t.Fatalf("mounting fetched %d bytes of blocks before any read", before.Fetched.Hub)
	}
	got, err := os.ReadFile(filepath.Join(mp, "sub/multi"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(src, "sub/multi"))
	if !bytes.Equal(got, want) {
		t.Fatal("sub/multi differs from the source")
	}
	after := d.status(t)
	if fetched, expect := after.Fetched.Hub-before.Fetched.Hub, storedSize(t, filepath.Join(src, "sub/multi")); fetched != expect {
		t.Errorf("reading sub/multi fetched %d bytes from the hub, its blocks are %d bytes", fetched, expect)
	}
	if len(after.Mounts) != 1 || after.Mounts[0].CID != cid || after.Mounts[0].Mountpoint != mp {
		t.Errorf("status mounts = %+v", after.Mounts)
	}

	diffTrees(t, src, mp)
	compareFind(t, mp, src)
	if g, w := flisttest.DiskManifest(t, mp), flisttest.DiskManifest(t, src); g != w {
		t.Errorf("lstat manifests differ:\nmount:\n%s\nsource:\n%s", g, w)
	}
	// By USER/NAME too.
	diffTrees(t, src, d.mountFlist(t, "test/tree"))
}

// TestMountGoSource: the Go toolchain's source tree, a real tree of ~12,000 entries,
// through hub, daemon and FUSE, read entirely and compared.
func TestMountGoSource(t *testing.T) {
	testkit.NeedFUSE(t)
	if testing.Short() {
		t.Skip("reads the whole Go source tree")
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(strings.TrimSpace(string(goroot)), "src")
	h := runHub(t)
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	d := runDaemon(t, "--hub", h.URL)
	mp := d.mountFlist(t, cid)
	diffTrees(t, src, mp)
	compareFind(t, mp, src)
}

// TestHubDown: with the hub gone (a server in its place that never answers), files
// already read still read; an uncached read fails with EIO within the read deadline,
// and does not hang.
func TestHubDown(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 12, flisttest.TreeOptions{})
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	const readTimeout = 5 * time.Second
	d := runDaemon(t, "--hub", h.URL, "--fetch-timeout", "2s", "--read-timeout", readTimeout.String())
	mp := d.mountFlist(t, cid)
	if _, err := os.ReadFile(filepath.Join(mp, "sub/multi")); err != nil {
		t.Fatal(err)
	}
	h.stop(syscall.SIGTERM)
	// In the hub's place, a server that accepts and never answers: the read must end on
	// its deadline, not on a refused connection.
	blackHole(t, fmt.Sprintf("127.0.0.1:%d", h.port))

	got, err := os.ReadFile(filepath.Join(mp, "sub/multi"))
	want, _ := os.ReadFile(filepath.Join(src, "sub/multi"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("cached file with the hub down: %v", err)
	}
	start := time.Now()
	_, err = os.ReadFile(filepath.Join(mp, "exact-block"))
	elapsed := time.Since(start)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("uncached read with the hub hanging: err = %v, want EIO", err)
	}
	if elapsed < 2*time.Second || elapsed > readTimeout+5*time.Second {
		t.Errorf("the failing read took %s: want at least the fetch timeout (2s), at most about the read timeout (%s)", elapsed, readTimeout)
	}
}

// blackHole listens at addr until the test ends, accepting connections and never
// answering.
func blackHole(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
}

// TestOverlay: a writable mount takes writes into the upper dir; the flist is unchanged.
func TestOverlay(t *testing.T) {
	testkit.NeedFUSE(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 13, flisttest.TreeOptions{})
	storeDir := t.TempDir()
	fl := filepath.Join(t.TempDir(), "tree.fl")
	agent(t, "pack", "-o", fl, "--store", "dir://"+storeDir, src)
	before := fileHash(t, fl)
	d := runDaemon(t)
	upper := t.TempDir()
	mp := d.mountFlist(t, fl, "--rw", "--upper", upper)

	if err := os.WriteFile(filepath.Join(mp, "new-file"), []byte("written through the overlay"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "one-byte"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"new-file": "written through the overlay", "one-byte": "changed"} {
		got, err := os.ReadFile(filepath.Join(upper, name))
		if err != nil || string(got) != want {
			t.Errorf("upper/%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if fileHash(t, fl) != before {
		t.Error("the flist changed")
	}
	st := d.status(t)
	if len(st.Mounts) != 1 || !st.Mounts[0].Writable {
		t.Errorf("status mounts = %+v", st.Mounts)
	}
	// Unchanged files read through from the flist.
	got, err := os.ReadFile(filepath.Join(mp, "sub/multi"))
	want, _ := os.ReadFile(filepath.Join(src, "sub/multi"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("sub/multi through the overlay: %v", err)
	}
}

func fileHash(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestKillDuringPull: kill -9 the daemon in the middle of a pull, with a mount live.
// Started again, it replaces the stale mount, its cache holds no corrupt block, and the
// pull completes.
func TestKillDuringPull(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	if out, err := exec.Command("go", "run", "../internal/tools/gentree", "-size", "160MiB", "-seed", "5", src).CombinedOutput(); err != nil {
		t.Fatalf("gentree: %v\n%s", err, out)
	}
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	// A bounded uplink makes the pull last several seconds, so the kill lands in its middle.
	d := runDaemon(t, "--hub", h.URL, "--hub-rate", "40MiB")
	mp := d.mountFlist(t, cid)

	pull := exec.Command(binary, "pull", "--api", d.Socket, cid)
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	pullDone := make(chan error, 1)
	go func() { pullDone <- pull.Wait() }()
	testkit.WaitForProcess(t, "some of the pull to be cached", 60*time.Second, d.exited, func() bool {
		st, err := d.client().Status(t.Context())
		return err == nil && st.Cache.Blocks > 20
	})
	d.cmd.Process.Kill() // kill -9, by pid
	<-d.exited
	if err := <-pullDone; err == nil {
		t.Fatal("the pull completed before the daemon was killed: the test proves nothing")
	}

	d.restart()
	// The stale mount is replaced: the tree reads again at the same place.
	entries, err := os.ReadDir(mp)
	if err != nil || len(entries) == 0 {
		t.Fatalf("after restart the mount at %s lists %d entries: %v", mp, len(entries), err)
	}
	if n := d.checkCache(t); n == 0 {
		t.Fatal("no block in the cache after the kill")
	}
	out := d.cli(t, "pull", cid)
	if lastLine(out) != cid {
		t.Errorf("pull printed %q", out)
	}
	st := d.status(t)
	if len(st.Pinned) != 1 || st.Pinned[0] != cid {
		t.Errorf("pinned = %v, want [%s]", st.Pinned, cid)
	}
	diffTrees(t, src, mp)
}

// checkCache hashes every block file in the daemon's cache against its name and returns
// how many it checked: after any crash, a block is either whole and verified or absent.
func (d *testDaemon) checkCache(t *testing.T) int {
	t.Helper()
	checked := 0
	err := filepath.WalkDir(filepath.Join(d.Data, "cache"), func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			return err
		}
		id, herr := hexID(e.Name())
		if herr != nil {
			return nil // the index's own files
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := flist.VerifyBlock(id, data); err != nil {
			t.Errorf("corrupt block in the cache: %s: %v", p, err)
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatalf("checking the cache: %v", err)
	}
	return checked
}

func hexID(name string) (flist.BlockID, error) {
	id, err := flist.ParseBlockIDHex(name)
	if err != nil {
		return flist.BlockID{}, fmt.Errorf("not a block id: %q", name)
	}
	return id, nil
}

// TestFixturesMounted: every real upstream flist mounted through the daemon (metadata
// only: their blocks are gone) shows the tree, attributes and symlinks of its golden
// listing.
func TestFixturesMounted(t *testing.T) {
	testkit.NeedFUSE(t)
	d := runDaemon(t)
	for _, name := range fixtures.Flists {
		t.Run(name, func(t *testing.T) {
			path, golden := fixtures.Flist(t, name)
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			mp := d.mountFlist(t, path)
			got := lstatListing(t, mp)
			wantLines := withoutBlockColumns(strings.Split(strings.TrimSuffix(string(want), "\n"), "\n"))
			if len(got) != len(wantLines) {
				t.Fatalf("mount lists %d entries, golden %d", len(got), len(wantLines))
			}
			for i := range got {
				if got[i] != wantLines[i] {
					t.Fatalf("entry %d:\n mount  %q\n golden %q", i, got[i], wantLines[i])
				}
			}
		})
	}
}

// withoutBlockColumns drops columns 8 and 9 (block count, first block) of manifest lines.
func withoutBlockColumns(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		c := strings.Split(l, "\t")
		out[i] = strings.Join(append(c[:7:7], c[9]), "\t")
	}
	return out
}

// lstatListing lists a mounted tree as manifest lines without the block columns.
func lstatListing(t *testing.T, dir string) []string {
	t.Helper()
	full := flisttest.DiskManifestNoContent(t, dir)
	return withoutBlockColumns(strings.Split(strings.TrimSuffix(full, "\n"), "\n"))
}
