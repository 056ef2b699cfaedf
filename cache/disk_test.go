package cache_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zosfs/zosfs-agent/cache"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
)

// The cache on a small, really full disk (issue 13, item 7): each test mounts its own
// tmpfs, which needs root.

// mountTmpfs mounts a tmpfs of size (mount(8)'s size=, e.g. "8m") on a new directory,
// detached when the test ends (after the caches opened in the test are closed).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	testkit.NeedRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		testkit.Unavailable(t, "mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting the tmpfs: %v", err)
		}
	})
	return dir
}

// diskFree returns the bytes available on the filesystem of dir, and its size.
func diskFree(t *testing.T, dir string) (free, total int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Blocks) * st.Bsize
}

// fill writes the file dir/filler until the filesystem has at most leave bytes free (0:
// until it is full), and returns its path.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		free, _ := diskFree(t, dir)
		if free <= leave || (leave == 0 && free == 0) {
			return p
		}
		if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			return p
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskReserve: a Put that would take the free space below MinFree evicts unpinned
// blocks for it, and when only pinned blocks are left fails with ErrDiskFull (an
// ErrFull), losing nothing.
func TestDiskReserve(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	const minFree, blockSize = 2 << 20, 256 << 10
	var h hooks
	cfg := config(t, filepath.Join(dir, "cache"), -1, &h) // no quota: only the reserve
	cfg.MinFree = minFree
	c := open(t, cfg)
	var ids []flist.BlockID
	var blocks [][]byte
	for range 8 { // 2 MiB
		id, data := newBlock(32, blockSize)
		mustPut(t, c, id, data)
		ids, blocks = append(ids, id), append(blocks, data)
	}
	if err := c.Pin(t.Context(), "flist", ids); err != nil {
		t.Fatal(err)
	}
	fill(t, dir, 3*blockSize+minFree/2) // 1.75 MiB free: below MinFree
	cache.ExpireDiskFree(c)
	before := c.Stats()

	id, data := newBlock(32, blockSize)
	err := c.Put(t.Context(), id, data)
	if !errors.Is(err, cache.ErrFull) || !errors.Is(err, cache.ErrDiskFull) {
		t.Fatalf("Put under MinFree with every block pinned: err = %v, want ErrDiskFull and ErrFull", err)
	}
	t.Logf("refused: %v", err)
	for i := range ids {
		mustGet(t, c, ids[i], blocks[i])
	}
	hasAll(t, c, false, id)
	if after := c.Stats(); after.Bytes != before.Bytes || after.Blocks != before.Blocks {
		t.Errorf("Stats after the refused Put = %+v, before %+v", after, before)
	}
	if _, evicted := h.counts(); evicted != 0 {
		t.Errorf("%d blocks evicted for a Put that failed", evicted)
	}
	checkConsistent(t, c, cfg.Dir)

	// Unpinned, the blocks make room: the least recently used go, as few as will do.
	if err := c.Unpin(t.Context(), "flist"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, id, data)
	mustGet(t, c, id, data)
	// Free before: 1.75 MiB; after: at least 2 MiB with 256 KiB more stored: 2 blocks go.
	if ev := h.evictedIDs(); len(ev) != 2 || !slices.Equal(ev, ids[:2]) {
		t.Errorf("evicted %d blocks, want the 2 least recently used", len(ev))
	}
	if free, _ := diskFree(t, dir); free < minFree-64<<10 { // the index's few writes aside
		t.Errorf("%d bytes free after the Put, MinFree %d", free, minFree)
	}
	if st := c.Stats(); st.MinFree != minFree || st.DiskFree < minFree {
		t.Errorf("Stats = %+v, want MinFree %d and DiskFree at least that", st, minFree)
	}
	checkConsistent(t, c, cfg.Dir)
}

// TestDiskFullWrite: with no reserve, a Put that meets a full filesystem fails with
// ErrDiskFull (an ErrFull), leaving nothing behind.
func TestDiskFullWrite(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	cfg := config(t, filepath.Join(dir, "cache"), -1, nil)
	cfg.MinFree = -1
	c := open(t, cfg)
	keep, keepData := newBlock(32, 4096)
	mustPut(t, c, keep, keepData)
	fill(t, dir, 0)
	id, data := newBlock(32, 256<<10)
	if err := c.Put(t.Context(), id, data); !errors.Is(err, cache.ErrDiskFull) || !errors.Is(err, cache.ErrFull) {
		t.Fatalf("Put on a full disk: err = %v, want ErrDiskFull and ErrFull", err)
	}
	hasAll(t, c, false, id)
	mustGet(t, c, keep, keepData)
	checkConsistent(t, c, cfg.Dir)
}

// TestDefaultMaxFromDisk: with no MaxBytes the cache is bounded by 80 % of the free space
// plus what it holds, measured at Open, so it does not fill its disk by itself; the
// reserve defaults to 5 % of a small filesystem.
func TestDefaultMaxFromDisk(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	var h hooks
	cfg := config(t, filepath.Join(dir, "cache"), 0, &h)
	c := open(t, cfg)
	st := c.Stats()
	free, total := diskFree(t, dir)
	if want := (free + st.Bytes) / 100 * 80; st.Max < want-64<<10 || st.Max > want+64<<10 {
		t.Errorf("Stats().Max = %d, want about %d (80 %% of %d free)", st.Max, want, free)
	}
	if want := total / 100 * 5; st.MinFree != want {
		t.Errorf("Stats().MinFree = %d, want %d (5 %% of %d)", st.MinFree, want, total)
	}

	for range 48 { // 12 MiB through an 8 MiB disk
		id, data := newBlock(32, 256<<10)
		mustPut(t, c, id, data)
	}
	st = c.Stats()
	if _, evicted := h.counts(); evicted == 0 || st.Bytes > st.Max {
		t.Errorf("after 12 MiB of Puts: %d evicted, Stats = %+v", evicted, st)
	}
	if free, _ := diskFree(t, dir); free < st.MinFree {
		t.Errorf("%d bytes free, below the reserve (%d)", free, st.MinFree)
	}
	checkConsistent(t, c, cfg.Dir)

	// Reopened, it counts what it holds as room: the bound stays where it was.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = open(t, cfg)
	if st2 := c.Stats(); st2.Max < st.Max-128<<10 || st2.Max > st.Max+128<<10 || st2.Blocks != st.Blocks {
		t.Errorf("reopened: Stats = %+v, want Max about %d and %d blocks", st2, st.Max, st.Blocks)
	}
}

// TestOpenOnFullDisk: a cache reopened on a 100 % full disk (goleveldb cannot open its
// index for writing) opens read-only, serves its blocks and refuses Put and Pin with a
// clear error; with room again, it opens as it was.
func TestOpenOnFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	cfg := config(t, filepath.Join(dir, "cache"), -1, nil)
	c, err := cache.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []flist.BlockID
	var blocks [][]byte
	for range 4 {
		id, data := newBlock(32, 64<<10)
		mustPut(t, c, id, data)
		ids, blocks = append(ids, id), append(blocks, data)
	}
	if err := c.Pin(t.Context(), "flist", ids[:1]); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, dir, 0)
	if free, _ := diskFree(t, dir); free != 0 {
		t.Fatalf("%d bytes still free", free)
	}

	var logs syncBuffer
	cfg.Logger = testLogger(t, &logs)
	c, err = cache.Open(cfg)
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	if st := c.Stats(); !st.ReadOnly || st.Blocks != 4 || st.PinnedBlocks != 1 {
		t.Errorf("Stats = %+v, want read-only with 4 blocks, 1 pinned", st)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "read-only") {
		t.Errorf("no warning of the read-only open in the logs:\n%s", logs.String())
	}
	for i := range ids {
		mustGet(t, c, ids[i], blocks[i])
	}
	hasAll(t, c, true, ids...)
	id, data := newBlock(32, 64<<10)
	err = c.Put(t.Context(), id, data)
	if !errors.Is(err, cache.ErrReadOnly) || !errors.Is(err, cache.ErrFull) ||
		!strings.Contains(err.Error(), "cache is read-only: the disk was full when it was opened") {
		t.Errorf("Put on a read-only cache: err = %v", err)
	}
	if err := c.Pin(t.Context(), "other", ids[1:2]); !errors.Is(err, cache.ErrReadOnly) {
		t.Errorf("Pin on a read-only cache: err = %v", err)
	}
	hasAll(t, c, false, id)
	if err := c.Close(); err != nil {
		t.Fatalf("Close of the read-only cache: %v", err)
	}

	// Room again: a writable cache, with its blocks and pins.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	c = open(t, cfg)
	if st := c.Stats(); st.ReadOnly || st.Blocks != 4 || st.PinnedBlocks != 1 {
		t.Errorf("reopened with room: Stats = %+v, want writable with 4 blocks, 1 pinned", st)
	}
	mustPut(t, c, id, data)
	for i := range ids {
		mustGet(t, c, ids[i], blocks[i])
	}
	checkConsistent(t, c, cfg.Dir)
}
