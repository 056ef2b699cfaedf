package flist_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/fixtures"
)

// hostileCopy copies a fixture flist and applies SQL to the copy.
func hostileCopy(t *testing.T, fixture string, stmts ...string) string {
	t.Helper()
	src, _ := fixtures.Flist(t, fixture)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "hostile.fl")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	execSQLite(t, p, stmts...)
	return p
}

// TestOpenV2Hostile: damaged or hostile .fl files give a clear error, at open or at the
// latest when the manifest walks them — never a panic or a hang.
func TestOpenV2Hostile(t *testing.T) {
	const fix = "hello-world-latest.fl"
	ins := "INSERT INTO inode (ino, parent, name, size, uid, gid, mode, rdev, ctime, mtime) VALUES "
	for _, tc := range []struct {
		name  string
		stmts []string
		want  error
	}{
		{"parent-link cycle", []string{ins + "(100, 101, 'a', 0, 0, 0, 16877, 0, 0, 0)", ins + "(101, 100, 'b', 0, 0, 0, 16877, 0, 0, 0)"}, flist.ErrCorrupt},
		{"self parent", []string{"UPDATE inode SET parent = ino WHERE name = 'etc'"}, flist.ErrCorrupt},
		{"root with a parent", []string{"UPDATE inode SET parent = 5 WHERE ino = 1"}, flist.ErrCorrupt},
		{"root missing", []string{"DELETE FROM inode WHERE ino = 1"}, flist.ErrNotFound},
		{"child of a file", []string{ins + "(100, 3, 'x', 0, 0, 0, 33188, 0, 0, 0)"}, flist.ErrCorrupt},
		{"name with slash", []string{"UPDATE inode SET name = 'a/b' WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"name dotdot", []string{"UPDATE inode SET name = '..' WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"name dot", []string{"UPDATE inode SET name = '.' WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"name with NUL", []string{"UPDATE inode SET name = 'a' || char(0) || 'b' WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"empty name", []string{"UPDATE inode SET name = '' WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"null name", []string{"UPDATE inode SET name = NULL WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"absurd size", []string{"UPDATE inode SET size = 1000000000000000000 WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"negative size", []string{"UPDATE inode SET size = -5 WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"size without blocks", []string{"DELETE FROM block"}, flist.ErrCorrupt},
		{"bad mode", []string{"UPDATE inode SET mode = 0 WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"text in a number", []string{"UPDATE inode SET uid = 'root' WHERE name = 'hello'"}, flist.ErrCorrupt},
		{"symlink without target", []string{"DELETE FROM extra"}, flist.ErrCorrupt},
		{"duplicate names", []string{ins + "(100, 1, 'hello', 0, 0, 0, 33188, 0, 0, 0)"}, flist.ErrCorrupt},
		{"short block id", []string{"UPDATE block SET id = x'00112233'"}, flist.ErrCorrupt},
		{"bad route", []string{"INSERT INTO route VALUES (5, 300, 'dir:///x')"}, flist.ErrCorrupt},
		{"missing table", []string{"DROP TABLE block"}, flist.ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := hostileCopy(t, fix, tc.stmts...)
			err := openAndWalk(t, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
		// Without the rfs indexes, V2 navigates by what it gathered at open: the same
		// damage must give the same error.
		t.Run(tc.name+" unindexed", func(t *testing.T) {
			p := hostileCopy(t, fix, append(tc.stmts, "DROP INDEX IF EXISTS parents", "DROP INDEX IF EXISTS names", "DROP INDEX IF EXISTS block_ino")...)
			err := openAndWalk(t, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// openAndWalk opens an flist and reads all of it the way a mount and the CLI do.
func openAndWalk(t testing.TB, p string) error {
	f, err := flist.Open(t.Context(), p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Routes(t.Context()); err != nil {
		return err
	}
	if _, err := f.Tags(t.Context()); err != nil {
		return err
	}
	return flist.Walk(t.Context(), f, func(_ string, e flist.Entry) error {
		if e.Type == flist.TypeFile {
			_, err := f.Blocks(t.Context(), e.Ino)
			return err
		}
		return nil
	})
}

func TestOpenNotAnFlist(t *testing.T) {
	redis, _ := fixtures.Flist(t, "redis-latest.fl")
	whole, err := os.ReadFile(redis)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"text", []byte("hello, I am not an flist\n")},
		{"sqlite header only", whole[:100]},
		{"truncated sqlite", whole[:len(whole)/2]},
		{"truncated gzip", []byte{0x1f, 0x8b, 8, 0}},
		{"random", bytes.Repeat([]byte{0x5a, 0xa5, 0x00, 0xff}, 5000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.fl")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			err := openAndWalk(t, p)
			if !errors.Is(err, flist.ErrFormat) && !errors.Is(err, flist.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrFormat or ErrCorrupt", err)
			}
		})
	}
}

// TestV2Navigation: lookups, readdir and blocks by inode on a real flist.
func TestV2Navigation(t *testing.T) {
	p, _ := fixtures.Flist(t, "alpine-latest.fl")
	f, err := flist.OpenV2(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := t.Context()
	bb, err := flist.LookupPath(ctx, f, "/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if bb.Type != flist.TypeFile || bb.Size != 808712 || bb.NBlocks != 2 || bb.Perm() != 0o755 {
		t.Errorf("/bin/busybox = %+v", bb)
	}
	blocks, err := f.Blocks(ctx, bb.Ino)
	if err != nil || len(blocks) != 2 {
		t.Fatalf("blocks = %d, %v", len(blocks), err)
	}
	ls, err := flist.LookupPath(ctx, f, "bin/ls")
	if err != nil || ls.Type != flist.TypeSymlink || ls.Target != "/bin/busybox" {
		t.Errorf("bin/ls = %+v, %v", ls, err)
	}
	if _, err := flist.LookupPath(ctx, f, "/bin/nope"); !errors.Is(err, flist.ErrNotFound) {
		t.Errorf("missing: err = %v", err)
	}
	if _, err := flist.LookupPath(ctx, f, "/bin/busybox/x"); !errors.Is(err, flist.ErrNotDir) {
		t.Errorf("through a file: err = %v", err)
	}
	for _, bad := range []string{"..", ".", "a/b", ""} {
		if _, err := f.Lookup(ctx, flist.RootIno, bad); !errors.Is(err, flist.ErrNotFound) {
			t.Errorf("Lookup(%q): err = %v", bad, err)
		}
	}
	if _, err := f.ReadDir(ctx, bb.Ino); !errors.Is(err, flist.ErrNotDir) {
		t.Errorf("ReadDir(file): err = %v", err)
	}
	bin, _ := flist.LookupPath(ctx, f, "/bin")
	children, err := f.ReadDir(ctx, bin.Ino)
	if err != nil || len(children) < 50 {
		t.Fatalf("ReadDir(/bin) = %d entries, %v", len(children), err)
	}
	for i := 1; i < len(children); i++ {
		if children[i-1].Name >= children[i].Name {
			t.Fatalf("ReadDir not sorted: %q before %q", children[i-1].Name, children[i].Name)
		}
	}
}

// fuzzDeadline bounds one fuzz input's work: past it the input counts as a hang.
const fuzzDeadline = 20 * time.Second

// FuzzOpenV2 mutates small .fl files: opening and walking must never panic or hang.
//
// The seeds are the smallest valid flists this package writes (a root, a file of one block
// and a symlink; 512-byte pages), one with the rfs indexes and one without. Real flists
// (45 KB and more) are no seeds: Go's minimizer spends up to -fuzzminimizetime (60 s by
// default) on every input that finds new coverage, removing bytes one at a time, and on
// inputs that large it never finishes, so the fuzzer would do little else. The fixtures
// are opened and checked by the ordinary tests instead. Even these seeds are kilobytes,
// hence LimitFuzzMinimize.
func FuzzOpenV2(f *testing.F) {
	flist.LimitFuzzMinimize(f)
	f.Add(smallV2(f, true))
	f.Add(smallV2(f, false))
	// One file per worker process, rewritten for each input.
	p := filepath.Join(f.TempDir(), "fuzz.fl")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = openAndWalk(t, p)
		}()
		select {
		case <-done:
		case <-time.After(fuzzDeadline):
			t.Fatalf("open and walk took over %s", fuzzDeadline)
		}
	})
}

// smallV2 returns a tiny valid .fl: a root holding a file of one block and a symlink, with
// one route and one tag, in 512-byte pages; without indexes unless indexed.
func smallV2(t testing.TB, indexed bool) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "small.fl")
	blk := flist.Block{ID: flist.HashBlock([]byte{1}), Key: bytes.Repeat([]byte{2}, 32)}
	root := &flist.Node{Entry: flist.Entry{Type: flist.TypeDir, Mode: 0o755}, Children: []*flist.Node{
		{Entry: flist.Entry{Name: "f", Type: flist.TypeFile, Mode: 0o644, Size: 1}, Blocks: []flist.Block{blk}},
		{Entry: flist.Entry{Name: "l", Type: flist.TypeSymlink, Mode: 0o777, Target: "f"}},
	}}
	routes := []flist.Route{{Start: 0, End: 255, URL: "dir:///b"}}
	if err := flist.WriteV2(t.Context(), p, root, routes, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	stmts := []string{"PRAGMA page_size = 512"}
	if !indexed {
		stmts = append(stmts, "DROP INDEX parents", "DROP INDEX names", "DROP INDEX block_ino")
	}
	stmts = append(stmts, "VACUUM")
	return execSQLite(t, p, stmts...)
}

// execSQLite runs stmts on the database at p and returns its bytes.
func execSQLite(t testing.TB, p string, stmts ...string) []byte {
	t.Helper()
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestSmallV2: the fuzz seeds are valid flists.
func TestSmallV2(t *testing.T) {
	for _, indexed := range []bool{true, false} {
		data := smallV2(t, indexed)
		p := filepath.Join(t.TempDir(), "small.fl")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := openAndWalk(t, p); err != nil {
			t.Errorf("indexed %v: %v", indexed, err)
		}
		t.Logf("indexed %v: %d bytes", indexed, len(data))
	}
}

// TestV2Totals: the aggregate agrees with a walk of the tree.
func TestV2Totals(t *testing.T) {
	for _, name := range []string{"alpine-latest.fl", "redis-latest.fl"} {
		p, _ := fixtures.Flist(t, name)
		f, err := flist.OpenV2(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		var entries, bytes uint64
		if err := flist.Walk(t.Context(), f, func(_ string, e flist.Entry) error {
			entries++
			if e.Type == flist.TypeFile {
				bytes += e.Size
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		ge, gb, err := f.Totals(t.Context())
		if err != nil || ge != entries || gb != bytes {
			t.Errorf("%s: Totals = %d, %d, %v; the walk counts %d, %d", name, ge, gb, err, entries, bytes)
		}
		f.Close()
	}
}

// unindexedV2 writes a valid .fl of n entries (directories of nine one-block files) without
// the rfs indexes, as some packers make them.
func unindexedV2(t testing.TB, n int) string {
	t.Helper()
	blk := flist.Block{ID: flist.HashBlock([]byte{1}), Key: bytes.Repeat([]byte{2}, 32)}
	root := &flist.Node{Entry: flist.Entry{Type: flist.TypeDir, Mode: 0o755}}
	var d *flist.Node
	for i := 1; i < n; i++ {
		if i%10 == 1 {
			d = &flist.Node{Entry: flist.Entry{Name: fmt.Sprintf("d%d", i), Type: flist.TypeDir, Mode: 0o755}}
			root.Children = append(root.Children, d)
			continue
		}
		d.Children = append(d.Children, &flist.Node{
			Entry:  flist.Entry{Name: fmt.Sprintf("f%d", i), Type: flist.TypeFile, Mode: 0o644, Size: 1},
			Blocks: []flist.Block{blk},
		})
	}
	p := filepath.Join(t.TempDir(), fmt.Sprintf("unindexed-%d.fl", n))
	if err := flist.WriteV2(t.Context(), p, root, nil, nil); err != nil {
		t.Fatal(err)
	}
	execSQLite(t, p, "DROP INDEX parents", "DROP INDEX names", "DROP INDEX block_ino", "VACUUM")
	return p
}

// TestOpenV2UnindexedLinear: opening a flist without indexes and reading all of it, as the
// hub validates an upload (entries, blocks, routes, tags), takes time linear in its
// entries. A lookup per entry in an unindexed table (a block count, a directory's
// children, a file's blocks) made it quadratic: 8× the entries took 64× the time. The
// ratio of two sizes measured in the same run does not depend on the machine's speed;
// the best of five interleaved runs of each keeps a stray pause out of it.
func TestOpenV2UnindexedLinear(t *testing.T) {
	const n, factor = 1500, 8
	small, large := unindexedV2(t, n), unindexedV2(t, factor*n)
	// Interleaved, so that both sizes meet the same load; the best of each.
	bestSmall, bestLarge := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
	for range 5 {
		for _, m := range []struct {
			path string
			best *time.Duration
		}{{small, &bestSmall}, {large, &bestLarge}} {
			start := time.Now()
			if err := openAndWalk(t, m.path); err != nil {
				t.Fatal(err)
			}
			*m.best = min(*m.best, time.Since(start))
		}
	}
	ratio := float64(bestLarge) / float64(bestSmall)
	t.Logf("open and walk: %d entries %v, %d entries %v: ratio %.1f", n, bestSmall, factor*n, bestLarge, ratio)
	// Linear is about 8, quadratic 64: the bound leaves room for a loaded machine.
	if ratio > 4*factor {
		t.Errorf("%d× the entries took %.1f× the time to open and walk (linear is about %d, quadratic %d)", factor, ratio, factor, factor*factor)
	}
}

// TestV2UnindexedSameTree: without the indexes, the flist reads as the same tree.
func TestV2UnindexedSameTree(t *testing.T) {
	for _, name := range []string{"alpine-latest.fl", "redis-latest.fl"} {
		p, _ := fixtures.Flist(t, name)
		if a, b := manifestOf(t, p), manifestOf(t, hostileCopy(t, name, "DROP INDEX parents", "DROP INDEX names", "DROP INDEX block_ino")); a != b || a == "" {
			t.Errorf("%s: the manifest without indexes differs", name)
		}
	}
}
