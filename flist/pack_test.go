package flist_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/internal/testkit"
)

// memSink is a BlockSink in memory that counts writes.
type memSink struct {
	mu     sync.Mutex
	blocks map[flist.BlockID][]byte
	puts   int
}

func newMemSink() *memSink { return &memSink{blocks: map[flist.BlockID][]byte{}} }

func (s *memSink) Has(_ context.Context, id flist.BlockID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blocks[id]
	return ok, nil
}

func (s *memSink) Put(_ context.Context, id flist.BlockID, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	s.blocks[id] = bytes.Clone(data)
	return nil
}

func (s *memSink) Get(_ context.Context, id flist.BlockID) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.blocks[id]; ok {
		return b, nil
	}
	return nil, flist.ErrNotFound
}

func manifestOf(t *testing.T, path string) string {
	t.Helper()
	f, err := flist.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b bytes.Buffer
	if err := flist.WriteManifest(t.Context(), &b, f); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func cidOf(t *testing.T, path string) string {
	t.Helper()
	c, err := flist.FileCIDPath(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}

// TestPackDir: the manifest of a packed tree agrees with lstat, every file reads back
// identical, each distinct block is stored once, and packing again writes nothing and
// gives the same bytes, so the same CID.
func TestPackDir(t *testing.T) {
	src := t.TempDir()
	flisttest.MakeTree(t, src, 1, flisttest.DefaultTreeOptions())
	out := filepath.Join(t.TempDir(), "tree.fl")
	sink := newMemSink()
	stats, err := flist.PackDir(t.Context(), src, out, flist.PackConfig{Sink: sink, Tags: map[string]string{"name": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := manifestOf(t, out), flisttest.DiskManifest(t, src); got != want {
		t.Fatalf("manifest disagrees with the disk:\ngot:\n%s\nwant:\n%s", got, want)
	}
	if stats.UniqueBlocks != int64(len(sink.blocks)) || sink.puts != len(sink.blocks) {
		t.Errorf("stored %d puts for %d distinct blocks (stats say %d)", sink.puts, len(sink.blocks), stats.UniqueBlocks)
	}
	if stats.Blocks <= stats.UniqueBlocks {
		t.Errorf("the tree has duplicate content, yet %d blocks are all distinct", stats.Blocks)
	}

	f, err := flist.Open(t.Context(), out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := 0
	err = flist.Walk(t.Context(), f, func(p string, e flist.Entry) error {
		if e.Type != flist.TypeFile {
			return nil
		}
		files++
		want, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			return err
		}
		var got bytes.Buffer
		if err := flist.WriteFile(t.Context(), &got, f, e, sink); err != nil {
			return err
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s: content differs (%d bytes, want %d)", p, got.Len(), len(want))
		}
		return nil
	})
	if err != nil || files < 10 {
		t.Fatalf("walk: %v (%d files)", err, files)
	}
	tags, err := f.Tags(t.Context())
	if err != nil || tags["name"] != "test" {
		t.Errorf("tags = %v, %v", tags, err)
	}

	again := filepath.Join(t.TempDir(), "again.fl")
	puts := sink.puts
	if _, err := flist.PackDir(t.Context(), src, again, flist.PackConfig{Sink: sink, Tags: map[string]string{"name": "test"}}); err != nil {
		t.Fatal(err)
	}
	if sink.puts != puts {
		t.Errorf("second pack wrote %d blocks the store already had", sink.puts-puts)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Errorf("packing twice gave different files (%s, %s)", cidOf(t, out), cidOf(t, again))
	}
}

// TestPackTarSameCID: a tar (and a tar.gz) of a tree, made by GNU tar, packs to the same
// flist as the tree itself.
func TestPackTarSameCID(t *testing.T) {
	testkit.NeedCommand(t, "tar")
	src := t.TempDir()
	opt := flisttest.DefaultTreeOptions()
	opt.Sockets = false // tar cannot carry sockets
	flisttest.MakeTree(t, src, 2, opt)
	tmp := t.TempDir()
	fromDir := filepath.Join(tmp, "dir.fl")
	if _, err := flist.PackDir(t.Context(), src, fromDir, flist.PackConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, flag string }{{"tar", "-cf"}, {"tar.gz", "-czf"}} {
		t.Run(tc.name, func(t *testing.T) {
			archive := filepath.Join(tmp, "tree."+tc.name)
			if out, err := exec.Command("tar", "--numeric-owner", "-C", src, tc.flag, archive, ".").CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, out)
			}
			in, err := os.Open(archive)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			fromTar := filepath.Join(tmp, tc.name+".fl")
			if _, err := flist.PackTar(t.Context(), in, fromTar, flist.PackConfig{}); err != nil {
				t.Fatal(err)
			}
			if got, want := cidOf(t, fromTar), cidOf(t, fromDir); got != want {
				t.Errorf("tar gives CID %s, directory %s\ntar manifest:\n%s\ndir manifest:\n%s",
					got, want, manifestOf(t, fromTar), manifestOf(t, fromDir))
			}
		})
	}
}

// TestPackTarHostile: tar streams that would escape the tree or are broken are refused
// with an error, and no flist is left behind.
func TestPackTarHostile(t *testing.T) {
	member := func(name string, typ byte, link string, body string) func(*tar.Writer) {
		return func(w *tar.Writer) {
			w.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Linkname: link, Mode: 0o644, Size: int64(len(body))})
			w.Write([]byte(body))
		}
	}
	for _, tc := range []struct {
		name    string
		members []func(*tar.Writer)
		raw     []byte
	}{
		{name: "dotdot", members: []func(*tar.Writer){member("a/../../etc/passwd", tar.TypeReg, "", "x")}},
		{name: "hardlink to nothing", members: []func(*tar.Writer){member("a", tar.TypeLink, "missing", "")}},
		{name: "hardlink escaping", members: []func(*tar.Writer){member("a", tar.TypeLink, "../x", "")}},
		{name: "file used as dir", members: []func(*tar.Writer){member("f", tar.TypeReg, "", "x"), member("f/g", tar.TypeReg, "", "y")}},
		{name: "garbage", raw: bytes.Repeat([]byte{0xde, 0xad}, 700)},
		{name: "truncated", raw: func() []byte {
			var b bytes.Buffer
			w := tar.NewWriter(&b)
			w.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 10000})
			w.Write(make([]byte, 600))
			return b.Bytes()[:1024]
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				var b bytes.Buffer
				w := tar.NewWriter(&b)
				for _, m := range tc.members {
					m(w)
				}
				w.Close()
				raw = b.Bytes()
			}
			out := filepath.Join(t.TempDir(), "x.fl")
			_, err := flist.PackTar(t.Context(), bytes.NewReader(raw), out, flist.PackConfig{})
			if err == nil {
				t.Fatal("packed a hostile tar without error")
			}
			if _, statErr := os.Stat(out); !errors.Is(statErr, os.ErrNotExist) {
				t.Errorf("left %s behind after: %v", out, err)
			}
			entries, _ := os.ReadDir(filepath.Dir(out))
			if len(entries) != 0 {
				t.Errorf("left temp files: %v", entries)
			}
		})
	}
}
