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
// An idle reader holds at most the blocks of its last read, keptBehind before them and
// keptExtra others, plus its read-ahead window, which PrefetchMemory caps for the whole
// mount.
const maxIdleReaders = 16

// fileReader is the read state of one file, shared by everyone reading it. It fetches the
// blocks reads need, shares them between the concurrent requests the kernel sends for one
// read, and reads ahead for sequential readers. Its fetches end when it is evicted
// (readers) or the mount stops.
type fileReader struct {
	m      *Mount
	e      flist.Entry
	blocks []flist.Block   // exactly the blocks e.Size needs
	ctx    context.Context // of read-ahead; bounds every fetch; ends with stop or the mount
	cancel context.CancelFunc

	mu       sync.Mutex
	cache    map[int64]*fetch    // by block index: in flight, or done and successful
	reads    int                 // reads so far
	frontier int64               // end offset of the furthest read of the current run
	seqRun   int                 // sequential reads in a row, this one included
	inflight int                 // read-ahead fetches in flight
	failed   map[int64]time.Time // blocks whose read failed with EIO, and when
	released bool                // stopped: no fetch starts any more

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

// acquireReader returns the reader of file n, creating it on first use, and counts a
// read in progress: a reader is never evicted during a read. Call releaseReader when
// the read is done.
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
	ahead   bool  // started by read-ahead, not by a read that needs it
	charged int64 // bytes counted in the mount's prefetchBytes until dropped
	done    chan struct{}
	data    []byte // valid once done is closed and err is nil
	err     error
}

// newReader returns the read state of file e made of blocks; its fetches end when the
// mount stops at the latest.
func (m *Mount) newReader(e flist.Entry, blocks []flist.Block) *fileReader {
	ctx, cancel := context.WithCancel(m.runCtx)
	return &fileReader{m: m, e: e, blocks: blocks, ctx: ctx, cancel: cancel, cache: map[int64]*fetch{}}
}

// blockLen is the plain length block idx must have: BlockSize but for the last one.
func (r *fileReader) blockLen(idx int64) int64 {
	return min(int64(flist.BlockSize), int64(r.e.Size)-idx*flist.BlockSize)
}

// span is the part of the file one read covers: bytes [off, end), in blocks first..last.
type span struct {
	off, end    int64
	first, last int64
}

// spanOf is the span of a read of n bytes at off, cut at the end of the file. off is
// within the file and n > 0.
func (r *fileReader) spanOf(off int64, n int) span {
	end := min(off+int64(n), int64(r.e.Size))
	return span{off: off, end: end, first: off / flist.BlockSize, last: (end - 1) / flist.BlockSize}
}

// part is the piece of block idx's data (one of s's blocks) that s covers.
func (s span) part(idx int64, data []byte) []byte {
	from, to := int64(0), int64(len(data))
	if idx == s.first {
		from = s.off - idx*flist.BlockSize
	}
	if idx == s.last {
		to = s.end - idx*flist.BlockSize
	}
	return data[from:to]
}

// Read reads the bytes [off, off+len(dest)) of the file into dest: it finds or starts
// the fetches of the blocks they are in (and read-ahead if the file is read
// sequentially), waits for them at most Config.ReadTimeout, and copies their bytes out.
func (r *fileReader) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(r.e.Size) || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	s := r.spanOf(off, len(dest))

	// The read's deadline; it also ends when the mount stops.
	rctx, cancel := context.WithTimeout(ctx, r.m.cfg.ReadTimeout)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()

	fetches, errno := r.begin(rctx, s)
	if errno != 0 {
		return nil, errno
	}
	n, errno := r.copyOut(ctx, rctx, dest, s, fetches)
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// begin returns the fetches of s's blocks, in order, starting those not cached on rctx,
// and does the read-ahead bookkeeping of the read. It fails at once with EBADF if the
// reader was stopped, and with EIO if one of the blocks just failed (failMemory).
func (r *fileReader) begin(rctx context.Context, s span) ([]*fetch, syscall.Errno) {
	r.mu.Lock()
	if r.released {
		r.mu.Unlock()
		return nil, syscall.EBADF
	}
	if idx, ok := r.recentFailureLocked(s); ok {
		r.mu.Unlock()
		r.m.log.Debug("read of a block that just failed", "ino", r.e.Ino, "block", idx)
		return nil, syscall.EIO
	}
	fetches := r.fetchesLocked(rctx, s)
	r.trackLocked(s)
	r.mu.Unlock()
	return fetches, 0
}

// fetchesLocked returns the fetches of s's blocks, in order: the cached ones, and new
// ones on rctx for the others. r.mu is held.
func (r *fileReader) fetchesLocked(rctx context.Context, s span) []*fetch {
	fetches := make([]*fetch, 0, s.last-s.first+1)
	for i := s.first; i <= s.last; i++ {
		f := r.cache[i]
		if f == nil {
			f = r.startLocked(rctx, i, false)
		}
		fetches = append(fetches, f)
	}
	return fetches
}

// recentFailureLocked returns the first of s's blocks whose read failed with EIO less
// than failMemory ago, and forgets older failures of s's blocks. r.mu is held.
func (r *fileReader) recentFailureLocked(s span) (int64, bool) {
	for i := s.first; i <= s.last; i++ {
		if at, ok := r.failed[i]; ok {
			if time.Since(at) < failMemory {
				return i, true
			}
			delete(r.failed, i)
		}
	}
	return 0, false
}

// copyOut waits for each of s's blocks (fetches, in order) and copies the part s covers
// into dest; it returns how many bytes it copied. The first block that cannot be had
// fails the read (readFailed), and an EIO is remembered for failMemory.
func (r *fileReader) copyOut(ctx, rctx context.Context, dest []byte, s span, fetches []*fetch) (int, syscall.Errno) {
	n := 0
	for k, f := range fetches {
		idx := s.first + int64(k)
		data, err := r.wait(rctx, f)
		if err != nil {
			errno := r.readFailed(ctx, rctx, idx, err)
			if errno == syscall.EIO {
				r.rememberFailure(idx)
			}
			return 0, errno
		}
		n += copy(dest[n:], s.part(idx, data))
	}
	return n, 0
}

// rememberFailure notes that a read of block idx just failed with EIO.
func (r *fileReader) rememberFailure(idx int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil {
		r.failed = map[int64]time.Time{}
	}
	r.failed[idx] = time.Now()
}

// readFailed turns the failure of a read into its errno (through toErrno), and logs it:
// EINTR if the kernel interrupted the request, EIO for everything else — a deadline, a
// block "not found" anywhere, a cancellation that was not this request's own.
func (r *fileReader) readFailed(ctx, rctx context.Context, idx int64, err error) syscall.Errno {
	switch {
	case ctx.Err() != nil:
		// The kernel interrupted the request: the reader got a signal.
		r.m.log.Debug("read interrupted", "ino", r.e.Ino, "block", idx)
		return toErrno(ctx.Err())
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		r.m.log.Warn("read timed out", "ino", r.e.Ino, "name", r.e.Name, "block", idx, "timeout", r.m.cfg.ReadTimeout)
		return toErrno(rctx.Err())
	case r.ctx.Err() != nil:
		return toErrno(errMountStopping)
	}
	r.m.log.Warn("read failed", "ino", r.e.Ino, "name", r.e.Name, "block", idx, "err", err)
	// %v, not %w: what the getter said is no errno of this read.
	return toErrno(fmt.Errorf("block %d: %v", idx, err))
}

// wait waits for f's block, bounded by ctx. A fetch that failed for a reason that is
// not this read's (a read-ahead, another reader's request that was interrupted) is
// retried on this read's own context.
func (r *fileReader) wait(ctx context.Context, f *fetch) ([]byte, error) {
	for try := 0; ; try++ {
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err == nil {
			return f.data, nil
		}
		if !f.retryable() || ctx.Err() != nil || try >= maxRetries {
			return nil, f.err
		}
		g, ok := r.refetch(ctx, f)
		if !ok {
			return nil, f.err
		}
		f = g
	}
}

// retryable reports whether f, done, failed for a reason that may not be the block's:
// it was a read-ahead, or its context ended (someone else's request was interrupted or
// timed out).
func (f *fetch) retryable() bool {
	return f.ahead || errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)
}

// refetch returns the fetch of f's block to wait for instead of f, which failed: the one
// another read started since, or a new one on ctx. false if the reader was stopped.
func (r *fileReader) refetch(ctx context.Context, f *fetch) (*fetch, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return nil, false
	}
	g := r.cache[f.idx]
	if g == nil || g == f {
		g = r.startLocked(ctx, f.idx, false)
	}
	return g, true
}

// startLocked starts fetching block idx on ctx (bounded by ReadTimeout) and enters it in
// the cache. A failed fetch removes itself from the cache, so that a later read tries
// again. r.mu is held.
func (r *fileReader) startLocked(ctx context.Context, idx int64, ahead bool) *fetch {
	f := &fetch{idx: idx, ahead: ahead, done: make(chan struct{}), charged: r.blockLen(idx)}
	r.m.prefetchBytes.Add(f.charged)
	if old := r.cache[idx]; old != nil {
		r.dropLocked(old)
	}
	r.cache[idx] = f
	if ahead {
		r.inflight++
	}
	fctx, cancel := context.WithTimeout(ctx, r.m.cfg.ReadTimeout)
	r.m.active.Add(1)
	go func() {
		defer r.m.active.Add(-1)
		defer cancel()
		data, err := r.getBlock(fctx, idx)
		r.finish(f, data, err)
	}()
	return f
}

// getBlock gets the plain content of block idx from the block getter and checks its
// length: a block of the wrong length is an error, never part of the file.
func (r *fileReader) getBlock(ctx context.Context, idx int64) ([]byte, error) {
	block := r.blocks[idx]
	want := r.blockLen(idx)
	data, err := r.m.cfg.Blocks.GetBlock(ctx, block)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != want {
		return nil, fmt.Errorf("%w: inode %d block %d (%x): %d bytes, want %d", errBlockLength, r.e.Ino, idx, block.ID, len(data), want)
	}
	return data, nil
}

// finish ends fetch f with its outcome and wakes its waiters. A failed fetch leaves the
// cache.
func (r *fileReader) finish(f *fetch, data []byte, err error) {
	if err != nil && f.ahead && !errors.Is(err, context.Canceled) {
		r.m.log.Debug("read-ahead failed", "ino", r.e.Ino, "block", f.idx, "err", err)
	}
	r.mu.Lock()
	f.data, f.err = data, err
	if f.ahead {
		r.inflight--
	}
	if err != nil && r.cache[f.idx] == f {
		r.dropLocked(f)
	}
	r.mu.Unlock()
	close(f.done)
}

// dropLocked removes f from the cache (if it is there) and releases its charge.
func (r *fileReader) dropLocked(f *fetch) {
	if r.cache[f.idx] == f {
		delete(r.cache, f.idx)
	}
	if f.charged != 0 {
		r.m.prefetchBytes.Add(-f.charged)
		f.charged = 0
	}
}

// trackLocked is the read-ahead bookkeeping of a read of s: it updates the access
// pattern, starts read-ahead when the pattern is sequential, and trims the cache.
// r.mu is held.
func (r *fileReader) trackLocked(s span) {
	window := r.observeLocked(s)
	r.readAheadLocked(s, window)
	r.trimLocked(s, window)
}

// observeLocked counts a read of s in the access pattern and returns the read-ahead
// window, in blocks past s: Config.Prefetch once seqTrigger reads in a row were
// sequential, else 0. r.mu is held.
func (r *fileReader) observeLocked(s span) int64 {
	var seq bool
	if r.reads == 0 {
		seq = s.off == 0
	} else {
		seq = s.off >= r.frontier-seqSlack && s.off <= r.frontier+seqSlack
	}
	r.reads++
	if seq {
		r.seqRun++
		r.frontier = max(r.frontier, s.end)
	} else {
		r.seqRun = 0
		r.frontier = s.end
	}
	if r.seqRun >= seqTrigger {
		return int64(r.m.cfg.Prefetch)
	}
	return 0
}

// readAheadLocked starts fetching the blocks of the window past s that are not cached,
// on the reader's own context, while fewer than Config.Prefetch read-ahead fetches are
// in flight and the mount's decoded bytes stay within Config.PrefetchMemory. r.mu is
// held.
func (r *fileReader) readAheadLocked(s span, window int64) {
	nblocks := int64(len(r.blocks))
	for i := s.last + 1; i <= s.last+window && i < nblocks; i++ {
		if r.cache[i] != nil {
			continue
		}
		if r.inflight >= r.m.cfg.Prefetch || r.m.prefetchBytes.Load()+r.blockLen(i) > r.m.cfg.PrefetchMemory {
			break
		}
		r.startLocked(r.ctx, i, true)
	}
}

// trimLocked keeps the blocks from keptBehind before s to the end of the window, and at
// most keptExtra others (the ones nearest s); it drops the rest. r.mu is held.
func (r *fileReader) trimLocked(s span, window int64) {
	lo, hi := s.first-keptBehind, s.last+window
	var others []*fetch
	for _, f := range r.cache {
		if f.idx < lo || f.idx > hi {
			others = append(others, f)
		}
	}
	for len(others) > keptExtra {
		far := 0
		for k, f := range others {
			if s.distance(f.idx) > s.distance(others[far].idx) {
				far = k
			}
		}
		r.dropLocked(others[far])
		others = append(others[:far], others[far+1:]...)
	}
}

// distance is how many blocks block idx, outside s, is away from s.
func (s span) distance(idx int64) int64 {
	if idx < s.first {
		return s.first - idx
	}
	return idx - s.last
}

// stop ends the reader: its fetches stop and its blocks are freed.
func (r *fileReader) stop() {
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = true
	for _, f := range r.cache {
		r.dropLocked(f)
	}
}
