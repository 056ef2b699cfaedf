package cache_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/crypto/blake2b"

	"github.com/zosfs/zosfs-agent/cache"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// --- helpers ---

// newBlock returns a valid block of size random bytes with an id of idLen bytes (32 for
// v2, 16 for legacy): the id is the BLAKE2b hash of the bytes, as flist.VerifyBlock wants.
func newBlock(idLen, size int) (id flist.BlockID, data []byte) {
	data = make([]byte, size)
	rand.Read(data)
	h, err := blake2b.New(idLen, nil)
	if err != nil {
		panic(err)
	}
	h.Write(data)
	id, err = flist.ParseBlockID(h.Sum(nil))
	if err != nil {
		panic(err)
	}
	return id, data
}

// hooks records the cache's hook calls.
type hooks struct {
	mu      sync.Mutex
	stored  []flist.BlockID
	evicted []flist.BlockID
}

func (h *hooks) onStore(id flist.BlockID) {
	h.mu.Lock()
	h.stored = append(h.stored, id)
	h.mu.Unlock()
}
func (h *hooks) onEvict(id flist.BlockID) {
	h.mu.Lock()
	h.evicted = append(h.evicted, id)
	h.mu.Unlock()
}

func (h *hooks) counts() (stored, evicted int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.stored), len(h.evicted)
}

func (h *hooks) evictedIDs() []flist.BlockID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.evicted)
}

// config returns a config for dir whose hooks record into h (if not nil) and whose logs
// go to the test log.
func config(t *testing.T, dir string, max int64, h *hooks) cache.Config {
	cfg := cache.Config{Dir: dir, MaxBytes: max, Logger: testLogger(t, nil)}
	if h != nil {
		cfg.OnStore, cfg.OnEvict = h.onStore, h.onEvict
	}
	return cfg
}

// testLogger logs to the test's output (see testkit.Writer) and, if buf is not nil, to
// buf, which the test inspects.
func testLogger(t *testing.T, buf *syncBuffer) *slog.Logger {
	var w io.Writer = testkit.Writer(t)
	if buf != nil {
		w = io.MultiWriter(w, buf)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// open opens a cache that is closed when the test ends.
func open(t *testing.T, cfg cache.Config) *cache.Cache {
	t.Helper()
	c, err := cache.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func mustPut(t *testing.T, c *cache.Cache, id flist.BlockID, data []byte) {
	t.Helper()
	if err := c.Put(t.Context(), id, data); err != nil {
		t.Fatalf("Put %x: %v", id, err)
	}
}

func mustGet(t *testing.T, c *cache.Cache, id flist.BlockID, want []byte) {
	t.Helper()
	got, err := c.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get %x: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %x: wrong bytes (%d, want %d)", id, len(got), len(want))
	}
}

func mustMiss(t *testing.T, c *cache.Cache, id flist.BlockID) {
	t.Helper()
	if _, err := c.Get(t.Context(), id); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get %x: err = %v, want ErrNotFound", id, err)
	}
	if ok, err := c.Has(t.Context(), id); err != nil || ok {
		t.Fatalf("Has %x = %v, %v; want false", id, ok, err)
	}
}

func hasAll(t *testing.T, c *cache.Cache, want bool, ids ...flist.BlockID) {
	t.Helper()
	for _, id := range ids {
		if ok, err := c.Has(t.Context(), id); err != nil || ok != want {
			t.Fatalf("Has %x = %v, %v; want %v", id, ok, err, want)
		}
	}
}

// blockPath is where the cache keeps block id (the documented layout).
func blockPath(dir string, id flist.BlockID) string {
	h := fmt.Sprintf("%x", id)
	return filepath.Join(dir, "blocks", h[:2], h)
}

// onDisk walks dir/blocks: the number and total size of block files, and the paths of
// anything else (temporary files, strays).
func onDisk(t *testing.T, dir string) (n int, size int64, other []string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(dir, "blocks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() && (len(name) == 64 || len(name) == 32) && !strings.HasPrefix(name, ".") {
			n++
			size += fi.Size()
		} else {
			other = append(other, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size, other
}

// checkConsistent checks that the disk holds exactly what Stats says, and nothing else.
func checkConsistent(t *testing.T, c *cache.Cache, dir string) {
	t.Helper()
	st := c.Stats()
	n, size, other := onDisk(t, dir)
	if int64(n) != st.Blocks || size != st.Bytes || len(other) > 0 {
		t.Fatalf("disk holds %d files, %d bytes, others %q; Stats says %d blocks, %d bytes", n, size, other, st.Blocks, st.Bytes)
	}
	if st.Max > 0 && st.Bytes > st.Max && st.Pinned <= st.Max {
		t.Fatalf("Stats: %d bytes over max %d", st.Bytes, st.Max)
	}
}

func randInt(n int) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}

// --- the store conformance suite ---

// storeCache is the cache as a store.Store: its ErrNotFound also matches
// store.ErrNotFound, the way the agent maps it.
type storeCache struct{ *cache.Cache }

func (s storeCache) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	data, err := s.Cache.Get(ctx, id)
	if errors.Is(err, cache.ErrNotFound) {
		err = fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return data, err
}

// TestStoreConformance runs the suite every block store passes. Its blocks are random
// bytes under random ids, which the cache rightly refuses, so here the cache verifies
// with a stand-in that accepts any block up to store.MaxBlockSize (the suite's bound).
// Everything else (ids, errors, contexts, concurrency, the disk) is the real cache; the
// real verification is tested below.
func TestStoreConformance(t *testing.T) {
	accept := func(id flist.BlockID, data []byte) error {
		if len(data) > store.MaxBlockSize {
			return fmt.Errorf("%w: too large", flist.ErrBlockCorrupt)
		}
		return nil
	}
	storetest.Run(t, func(t *testing.T) store.Store {
		c, err := cache.Open(cache.WithVerifier(config(t, t.TempDir(), 0, nil), accept))
		if err != nil {
			t.Fatal(err)
		}
		return storeCache{c}
	})
}

// TestRoundTrip: real v2 blocks (flist.EncodeBlock) and legacy-sized ids, through the
// real verification, with and without a quota.
func TestRoundTrip(t *testing.T) {
	for _, max := range []int64{-1, 64 << 20} { // no bound (0 is a bound from the disk: disk_test.go), or one
		t.Run(fmt.Sprintf("max=%d", max), func(t *testing.T) {
			dir := t.TempDir()
			c := open(t, config(t, dir, max, nil))
			plain := make([]byte, flist.BlockSize)
			rand.Read(plain)
			v2, v2data := flist.EncodeBlock(plain)
			legacy, legacyData := newBlock(16, 1000)
			small, smallData := newBlock(32, 1)
			for _, b := range []struct {
				id   flist.BlockID
				data []byte
			}{{v2.ID, v2data}, {legacy, legacyData}, {small, smallData}} {
				hasAll(t, c, false, b.id)
				mustPut(t, c, b.id, b.data)
				mustPut(t, c, b.id, b.data) // again: harmless
				mustGet(t, c, b.id, b.data)
				hasAll(t, c, true, b.id)
				if _, err := os.Stat(blockPath(dir, b.id)); err != nil {
					t.Errorf("block file: %v", err)
				}
			}
			if st := c.Stats(); st.Blocks != 3 || st.Bytes != int64(len(v2data)+len(legacyData)+len(smallData)) || st.Max != maxOrNone(max) {
				t.Errorf("Stats = %+v", st)
			}
			checkConsistent(t, c, dir)
			if !strings.Contains(c.String(), dir) {
				t.Errorf("String() = %q, want it to name %s", c.String(), dir)
			}
		})
	}
}

// maxOrNone is the Stats.Max of a Config.MaxBytes other than 0: 0 for none.
func maxOrNone(maxBytes int64) int64 { return max(maxBytes, 0) }

// TestPutRefusesBadBlocks: a block that does not match its id, a bad id, a block too
// large: refused, with nothing written and no hook called.
func TestPutRefusesBadBlocks(t *testing.T) {
	id32, data32 := newBlock(32, 1000)
	id16, data16 := newBlock(16, 1000)
	flipped := slices.Clone(data32)
	flipped[500] ^= 1
	big := make([]byte, cache.MaxBlockSize+1)
	for _, tc := range []struct {
		name    string
		id      flist.BlockID
		data    []byte
		corrupt bool // the error wraps flist.ErrBlockCorrupt
	}{
		{"one bit flipped", id32, flipped, true},
		{"other block's bytes", id32, data16, true},
		{"legacy id, wrong bytes", id16, data32, true},
		{"truncated", id32, data32[:999], true},
		{"empty", id32, nil, true},
		{"too large", id32, big, true},
		{"zero id", flist.BlockID{}, data32, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var h hooks
			c := open(t, config(t, dir, 0, &h))
			err := c.Put(t.Context(), tc.id, tc.data)
			if err == nil {
				t.Fatal("Put: no error")
			}
			if got := errors.Is(err, flist.ErrBlockCorrupt); got != tc.corrupt {
				t.Errorf("Put: err = %v; wraps ErrBlockCorrupt: %v, want %v", err, got, tc.corrupt)
			}
			if !tc.id.Valid() && !strings.Contains(err.Error(), "no block id") {
				t.Errorf("Put with the zero id: err = %v, want \"no block id\"", err)
			}
			if n, _, other := onDisk(t, dir); n != 0 || len(other) != 0 {
				t.Errorf("after a refused Put the disk holds %d blocks and %q", n, other)
			}
			if st := c.Stats(); st.Blocks != 0 || st.Bytes != 0 {
				t.Errorf("Stats = %+v", st)
			}
			if s, e := h.counts(); s+e != 0 {
				t.Errorf("hooks called: %d stores, %d evictions", s, e)
			}
			if tc.id.Valid() {
				mustMiss(t, c, tc.id)
			}
		})
	}
}

// TestGetDetectsDamage: a block file damaged behind the cache's back while the daemon was
// down is never served: Get reports it missing, drops it (file, index, hooks) and a new
// Put brings it back. (Blocks stored or verified since the cache was opened are trusted;
// TestVerifiedOnce.)
func TestGetDetectsDamage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noVerify bool
		damage   func(t *testing.T, path string)
		served   bool // with NoVerifyOnRead, same-size damage is (as documented) not seen
		restart  bool // damage while the cache is closed (else while it runs)
	}{
		{"byte flipped", false, flipByte, false, true},
		{"byte flipped, no verify", true, flipByte, true, true},
		{"truncated", false, truncate, false, false},
		{"truncated, no verify", true, truncate, false, false},
		{"grown", false, grow, false, false},
		{"removed", false, func(t *testing.T, p string) { os.Remove(p) }, false, false},
		{"replaced by a directory", false, func(t *testing.T, p string) { os.Remove(p); os.Mkdir(p, 0o755) }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var h hooks
			cfg := config(t, dir, 0, &h)
			cfg.NoVerifyOnRead = tc.noVerify
			c := open(t, cfg)
			id, data := newBlock(32, 4096)
			other, otherData := newBlock(32, 4096)
			mustPut(t, c, id, data)
			mustPut(t, c, other, otherData)
			if tc.restart {
				// Same-size damage is looked for at the first read after opening.
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				tc.damage(t, blockPath(dir, id))
				c = open(t, cfg)
			} else {
				tc.damage(t, blockPath(dir, id))
			}

			got, err := c.Get(t.Context(), id)
			if tc.served {
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				return
			}
			if !errors.Is(err, cache.ErrNotFound) || got != nil {
				t.Fatalf("Get of a damaged block: %d bytes, err = %v; want ErrNotFound", len(got), err)
			}
			mustMiss(t, c, id)
			if ev := h.evictedIDs(); len(ev) != 1 || ev[0] != id {
				t.Errorf("OnEvict calls: %x, want one for the damaged block", ev)
			}
			mustGet(t, c, other, otherData)
			if fi, err := os.Lstat(blockPath(dir, id)); err == nil && fi.Mode().IsRegular() {
				t.Errorf("the damaged file is still there")
			}
			os.Remove(blockPath(dir, id)) // the directory, if the test made one
			mustPut(t, c, id, data)
			mustGet(t, c, id, data)
			checkConsistent(t, c, dir)
		})
	}
}

// TestVerifiedOnce: a block is hashed when stored and at its first read after the cache
// is opened, not at every read: same-size damage done while the cache runs, after that,
// is served (the reader's own check — a peer's verification, AES-GCM's tag — catches it).
func TestVerifiedOnce(t *testing.T) {
	dir := t.TempDir()
	cfg := config(t, dir, 0, nil)
	c := open(t, cfg)
	id, data := newBlock(32, 4096)
	mustPut(t, c, id, data)
	flipByte(t, blockPath(dir, id))
	if got, err := c.Get(t.Context(), id); err != nil || bytes.Equal(got, data) {
		t.Fatalf("Get after damage to a block verified at Put: err %v, same bytes %v; want the damaged bytes", err, bytes.Equal(got, data))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = open(t, cfg)
	if _, err := c.Get(t.Context(), id); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("first Get after reopening, of a damaged block: %v, want ErrNotFound", err)
	}
}

func flipByte(t *testing.T, p string) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, 100)
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, 100); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, p string) {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
}

func grow(t *testing.T, p string) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write([]byte("x"))
}

// TestReopenReconciles simulates what a killed daemon (and outside meddling) leaves, and
// checks that Open serves none of it and keeps the good blocks.
func TestReopenReconciles(t *testing.T) {
	dir := t.TempDir()
	c, err := cache.Open(config(t, dir, 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	good1, good1Data := newBlock(32, 3000)
	good2, good2Data := newBlock(16, 2000)
	noFile, noFileData := newBlock(32, 1000)
	wrongSize, wrongSizeData := newBlock(32, 1000)
	shrunk, shrunkData := newBlock(32, 1000)
	for _, b := range []struct {
		id   flist.BlockID
		data []byte
	}{{good1, good1Data}, {good2, good2Data}, {noFile, noFileData}, {wrongSize, wrongSizeData}, {shrunk, shrunkData}} {
		mustPut(t, c, b.id, b.data)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// An index entry without its file (killed between the two steps of an eviction).
	os.Remove(blockPath(dir, noFile))
	// Files whose size differs from the index.
	grow(t, blockPath(dir, wrongSize))
	truncate(t, blockPath(dir, shrunk))
	// A complete, valid file the index does not list (killed before recording it).
	unlisted, unlistedData := newBlock(32, 1500)
	os.MkdirAll(filepath.Dir(blockPath(dir, unlisted)), 0o755)
	os.WriteFile(blockPath(dir, unlisted), unlistedData, 0o644)
	// A half-written temporary file (killed in the rename fallback), next to a block.
	tmp := filepath.Join(filepath.Dir(blockPath(dir, good1)), fmt.Sprintf(".tmp-%x-123456", good1))
	os.WriteFile(tmp, good1Data[:100], 0o644)
	// Foreign files.
	os.WriteFile(filepath.Join(dir, "blocks", "README"), []byte("hi"), 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(blockPath(dir, good1)), "ABC"), []byte("hi"), 0o644)

	var logs syncBuffer
	cfg := config(t, dir, 0, nil)
	cfg.Logger = testLogger(t, &logs)
	c = open(t, cfg)
	mustGet(t, c, good1, good1Data)
	mustGet(t, c, good2, good2Data)
	for _, id := range []flist.BlockID{noFile, wrongSize, shrunk, unlisted} {
		mustMiss(t, c, id)
	}
	if st := c.Stats(); st.Blocks != 2 || st.Bytes != 5000 {
		t.Errorf("Stats = %+v, want the 2 good blocks", st)
	}
	checkConsistent(t, c, dir)
	for _, want := range []string{"temp_files_removed=1", "unlisted_files_removed=1", "wrong_size_removed=2", "missing_files_dropped=1", "foreign_files_removed=2"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("Open's log lacks %s:\n%s", want, logs.String())
		}
	}

	// The blocks reconciled away can be stored again.
	mustPut(t, c, noFile, noFileData)
	mustGet(t, c, noFile, noFileData)
}

// TestCrashRecovery kills (SIGKILL) a process writing, reading and evicting blocks, a
// few times, then checks that every block the reopened cache lists is whole and that
// nothing else is left on disk.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "ZOSFS_CACHE_CRASH_DIR="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		puts := 0
		for sc.Scan() && puts < 150+50*round {
			if strings.HasPrefix(sc.Text(), "put ") {
				puts++
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if puts < 100 {
			t.Fatalf("round %d: the helper made only %d puts", round, puts)
		}
	}
	c := open(t, config(t, dir, crashMax, nil))
	n := 0
	c.Range(func(id flist.BlockID, size int64) bool {
		data, err := c.Get(t.Context(), id) // verifies
		if err != nil || int64(len(data)) != size {
			t.Errorf("block %x: %d bytes (listed %d), %v", id, len(data), size, err)
		}
		n++
		return true
	})
	if n == 0 {
		t.Fatal("no block survived")
	}
	checkConsistent(t, c, dir)
	t.Logf("%d blocks survived three kills", n)
}

const crashMax = 200 * 16 << 10 // room for 200 blocks of 16 KiB: the helper also evicts

// TestCrashHelper is the process TestCrashRecovery kills; it does nothing otherwise.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv("ZOSFS_CACHE_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process of TestCrashRecovery")
	}
	c, err := cache.Open(cache.Config{Dir: dir, MaxBytes: crashMax, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				id, data := newBlock(32, 16<<10)
				if err := c.Put(context.Background(), id, data); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(1)
				}
				fmt.Println("put", len(data))
				c.Pin(context.Background(), "owner", []flist.BlockID{id}) // a few pins and unpins, too
				if randInt(3) == 0 {
					c.Unpin(context.Background(), "owner")
				}
				c.Get(context.Background(), id)
			}
		})
	}
	wg.Wait()
}

// TestLRU: over MaxBytes, the least recently used blocks go first; Get and Put count as
// uses; OnEvict hears of each eviction; recency survives a reopen.
func TestLRU(t *testing.T) {
	const size = 1000
	type block struct {
		id   flist.BlockID
		data []byte
	}
	blocks := make([]block, 8)
	for i := range blocks {
		id, data := newBlock(32, size)
		blocks[i] = block{id, data}
	}
	id := func(i int) flist.BlockID { return blocks[i].id }

	type step struct {
		op   string // put, get
		i    int
		evic []int // blocks this step evicts
	}
	for _, tc := range []struct {
		name  string
		max   int64
		steps []step
		kept  []int
	}{
		{"oldest first", 3 * size, []step{
			{"put", 0, nil}, {"put", 1, nil}, {"put", 2, nil},
			{"put", 3, []int{0}}, {"put", 4, []int{1}},
		}, []int{2, 3, 4}},
		{"get keeps a block", 3 * size, []step{
			{"put", 0, nil}, {"put", 1, nil}, {"put", 2, nil},
			{"get", 0, nil}, {"put", 3, []int{1}}, {"put", 4, []int{2}}, {"put", 5, []int{0}},
		}, []int{3, 4, 5}},
		{"put again counts as a use", 3 * size, []step{
			{"put", 0, nil}, {"put", 1, nil}, {"put", 2, nil},
			{"put", 0, nil}, {"put", 3, []int{1}},
		}, []int{0, 2, 3}},
		{"no max", 0, []step{
			{"put", 0, nil}, {"put", 1, nil}, {"put", 2, nil}, {"put", 3, nil}, {"put", 4, nil},
		}, []int{0, 1, 2, 3, 4}},
		{"max not a multiple", 2*size + 500, []step{
			{"put", 0, nil}, {"put", 1, nil}, {"put", 2, []int{0}}, {"get", 1, nil}, {"put", 3, []int{2}},
		}, []int{1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var h hooks
			c := open(t, config(t, dir, tc.max, &h))
			var want []flist.BlockID
			for _, s := range tc.steps {
				switch s.op {
				case "put":
					mustPut(t, c, id(s.i), blocks[s.i].data)
				case "get":
					mustGet(t, c, id(s.i), blocks[s.i].data)
				}
				for _, e := range s.evic {
					want = append(want, id(e))
				}
				if got := h.evictedIDs(); !slices.Equal(got, want) {
					t.Fatalf("after %s %d: evicted %x, want %x", s.op, s.i, got, want)
				}
			}
			for i := range blocks {
				hasAll(t, c, slices.Contains(tc.kept, i), id(i))
			}
			checkConsistent(t, c, dir)
		})
	}

	t.Run("recency survives reopen", func(t *testing.T) {
		dir := t.TempDir()
		c, err := cache.Open(config(t, dir, 3*size, nil))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			mustPut(t, c, id(i), blocks[i].data)
		}
		mustGet(t, c, id(0), blocks[0].data)
		c.Close()
		c = open(t, config(t, dir, 3*size, nil))
		mustPut(t, c, id(3), blocks[3].data)
		hasAll(t, c, true, id(0), id(2), id(3))
		hasAll(t, c, false, id(1))
	})

	t.Run("lowered max trims on open", func(t *testing.T) {
		dir := t.TempDir()
		c, err := cache.Open(config(t, dir, 0, nil))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			mustPut(t, c, id(i), blocks[i].data)
		}
		mustGet(t, c, id(0), blocks[0].data)
		c.Close()
		c = open(t, config(t, dir, 2*size, nil))
		hasAll(t, c, true, id(0), id(4))
		hasAll(t, c, false, id(1), id(2), id(3))
		checkConsistent(t, c, dir)
	})

	t.Run("block larger than max", func(t *testing.T) {
		c := open(t, config(t, t.TempDir(), size-1, nil))
		if err := c.Put(t.Context(), id(0), blocks[0].data); !errors.Is(err, cache.ErrFull) {
			t.Fatalf("Put: err = %v, want ErrFull", err)
		}
	})
}

// TestPins: pinned blocks are never evicted, pins may come before the blocks, several
// owners may pin a block, pins survive a reopen, Unpin makes blocks evictable, and
// ErrFull comes when only pinned blocks are left.
func TestPins(t *testing.T) {
	const size = 1000
	newBlocks := func(n int) (ids []flist.BlockID, datas [][]byte) {
		for range n {
			id, data := newBlock(32, size)
			ids, datas = append(ids, id), append(datas, data)
		}
		return ids, datas
	}

	t.Run("pinned never evicted", func(t *testing.T) {
		dir := t.TempDir()
		c := open(t, config(t, dir, 3*size, nil))
		ids, datas := newBlocks(6)
		// Pinned before they arrive; ids[5] never arrives.
		if err := c.Pin(t.Context(), "flistA", []flist.BlockID{ids[0], ids[1], ids[5]}); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ids[0], datas[0])
		mustPut(t, c, ids[1], datas[1])
		for i := 2; i < 5; i++ { // each evicts the previous unpinned one
			mustPut(t, c, ids[i], datas[i])
		}
		hasAll(t, c, true, ids[0], ids[1], ids[4])
		hasAll(t, c, false, ids[2], ids[3], ids[5])
		if st := c.Stats(); st.Pinned != 2*size || st.PinnedBlocks != 2 || st.Blocks != 3 {
			t.Errorf("Stats = %+v", st)
		}
		checkConsistent(t, c, dir)
	})

	t.Run("pin a cached block", func(t *testing.T) {
		c := open(t, config(t, t.TempDir(), 2*size, nil))
		ids, datas := newBlocks(3)
		mustPut(t, c, ids[0], datas[0])
		mustPut(t, c, ids[1], datas[1])
		if err := c.Pin(t.Context(), "flistA", ids[:1]); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ids[2], datas[2]) // evicts ids[1], the only unpinned one
		hasAll(t, c, true, ids[0], ids[2])
		hasAll(t, c, false, ids[1])
	})

	t.Run("full of pins", func(t *testing.T) {
		dir := t.TempDir()
		var h hooks
		c, err := cache.Open(config(t, dir, 2*size, &h))
		if err != nil {
			t.Fatal(err)
		}
		ids, datas := newBlocks(3)
		if err := c.Pin(t.Context(), "flistA", ids[:2]); err != nil {
			t.Fatal(err)
		}
		if err := c.Pin(t.Context(), "flistB", ids[1:2]); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ids[0], datas[0])
		mustPut(t, c, ids[1], datas[1])
		if err := c.Put(t.Context(), ids[2], datas[2]); !errors.Is(err, cache.ErrFull) {
			t.Fatalf("Put into a cache full of pinned blocks: err = %v, want ErrFull", err)
		}
		mustMiss(t, c, ids[2])
		checkConsistent(t, c, dir)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}

		// Pins survive a reopen.
		c = open(t, config(t, dir, 2*size, &h))
		if owners, err := c.Owners(t.Context()); err != nil || !slices.Equal(owners, []string{"flistA", "flistB"}) {
			t.Fatalf("Owners = %q, %v", owners, err)
		}
		if !c.Pinned("flistA") || !c.Pinned("flistB") || c.Pinned("flistC") {
			t.Errorf("Pinned: A %v, B %v, C %v", c.Pinned("flistA"), c.Pinned("flistB"), c.Pinned("flistC"))
		}
		if err := c.Put(t.Context(), ids[2], datas[2]); !errors.Is(err, cache.ErrFull) {
			t.Fatalf("Put after reopen: err = %v, want ErrFull", err)
		}

		// Unpinning A frees ids[0] only: ids[1] is still pinned by B.
		if err := c.Unpin(t.Context(), "flistA"); err != nil {
			t.Fatal(err)
		}
		if c.Pinned("flistA") {
			t.Error("flistA still pinned")
		}
		mustPut(t, c, ids[2], datas[2])
		hasAll(t, c, true, ids[1], ids[2])
		hasAll(t, c, false, ids[0])
		if ev := h.evictedIDs(); len(ev) != 1 || ev[0] != ids[0] {
			t.Errorf("evicted %x, want ids[0]", ev)
		}
		if err := c.Unpin(t.Context(), "flistB"); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ids[0], datas[0]) // evicts ids[1]: less recently used than ids[2]
		hasAll(t, c, true, ids[0], ids[2])
		hasAll(t, c, false, ids[1])
		if owners, err := c.Owners(t.Context()); err != nil || len(owners) != 0 {
			t.Errorf("Owners after unpinning all = %q, %v", owners, err)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		dir := t.TempDir()
		c := open(t, config(t, dir, 2*size, nil))
		ids, datas := newBlocks(3)
		for range 2 {
			if err := c.Pin(t.Context(), "flistA", []flist.BlockID{ids[0], ids[0], ids[1]}); err != nil {
				t.Fatal(err)
			}
		}
		mustPut(t, c, ids[0], datas[0])
		mustPut(t, c, ids[1], datas[1])
		if err := c.Unpin(t.Context(), "flistA"); err != nil { // once is enough
			t.Fatal(err)
		}
		mustPut(t, c, ids[2], datas[2])
		if st := c.Stats(); st.PinnedBlocks != 0 || st.Blocks != 2 {
			t.Errorf("Stats = %+v", st)
		}
		if err := c.Unpin(t.Context(), "never-pinned"); err != nil {
			t.Errorf("Unpin of an unknown owner: %v", err)
		}
	})

	t.Run("owner with no blocks", func(t *testing.T) {
		dir := t.TempDir()
		c, _ := cache.Open(config(t, dir, 0, nil))
		if err := c.Pin(t.Context(), "empty-flist", nil); err != nil {
			t.Fatal(err)
		}
		c.Close()
		c = open(t, config(t, dir, 0, nil))
		if !c.Pinned("empty-flist") {
			t.Error("an owner pinning no block is forgotten by a reopen")
		}
	})

	t.Run("bad input", func(t *testing.T) {
		c := open(t, config(t, t.TempDir(), 0, nil))
		id, _ := newBlock(32, 10)
		for _, tc := range []struct {
			owner string
			ids   []flist.BlockID
		}{
			{"", []flist.BlockID{id}},
			{"a\x00b", []flist.BlockID{id}},
			{strings.Repeat("x", 2000), []flist.BlockID{id}},
			{"ok", []flist.BlockID{id, {}}},
			{"ok", []flist.BlockID{{}}},
		} {
			if err := c.Pin(t.Context(), tc.owner, tc.ids); err == nil {
				t.Errorf("Pin(%.10q, %d ids): no error", tc.owner, len(tc.ids))
			}
		}
		if owners, err := c.Owners(t.Context()); err != nil || len(owners) != 0 {
			t.Errorf("refused pins left owners %q (%v)", owners, err)
		}
		if err := c.Unpin(t.Context(), ""); err == nil {
			t.Error("Unpin(\"\"): no error")
		}
	})
}

// TestHooks: OnStore once per new block, OnEvict once per block leaving; hooks may call
// the cache (no lock is held).
func TestHooks(t *testing.T) {
	dir := t.TempDir()
	var c *cache.Cache
	var stored, evicted atomic.Int32
	var hookErr atomic.Value
	cfg := config(t, dir, 2000, nil)
	cfg.OnStore = func(id flist.BlockID) {
		stored.Add(1)
		if ok, err := c.Has(context.Background(), id); !ok || err != nil {
			hookErr.Store(fmt.Errorf("OnStore: Has = %v, %v", ok, err))
		}
	}
	cfg.OnEvict = func(id flist.BlockID) {
		evicted.Add(1)
		if ok, err := c.Has(context.Background(), id); ok || err != nil {
			hookErr.Store(fmt.Errorf("OnEvict: Has = %v, %v", ok, err))
		}
	}
	c = open(t, cfg)
	for range 5 {
		id, data := newBlock(32, 1000)
		mustPut(t, c, id, data)
		mustPut(t, c, id, data)
	}
	if s, e := stored.Load(), evicted.Load(); s != 5 || e != 3 {
		t.Errorf("OnStore called %d times, OnEvict %d; want 5 and 3", s, e)
	}
	if err, _ := hookErr.Load().(error); err != nil {
		t.Error(err)
	}
}

// TestRange lists every cached block, and stops when told.
func TestRange(t *testing.T) {
	c := open(t, config(t, t.TempDir(), 0, nil))
	want := map[flist.BlockID]int64{}
	for i := range 10 {
		id, data := newBlock(32, 100+i)
		mustPut(t, c, id, data)
		want[id] = int64(len(data))
	}
	got := map[flist.BlockID]int64{}
	c.Range(func(id flist.BlockID, size int64) bool {
		got[id] = size
		return true
	})
	if len(got) != len(want) {
		t.Fatalf("Range saw %d blocks, want %d", len(got), len(want))
	}
	for id, size := range want {
		if got[id] != size {
			t.Errorf("Range: block %x size %d, want %d", id, got[id], size)
		}
	}
	n := 0
	c.Range(func(flist.BlockID, int64) bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("Range went on after false: %d calls", n)
	}
}

// TestConcurrent hammers one small cache from many goroutines (run with -race): Puts,
// Gets, Hases, Pins and Unpins of shared ids, with constant eviction. A Get returns the
// exact block or ErrNotFound, never anything else; afterwards the disk, the index and
// the hooks agree.
func TestConcurrent(t *testing.T) {
	t.Run("same block", func(t *testing.T) {
		dir := t.TempDir()
		var h hooks
		c := open(t, config(t, dir, 0, &h))
		id, data := newBlock(32, 64<<10)
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				if err := c.Put(t.Context(), id, data); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if s, _ := h.counts(); s != 1 {
			t.Errorf("OnStore called %d times for one block", s)
		}
		mustGet(t, c, id, data)
		checkConsistent(t, c, dir)
	})

	t.Run("eviction under load", func(t *testing.T) {
		dir := t.TempDir()
		var h hooks
		const nBlocks, size, room = 40, 8 << 10, 10
		c := open(t, config(t, dir, room*size, &h))
		ids, datas := make([]flist.BlockID, nBlocks), make([][]byte, nBlocks)
		for i := range ids {
			ids[i], datas[i] = newBlock(32, size)
		}
		// Three workers pin: each its own owner, at most 2 blocks at a time (unpin, then
		// pin), so at most 6 of the 10 blocks of room are pinned: Put never meets ErrFull.
		owners := []string{"o0", "o1", "o2"}
		var wg sync.WaitGroup
		var gets, hits atomic.Int64
		for w := range 16 {
			wg.Go(func() {
				ctx := t.Context()
				for range 400 {
					i := randInt(nBlocks)
					switch op := randInt(20); {
					case op < 8:
						if err := c.Put(ctx, ids[i], datas[i]); err != nil {
							t.Errorf("Put: %v", err)
							return
						}
					case op < 17:
						gets.Add(1)
						got, err := c.Get(ctx, ids[i])
						switch {
						case err == nil && bytes.Equal(got, datas[i]):
							hits.Add(1)
						case err == nil:
							t.Errorf("Get %d: wrong bytes (%d)", i, len(got))
							return
						case !errors.Is(err, cache.ErrNotFound):
							t.Errorf("Get %d: %v", i, err)
							return
						}
					case op < 18:
						if _, err := c.Has(ctx, ids[i]); err != nil {
							t.Errorf("Has: %v", err)
						}
					case w < len(owners) && op < 19:
						if err := c.Unpin(ctx, owners[w]); err != nil {
							t.Errorf("Unpin: %v", err)
						}
						if err := c.Pin(ctx, owners[w], []flist.BlockID{ids[i], ids[(i+1)%nBlocks]}); err != nil {
							t.Errorf("Pin: %v", err)
						}
					case w < len(owners):
						if err := c.Unpin(ctx, owners[w]); err != nil {
							t.Errorf("Unpin: %v", err)
						}
					}
					if st := c.Stats(); st.Bytes > room*size {
						t.Errorf("Stats: %d bytes, over the max", st.Bytes)
						return
					}
				}
			})
		}
		wg.Wait()
		for _, o := range owners {
			c.Unpin(t.Context(), o)
		}
		st := c.Stats()
		s, e := h.counts()
		t.Logf("%d gets, %d hits; %d stored, %d evicted; %+v", gets.Load(), hits.Load(), s, e, st)
		if int64(s-e) != st.Blocks {
			t.Errorf("OnStore %d - OnEvict %d = %d, but %d blocks cached", s, e, s-e, st.Blocks)
		}
		if e == 0 {
			t.Error("nothing was evicted: the test did not test eviction")
		}
		checkConsistent(t, c, dir)
		for i := range ids {
			if ok, _ := c.Has(t.Context(), ids[i]); ok {
				mustGet(t, c, ids[i], datas[i])
			}
		}
	})
}

// TestClose: calls after Close fail with ErrClosed; Close twice is harmless; a second
// Open of an open cache fails.
func TestClose(t *testing.T) {
	dir := t.TempDir()
	c, err := cache.Open(config(t, dir, 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Open(config(t, dir, 0, nil)); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Errorf("a second Open of the same directory: %v, want an error naming another daemon (issue 13, 12)", err)
	}
	id, data := newBlock(32, 100)
	mustPut(t, c, id, data)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Get(t.Context(), id); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if err := c.Put(t.Context(), id, data); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
	if err := c.Pin(t.Context(), "x", nil); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Pin after Close: %v", err)
	}
	if _, err := cache.Open(cache.Config{}); err == nil {
		t.Error("Open with no directory: no error")
	}
}

// BenchmarkGet reads a 512 KiB block from the cache with and without the read
// verification: the ratio of the two is what Config.NoVerifyOnRead would save.
func BenchmarkGet(b *testing.B) {
	for _, noVerify := range []bool{false, true} {
		b.Run(fmt.Sprintf("noverify=%v", noVerify), func(b *testing.B) {
			c, err := cache.Open(cache.Config{Dir: b.TempDir(), NoVerifyOnRead: noVerify, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			id, data := newBlock(32, flist.BlockSize)
			if err := c.Put(b.Context(), id, data); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := c.Get(b.Context(), id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestIndexDamage: a damaged index is repaired (goleveldb's recovery) and what it still
// holds is kept; a lost index loses the blocks (their files are removed) but not the
// cache: either way the disk and the index agree after Open.
func TestIndexDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, index string)
		kept   bool
	}{
		{"manifest damaged", func(t *testing.T, index string) {
			ms, _ := filepath.Glob(filepath.Join(index, "MANIFEST-*"))
			if len(ms) == 0 {
				t.Fatal("no MANIFEST in the index")
			}
			for _, m := range ms {
				os.WriteFile(m, []byte("garbage"), 0o644)
			}
		}, true},
		{"index lost", func(t *testing.T, index string) { os.RemoveAll(index) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, err := cache.Open(config(t, dir, 0, nil))
			if err != nil {
				t.Fatal(err)
			}
			id, data := newBlock(32, 1000)
			mustPut(t, c, id, data)
			if err := c.Pin(t.Context(), "flistA", []flist.BlockID{id}); err != nil {
				t.Fatal(err)
			}
			c.Close()
			tc.damage(t, filepath.Join(dir, "index"))

			c = open(t, config(t, dir, 0, nil))
			if tc.kept {
				mustGet(t, c, id, data)
			} else {
				mustMiss(t, c, id)
			}
			if c.Pinned("flistA") != tc.kept {
				t.Errorf("Pinned = %v, want %v", c.Pinned("flistA"), tc.kept)
			}
			checkConsistent(t, c, dir)
			mustPut(t, c, id, data)
			mustGet(t, c, id, data)
		})
	}
}
