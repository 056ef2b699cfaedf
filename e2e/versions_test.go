package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// TestVersionsShareBlocks: A holds version 1 of a tree; version 2 is the same tree with a
// tenth of its files changed, pushed to the hub and announced by no node. B mounts
// version 2 and reads all of it. Every block version 2 shares with version 1 comes from
// A, found through A's have-filter; the hub sends the site at most 1.05× the stored bytes
// of the blocks that are new in version 2.
func TestVersionsShareBlocks(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	v1 := t.TempDir()
	flisttest.MakeTree(t, v1, 51, flisttest.TreeOptions{})
	for i := range 10 {
		writeRandomFile(t, filepath.Join(v1, fmt.Sprintf("big%d", i)), 2<<20, uint64(100+i))
	}
	cid1 := lastLine(agent(t, "push", "--hub", h.URL, v1))

	v2 := t.TempDir()
	if out, err := exec.Command("cp", "-a", v1+"/.", v2).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	changed := changeTenth(t, v2)
	cid2 := lastLine(agent(t, "push", "--hub", h.URL, v2))

	old := blockIDs(t, fetchFlist(t, h.URL, cid1))
	var newBytes, newBlocks int64
	for id := range blockIDs(t, fetchFlist(t, h.URL, cid2)) {
		if old[id] {
			continue
		}
		x := id.String()
		fi, err := os.Stat(filepath.Join(h.data, "blocks", x[:2], x))
		if err != nil {
			t.Fatalf("a new block is not in the hub's store: %v", err)
		}
		newBytes += fi.Size()
		newBlocks++
	}
	if newBlocks == 0 {
		t.Fatal("version 2 has no new block: the test shows nothing")
	}

	a := runDaemon(t, "--hub", h.URL)
	diffTrees(t, v1, a.mountFlist(t, cid1))
	aHub := a.status(t).Fetched.Hub

	bMetrics := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t))
	b := runDaemon(t, "--hub", h.URL, "--bootstrap", a.bootstrapAddr(t), "--metrics", bMetrics)
	b.waitPeers(t, 1)
	testkit.WaitFor(t, "A's have-filter at B", 20*time.Second, func() bool {
		v, ok := metricIn(scrape(t, bMetrics), "zosfs_have_held_bytes")
		return ok && v > 0
	})
	diffTrees(t, v2, b.mountFlist(t, cid2))

	st := b.status(t)
	hub := st.Fetched.Hub + a.status(t).Fetched.Hub - aHub // A may have fetched some for B
	t.Logf("%d files changed: %d new blocks, %d stored bytes; the hub sent %d bytes for version 2, A sent B %d",
		changed, newBlocks, newBytes, hub, st.Fetched.Peers)
	if hub > newBytes*105/100 {
		t.Errorf("the hub sent %d bytes for version 2; its new blocks are %d bytes (want ≤ 1.05×)", hub, newBytes)
	}
	if st.Fetched.Peers == 0 {
		t.Error("B got nothing from A")
	}
}

// changeTenth rewrites every tenth regular file under dir (in path order) with other
// bytes of the same size, and returns how many it changed.
func changeTenth(t *testing.T, dir string) int {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	n := 0
	for i := 0; i < len(files); i += 10 {
		fi, err := os.Lstat(files[i])
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() == 0 {
			continue
		}
		// The file keeps its mode (it is truncated, not created). Hard links share the
		// inode: rewriting through one path changes them all, as a new version would.
		writeRandomFile(t, files[i], fi.Size(), uint64(1000+i))
		if err := os.Chtimes(files[i], fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}
