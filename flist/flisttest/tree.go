// Package flisttest is the test kit for flists: it generates directory trees holding every
// kind of entry an flist can describe, and computes from the disk alone the manifest an
// flist of such a tree must have.
package flisttest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zosfs/zosfs-agent/flist"
)

// TreeOptions say which entries need privileges the test may lack.
type TreeOptions struct {
	// Devices adds char and block devices (needs root).
	Devices bool
	// Sockets adds a unix socket file (tar cannot carry one).
	Sockets bool
	// Owners gives some entries foreign uids and gids (needs root).
	Owners bool
}

// DefaultTreeOptions turns on everything the current user can create.
func DefaultTreeOptions() TreeOptions {
	root := os.Geteuid() == 0
	return TreeOptions{Devices: root, Sockets: true, Owners: root}
}

// Odd names that a packer and a manifest must carry unharmed.
var OddNames = []string{"with space", "ünïcødé ✓", "new\nline", `back\slash`, "tab\there", "-dash", ".hidden"}

// MakeTree fills dir (which must exist and be empty) with a tree holding every entry type,
// odd names, empty, exactly-one-block and multi-block files, duplicate content, hard links,
// setuid/setgid/sticky bits and, when allowed, devices and foreign owners. Content is
// pseudo-random from seed, so the same seed gives the same tree.
func MakeTree(t testing.TB, dir string, seed uint64, opt TreeOptions) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(rel string, size int, perm os.FileMode) {
		t.Helper()
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		// Half of each larger file is text-like, so snappy has something to compress.
		for i := 0; i < size/2; i++ {
			data[i] = "abcdefgh \n"[i%10]
		}
		p := filepath.Join(dir, rel)
		must(os.WriteFile(p, data, perm))
		must(os.Chmod(p, perm))
	}
	mkdir := func(rel string, perm os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, rel)
		must(os.Mkdir(p, perm))
		must(os.Chmod(p, perm))
	}
	mkdir("sub", 0o755)
	mkdir("sub/deeper", 0o700)
	mkdir("sub/deeper/deepest", 0o755)
	mkdir("emptydir", 0o755)
	file("empty", 0, 0o644)
	file("one-byte", 1, 0o600)
	file("exact-block", flist.BlockSize, 0o644)
	file("block-plus-one", flist.BlockSize+1, 0o644)
	file("sub/multi", 3*flist.BlockSize+12345, 0o755)
	file("sub/deeper/small", 4000, 0o444)
	must(copyFile(filepath.Join(dir, "sub/multi"), filepath.Join(dir, "sub/deeper/multi-copy")))
	must(os.Link(filepath.Join(dir, "sub/multi"), filepath.Join(dir, "hardlink-to-multi")))
	must(os.Link(filepath.Join(dir, "one-byte"), filepath.Join(dir, "sub/hardlink-to-one-byte")))
	file("setuid", 100, 0o4755)
	file("setgid", 100, 0o2755)
	mkdir("sticky", 0o1777)
	mkdir("setgid-dir", 0o2775)
	file("sticky/all-bits", 10, 0o7777)
	for i, name := range OddNames {
		file(name, 10+i, 0o644)
	}
	mkdir("ünïcødé dir", 0o755)
	file("ünïcødé dir/new\nline inside", 7, 0o644)
	must(os.Symlink("sub/multi", filepath.Join(dir, "link-relative")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "link-absolute")))
	must(os.Symlink("does/not/exist", filepath.Join(dir, "link-dangling")))
	must(os.Symlink("ünïcødé dir/new\nline inside", filepath.Join(dir, "link odd")))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	if opt.Sockets {
		must(unix.Mknod(filepath.Join(dir, "socket"), unix.S_IFSOCK|0o755, 0))
	}
	if opt.Devices {
		must(unix.Mknod(filepath.Join(dir, "chardev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(filepath.Join(dir, "blockdev"), unix.S_IFBLK|0o660, int(unix.Mkdev(259, 70000))))
	}
	if opt.Owners {
		must(os.Lchown(filepath.Join(dir, "sub/deeper"), 1234, 5678))
		must(os.Lchown(filepath.Join(dir, "one-byte"), 65534, 65534))
		must(os.Lchown(filepath.Join(dir, "link-relative"), 4321, 8765))
		must(os.Lchown(filepath.Join(dir, "fifo"), 0, 4000000000))
		// chown clears setuid/setgid on files: set them again.
		must(os.Lchown(filepath.Join(dir, "setuid"), 1000, 1000))
		must(os.Chmod(filepath.Join(dir, "setuid"), 0o4755|os.ModeSetuid))
	}
	// Fixed, distinct mtimes (symlinks included), children before parents.
	var paths []string
	must(filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}))
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for i, p := range paths {
		ts := []unix.Timespec{{Sec: 1600000000 + int64(i)*3600}, {Sec: 1600000000 + int64(i)*3600}}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o644)
}

// DiskManifest computes, from lstat and the file contents alone, the manifest that an
// flist packed from dir must have (see flist.WriteManifest for the columns).
func DiskManifest(t testing.TB, dir string) string {
	t.Helper()
	return diskManifest(t, dir, true)
}

// DiskManifestNoContent is DiskManifest without reading any file: the first-block column
// is "-". For trees whose content cannot be read, such as flists mounted without blocks.
func DiskManifestNoContent(t testing.TB, dir string) string {
	t.Helper()
	return diskManifest(t, dir, false)
}

func diskManifest(t testing.TB, dir string, readContent bool) string {
	t.Helper()
	type line struct{ path, text string }
	var lines []line
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(dir, p)
		abs := "/" + filepath.ToSlash(rel)
		if rel == "." {
			abs = "/"
		}
		typ := flist.TypeOfMode(st.Mode)
		size, nblocks, first, last := int64(0), 0, "-", "-"
		switch typ {
		case flist.TypeFile:
			size = fi.Size()
			nblocks = int((size + flist.BlockSize - 1) / flist.BlockSize)
			if nblocks > 0 && readContent {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				buf := make([]byte, flist.BlockSize)
				n, _ := io.ReadFull(f, buf)
				f.Close()
				b, _ := flist.EncodeBlock(buf[:n])
				first = fmt.Sprintf("%s:%x", b.ID, b.Key)
			}
		case flist.TypeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			size, last = int64(len(target)), quote(target)
		case flist.TypeBlockDev, flist.TypeCharDev:
			last = fmt.Sprintf("%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		lines = append(lines, line{abs, fmt.Sprintf("%c\t%s\t%04o\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
			typ.Letter(), quote(abs), st.Mode&0o7777, st.Uid, st.Gid, size, st.Mtim.Sec, nblocks, first, last)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].path < lines[j].path })
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l.text)
	}
	return b.String()
}

func quote(s string) string {
	if strings.ContainsAny(s, "\t\n\\") {
		return strconv.Quote(s)
	}
	return s
}
