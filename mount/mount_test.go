package mount_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/internal/fixtures"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/mount"
)

// The test binary doubles as a helper process (a mount that gets killed, leaving a stale
// mount behind): see runHelper.
func TestMain(m *testing.M) {
	if os.Getenv("ZOSFS_MOUNT_HELPER") != "" {
		os.Exit(runHelper())
	}
	os.Exit(m.Run())
}

// store is an in-memory block store: the sink of a pack and the BlockGetter of a mount.
// It records every GetBlock call.
type store struct {
	mu     sync.Mutex
	blocks map[flist.BlockID][]byte
	calls  []flist.BlockID // block ids asked for, in order
}

func newStore() *store { return &store{blocks: map[flist.BlockID][]byte{}} }

func (s *store) Has(_ context.Context, id flist.BlockID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blocks[id]
	return ok, nil
}

func (s *store) Put(_ context.Context, id flist.BlockID, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocks[id] = bytes.Clone(data)
	return nil
}

func (s *store) GetBlock(_ context.Context, b flist.Block) ([]byte, error) {
	s.mu.Lock()
	s.calls = append(s.calls, b.ID)
	data, ok := s.blocks[b.ID]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("block %x: %w", b.ID, flist.ErrNotFound)
	}
	return flist.DecodeBlock(b, data)
}

// callIndexes returns the indexes in blocks of the blocks asked for so far, in order.
func (s *store) callIndexes(blocks []flist.Block) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, id := range s.calls {
		i := slices.IndexFunc(blocks, func(b flist.Block) bool { return b.ID == id })
		out = append(out, i)
	}
	return out
}

// getterFunc adapts a function to mount.BlockGetter.
type getterFunc func(ctx context.Context, b flist.Block) ([]byte, error)

func (f getterFunc) GetBlock(ctx context.Context, b flist.Block) ([]byte, error) { return f(ctx, b) }

// pack packs dir into an flist in a temporary directory, with its blocks in a new store.
func pack(t *testing.T, dir string) (string, *store) {
	t.Helper()
	s := newStore()
	out := filepath.Join(t.TempDir(), "tree.fl")
	if _, err := flist.PackDir(t.Context(), dir, out, flist.PackConfig{Sink: s}); err != nil {
		t.Fatal(err)
	}
	return out, s
}

func openFlist(t *testing.T, path string) flist.Flist {
	t.Helper()
	f, err := flist.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// running is a mount started by startMount.
type running struct {
	*mount.Mount
	stop   func() error    // cancels Run's context and returns Run's result
	exited <-chan struct{} // closed when Run has returned
}

// startMount runs a mount of cfg (Mountpoint defaults to a new temporary directory)
// until the test ends, and returns it once ready.
func startMount(t *testing.T, cfg mount.Config) *running {
	t.Helper()
	testkit.NeedFUSE(t)
	if cfg.Mountpoint == "" {
		cfg.Mountpoint = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testkit.Logger(t)
	}
	m, err := mount.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	exited := make(chan struct{})
	var result error
	go func() {
		result = m.Run(ctx)
		close(exited)
	}()
	stop := func() error {
		cancel()
		select {
		case <-exited:
			return result
		case <-time.After(30 * time.Second):
			return errors.New("Run did not return within 30s of cancel")
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil && !errors.Is(err, mount.ErrUnmountedExternally) {
			t.Errorf("Run: %v", err)
		}
		// Safety net: never leave the test's mount behind, whatever happened.
		if ok, _ := mount.IsMountpoint(cfg.Mountpoint); ok {
			_ = unix.Unmount(cfg.Mountpoint, unix.MNT_DETACH)
		}
	})
	select {
	case <-m.Ready():
	case <-exited:
		t.Fatalf("Run failed before the mount was ready: %v", result)
	case <-time.After(30 * time.Second):
		t.Fatal("mount not ready within 30s")
	}
	return &running{m, stop, exited}
}

func quote(s string) string {
	if strings.ContainsAny(s, "\t\n\\") {
		return strconv.Quote(s)
	}
	return s
}

// TestTree: a packed tree with every entry type, mounted, looks exactly like its
// source: the manifest computed from lstat and content (every attribute, symlink
// targets, first blocks), every file's bytes, find's view of each entry, the flist's
// inode numbers, st_blocks, statfs. Writing is refused with EROFS.
func TestTree(t *testing.T) {
	testkit.NeedFUSE(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 7, flisttest.DefaultTreeOptions())
	path, s := pack(t, src)
	fl := openFlist(t, path)
	m := startMount(t, mount.Config{Flist: fl, Blocks: s})
	mp := m.Mountpoint()

	if got, want := flisttest.DiskManifest(t, mp), flisttest.DiskManifest(t, src); got != want {
		t.Fatalf("manifest of the mount differs from the source:\ngot:\n%s\nwant:\n%s", got, want)
	}

	entries := 0
	var totalBytes uint64
	err := flist.Walk(t.Context(), fl, func(p string, e flist.Entry) error {
		entries++
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mp, p), &st); err != nil {
			return err
		}
		if st.Ino != e.Ino {
			t.Errorf("%s: st_ino %d, flist inode %d", p, st.Ino, e.Ino)
		}
		if want := (st.Size + 511) / 512; st.Blocks != want {
			t.Errorf("%s: st_blocks %d for size %d, want %d", p, st.Blocks, st.Size, want)
		}
		if st.Atim.Sec != e.Mtime || st.Ctim.Sec != e.Mtime || st.Mtim.Sec != e.Mtime {
			t.Errorf("%s: times %v %v %v, want all %d", p, st.Atim, st.Mtim, st.Ctim, e.Mtime)
		}
		if e.Type != flist.TypeFile {
			return nil
		}
		totalBytes += e.Size
		got, err := os.ReadFile(filepath.Join(mp, p))
		if err != nil {
			return err
		}
		want, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs (%d bytes, want %d)", p, len(got), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// find's view: type, mode, owner, size, mtime, link count, target. Directory sizes
	// differ (the source's are the disk's; the mount's are 0), and so does the link count
	// of hard-linked files (an flist has no hard links: every file has one link).
	// Directories have 2 + their subdirectories on both sides.
	srcFind := testkit.FindAttrs(t, src)
	for p, e := range srcFind {
		if e.Type == "d" {
			e.Size = "0"
		} else {
			e.Nlink = "1"
		}
		srcFind[p] = e
	}
	testkit.CompareFind(t, testkit.FindAttrs(t, mp), srcFind)

	// statfs: the totals come from a background walk; wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sfs unix.Statfs_t
		if err := unix.Statfs(mp, &sfs); err != nil {
			t.Fatal(err)
		}
		if sfs.Files != 0 {
			if sfs.Files != uint64(entries) || sfs.Blocks*uint64(sfs.Bsize) < totalBytes || sfs.Bfree != 0 {
				t.Errorf("statfs: files %d blocks %d×%d free %d; want files %d, %d bytes, none free",
					sfs.Files, sfs.Blocks, sfs.Bsize, sfs.Bfree, entries, totalBytes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("statfs still reports no files after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Read-only.
	if err := os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("creating a file: %v, want EROFS", err)
	}
	if _, err := os.OpenFile(filepath.Join(mp, "one-byte"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("opening for writing: %v, want EROFS", err)
	}
	if err := os.Chmod(filepath.Join(mp, "one-byte"), 0o777); !errors.Is(err, syscall.EROFS) {
		t.Errorf("chmod: %v, want EROFS", err)
	}
}

// bigTree makes a directory holding "big", a file of size bytes of random content, and
// returns the directory and the content.
func bigTree(t *testing.T, size int) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	rng.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, data
}

// fileBlocks returns the blocks of the file at p in fl.
func fileBlocks(t *testing.T, fl flist.Flist, p string) []flist.Block {
	t.Helper()
	e, err := flist.LookupPath(t.Context(), fl, p)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := fl.Blocks(t.Context(), e.Ino)
	if err != nil {
		t.Fatal(err)
	}
	return blocks
}

// bigMount is a mount of a tree holding one file, "big", of random bytes, read from the
// flist's own store (which records the blocks asked for), with "big" open.
type bigMount struct {
	*running
	f      *os.File
	data   []byte
	blocks []flist.Block
	s      *store
}

// mountBig mounts a tree whose file "big" has size random bytes and opens it.
func mountBig(t *testing.T, size int) bigMount {
	t.Helper()
	testkit.NeedFUSE(t)
	dir, data := bigTree(t, size)
	path, s := pack(t, dir)
	fl := openFlist(t, path)
	b := bigMount{data: data, blocks: fileBlocks(t, fl, "big"), s: s}
	b.running = startMount(t, mount.Config{Flist: fl, Blocks: s})
	f, err := os.Open(filepath.Join(b.Mountpoint(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b.f = f
	return b
}

// TestReadOneByte: one byte in the middle of a multi-block file costs exactly the block
// that holds it.
func TestReadOneByte(t *testing.T) {
	big := mountBig(t, 6*flist.BlockSize+777)
	off := int64(3*flist.BlockSize + flist.BlockSize/2)
	b := make([]byte, 1)
	if _, err := big.f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if b[0] != big.data[off] {
		t.Errorf("byte at %d is %#x, want %#x", off, b[0], big.data[off])
	}
	if got := big.s.callIndexes(big.blocks); !slices.Equal(got, []int{3}) {
		t.Errorf("blocks fetched: %v, want [3]", got)
	}
}

// TestRandomReads: scattered reads fetch the blocks they touch and nothing more.
func TestRandomReads(t *testing.T) {
	big := mountBig(t, 40*flist.BlockSize+12345)
	f, data := big.f, big.data
	// No kernel read-ahead either: only what is asked for.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	want := []int{5, 17, 2, 30, 11, 25, 38, 8}
	for _, i := range want {
		off := int64(i)*flist.BlockSize + 100000
		b := make([]byte, 3000)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, data[off:off+3000]) {
			t.Errorf("block %d: wrong bytes", i)
		}
	}
	got := big.s.callIndexes(big.blocks)
	if !slices.Equal(got, want) {
		t.Errorf("blocks fetched: %v, want %v", got, want)
	}
}

// TestSequentialPrefetch: a sequential reader gets blocks fetched ahead of it, in
// parallel, each block once, and the right bytes; the last block is short.
func TestSequentialPrefetch(t *testing.T) {
	big := mountBig(t, 40*flist.BlockSize+4321) // 20 MiB and a bit
	f, data, blocks, s := big.f, big.data, big.blocks, big.s
	var got bytes.Buffer
	buf := make([]byte, 128<<10)
	// Read the first 1.5 MiB (blocks 0-2).
	for got.Len() < 3*flist.BlockSize {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(buf[:n])
	}
	// Nothing but read-ahead asks for blocks far past the reader (the kernel's own
	// read-ahead is 128 KiB at most): wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		idx := s.callIndexes(blocks)
		if slices.Max(idx) >= 3+mount.DefaultPrefetch-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no read-ahead after reading 3 blocks: fetched %v", idx)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := io.Copy(&got, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read %d bytes that differ from the source (%d bytes)", got.Len(), len(data))
	}
	idx := s.callIndexes(blocks)
	sorted := slices.Sorted(slices.Values(idx))
	want := make([]int, len(blocks))
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(sorted, want) {
		t.Errorf("blocks fetched (sorted) %v, want each of the %d blocks once", sorted, len(blocks))
	}
}

// TestPrefetchCancelledOnEviction: read-ahead runs on the file's reader, not on the
// request, and ends when the reader is evicted: the kernel never says a file was closed
// (no OPEN/RELEASE), so reading more than MaxIdleReaders other files evicts it.
func TestPrefetchCancelledOnEviction(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 20*flist.BlockSize)
	for i := range mount.MaxIdleReaders + 1 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("small%02d", i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path, s := pack(t, dir)
	fl := openFlist(t, path)
	blocks := fileBlocks(t, fl, "big")
	type ended struct {
		idx int
		err error
	}
	endedCh := make(chan ended, 100)
	getter := getterFunc(func(ctx context.Context, b flist.Block) ([]byte, error) {
		idx := slices.IndexFunc(blocks, func(x flist.Block) bool { return x.ID == b.ID })
		if idx < 2 {
			return s.GetBlock(ctx, b)
		}
		<-ctx.Done() // blocks 2 and on never come
		endedCh <- ended{idx, ctx.Err()}
		return nil, ctx.Err()
	})
	m := startMount(t, mount.Config{Flist: fl, Blocks: getter, ReadTimeout: time.Minute})

	f, err := os.Open(filepath.Join(m.Mountpoint(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	for range 4 { // block 0, sequentially; the kernel's read-ahead stays in block 1
		if _, err := io.ReadFull(f, buf); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	time.Sleep(200 * time.Millisecond) // let read-ahead start
	select {
	case e := <-endedCh:
		t.Fatalf("read-ahead of block %d ended (%v) before the reader was evicted", e.idx, e.err)
	default:
	}
	for i := range mount.MaxIdleReaders + 1 {
		if _, err := os.ReadFile(filepath.Join(m.Mountpoint(), fmt.Sprintf("small%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case e := <-endedCh:
		if !errors.Is(e.err, context.Canceled) {
			t.Errorf("read-ahead of block %d ended with %v, want context.Canceled", e.idx, e.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read-ahead still running 10s after the reader should have been evicted")
	}
}

// TestReadTimeout: a getter that never delivers makes a read fail with EIO once
// ReadTimeout has passed, whether it honours its context or ignores it.
func TestReadTimeout(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 3*flist.BlockSize)
	path, _ := pack(t, dir)
	fl := openFlist(t, path)
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name   string
		getter mount.BlockGetter
	}{
		{"honours ctx", getterFunc(func(ctx context.Context, b flist.Block) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})},
		{"ignores ctx", getterFunc(func(ctx context.Context, b flist.Block) ([]byte, error) {
			<-never
			return nil, errors.New("too late")
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMount(t, mount.Config{Flist: fl, Blocks: tc.getter, ReadTimeout: timeout})
			start := time.Now()
			_, err := os.ReadFile(filepath.Join(m.Mountpoint(), "big"))
			elapsed := time.Since(start)
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("read: %v, want EIO", err)
			}
			if elapsed < timeout-100*time.Millisecond || elapsed > timeout+3*time.Second {
				t.Errorf("read failed after %v, want about %v", elapsed, timeout)
			}
		})
	}
}

// TestBadBlocks: a getter error, and blocks of the wrong length, are EIO, never garbage.
func TestBadBlocks(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 2*flist.BlockSize+100)
	path, s := pack(t, dir)
	fl := openFlist(t, path)
	for _, tc := range []struct {
		name string
		fix  func([]byte) ([]byte, error)
	}{
		{"error", func([]byte) ([]byte, error) { return nil, errors.New("no such block anywhere") }},
		{"short", func(b []byte) ([]byte, error) { return b[:len(b)-1], nil }},
		{"long", func(b []byte) ([]byte, error) { return append(b, 0), nil }},
		{"empty", func(b []byte) ([]byte, error) { return []byte{}, nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getter := getterFunc(func(ctx context.Context, b flist.Block) ([]byte, error) {
				data, err := s.GetBlock(ctx, b)
				if err != nil {
					return nil, err
				}
				return tc.fix(data)
			})
			m := startMount(t, mount.Config{Flist: fl, Blocks: getter, ReadTimeout: 10 * time.Second})
			for _, off := range []int64{0, 2*flist.BlockSize + 50} { // a full block, the short last one
				f, err := os.Open(filepath.Join(m.Mountpoint(), "big"))
				if err != nil {
					t.Fatal(err)
				}
				_, err = f.ReadAt(make([]byte, 10), off)
				f.Close()
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("read at %d: %v, want EIO", off, err)
				}
			}
		})
	}
}

// corruptFlist wraps an flist and reports some of its content as corrupt.
type corruptFlist struct {
	flist.Flist
	readDir func(ino uint64) ([]flist.Entry, error) // nil result: the real one
	blocks  func(ino uint64) ([]flist.Block, error)
}

func (c *corruptFlist) ReadDir(ctx context.Context, ino uint64) ([]flist.Entry, error) {
	if c.readDir != nil {
		if e, err := c.readDir(ino); e != nil || err != nil {
			return e, err
		}
	}
	return c.Flist.ReadDir(ctx, ino)
}

func (c *corruptFlist) Blocks(ctx context.Context, ino uint64) ([]flist.Block, error) {
	if c.blocks != nil {
		if b, err := c.blocks(ino); b != nil || err != nil {
			return b, err
		}
	}
	return c.Flist.Blocks(ctx, ino)
}

// TestCorruptFlist: bad content met in the flist (reader errors, names or inode numbers
// no tree can have, too few blocks) is EIO for that operation; the rest of the mount
// works.
func TestCorruptFlist(t *testing.T) {
	testkit.NeedFUSE(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 3, flisttest.TreeOptions{})
	path, s := pack(t, src)
	fl := openFlist(t, path)
	lookup := func(p string) flist.Entry {
		e, err := flist.LookupPath(t.Context(), fl, p)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	sub, deeper, emptydir, sticky := lookup("sub"), lookup("sub/deeper"), lookup("emptydir"), lookup("sticky")
	multi, small := lookup("sub/multi"), lookup("sub/deeper/small")
	bad := &corruptFlist{
		Flist: fl,
		readDir: func(ino uint64) ([]flist.Entry, error) {
			switch ino {
			case deeper.Ino:
				return nil, fmt.Errorf("%w: broken directory", flist.ErrCorrupt)
			case emptydir.Ino:
				return []flist.Entry{{Ino: 999, Parent: ino, Name: "../escape", Type: flist.TypeFile, Mode: flist.ModeFile | 0o644}}, nil
			case sticky.Ino:
				return []flist.Entry{{Ino: flist.RootIno, Parent: ino, Name: "loop", Type: flist.TypeDir, Mode: flist.ModeDir | 0o755}}, nil
			}
			return nil, nil
		},
		blocks: func(ino uint64) ([]flist.Block, error) {
			switch ino {
			case multi.Ino:
				return nil, fmt.Errorf("%w: broken block list", flist.ErrCorrupt)
			case small.Ino:
				return []flist.Block{}, nil // 4000 bytes without a block
			}
			return nil, nil
		},
	}
	m := startMount(t, mount.Config{Flist: bad, Blocks: s})
	mp := m.Mountpoint()
	for _, d := range []string{"sub/deeper", "emptydir", "sticky"} {
		if _, err := os.ReadDir(filepath.Join(mp, d)); !errors.Is(err, syscall.EIO) {
			t.Errorf("listing %s: %v, want EIO", d, err)
		}
	}
	if _, err := os.ReadFile(filepath.Join(mp, "sub/multi")); !errors.Is(err, syscall.EIO) {
		t.Errorf("reading sub/multi: %v, want EIO", err)
	}
	if _, err := os.Lstat(filepath.Join(mp, "sub/deeper/small")); !errors.Is(err, syscall.EIO) {
		t.Errorf("lstat in a broken directory: %v, want EIO", err)
	}
	// The rest works.
	if _, err := os.ReadDir(filepath.Join(mp, "sub")); err != nil {
		t.Errorf("listing sub: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(mp, "block-plus-one"))
	want, _ := os.ReadFile(filepath.Join(src, "block-plus-one"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("reading block-plus-one: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(mp, "sub")); err != nil || fi.Sys().(*syscall.Stat_t).Ino != sub.Ino {
		t.Errorf("stat sub: %v", err)
	}
}

// TestCorruptBlockCount: a file with fewer blocks than its size needs cannot be read.
func TestCorruptBlockCount(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 3*flist.BlockSize)
	path, s := pack(t, dir)
	fl := openFlist(t, path)
	big, err := flist.LookupPath(t.Context(), fl, "big")
	if err != nil {
		t.Fatal(err)
	}
	blocks := fileBlocks(t, fl, "big")
	bad := &corruptFlist{Flist: fl, blocks: func(ino uint64) ([]flist.Block, error) {
		if ino == big.Ino {
			return blocks[:2], nil
		}
		return nil, nil
	}}
	m := startMount(t, mount.Config{Flist: bad, Blocks: s})
	if _, err := os.ReadFile(filepath.Join(m.Mountpoint(), "big")); !errors.Is(err, syscall.EIO) {
		t.Errorf("reading a file short of blocks: %v, want EIO", err)
	}
}

// TestFixtures: the real upstream flists, mounted metadata-only, list exactly as their
// golden manifests say (every column but the two about blocks, which lstat cannot see).
func TestFixtures(t *testing.T) {
	testkit.NeedFUSE(t)
	noBlocks := getterFunc(func(ctx context.Context, b flist.Block) ([]byte, error) {
		return nil, fmt.Errorf("metadata-only: %w", flist.ErrNotFound)
	})
	for _, name := range fixtures.Flists {
		t.Run(name, func(t *testing.T) {
			path, manifest := fixtures.Flist(t, name)
			fl := openFlist(t, path)
			m := startMount(t, mount.Config{Flist: fl, Blocks: noBlocks})
			golden, err := os.ReadFile(manifest)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, line := range strings.SplitAfter(string(golden), "\n") {
				if line == "" {
					continue
				}
				f := strings.Split(line, "\t")
				if len(f) != 10 {
					t.Fatalf("golden line with %d columns: %q", len(f), line)
				}
				want = append(want, strings.Join(append(f[:7:7], f[9]), "\t"))
			}
			got := lstatManifest(t, m.Mountpoint())
			fixtures.CompareLines(t, got, want)
		})
	}
}

// lstatManifest lists dir as the manifest columns lstat can see: type, path, mode, uid,
// gid, size, mtime, target or device; sorted by path.
func lstatManifest(t *testing.T, dir string) []string {
	t.Helper()
	type line struct{ p, text string }
	var lines []line
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		typ := flist.TypeOfMode(st.Mode)
		last := "-"
		switch typ {
		case flist.TypeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			last = quote(target)
		case flist.TypeBlockDev, flist.TypeCharDev:
			last = fmt.Sprintf("%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		lines = append(lines, line{rel, fmt.Sprintf("%c\t%s\t%04o\t%d\t%d\t%d\t%d\t%s\n",
			typ.Letter(), quote(rel), st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Mtim.Sec, last)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].p < lines[j].p })
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.text
	}
	return out
}

func hashFile(t *testing.T, p string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// TestOverlay: a writable mount takes writes into its upper directory; the flist file
// and the FUSE filesystem under the overlay do not change. On exit both mounts go, the
// upper directory stays and the overlay's work directory is removed.
func TestOverlay(t *testing.T) {
	testkit.NeedFUSE(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 5, flisttest.TreeOptions{})
	path, s := pack(t, src)
	before := hashFile(t, path)
	fl := openFlist(t, path)
	upper := filepath.Join(t.TempDir(), "upper")
	work := t.TempDir()
	m := startMount(t, mount.Config{Flist: fl, Blocks: s, Writable: true, UpperDir: upper, WorkDir: work})
	mp, lower := m.Mountpoint(), m.LowerDir()
	if lower == mp || lower == "" {
		t.Fatalf("lower directory %q", lower)
	}
	orig, _ := os.ReadFile(filepath.Join(src, "sub/multi"))

	if err := os.WriteFile(filepath.Join(mp, "brand-new"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(mp, "sub/multi"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("appended"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Remove(filepath.Join(mp, "one-byte")); err != nil {
		t.Fatal(err)
	}

	if got, _ := os.ReadFile(filepath.Join(upper, "brand-new")); string(got) != "hello" {
		t.Errorf("upper/brand-new = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(upper, "sub/multi")); !bytes.Equal(got, append(slices.Clone(orig), "appended"...)) {
		t.Errorf("upper/sub/multi has %d bytes, want the original %d + 8", len(got), len(orig))
	}
	if got, _ := os.ReadFile(filepath.Join(mp, "sub/multi")); !bytes.Equal(got, append(slices.Clone(orig), "appended"...)) {
		t.Errorf("mount shows %d bytes for sub/multi", len(got))
	}
	if _, err := os.Lstat(filepath.Join(mp, "one-byte")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed file still there: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(lower, "sub/multi")); !bytes.Equal(got, orig) {
		t.Errorf("the lower filesystem changed: sub/multi has %d bytes, want %d", len(got), len(orig))
	}
	if _, err := os.Lstat(filepath.Join(lower, "one-byte")); err != nil {
		t.Errorf("the lower filesystem lost one-byte: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(lower, "brand-new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lower filesystem got brand-new: %v", err)
	}

	if err := m.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if after := hashFile(t, path); after != before {
		t.Error("the flist file changed")
	}
	for _, p := range []string{mp, lower} {
		if ok, err := mount.IsMountpoint(p); err != nil || ok {
			t.Errorf("%s still mounted after Run returned (%v)", p, err)
		}
	}
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("work dir not cleaned: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(upper), ".upper.zosfs-work")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("overlay work directory left: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(upper, "brand-new")); string(got) != "hello" {
		t.Errorf("upper directory lost its content: %q", got)
	}
}

// TestOverlayTemporaryUpper: without UpperDir, changes go to a temporary directory
// that is gone once Run returns.
func TestOverlayTemporaryUpper(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, data := bigTree(t, flist.BlockSize+3)
	path, s := pack(t, dir)
	fl := openFlist(t, path)
	work := t.TempDir()
	m := startMount(t, mount.Config{Flist: fl, Blocks: s, Writable: true, WorkDir: work})
	mp := m.Mountpoint()
	if got, err := os.ReadFile(filepath.Join(mp, "big")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading through the overlay: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "big"), []byte("replaced"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(mp, "newdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("temporary directories left in the work dir: %v", entries)
	}
	if ok, _ := mount.IsMountpoint(mp); ok {
		t.Error("still mounted")
	}
}

// TestUnmountLive: ClearStale leaves a live mount alone (ErrForeign); an umount from
// outside, of the FUSE mount or of a writable mount's overlay, makes Run return
// ErrUnmountedExternally (and Run then removes the FUSE mount under the overlay).
// ClearStale of a path where nothing is mounted is not an error.
func TestUnmountLive(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 10)
	path, s := pack(t, dir)
	fl := openFlist(t, path)
	waitExit := func(m *running) {
		t.Helper()
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not notice the unmount within 10s")
		}
		if err := m.stop(); !errors.Is(err, mount.ErrUnmountedExternally) {
			t.Errorf("Run returned %v, want ErrUnmountedExternally", err)
		}
	}

	m := startMount(t, mount.Config{Flist: fl, Blocks: s})
	if ok, err := mount.IsMountpoint(m.Mountpoint()); err != nil || !ok {
		t.Fatalf("IsMountpoint of a live mount: %v, %v", ok, err)
	}
	if err := mount.ClearStale(m.Mountpoint()); !errors.Is(err, mount.ErrForeign) {
		t.Errorf("ClearStale of a live mount: %v, want ErrForeign", err)
	}
	if _, err := os.Stat(filepath.Join(m.Mountpoint(), "big")); err != nil {
		t.Fatalf("the live mount after ClearStale: %v", err)
	}
	if err := unix.Unmount(m.Mountpoint(), 0); err != nil {
		t.Fatal(err)
	}
	waitExit(m)
	if err := mount.ClearStale(m.Mountpoint()); err != nil {
		t.Errorf("ClearStale of a path not mounted: %v", err)
	}
	if err := mount.ClearStale(filepath.Join(t.TempDir(), "does-not-exist")); err != nil {
		t.Errorf("ClearStale of a missing path: %v", err)
	}

	work := t.TempDir()
	w := startMount(t, mount.Config{Flist: fl, Blocks: s, Writable: true, WorkDir: work})
	lower := w.LowerDir()
	if err := unix.Unmount(w.Mountpoint(), 0); err != nil {
		t.Fatal(err)
	}
	waitExit(w)
	if ok, _ := mount.IsMountpoint(lower); ok {
		t.Error("the FUSE mount under the overlay is still there")
	}
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("private directories left: %v", entries)
	}
}

// staleMount mounts the flist at path in a helper process and kills it, leaving a dead
// mount at mp (under an overlay if writable). before runs while the mount is live.
func staleMount(t *testing.T, path, mp, work string, writable bool, before func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ZOSFS_MOUNT_HELPER=mount",
		"HELPER_FLIST="+path, "HELPER_MOUNTPOINT="+mp, "HELPER_WORKDIR="+work,
		fmt.Sprintf("HELPER_WRITABLE=%v", writable))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		// Whatever the test left at mp, it mounted itself: the helper's mount and the
		// tmpfs of the foreign-mount cases.
		for range 4 {
			if ok, _ := mount.IsMountpoint(mp); !ok {
				break
			}
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	if _, err := os.Stat(filepath.Join(mp, "big")); err != nil {
		t.Fatalf("helper's mount: %v", err)
	}
	if before != nil {
		before()
	}
	cmd.Process.Kill() // by pid: the helper is this test's own process
	cmd.Wait()
}

// TestClearStale: a mount whose process was killed (its FUSE connection dead) is
// removed by ClearStale; for a writable one the FUSE mount under the overlay and the
// private directories go too.
func TestClearStale(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 10)
	path, _ := pack(t, dir)
	for _, writable := range []bool{false, true} {
		t.Run(fmt.Sprintf("writable=%v", writable), func(t *testing.T) {
			mp, work := t.TempDir(), t.TempDir()
			staleMount(t, path, mp, work, writable, nil)

			// A name never looked up: the kernel has to ask the (dead) server.
			if _, err := os.Stat(filepath.Join(mp, "never-looked-up")); !errors.Is(err, syscall.ENOTCONN) {
				t.Errorf("stat in a dead mount: %v, want ENOTCONN", err)
			}
			if ok, err := mount.IsMountpoint(mp); err != nil || !ok {
				t.Fatalf("IsMountpoint of a stale mount: %v, %v", ok, err)
			}
			if err := mount.ClearStale(mp); err != nil {
				t.Fatalf("ClearStale of a stale mount: %v", err)
			}
			if ok, err := mount.IsMountpoint(mp); err != nil || ok {
				t.Errorf("IsMountpoint after ClearStale: %v, %v", ok, err)
			}
			if entries, err := os.ReadDir(mp); err != nil || len(entries) != 0 {
				t.Errorf("mountpoint after ClearStale: %v, %v", entries, err)
			}
			if entries, _ := os.ReadDir(work); len(entries) != 0 {
				t.Errorf("private directories left: %v", entries)
			}
			if err := mount.ClearStale(mp); err != nil {
				t.Errorf("second ClearStale: %v", err)
			}
		})
	}
}

// TestClearStaleLeavesForeignMounts: ClearStale never removes a filesystem it did not
// leave: a tmpfs an admin mounted over the stale mount's path (after umount -l), or one
// mounted below the zosfs mount while it was live. Both keep their data.
func TestClearStaleLeavesForeignMounts(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 10)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	path, _ := pack(t, dir)

	t.Run("over", func(t *testing.T) {
		mp := t.TempDir()
		staleMount(t, path, mp, t.TempDir(), false, nil)
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil { // the admin's umount -l
			t.Fatal(err)
		}
		if err := unix.Mount("precious", mp, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mp, "f"), []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := mount.ClearStale(mp); !errors.Is(err, mount.ErrForeign) {
			t.Errorf("ClearStale over a tmpfs: %v, want ErrForeign", err)
		}
		if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(got) != "precious" {
			t.Errorf("the tmpfs after ClearStale: %q, %v", got, err)
		}
	})

	t.Run("under", func(t *testing.T) {
		mp := t.TempDir()
		sub := filepath.Join(mp, "sub")
		var held *os.File // a handle into the tmpfs, to read it whatever happens to mp
		staleMount(t, path, mp, t.TempDir(), false, func() {
			if err := unix.Mount("precious", sub, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
			if err := os.WriteFile(filepath.Join(sub, "f"), []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			var err error
			if held, err = os.Open(sub); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { held.Close() })
		})
		if err := mount.ClearStale(mp); !errors.Is(err, mount.ErrForeign) {
			t.Errorf("ClearStale of a stale mount with a tmpfs under it: %v, want ErrForeign", err)
		}
		if ok, err := mount.IsMountpoint(sub); err != nil || !ok {
			t.Errorf("the tmpfs under the stale mount is no longer mounted: %v, %v", ok, err)
		}
		got := make([]byte, 16)
		f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(held.Fd()))+"/f", os.O_RDONLY, 0)
		if err == nil {
			n, _ := f.Read(got)
			got = got[:n]
			f.Close()
		}
		if err != nil || string(got) != "precious" {
			t.Errorf("the tmpfs's file: %q, %v", got, err)
		}
	})
}

// TestInterrupt: when the reader is killed while its read waits on a block, the kernel
// interrupts the request and the cancellation reaches the BlockGetter (the read itself
// would fail with EINTR; a killed process cannot tell).
func TestInterrupt(t *testing.T) {
	testkit.NeedFUSE(t)
	dir, _ := bigTree(t, 4*flist.BlockSize)
	path, _ := pack(t, dir)
	fl := openFlist(t, path)
	entered := make(chan struct{}, 10)
	ended := make(chan error, 10)
	getter := getterFunc(func(ctx context.Context, b flist.Block) ([]byte, error) {
		entered <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	})
	m := startMount(t, mount.Config{Flist: fl, Blocks: getter, ReadTimeout: time.Minute})
	// O_DIRECT reads are synchronous FUSE requests, which the kernel interrupts.
	cmd := exec.Command("dd", "if="+filepath.Join(m.Mountpoint(), "big"), "of=/dev/null",
		"iflag=direct", "bs=4096", "count=1", "skip=200")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("dd's read never reached the getter")
	}
	cmd.Process.Kill()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("getter's context ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the getter's context was not cancelled 10s after the reader was killed")
	}
}

// TestErrno: the one errno mapping.
func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", flist.ErrNotFound), syscall.ENOENT},
		{fmt.Errorf("x: %w", flist.ErrNotDir), syscall.ENOTDIR},
		{fmt.Errorf("x: %w", context.Canceled), syscall.EINTR},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), syscall.EIO},
		{fmt.Errorf("x: %w", flist.ErrCorrupt), syscall.EIO},
		{fmt.Errorf("x: %w", flist.ErrBlockCorrupt), syscall.EIO},
		{errors.New("anything"), syscall.EIO},
	} {
		if got := mount.ToErrno(tc.err); got != tc.want {
			t.Errorf("ToErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestConfig: New refuses incomplete or unusable configurations and starts nothing.
func TestConfig(t *testing.T) {
	s := newStore()
	var fl flist.Flist = &corruptFlist{}
	for _, cfg := range []mount.Config{
		{Blocks: s, Mountpoint: "/x"},
		{Flist: fl, Mountpoint: "/x"},
		{Flist: fl, Blocks: s},
		{Flist: fl, Blocks: s, Mountpoint: "/x", Writable: true, UpperDir: "/a,b"},
		{Flist: fl, Blocks: s, Mountpoint: "/x:y", Writable: true},
		{Flist: fl, Blocks: s, Mountpoint: "/x", Name: "a,b"},
	} {
		if _, err := mount.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	m, err := mount.New(mount.Config{Flist: fl, Blocks: s, Mountpoint: "rel"})
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(m.Mountpoint()) {
		t.Errorf("mountpoint %q not made absolute", m.Mountpoint())
	}
}

// runHelper is the helper process: it mounts HELPER_FLIST at HELPER_MOUNTPOINT
// (metadata only), says "ready" and serves until it is killed.
func runHelper() int {
	ctx := context.Background()
	fl, err := flist.Open(ctx, os.Getenv("HELPER_FLIST"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	m, err := mount.New(mount.Config{
		Flist:      fl,
		Blocks:     getterFunc(func(context.Context, flist.Block) ([]byte, error) { return nil, flist.ErrNotFound }),
		Mountpoint: os.Getenv("HELPER_MOUNTPOINT"),
		Writable:   os.Getenv("HELPER_WRITABLE") == "true",
		WorkDir:    os.Getenv("HELPER_WORKDIR"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
		fmt.Println("ready")
	case err := <-done:
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	select {} // until killed
}

// TestStopWithOpenFile: Run returns, within a bounded time, even while a file is open on
// the mount (the unmount is then lazy), and the mount is gone from the mount table.
func TestStopWithOpenFile(t *testing.T) {
	m := mountBig(t, 2*flist.BlockSize)
	b := make([]byte, 10)
	if _, err := m.f.ReadAt(b, 0); err != nil || !bytes.Equal(b, m.data[:10]) {
		t.Fatalf("read: %v", err)
	}
	start := time.Now()
	if err := m.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Run took %v to return with a file open", d)
	}
	if ok, _ := mount.IsMountpoint(m.Mountpoint()); ok {
		t.Error("still in the mount table")
	}
}
