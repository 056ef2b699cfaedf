// Package cache is the daemon's verified block cache on local disk.
//
// The cache keeps blocks as they were fetched: the stored bytes (compressed and
// encrypted) exactly as a store or a peer served them, so the daemon can serve them to its
// neighbours unchanged. A block is checked against its id (flist.VerifyBlock) before it is
// stored and, unless Config.NoVerifyOnRead is set, again at its first read after the
// cache is opened (the blocks left by a previous run — written without fsync, then
// perhaps a power loss — are checked before they are served); after that, reads trust
// what was checked. What Get returns hashed to the id asked for, once, in this process.
//
// On disk, Config.Dir holds:
//
//	index/               a goleveldb database: the size of every cached block, its
//	                     last-access sequence, and the pins
//	blocks/<hh>/<hex>    one file per block, named by its id in lower-case hex; hh is the
//	                     first two hex digits
//
// Crash safety. A block file only ever appears complete under its name (it is written to
// an unnamed O_TMPFILE inode that is then linked into place, or, where the filesystem
// lacks O_TMPFILE, to a ".tmp-" file that is then renamed), and it is recorded in the
// index only after that. Evicting removes the index record before the file. Open
// reconciles the two: it removes temporary files, files the index does not list, and
// files whose size differs from the index, and drops index records whose file is
// missing. So a daemon killed at any point never serves a partial block. Writes are not
// fsynced one by one (a lost block is fetched again); after a power failure a file may
// keep its size but not its bytes, which the read verification catches: the block is
// then dropped and Get reports it missing.
//
// Quota and pins. Config.MaxBytes bounds the bytes of all cached blocks. A Put that would
// exceed it first evicts the least recently used unpinned blocks (recency is kept in
// memory and persisted in batches and on Close). Blocks of pulled flists are pinned by an
// owner (the flist's CID): pinned blocks are never evicted, pins may name blocks not yet
// cached (they are pinned as they arrive), and pins persist across restarts. When only
// pinned blocks are left to evict, Put fails with ErrFull. With no Config.MaxBytes, the
// bound is taken from the disk at Open (80 % of its free space plus the cache's bytes).
//
// Disk space. A full data disk must not take the node down. Put keeps Config.MinFree
// free on the cache's filesystem (statfs, measured at most every second or every 256
// Puts, the cache's own writes counted in between), evicting unpinned blocks for it, and
// fails with ErrDiskFull (an ErrFull) when it cannot, as it does when a write finds no
// space. When the disk is too full at Open for the index to be written, the cache opens
// read-only: it serves the blocks it holds, and Put, Pin and Unpin fail with ErrReadOnly
// (an ErrFull) until it is opened again with room.
//
// A Cache is safe for concurrent use. It has the methods of a store.Store (Get, Has, Put,
// String, Close), but its errors wrap this package's sentinels (ErrNotFound, ErrFull,
// ErrClosed) and flist.ErrBlockCorrupt, not those of package store: callers map them.
package cache

import (
	"github.com/zosfs/zosfs-agent/internal/atomicfile"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/syndtr/goleveldb/leveldb"

	"github.com/zosfs/zosfs-agent/flist"
)

// Sentinel errors; test them with errors.Is.
var (
	// ErrNotFound: the cache does not hold the block (or held a copy that failed
	// verification and has just been dropped): fetch it elsewhere.
	ErrNotFound = flist.NotFound("block not in cache")
	// ErrFull: a block does not fit under Config.MaxBytes even after evicting every
	// unpinned block. ErrDiskFull and ErrReadOnly wrap it.
	ErrFull = errors.New("cache full of pinned blocks")
	// ErrClosed: the cache has been closed.
	ErrClosed = errors.New("cache closed")
)

// MaxBlockSize bounds the size of one block the cache accepts: the largest stored block
// flist's decoders accept (flist.MaxBlockStored).
const MaxBlockSize = flist.MaxBlockStored

// Tuning.
const (
	// recencyBatch is how many blocks' access sequences Get collects in memory before it
	// writes them to the index in one batch. A crash loses at most this many updates,
	// which only makes those blocks look older than they are.
	recencyBatch = 1024
	// maxOwnerLen bounds the length of a pin owner (an flist CID is about 60 bytes).
	maxOwnerLen = 1024
)

// Config configures a Cache. The zero value of every field but Dir is a usable default.
type Config struct {
	// Dir is the cache's directory, created if missing. Required.
	Dir string
	// MaxBytes bounds the total size of the cached blocks, in bytes. Pinned blocks count
	// towards it but are never evicted. 0 means a bound taken from the disk at Open: 80 %
	// of the free space of the cache's filesystem plus what the cache already holds (so
	// that a cache alone on its disk does not fill it); Stats().Max reports it. A negative
	// value means no bound (MinFree still applies).
	MaxBytes int64
	// MinFree is the free space, in bytes, that Put leaves on the cache's filesystem: a
	// Put that would take the free space below it first evicts least recently used
	// unpinned blocks, and fails with ErrDiskFull (which wraps ErrFull) when that cannot
	// be enough. The free space is measured (statfs) at most every second or every 256
	// Puts, the cache's own writes and evictions being counted in between. 0 means the
	// smaller of 1 GiB and 5 % of the filesystem; a negative value turns the reserve off.
	MinFree int64
	// NoVerifyOnRead skips hashing a block's bytes on Get (the size is still checked).
	// By default Get verifies a block against its id at its first read since the cache
	// was opened — about 0.5 ms per 512 KiB block — because nothing else catches a block
	// damaged on disk (power loss after an unsynced write, tampering while the daemon was
	// down) before it is served to a neighbour, which would then drop this node as a bad
	// peer; a damaged block is dropped and refetched instead. Blocks stored or verified
	// since the cache was opened are not hashed again: serving a block to a neighbour is
	// then a file read, not a hash (which halved the rate of a pull from a neighbour).
	NoVerifyOnRead bool
	// OnStore, if set, is called with the id of each block the cache newly stores.
	OnStore func(id flist.BlockID)
	// OnEvict, if set, is called with the id of each block that leaves the cache:
	// evicted for room, dropped as damaged, or found missing. Open calls neither hook
	// for what it reconciles (nothing has been announced yet then: enumerate with Range).
	//
	// Both hooks are called one at a time, in the order of the events, with no lock of
	// the cache held, on the goroutine of some cache call (possibly after the call that
	// caused the event has returned, never after Close). They may call the cache, except
	// Close, and should return quickly. The id is theirs to keep.
	OnEvict func(id flist.BlockID)
	// Logger receives the cache's logs, tagged component=cache; nil means slog.Default().
	Logger *slog.Logger

	// verify checks a block against its id; nil means flist.VerifyBlock. Tests replace
	// it (export_test.go) to run the store conformance suite, whose blocks are random.
	verify func(id flist.BlockID, data []byte) error
}

// Stats is a snapshot of the cache's use.
type Stats struct {
	Bytes        int64 // total size of the cached blocks
	Max          int64 // the bound in force (Config.MaxBytes or the one taken from the disk); 0 means no bound
	Blocks       int64 // number of cached blocks
	Pinned       int64 // bytes of the cached blocks that are pinned
	PinnedBlocks int64 // number of cached blocks that are pinned
	MinFree      int64 // the free-space reserve in force (Config.MinFree or its default); 0 means none
	DiskFree     int64 // bytes available on the cache's filesystem (measured at most statfsEvery ago, plus the cache's own changes since)
	ReadOnly     bool  // the disk was full at Open: the cache serves what it holds and stores nothing (ErrReadOnly)
}

// Cache is a verified block cache on local disk; see the package documentation.
type Cache struct {
	cfg       Config
	dir       string // absolute Config.Dir
	blocksDir string
	log       *slog.Logger
	db        *leveldb.DB
	verify    func(id flist.BlockID, data []byte) error
	dirMade   [256]atomic.Bool // blocks/<hh> directories known to exist, by id[0]
	readOnly  bool             // the index was opened read-only (the disk was full): see ErrReadOnly
	maxBytes  int64            // the quota in force (see Config.MaxBytes); 0: none
	minFree   int64            // the free-space reserve in force (see Config.MinFree); 0: none

	pinMu sync.Mutex // serialises Pin and Unpin (index check-then-write, then memory)

	mu       sync.Mutex
	closed   bool
	ops      sync.WaitGroup                  // calls in progress; Close waits for them
	entries  map[flist.BlockID]*entry        // cached blocks by id; never busy
	lru      lruHeap                         // the unpinned cached blocks, least recent first
	lruBytes int64                           // bytes of the blocks in lru
	busy     map[flist.BlockID]chan struct{} // ids being written or removed; closed when done
	space    chan struct{}                   // closed (and replaced) when a reservation ends
	pins     map[flist.BlockID]int32         // id -> number of owners pinning it
	owners   map[string]int                  // owner -> number of ids it pins
	bytes    int64                           // bytes of the cached blocks
	reserved int64                           // bytes reserved by Puts in progress
	seq      uint64                          // last access sequence handed out
	dirty    map[flist.BlockID]uint64        // access sequences not yet in the index
	flushing bool                            // a goroutine is writing a batch of dirty
	events   []event                         // hook calls not yet made
	draining bool                            // a goroutine is making the hook calls
	disk     diskSpace                       // the filesystem's free space
}

// entry is a cached block.
type entry struct {
	id   flist.BlockID
	size int64
	seq  uint64 // last access
	idx  int    // position in Cache.lru, -1 when pinned
	// verified: the block's bytes hashed to its id since the cache was opened (when
	// stored, or at a read), so Get need not hash them again.
	verified bool
}

// event is a pending hook call.
type event struct {
	stored bool // OnStore, else OnEvict
	id     flist.BlockID
}

// String names the cache: "cache:" and its directory.
func (c *Cache) String() string { return "cache:" + c.dir }

// path returns the file of block id.
func (c *Cache) path(id flist.BlockID) string {
	h := id.String()
	return filepath.Join(c.blocksDir, h[:2], h)
}

// enter checks ctx and registers a call in progress; the caller must call c.ops.Done.
func (c *Cache) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.ops.Add(1)
	return nil
}

// begin is enter for a call on block id; errors are wrapped with op and the id.
func (c *Cache) begin(ctx context.Context, op string, id flist.BlockID) error {
	if !id.Valid() {
		return fmt.Errorf("cache: %s: no block id", op)
	}
	if err := c.enter(ctx); err != nil {
		return fmt.Errorf("cache: %s %x: %w", op, id, err)
	}
	return nil
}

// Has reports whether the cache holds block id. It does not read or verify the block,
// nor count as a use of it.
func (c *Cache) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	if err := c.begin(ctx, "has", id); err != nil {
		return false, err
	}
	defer c.ops.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[id] != nil, nil
}

// Get returns the stored bytes of block id, or an error wrapping ErrNotFound when the
// cache does not hold it. A block whose file turns out damaged (wrong size, or, unless
// NoVerifyOnRead, bytes that do not hash to id) is dropped from the cache and reported
// as not found, so that the caller fetches it again. Get counts as a use for the LRU.
func (c *Cache) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if err := c.begin(ctx, "get", id); err != nil {
		return nil, err
	}
	defer c.ops.Done()
	c.mu.Lock()
	e := c.entries[id]
	verified := false
	if e != nil {
		c.touchLocked(e)
		verified = e.verified
	}
	dirty := c.takeDirtyLocked(false)
	c.mu.Unlock()
	c.flushRecency(dirty)
	if e == nil {
		return nil, fmt.Errorf("cache: get %x: %w", id, ErrNotFound)
	}

	data, err := readBlock(c.path(id), e.size)
	if err == nil && !verified && !c.cfg.NoVerifyOnRead {
		if err = c.verify(id, data); err == nil {
			c.mu.Lock()
			e.verified = true
			c.mu.Unlock()
		}
	}
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, os.ErrNotExist):
		// Evicted since we looked (then drop does nothing), or removed behind our back.
		if c.drop(e) {
			c.log.Warn("block file missing; dropped", "id", id.String())
		}
		return nil, fmt.Errorf("cache: get %x: %w", id, ErrNotFound)
	case errors.Is(err, flist.ErrBlockCorrupt):
		if c.drop(e) {
			c.log.Warn("damaged block dropped", "id", id.String(), "err", err)
		}
		return nil, fmt.Errorf("cache: get %x: %w (damaged copy dropped: %v)", id, ErrNotFound, err)
	}
	return nil, fmt.Errorf("cache: get %x: %w", id, err)
}

// Put verifies data against id and stores it, unless the cache holds it already (then
// it only counts as a use). A block that does not match its id is refused with an error
// wrapping flist.ErrBlockCorrupt, and nothing is written. To make room under MaxBytes,
// Put evicts least recently used unpinned blocks; when that cannot be enough it fails
// with ErrFull and evicts nothing. Concurrent Puts of one block write it once.
func (c *Cache) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	return c.put(ctx, id, data, true)
}

// PutVerified is Put for a caller that has just checked data against id itself (with
// flist.VerifyBlock): it spares hashing the block a second time.
func (c *Cache) PutVerified(ctx context.Context, id flist.BlockID, data []byte) error {
	return c.put(ctx, id, data, false)
}

func (c *Cache) put(ctx context.Context, id flist.BlockID, data []byte, verify bool) error {
	if err := c.begin(ctx, "put", id); err != nil {
		return err
	}
	defer c.ops.Done()
	if c.readOnly {
		return fmt.Errorf("cache: put %x: %w", id, ErrReadOnly)
	}
	if err := c.checkBlock(id, data, verify); err != nil {
		return fmt.Errorf("cache: put %x: %w", id, err)
	}
	c.refreshFree(true)
	r, err := c.reserve(ctx, id, int64(len(data)))
	if err != nil {
		return fmt.Errorf("cache: put %x: %w", id, err)
	}
	if r == nil {
		return nil // cached already
	}
	// The victims' files go before ours is written: the disk never holds more than
	// MaxBytes of blocks (but for files still open by readers).
	c.forget(r.victims)
	err = c.diskError(c.writeBlock(id, data, r.seq))
	c.settle(r, err)
	if err != nil {
		return fmt.Errorf("cache: put %x: %w", id, err)
	}
	return nil
}

// checkBlock refuses, before anything is reserved or written, a block that cannot be
// stored: larger than any block, or (when verify is set, or the id is malformed) not
// matching its id.
func (c *Cache) checkBlock(id flist.BlockID, data []byte, verify bool) error {
	if len(data) > MaxBlockSize {
		return fmt.Errorf("%w: %d bytes, more than any block (%d)", flist.ErrBlockCorrupt, len(data), MaxBlockSize)
	}
	if verify {
		return c.verify(id, data)
	}
	return nil
}

// reservation is what a Put holds between reserve and settle: its block's id marked
// busy, room for its bytes, the access sequence of the block to be, and the blocks
// evicted for it (to forget before the block is written).
type reservation struct {
	key     flist.BlockID
	size    int64
	seq     uint64
	done    chan struct{} // c.busy[key], closed by settle
	victims []*entry
}

// reserve makes a Put's reservation, or returns nil when the cache holds the block
// already (which then counts as a use). It waits for the calls that write or remove the
// same block (concurrent Puts of one block write it once), and for the Puts in progress
// whose blocks, once written, can be evicted to make room.
func (c *Cache) reserve(ctx context.Context, key flist.BlockID, size int64) (*reservation, error) {
	for {
		c.mu.Lock()
		r, wait, err := c.tryReserveLocked(key, size)
		c.mu.Unlock()
		if wait == nil {
			return r, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tryReserveLocked is one attempt of reserve: it returns the reservation, nil when the
// block is cached, a channel to wait on before trying again, or an error wrapping ErrFull.
func (c *Cache) tryReserveLocked(key flist.BlockID, size int64) (*reservation, chan struct{}, error) {
	if e := c.entries[key]; e != nil {
		c.touchLocked(e)
		return nil, nil, nil
	}
	if wait := c.busy[key]; wait != nil { // written or removed by another call: wait, then look again
		return nil, wait, nil
	}
	victims, wait, err := c.makeRoomLocked(size)
	if err != nil || wait != nil {
		return nil, wait, err
	}
	r := &reservation{key: key, size: size, done: make(chan struct{}), victims: victims}
	c.busy[key] = r.done
	c.reserved += size
	c.seq++
	r.seq = c.seq
	return r, nil, nil
}

// settle ends a reservation once the block's write is over: it releases the id and the
// room, and, if the write succeeded (err nil), enters the block in memory (evictable
// unless pinned) and reports it to OnStore.
func (c *Cache) settle(r *reservation, err error) {
	c.mu.Lock()
	c.reserved -= r.size
	c.spaceChangedLocked()
	delete(c.busy, r.key)
	close(r.done)
	drain := false
	if err == nil {
		e := &entry{id: r.key, size: r.size, seq: r.seq, idx: -1, verified: true}
		c.entries[r.key] = e
		c.bytes += r.size
		c.disk.delta += r.size
		if c.pins[r.key] == 0 {
			c.lruPush(e)
		}
		drain = c.queueLocked(true, r.key)
	}
	c.mu.Unlock()
	if drain {
		c.drain()
	}
}

// makeRoomLocked makes room for size more bytes under MaxBytes and above MinFree. It
// returns the blocks it detached (the caller must forget them), or a channel to wait on
// when blocks being written will be evictable once written, or an error wrapping ErrFull
// (ErrDiskFull when it is the disk that lacks room) when evicting every unpinned block
// would not be enough (then it detaches nothing).
func (c *Cache) makeRoomLocked(size int64) ([]*entry, chan struct{}, error) {
	limit := c.maxBytes
	if limit > 0 && size > limit {
		return nil, nil, fmt.Errorf("%w: block of %d bytes is larger than the cache (%d)", ErrFull, size, limit)
	}
	var over int64 // bytes of blocks to evict
	if limit > 0 {
		over = c.bytes + c.reserved + size - limit
	}
	diskOver := c.diskOverLocked(size)
	over = max(over, diskOver)
	if over <= 0 {
		return nil, nil, nil
	}
	if over > c.lruBytes {
		if over <= c.lruBytes+c.reserved {
			return nil, c.space, nil
		}
		if over == diskOver {
			return nil, nil, fmt.Errorf("%w: %d bytes free on the cache's filesystem, %d to keep free (MinFree), %d bytes cached, %d of them pinned",
				ErrDiskFull, c.freeLocked(), c.minFree, c.bytes, c.bytes-c.lruBytes)
		}
		return nil, nil, fmt.Errorf("%w: %d bytes cached, %d of them pinned, max %d", ErrFull, c.bytes, c.bytes-c.lruBytes, limit)
	}
	var victims []*entry
	for over > 0 {
		e := c.lru[0]
		c.detachLocked(e)
		over -= e.size
		victims = append(victims, e)
	}
	return victims, nil, nil
}

// spaceChangedLocked wakes the Puts waiting for reservations to end.
func (c *Cache) spaceChangedLocked() {
	close(c.space)
	c.space = make(chan struct{})
}

// detachLocked removes e from memory and marks its id busy until forget is done with it.
func (c *Cache) detachLocked(e *entry) {
	delete(c.entries, e.id)
	if e.idx >= 0 {
		c.lruRemove(e)
	}
	c.bytes -= e.size
	c.disk.delta -= e.size // counted as free already: forget removes the file
	delete(c.dirty, e.id)
	c.busy[e.id] = make(chan struct{})
}

// forget removes detached blocks from the index, then from the disk, releases their ids
// and reports them to OnEvict.
func (c *Cache) forget(victims []*entry) {
	if len(victims) == 0 {
		return
	}
	c.removeBlocks(victims)
	c.mu.Lock()
	drain := false
	for _, e := range victims {
		close(c.busy[e.id])
		delete(c.busy, e.id)
		drain = c.queueLocked(false, e.id) || drain
	}
	c.mu.Unlock()
	if drain {
		c.drain()
	}
}

// removeBlocks deletes blocks' index records, then their files. A failure is logged: a
// record without its file, or a file without its record, is cleaned up by the next Open.
func (c *Cache) removeBlocks(victims []*entry) {
	if !c.readOnly { // else the records stay: the next Open drops those whose file is missing
		b := new(leveldb.Batch)
		for _, e := range victims {
			b.Delete(blockKey(e.id))
			b.Delete(recencyKey(e.id))
		}
		if err := c.db.Write(b, nil); err != nil {
			c.log.Warn("removing blocks from the index", "blocks", len(victims), "err", err)
		}
	}
	for _, e := range victims {
		if err := os.Remove(c.path(e.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("removing block file", "id", e.id.String(), "err", err)
		}
	}
}

// drop removes e from the cache if it is still the cached copy of its block, and reports
// whether it did.
func (c *Cache) drop(e *entry) bool {
	c.mu.Lock()
	if c.entries[e.id] != e {
		c.mu.Unlock()
		return false
	}
	c.detachLocked(e)
	c.mu.Unlock()
	c.forget([]*entry{e})
	return true
}

// touchLocked records a use of e.
func (c *Cache) touchLocked(e *entry) {
	c.seq++
	e.seq = c.seq
	if e.idx >= 0 {
		c.lruFix(e)
	}
	if !c.readOnly { // a read-only index keeps the recency it had
		c.dirty[e.id] = e.seq
	}
}

// takeDirtyLocked hands over the access sequences to persist, when there are enough of
// them (or any, if all) and no other goroutine is writing some.
func (c *Cache) takeDirtyLocked(all bool) map[flist.BlockID]uint64 {
	if c.flushing || len(c.dirty) == 0 || (!all && len(c.dirty) < recencyBatch) {
		return nil
	}
	d := c.dirty
	c.dirty = make(map[flist.BlockID]uint64)
	c.flushing = true
	return d
}

// flushRecency writes access sequences taken by takeDirtyLocked to the index. A record
// written for a block evicted meanwhile is harmless: Open deletes it.
func (c *Cache) flushRecency(d map[flist.BlockID]uint64) {
	if d == nil {
		return
	}
	b := new(leveldb.Batch)
	for id, seq := range d {
		b.Put(recencyKey(id), encodeUint(seq))
	}
	if err := c.db.Write(b, nil); err != nil {
		c.log.Warn("saving access times", "blocks", len(d), "err", err)
	}
	c.mu.Lock()
	c.flushing = false
	c.mu.Unlock()
}

// queueLocked queues a hook call and reports whether the caller must drain the queue
// (after unlocking): only one goroutine drains at a time, so hooks run in order.
func (c *Cache) queueLocked(stored bool, id flist.BlockID) bool {
	if (stored && c.cfg.OnStore == nil) || (!stored && c.cfg.OnEvict == nil) {
		return false
	}
	c.events = append(c.events, event{stored: stored, id: id})
	if c.draining {
		return false
	}
	c.draining = true
	return true
}

// drain makes the queued hook calls, including those queued while it runs.
func (c *Cache) drain() {
	finished := false
	defer func() {
		if !finished { // a hook panicked: let the next event start a new drain
			c.mu.Lock()
			c.draining = false
			c.mu.Unlock()
		}
	}()
	for {
		c.mu.Lock()
		evs := c.events
		c.events = nil
		if len(evs) == 0 {
			c.draining = false
			c.mu.Unlock()
			finished = true
			return
		}
		c.mu.Unlock()
		for _, ev := range evs {
			if ev.stored {
				c.cfg.OnStore(ev.id)
			} else {
				c.cfg.OnEvict(ev.id)
			}
		}
	}
}

// Stats returns the cache's current use.
func (c *Cache) Stats() Stats {
	c.refreshFree(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		Bytes:        c.bytes,
		Max:          c.maxBytes,
		Blocks:       int64(len(c.entries)),
		Pinned:       c.bytes - c.lruBytes,
		PinnedBlocks: int64(len(c.entries) - len(c.lru)),
		MinFree:      c.minFree,
		DiskFree:     max(c.freeLocked(), 0),
		ReadOnly:     c.readOnly,
	}
}

// Range calls fn with the id and size of each cached block, until fn returns false, for
// example to announce them all to the network. It works on a snapshot taken when it is
// called, without holding any lock while fn runs: a block may be evicted meanwhile, and
// blocks stored meanwhile are not seen. The id is fn's to keep. The order is unspecified.
func (c *Cache) Range(fn func(id flist.BlockID, size int64) bool) {
	c.mu.Lock()
	snap := make([]*entry, 0, len(c.entries))
	for _, e := range c.entries {
		snap = append(snap, e)
	}
	c.mu.Unlock()
	for _, e := range snap { // entries are immutable but for seq and idx, which are not read
		if !fn(e.id, e.size) {
			return
		}
	}
}

// Close persists what is only in memory (access sequences), makes the cache's files
// durable and closes the index. It waits for the calls in progress; later calls fail with
// ErrClosed. Closing twice is harmless.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.ops.Wait()

	c.mu.Lock()
	dirty := c.takeDirtyLocked(true)
	c.mu.Unlock()
	c.flushRecency(dirty)
	var errs []error
	if err := atomicfile.Syncfs(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("sync: %w", err))
	}
	if err := c.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the index: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: close: %w", c, err)
	}
	c.log.Debug("cache closed")
	return nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
