package flist

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// BlockSink receives the blocks a pack produces. Has lets the packer skip blocks the
// sink already holds, so that re-packing costs no store writes. Put must not keep data
// after it returns: the packer reuses the buffer. A sink that also has a
// Sync(ctx) error method is synced once all blocks are in, before the flist is written.
type BlockSink interface {
	Has(ctx context.Context, id BlockID) (bool, error)
	Put(ctx context.Context, id BlockID, data []byte) error
}

// PackConfig configures a pack. The zero value packs on all cores and stores blocks nowhere.
type PackConfig struct {
	// Sink receives each distinct block once; nil computes the flist without storing blocks.
	Sink BlockSink
	// Workers encoding blocks in parallel; 0 means GOMAXPROCS.
	Workers int
	// Routes and Tags are written into the flist as they are.
	Routes []Route
	Tags   map[string]string
	// Progress, if set, is called from time to time (and once at the end) with the
	// figures so far. It must return quickly.
	Progress func(PackStats)
}

// PackStats counts what a pack did.
type PackStats struct {
	Entries      int64 // entries in the flist
	Files        int64 // regular files
	Bytes        int64 // bytes of file content read
	Blocks       int64 // blocks of all files, counting repeats
	UniqueBlocks int64 // distinct blocks
	Stored       int64 // distinct blocks written to the sink (the others it already had)
	StoredBytes  int64 // bytes written to the sink
}

// progressInterval is how often PackConfig.Progress is called.
const progressInterval = 200 * time.Millisecond

// chunksInFlight bounds the chunks read but not yet encoded, per worker: enough to keep
// every core busy while the reader waits on the disk, little enough to bound memory.
const chunksInFlight = 4

// PackDir packs the directory tree at dir into a v2 flist at out.
func PackDir(ctx context.Context, dir, out string, cfg PackConfig) (PackStats, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return PackStats{}, err
	}
	if !fi.IsDir() {
		return PackStats{}, fmt.Errorf("%s: not a directory", dir)
	}
	return pack(ctx, out, cfg, func(p *packer) error { return p.walkDir(dir) })
}

// PackSource packs src into a v2 flist at out: a directory, a tar file (plain or
// gzip-compressed), or "-" for a tar read from stdin.
func PackSource(ctx context.Context, src string, stdin io.Reader, out string, cfg PackConfig) (PackStats, error) {
	if src == "-" {
		return PackTar(ctx, stdin, out, cfg)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return PackStats{}, err
	}
	if fi.IsDir() {
		return PackDir(ctx, src, out, cfg)
	}
	f, err := os.Open(src)
	if err != nil {
		return PackStats{}, err
	}
	defer f.Close()
	return PackTar(ctx, f, out, cfg)
}

// PackTar packs a tar stream (plain or gzip-compressed, told apart by its first bytes)
// into a v2 flist at out. A directory and a tar of it give the same flist.
func PackTar(ctx context.Context, r io.Reader, out string, cfg PackConfig) (PackStats, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return PackStats{}, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	return pack(ctx, out, cfg, func(p *packer) error { return p.readTar(r) })
}

// chunk is one block's worth of a file waiting to be encoded.
type chunk struct {
	node  *Node
	index int
	buf   *[]byte
	n     int
}

type packer struct {
	ctx    context.Context
	cfg    PackConfig
	root   *Node
	nodes  map[string]*Node // tar paths -> nodes, for parents and hard links
	chunks chan chunk
	links  []hardlink
	stats  PackStats
	seen   sync.Map // BlockID -> struct{}: each distinct block is stored once
	mu     sync.Mutex
}

type hardlink struct {
	node   *Node
	target string
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, BlockSize); return &b }}

func pack(ctx context.Context, out string, cfg PackConfig, read func(*packer) error) (PackStats, error) {
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	p := &packer{
		ctx:    gctx,
		cfg:    cfg,
		root:   &Node{Entry: Entry{Name: "/", Type: TypeDir, Mode: ModeDir | 0o755}},
		nodes:  map[string]*Node{},
		chunks: make(chan chunk, workers*chunksInFlight),
	}
	p.nodes[""] = p.root
	for range workers {
		g.Go(p.encode)
	}
	g.Go(func() error {
		defer close(p.chunks)
		return read(p)
	})
	stop := p.reportProgress(gctx)
	err := g.Wait()
	stop()
	if err != nil {
		return p.stats, err
	}
	if sy, ok := cfg.Sink.(interface{ Sync(context.Context) error }); ok {
		if err := sy.Sync(ctx); err != nil {
			return p.stats, err
		}
	}
	if err := p.resolveLinks(); err != nil {
		return p.stats, err
	}
	p.stats.Entries = countNodes(p.root)
	if err := WriteV2(ctx, out, p.root, cfg.Routes, cfg.Tags); err != nil {
		return p.stats, err
	}
	if cfg.Progress != nil {
		cfg.Progress(p.snapshot())
	}
	return p.stats, nil
}

func (p *packer) snapshot() PackStats {
	return PackStats{
		Entries: atomic.LoadInt64(&p.stats.Entries), Files: atomic.LoadInt64(&p.stats.Files),
		Bytes: atomic.LoadInt64(&p.stats.Bytes), Blocks: atomic.LoadInt64(&p.stats.Blocks),
		UniqueBlocks: atomic.LoadInt64(&p.stats.UniqueBlocks), Stored: atomic.LoadInt64(&p.stats.Stored),
		StoredBytes: atomic.LoadInt64(&p.stats.StoredBytes),
	}
}

// reportProgress calls cfg.Progress periodically until the returned stop is called.
func (p *packer) reportProgress(ctx context.Context) (stop func()) {
	if p.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				p.cfg.Progress(p.snapshot())
			}
		}
	}()
	return func() { close(done); <-finished }
}

// encode turns chunks into blocks and hands each new block to the sink.
func (p *packer) encode() error {
	var enc blockEncoder
	for c := range p.chunks {
		b, data := enc.encode((*c.buf)[:c.n])
		chunkPool.Put(c.buf)
		p.mu.Lock()
		c.node.Blocks[c.index] = b
		p.mu.Unlock()
		if _, dup := p.seen.LoadOrStore(b.ID, struct{}{}); dup {
			continue
		}
		atomic.AddInt64(&p.stats.UniqueBlocks, 1)
		if p.cfg.Sink == nil {
			continue
		}
		has, err := p.cfg.Sink.Has(p.ctx, b.ID)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if has {
			continue
		}
		if err := p.cfg.Sink.Put(p.ctx, b.ID, data); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		atomic.AddInt64(&p.stats.Stored, 1)
		atomic.AddInt64(&p.stats.StoredBytes, int64(len(data)))
	}
	return nil
}

// readContent cuts the size bytes of r into chunks for the encoders. Fewer bytes than
// size is an error: a truncated archive, or a file that shrank while being packed.
func (p *packer) readContent(n *Node, r io.Reader, size int64) error {
	for i := 0; size > 0; i++ {
		buf := chunkPool.Get().(*[]byte)
		k := int(min(size, BlockSize))
		if _, err := io.ReadFull(r, (*buf)[:k]); err != nil {
			chunkPool.Put(buf)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		size -= int64(k)
		atomic.AddInt64(&p.stats.Bytes, int64(k))
		atomic.AddInt64(&p.stats.Blocks, 1)
		p.mu.Lock()
		n.Blocks = append(n.Blocks, Block{})
		p.mu.Unlock()
		select {
		case p.chunks <- chunk{node: n, index: i, buf: buf, n: k}:
		case <-p.ctx.Done():
			chunkPool.Put(buf)
			return p.ctx.Err()
		}
	}
	return nil
}

// walkDir reads a directory tree. Hard-linked files are read once per name, as upstream
// stores them: as separate files, whose identical blocks are deduplicated.
func (p *packer) walkDir(dir string) error {
	return filepath.WalkDir(dir, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := p.ctx.Err(); err != nil {
			return err
		}
		fi, err := os.Lstat(fp)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat information", fp)
		}
		e := Entry{
			Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec, Rdev: uint64(st.Rdev),
		}
		e.Type = TypeOfMode(e.Mode)
		rel, _ := filepath.Rel(dir, fp)
		var n *Node
		if rel == "." {
			n = p.root
			n.Entry = Entry{Name: "/", Type: TypeDir, Mode: e.Mode, UID: e.UID, GID: e.GID, Mtime: e.Mtime}
		} else {
			parentRel := path.Dir(filepath.ToSlash(rel))
			if parentRel == "." {
				parentRel = ""
			}
			parent := p.nodes[parentRel]
			e.Name = d.Name()
			n = &Node{Entry: e}
			parent.Children = append(parent.Children, n)
		}
		switch e.Type {
		case TypeDir:
			if rel != "." {
				p.nodes[filepath.ToSlash(rel)] = n
			}
		case TypeSymlink:
			if n.Target, err = os.Readlink(fp); err != nil {
				return err
			}
		case TypeFile:
			atomic.AddInt64(&p.stats.Files, 1)
			f, err := os.Open(fp)
			if err != nil {
				return err
			}
			n.Size = uint64(fi.Size())
			err = p.readContent(n, f, fi.Size())
			f.Close()
			if err != nil {
				return fmt.Errorf("%s (did it change while packing?): %w", fp, err)
			}
		}
		if e.Type != TypeBlockDev && e.Type != TypeCharDev {
			n.Rdev = 0
		}
		return nil
	})
}

// cleanTarPath turns a tar member name into a relative slash path ("" for the root), and
// refuses names that would leave the tree.
func cleanTarPath(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("tar member %q: NUL in name", name)
	}
	p := strings.TrimLeft(name, "/")
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("tar member %q: '..' in path", name)
		}
	}
	p = path.Clean("/" + p)[1:]
	return p, nil
}

// readTar reads a tar stream in order. A later member of the same path replaces an
// earlier one, as extraction would; missing parent directories are created with mode 0755.
func (p *packer) readTar(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := p.ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		rel, err := cleanTarPath(h.Name)
		if err != nil {
			return err
		}
		e := Entry{Mode: uint32(h.Mode) & ModePerm, UID: uint32(h.Uid), GID: uint32(h.Gid), Mtime: h.ModTime.Unix()}
		switch h.Typeflag {
		case tar.TypeDir:
			e.Type = TypeDir
		case tar.TypeReg, tar.TypeLink:
			e.Type = TypeFile
		case tar.TypeSymlink:
			e.Type, e.Target = TypeSymlink, h.Linkname
		case tar.TypeChar:
			e.Type, e.Rdev = TypeCharDev, Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		case tar.TypeBlock:
			e.Type, e.Rdev = TypeBlockDev, Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		case tar.TypeFifo:
			e.Type = TypeFifo
		default:
			continue // pax/GNU meta headers are consumed by archive/tar; others carry no entry
		}
		e.Mode |= e.Type.ModeBits()
		if rel == "" {
			if e.Type != TypeDir {
				return fmt.Errorf("tar member %q: root is not a directory", h.Name)
			}
			p.root.Mode, p.root.UID, p.root.GID, p.root.Mtime = e.Mode, e.UID, e.GID, e.Mtime
			continue
		}
		parent, err := p.tarDir(path.Dir(rel))
		if err != nil {
			return err
		}
		e.Name = path.Base(rel)
		n := &Node{Entry: e}
		if old := p.nodes[rel]; old != nil {
			if old.Type == TypeDir && e.Type == TypeDir {
				old.Mode, old.UID, old.GID, old.Mtime = e.Mode, e.UID, e.GID, e.Mtime
				continue
			}
			removeChild(parent, old)
		}
		parent.Children = append(parent.Children, n)
		p.nodes[rel] = n
		switch h.Typeflag {
		case tar.TypeLink:
			target, err := cleanTarPath(h.Linkname)
			if err != nil {
				return err
			}
			p.links = append(p.links, hardlink{n, target})
		case tar.TypeReg:
			atomic.AddInt64(&p.stats.Files, 1)
			n.Size = uint64(h.Size)
			if err := p.readContent(n, tr, h.Size); err != nil {
				return fmt.Errorf("tar member %q: %w", h.Name, err)
			}
		}
	}
}

// tarDir returns the directory node at rel, creating missing ones.
func (p *packer) tarDir(rel string) (*Node, error) {
	if rel == "." || rel == "" {
		return p.root, nil
	}
	if n := p.nodes[rel]; n != nil {
		if n.Type != TypeDir {
			return nil, fmt.Errorf("tar: %q is used as a directory but is a %c", rel, n.Type.Letter())
		}
		return n, nil
	}
	parent, err := p.tarDir(path.Dir(rel))
	if err != nil {
		return nil, err
	}
	n := &Node{Entry: Entry{Name: path.Base(rel), Type: TypeDir, Mode: ModeDir | 0o755}}
	parent.Children = append(parent.Children, n)
	p.nodes[rel] = n
	return n, nil
}

func removeChild(parent, child *Node) {
	for i, c := range parent.Children {
		if c == child {
			parent.Children = append(parent.Children[:i], parent.Children[i+1:]...)
			return
		}
	}
}

// resolveLinks gives each tar hard link the content and metadata of its target, so it is
// stored as a separate file like the target, as upstream does.
func (p *packer) resolveLinks() error {
	for _, l := range p.links {
		t := p.nodes[l.target]
		if t == nil || t.Type != TypeFile {
			return fmt.Errorf("tar: hard link %q to %q: no such regular file earlier in the archive", l.node.Name, l.target)
		}
		name := l.node.Name
		l.node.Entry = t.Entry
		l.node.Name = name
		l.node.Blocks = t.Blocks
		atomic.AddInt64(&p.stats.Files, 1)
	}
	return nil
}

func countNodes(n *Node) int64 {
	c := int64(1)
	for _, ch := range n.Children {
		c += countNodes(ch)
	}
	return c
}
