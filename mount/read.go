package mount

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/zosfs/zosfs-agent/flist"
)

// Read-ahead heuristics.
const (
	// seqSlack: a read that starts within this many bytes of where the furthest read of
	// the file so far ended continues a sequential run. The kernel sends the
	// pieces of a large read (and its own read-ahead) concurrently, so they may arrive
	// slightly out of order; 2 MiB covers two maximal requests.
	seqSlack = 2 * maxRead

	// seqTrigger is how many reads in a row must be sequential (the first read of a
	// file counts if it starts at offset 0) before read-ahead starts. A lone read, or
	// reads hopping around, never trigger it.
	seqTrigger = 2

	// keptBehind is how many blocks before the current read a reader keeps decoded:
	// pieces of the previous block may still arrive late from the kernel.
	keptBehind = 1

	// keptExtra is how many decoded blocks a reader keeps beyond its read-ahead window
	// and the blocks of the reads in progress (random readers re-reading nearby).
	keptExtra = 2

	// failMemory: for this long after a read of a block failed with EIO, reads of that
	// block of the same file fail at once, without a new fetch. The kernel
	// retries a failed read-ahead immediately with a read of its own; without this, a
	// reader would wait twice ReadTimeout for its EIO.
	failMemory = time.Second

	// maxRetries bounds how often a read takes over a block fetch that failed for a
	// reason of someone else's (a read-ahead, another read that was interrupted).
	maxRetries = 2
)

// errMountStopping: a read met the end of the mount (Run's context is done).
var errMountStopping = errors.New("the mount is stopping")

// errBlockLength: the block getter returned a block whose length does not fit the file.
var errBlockLength = fmt.Errorf("%w: block of unexpected length", flist.ErrBlockCorrupt)

// maxIdleReaders bounds how many files keep their read state (decoded blocks, read-ahead
// in flight) while no read of theirs is in progress. The filesystem answers OPEN with
// ENOSYS (see node.Open), so the kernel never says when a file is closed: a file's read
// state lives until it is the least recently used of more than maxIdleReaders idle ones.
// An idle reader holds at most keptBehind+keptExtra+1 blocks plus its read-ahead, which
// PrefetchMemory caps for the whole mount.
const maxIdleReaders = 16

// fileReader is the read state of one file, shared by everyone reading it. It fetches the
// blocks reads need, shares them between the concurrent requests the kernel sends for one
// read, and reads ahead for sequential readers. Its fetches end when it is evicted
// (readers) or the mount stops.
type fileReader struct {
	m      *Mount
	e      flist.Entry
	blocks []flist.Block // exactly the blocks e.Size needs
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	cache    map[int64]*fetch    // by block index: in flight, or done and successful
	reads    int                 // reads so far
	frontier int64               // end offset of the furthest read of the current run
	seqRun   int                 // sequential reads in a row, this one included
	inflight int                 // read-ahead fetches in flight
	failed   map[int64]time.Time // blocks whose read failed with EIO, and when
	released bool

	// Guarded by the mount's readers.mu.
	users   int    // reads in progress
	lastUse uint64 // readers.clock at its last read
}

// readers holds the mount's fileReaders by inode number.
type readers struct {
	mu    sync.Mutex
	byIno map[uint64]*fileReader
	clock uint64
}

// acquire returns the reader of file n, creating it on first use, and counts a read in
// progress: a reader is never evicted during a read. Call release when the read is done.
func (m *Mount) acquireReader(ctx context.Context, n *node) (*fileReader, error) {
	blocks, err := n.fileBlocks(ctx)
	if err != nil {
		return nil, err
	}
	t := &m.readers
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.byIno[n.e.Ino]
	if r == nil {
		r = m.newReader(n.e, blocks)
		if t.byIno == nil {
			t.byIno = map[uint64]*fileReader{}
		}
		t.byIno[n.e.Ino] = r
	}
	r.users++
	t.clock++
	r.lastUse = t.clock
	t.evictLocked()
	return r, nil
}

// releaseReader ends a read begun with acquireReader.
func (m *Mount) releaseReader(r *fileReader) {
	m.readers.mu.Lock()
	r.users--
	m.readers.mu.Unlock()
}

// evictLocked drops the least recently used idle readers while there are more than
// maxIdleReaders readers. t.mu is held.
func (t *readers) evictLocked() {
	for len(t.byIno) > maxIdleReaders {
		var victim *fileReader
		for _, r := range t.byIno {
			if r.users == 0 && (victim == nil || r.lastUse < victim.lastUse) {
				victim = r
			}
		}
		if victim == nil {
			return // every reader is reading
		}
		delete(t.byIno, victim.e.Ino)
		victim.stop()
	}
}

// fetch is one block being fetched, or fetched.
type fetch struct {
	idx     int64
	ahead   bool // started by read-ahead, not by a read that needs it
	charged int64
	done    chan struct{}
	data    []byte // valid once done is closed and err is nil
	err     error
}

func (m *Mount) newReader(e flist.Entry, blocks []flist.Block) *fileReader {
	ctx, cancel := context.WithCancel(m.runCtx)
	return &fileReader{m: m, e: e, blocks: blocks, ctx: ctx, cancel: cancel, cache: map[int64]*fetch{}}
}

// blockLen is the plain length block idx must have: BlockSize but for the last one.
func (h *fileReader) blockLen(idx int64) int64 {
	return min(int64(flist.BlockSize), int64(h.e.Size)-idx*flist.BlockSize)
}

// Read fetches the blocks [off, off+len(dest)) touches (and
// starts read-ahead if the file is read sequentially), waits for them at most
// Config.ReadTimeout, and copies their bytes into dest.
func (h *fileReader) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := int64(h.e.Size)
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), size)
	first, last := off/flist.BlockSize, (end-1)/flist.BlockSize

	// The read's deadline; it also ends when the mount stops.
	rctx, cancel := context.WithTimeout(ctx, h.m.cfg.ReadTimeout)
	defer cancel()
	defer context.AfterFunc(h.ctx, cancel)()

	fetches := make([]*fetch, 0, last-first+1)
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return nil, syscall.EBADF
	}
	for i := first; i <= last; i++ {
		if at, ok := h.failed[i]; ok {
			if time.Since(at) < failMemory {
				h.mu.Unlock()
				h.m.log.Debug("read of a block that just failed", "ino", h.e.Ino, "block", i)
				return nil, syscall.EIO
			}
			delete(h.failed, i)
		}
	}
	for i := first; i <= last; i++ {
		f := h.cache[i]
		if f == nil {
			f = h.startLocked(rctx, i, false)
		}
		fetches = append(fetches, f)
	}
	h.trackLocked(off, end, first, last)
	h.mu.Unlock()

	n := 0
	for k, f := range fetches {
		idx := first + int64(k)
		data, err := h.wait(rctx, f)
		if err != nil {
			errno := h.readFailed(ctx, rctx, idx, err)
			if errno == syscall.EIO {
				h.mu.Lock()
				if h.failed == nil {
					h.failed = map[int64]time.Time{}
				}
				h.failed[idx] = time.Now()
				h.mu.Unlock()
			}
			return nil, errno
		}
		from := int64(0)
		if idx == first {
			from = off - idx*flist.BlockSize
		}
		to := int64(len(data))
		if idx == last {
			to = end - idx*flist.BlockSize
		}
		n += copy(dest[n:], data[from:to])
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// readFailed turns the failure of a read into its errno (through toErrno), and logs it:
// EINTR if the kernel interrupted the request, EIO for everything else — a deadline, a
// block "not found" anywhere, a cancellation that was not this request's own.
func (h *fileReader) readFailed(ctx, rctx context.Context, idx int64, err error) syscall.Errno {
	switch {
	case ctx.Err() != nil:
		// The kernel interrupted the request: the reader got a signal.
		h.m.log.Debug("read interrupted", "ino", h.e.Ino, "block", idx)
		return toErrno(ctx.Err())
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		h.m.log.Warn("read timed out", "ino", h.e.Ino, "name", h.e.Name, "block", idx, "timeout", h.m.cfg.ReadTimeout)
		return toErrno(rctx.Err())
	case h.ctx.Err() != nil:
		return toErrno(errMountStopping)
	}
	h.m.log.Warn("read failed", "ino", h.e.Ino, "name", h.e.Name, "block", idx, "err", err)
	// %v, not %w: what the getter said is no errno of this read.
	return toErrno(fmt.Errorf("block %d: %v", idx, err))
}

// wait waits for f's block, bounded by ctx. A fetch that failed for a reason that is
// not this read's (a read-ahead, another reader's request that was interrupted) is
// retried on this read's own context.
func (h *fileReader) wait(ctx context.Context, f *fetch) ([]byte, error) {
	for try := 0; ; try++ {
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err == nil {
			return f.data, nil
		}
		retry := (f.ahead || errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) &&
			ctx.Err() == nil && try < maxRetries
		if !retry {
			return nil, f.err
		}
		h.mu.Lock()
		if h.released {
			h.mu.Unlock()
			return nil, f.err
		}
		g := h.cache[f.idx]
		if g == nil || g == f {
			g = h.startLocked(ctx, f.idx, false)
		}
		h.mu.Unlock()
		f = g
	}
}

// startLocked starts fetching block idx on ctx (bounded by ReadTimeout) and enters it in
// the cache. A failed fetch removes itself from the cache, so that a later read tries
// again. h.mu is held.
func (h *fileReader) startLocked(ctx context.Context, idx int64, ahead bool) *fetch {
	f := &fetch{idx: idx, ahead: ahead, done: make(chan struct{}), charged: h.blockLen(idx)}
	h.m.prefetchBytes.Add(f.charged)
	if old := h.cache[idx]; old != nil {
		h.dropLocked(old)
	}
	h.cache[idx] = f
	if ahead {
		h.inflight++
	}
	fctx, cancel := context.WithTimeout(ctx, h.m.cfg.ReadTimeout)
	block := h.blocks[idx]
	want := h.blockLen(idx)
	h.m.active.Add(1)
	go func() {
		defer h.m.active.Add(-1)
		defer cancel()
		data, err := h.m.cfg.Blocks.GetBlock(fctx, block)
		if err == nil && int64(len(data)) != want {
			err = fmt.Errorf("%w: inode %d block %d (%x): %d bytes, want %d", errBlockLength, h.e.Ino, idx, block.ID, len(data), want)
			data = nil
		}
		if err != nil {
			data = nil
			if ahead && !errors.Is(err, context.Canceled) {
				h.m.log.Debug("read-ahead failed", "ino", h.e.Ino, "block", idx, "err", err)
			}
		}
		h.mu.Lock()
		f.data, f.err = data, err
		if ahead {
			h.inflight--
		}
		if err != nil && h.cache[idx] == f {
			h.dropLocked(f)
		}
		h.mu.Unlock()
		close(f.done)
	}()
	return f
}

// dropLocked removes f from the cache (if it is there) and releases its charge.
func (h *fileReader) dropLocked(f *fetch) {
	if h.cache[f.idx] == f {
		delete(h.cache, f.idx)
	}
	if f.charged != 0 {
		h.m.prefetchBytes.Add(-f.charged)
		f.charged = 0
	}
}

// trackLocked updates the access pattern with a read of [off, end) touching blocks
// first..last, starts read-ahead when the pattern is sequential, and trims the cache.
// h.mu is held.
func (h *fileReader) trackLocked(off, end, first, last int64) {
	var seq bool
	if h.reads == 0 {
		seq = off == 0
	} else {
		seq = off >= h.frontier-seqSlack && off <= h.frontier+seqSlack
	}
	h.reads++
	if seq {
		h.seqRun++
		h.frontier = max(h.frontier, end)
	} else {
		h.seqRun = 0
		h.frontier = end
	}

	window := int64(0)
	if h.seqRun >= seqTrigger {
		window = int64(h.m.cfg.Prefetch)
	}
	nblocks := int64(len(h.blocks))
	for i := last + 1; i <= last+window && i < nblocks; i++ {
		if h.cache[i] != nil {
			continue
		}
		if h.inflight >= h.m.cfg.Prefetch || h.m.prefetchBytes.Load()+h.blockLen(i) > h.m.cfg.PrefetchMemory {
			break
		}
		h.startLocked(h.ctx, i, true)
	}

	// Keep the blocks from keptBehind before this read to the end of the window, and
	// at most keptExtra others (the ones nearest this read).
	lo, hi := first-keptBehind, last+window
	var others []*fetch
	for _, f := range h.cache {
		if f.idx < lo || f.idx > hi {
			others = append(others, f)
		}
	}
	for len(others) > keptExtra {
		far := 0
		for k, f := range others {
			if distance(f.idx, first, last) > distance(others[far].idx, first, last) {
				far = k
			}
		}
		h.dropLocked(others[far])
		others = append(others[:far], others[far+1:]...)
	}
}

func distance(idx, first, last int64) int64 {
	if idx < first {
		return first - idx
	}
	return idx - last
}

// stop ends the reader: its fetches stop and its blocks are freed.
func (h *fileReader) stop() {
	h.cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	for _, f := range h.cache {
		h.dropLocked(f)
	}
}
