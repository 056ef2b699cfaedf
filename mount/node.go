package mount

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/zosfs/zosfs-agent/flist"
)

// statfsWait is how long a statfs(2) waits for the totals of the flist (a walk of the whole
// tree, done once, in the background) before answering with zeros for this call.
const statfsWait = time.Second

// toErrno is the one mapping from errors to the errno a FUSE operation returns:
// flist.ErrNotFound → ENOENT, flist.ErrNotDir → ENOTDIR, context.Canceled (the kernel
// interrupted the request) → EINTR; a deadline and everything else (a corrupt flist, a
// block that cannot be fetched or is wrong) → EIO.
func toErrno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flist.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, flist.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	return syscall.EIO
}

// fail maps err to an errno and logs it unless it is an ordinary outcome (a missing
// name, an interrupted request).
func (m *Mount) fail(op string, e *flist.Entry, err error) syscall.Errno {
	errno := toErrno(err)
	switch errno {
	case syscall.ENOENT, syscall.EINTR:
		m.log.Debug("operation failed", "op", op, "ino", e.Ino, "err", err)
	default:
		m.log.Warn("operation failed", "op", op, "ino", e.Ino, "name", e.Name, "err", err, "errno", errno.Error())
	}
	return errno
}

// node is one entry of the flist in the FUSE tree. Its Entry never changes; a directory
// loads its children once, a file its block list once (both on first use, both kept
// while the kernel keeps the inode).
type node struct {
	fs.Inode
	m *Mount
	e flist.Entry

	mu       sync.Mutex
	kids     []flist.Entry // directories: children sorted by name, once loaded
	kidsOK   bool
	blocks   []flist.Block // files: the blocks its size needs, once loaded
	blocksOK bool
}

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeReader         = (*node)(nil)
	_ fs.NodeFlusher        = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
)

func (m *Mount) newNode(e flist.Entry) *node { return &node{m: m, e: e} }

// children returns the directory's entries, sorted by name, loading them on first use.
// An entry that cannot be part of a tree (a bad name or inode number) makes the whole
// directory corrupt. Errors are not remembered: the next call tries again.
func (n *node) children(ctx context.Context) ([]flist.Entry, error) {
	if n.e.Type != flist.TypeDir {
		return nil, fmt.Errorf("inode %d: %w", n.e.Ino, flist.ErrNotDir)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.kidsOK {
		return n.kids, nil
	}
	kids, err := n.m.cfg.Flist.ReadDir(ctx, n.e.Ino)
	if err != nil {
		return nil, err
	}
	for i := range kids {
		k := &kids[i]
		if err := flist.ValidName(k.Name); err != nil {
			return nil, fmt.Errorf("directory inode %d: %w", n.e.Ino, err)
		}
		if k.Ino == 0 || k.Ino == flist.RootIno || k.Ino == math.MaxUint64 || k.Ino == n.e.Ino ||
			flist.TypeOfMode(k.Mode) == 0 || flist.TypeOfMode(k.Mode) != k.Type {
			return nil, fmt.Errorf("%w: directory inode %d: child %q has inode %d, mode %#o", flist.ErrCorrupt, n.e.Ino, k.Name, k.Ino, k.Mode)
		}
	}
	kids = slices.Clone(kids)
	slices.SortFunc(kids, func(a, b flist.Entry) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(kids); i++ {
		if kids[i].Name == kids[i-1].Name {
			return nil, fmt.Errorf("%w: directory inode %d has two entries named %q", flist.ErrCorrupt, n.e.Ino, kids[i].Name)
		}
	}
	n.kids, n.kidsOK = kids, true
	return kids, nil
}

// fileBlocks returns the blocks file content is made of: exactly as many as its size
// needs (extra ones are never read; too few is a corrupt flist).
func (n *node) fileBlocks(ctx context.Context) ([]flist.Block, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.blocksOK {
		return n.blocks, nil
	}
	blocks, err := n.m.cfg.Flist.Blocks(ctx, n.e.Ino)
	if err != nil {
		return nil, err
	}
	if n.e.Size > math.MaxInt64 {
		return nil, fmt.Errorf("%w: inode %d: size %d", flist.ErrCorrupt, n.e.Ino, n.e.Size)
	}
	need := n.e.Size / flist.BlockSize
	if n.e.Size%flist.BlockSize != 0 {
		need++
	}
	if uint64(len(blocks)) < need {
		return nil, fmt.Errorf("%w: inode %d: %d bytes need %d blocks, the flist has %d", flist.ErrCorrupt, n.e.Ino, n.e.Size, need, len(blocks))
	}
	n.blocks, n.blocksOK = blocks[:need], true
	return n.blocks, nil
}

// nlink is 1 for everything but directories, which have 2 + their subdirectories (as
// on a disk). If the directory cannot be listed, 2: the listing itself reports the error.
func (n *node) nlink(ctx context.Context) uint32 {
	if n.e.Type != flist.TypeDir {
		return 1
	}
	kids, err := n.children(ctx)
	if err != nil {
		n.m.log.Debug("counting subdirectories", "ino", n.e.Ino, "err", err)
		return 2
	}
	links := uint32(2)
	for i := range kids {
		if kids[i].Type == flist.TypeDir {
			links++
		}
	}
	return links
}

// fillAttr fills out with the entry's attributes.
func (n *node) fillAttr(ctx context.Context, out *fuse.Attr) {
	e := &n.e
	size := e.Size
	switch e.Type {
	case flist.TypeDir:
		size = 0
	case flist.TypeSymlink:
		size = uint64(len(e.Target))
	case flist.TypeFile:
	default:
		size = 0
	}
	out.Ino = e.Ino
	out.Mode = e.Mode
	out.Size = size
	out.Blocks = (size + 511) / 512
	out.Blksize = attrBlksize
	out.Atime, out.Mtime, out.Ctime = uint64(e.Mtime), uint64(e.Mtime), uint64(e.Mtime)
	out.Atimensec, out.Mtimensec, out.Ctimensec = 0, 0, 0
	out.Nlink = n.nlink(ctx)
	out.Uid, out.Gid = e.UID, e.GID
	out.Rdev = 0
	if e.Type == flist.TypeBlockDev || e.Type == flist.TypeCharDev {
		// FUSE carries a 32-bit device number (the kernel's new_encode_dev): 12 bits of
		// major and 20 of minor, all Linux has.
		out.Rdev = uint32(flist.Mkdev(e.Major()&0xfff, e.Minor()&0xfffff))
	}
}

// Lookup implements fs.NodeLookuper.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	kids, err := n.children(ctx)
	if err != nil {
		return nil, n.m.fail("lookup", &n.e, err)
	}
	i, found := slices.BinarySearchFunc(kids, name, func(e flist.Entry, name string) int { return strings.Compare(e.Name, name) })
	if !found {
		return nil, syscall.ENOENT
	}
	return n.child(ctx, kids[i], out)
}

// child returns the inode of child entry e, the existing one if the kernel knows it.
func (n *node) child(ctx context.Context, e flist.Entry, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if ch := n.GetChild(e.Name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok && cn.e.Ino == e.Ino {
			cn.fillAttr(ctx, &out.Attr)
			return ch, 0
		}
	}
	ch := n.NewInode(ctx, n.m.newNode(e), fs.StableAttr{Mode: e.Mode & flist.ModeTypeMask, Ino: e.Ino})
	cn, ok := ch.Operations().(*node)
	if !ok {
		return nil, syscall.EIO
	}
	cn.fillAttr(ctx, &out.Attr)
	return ch, 0
}

// OpendirHandle implements fs.NodeOpendirHandler. The kernel may cache the listing
// (FOPEN_CACHE_DIR): a directory never changes, so a second walk of a tree is served
// without readdir round trips.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	kids, err := n.children(ctx)
	if err != nil {
		return nil, 0, n.m.fail("opendir", &n.e, err)
	}
	return &dirHandle{n: n, kids: kids}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle is one open directory: its entries are ".", ".." and the children, in that
// order; an entry's offset is its index + 1 (offset 0 is the start).
type dirHandle struct {
	n    *node
	kids []flist.Entry // n's children, sorted by name
	pos  int           // index of the next entry
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileLookuper     = (*dirHandle)(nil)
)

// Readdirent implements fs.FileReaddirenter.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	e := d.n.e
	de := fuse.DirEntry{Off: uint64(d.pos) + 1, Mode: fuse.S_IFDIR}
	switch {
	case d.pos == 0:
		de.Name, de.Ino = ".", e.Ino
	case d.pos == 1:
		de.Name, de.Ino = "..", e.Parent
		if e.Ino == flist.RootIno || e.Parent == 0 {
			de.Ino = flist.RootIno
		}
	case d.pos-2 < len(d.kids):
		k := &d.kids[d.pos-2]
		de.Name, de.Ino, de.Mode = k.Name, k.Ino, k.Mode&flist.ModeTypeMask
	default:
		return nil, 0
	}
	d.pos++
	return &de, 0
}

// Seekdir implements fs.FileSeekdirer: off is the offset of the last entry read.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(d.kids))+2 {
		return syscall.EINVAL
	}
	d.pos = int(off)
	return 0
}

// Lookup implements fs.FileLookuper for READDIRPLUS: name is the entry Readdirent just
// returned, so there is no search.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if i := d.pos - 3; i >= 0 && i < len(d.kids) && d.kids[i].Name == name {
		return d.n.child(ctx, d.kids[i], out)
	}
	return d.n.Lookup(ctx, name, out)
}

// Getattr implements fs.NodeGetattrer.
func (n *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(ctx, &out.Attr)
	return 0
}

// Readlink implements fs.NodeReadlinker.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.e.Type != flist.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(n.e.Target), 0
}

// Open implements fs.NodeOpener. It answers ENOSYS where the kernel supports that (Linux
// 4.20 on): the kernel then stops sending OPEN and RELEASE, keeps every file's pages
// across opens (the content never changes) and reads with no file handle — two round
// trips less per file. Elsewhere an open succeeds with FOPEN_KEEP_CACHE and no handle.
// Either way reads go to the file's reader (node.Read); the mount is read-only, so the
// kernel itself refuses opens for writing.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.m.noOpen.Load() {
		return nil, 0, syscall.ENOSYS
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read implements fs.NodeReader through the file's reader.
func (n *node) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.e.Type != flist.TypeFile {
		return nil, syscall.EINVAL
	}
	r, err := n.m.acquireReader(ctx, n)
	if err != nil {
		return nil, n.m.fail("read", &n.e, err)
	}
	defer n.m.releaseReader(r)
	return r.Read(ctx, dest, off)
}

// Flush implements fs.NodeFlusher with ENOSYS: nothing is ever written, and the kernel,
// told once, stops sending FLUSH on every close — one synchronous round trip less per
// file read.
func (n *node) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

// Statfs implements fs.NodeStatfser. The filesystem is full and read-only: blocks =
// total file bytes in 4 KiB units, files = the number of entries, nothing free. The
// totals are counted once (countTotals), started by the first statfs and run in the
// background; until they are known statfs reports zero totals.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	n.m.totals(ctx, out)
	out.Bsize, out.Frsize = attrBlksize, attrBlksize
	out.NameLen = 255
	out.Bfree, out.Bavail, out.Ffree = 0, 0, 0
	return 0
}

// totals sets out to the flist's totals (countTotals, started on the first call) if they
// are known within statfsWait; else it leaves out as it is.
func (m *Mount) totals(ctx context.Context, out *fuse.StatfsOut) {
	m.statfsOnce.Do(func() {
		m.active.Add(1)
		go m.countTotals()
	})
	timer := time.NewTimer(statfsWait)
	defer timer.Stop()
	select {
	case <-m.statfsDone:
		*out = m.statfs
	case <-timer.C:
	case <-ctx.Done():
	}
}

// countTotals counts the flist's entries and file bytes once for statfs: with one query
// where the flist can, else with a walk.
func (m *Mount) countTotals() {
	defer m.active.Add(-1)
	defer close(m.statfsDone)
	var entries, bytes uint64
	var err error
	if t, ok := m.cfg.Flist.(flist.Totaler); ok {
		entries, bytes, err = t.Totals(m.runCtx)
	} else {
		err = flist.Walk(m.runCtx, m.cfg.Flist, func(_ string, e flist.Entry) error {
			entries++
			if e.Type == flist.TypeFile {
				bytes += e.Size
			}
			return nil
		})
	}
	if err != nil {
		if m.runCtx.Err() == nil {
			m.log.Warn("counting the flist's entries for statfs", "err", err)
		}
		return
	}
	m.statfs = fuse.StatfsOut{Blocks: (bytes + attrBlksize - 1) / attrBlksize, Files: entries}
}
