package cache

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/zosfs/zosfs-agent/flist"
)

// The index's keys. A one-byte prefix says what a record is:
//
//	"v"                     the index format, formatVersion
//	"b" id                  a cached block: uvarint size of its file
//	"r" id                  uvarint last-access sequence of a block (kept apart from "b"
//	                        so that a late batch of access times cannot bring back a block
//	                        evicted meanwhile: a stray "r" record is deleted by Open)
//	"o" owner               a pin owner (so that an owner pinning no block is still known)
//	"p" owner 0x00 id       owner pins block id (owners never contain NUL)
const (
	prefixVersion = 'v'
	prefixBlock   = 'b'
	prefixRecency = 'r'
	prefixOwner   = 'o'
	prefixPin     = 'p'
	formatVersion = "1"
)

func blockKey(id flist.BlockID) []byte   { return append([]byte{prefixBlock}, id.Bytes()...) }
func recencyKey(id flist.BlockID) []byte { return append([]byte{prefixRecency}, id.Bytes()...) }
func ownerKey(owner string) []byte {
	return append([]byte{prefixOwner}, owner...)
}

// pinPrefix is the prefix of the pin records of owner.
func pinPrefix(owner string) []byte {
	k := append([]byte{prefixPin}, owner...)
	return append(k, 0)
}

func pinKey(owner string, id flist.BlockID) []byte { return append(pinPrefix(owner), id.Bytes()...) }

// parsePinKey splits a pin record's key.
func parsePinKey(k []byte) (owner string, id flist.BlockID, ok bool) {
	i := bytes.IndexByte(k, 0)
	if len(k) < 1 || k[0] != prefixPin || i < 0 {
		return "", flist.BlockID{}, false
	}
	owner = string(k[1:i])
	id, err := flist.ParseBlockID(k[i+1:])
	if checkOwner(owner) != nil || err != nil {
		return "", flist.BlockID{}, false
	}
	return owner, id, true
}

func encodeUint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func decodeUint(b []byte) (uint64, bool) {
	v, n := binary.Uvarint(b)
	return v, n > 0 && n == len(b)
}

// Open opens (creating it if need be) the cache in cfg.Dir, and reconciles its index with
// its block files (see the package documentation): when it returns, every block the
// index lists has a file of the recorded size, and nothing else is in blocks/. If the
// blocks exceed cfg.MaxBytes (it was lowered), the least recently used unpinned ones are
// evicted. Open starts no goroutine. Only one process may have a cache open at a time.
//
// When the disk is too full for the index to be written (goleveldb writes at open: a new
// journal and manifest, and the last run's journal flushed to a table), Open opens the
// cache read-only, with a warning, so that the node still serves the blocks it holds:
// Stats().ReadOnly is then set, and Put, Pin and Unpin fail with ErrReadOnly.
func Open(cfg Config) (*Cache, error) {
	c, err := newCache(cfg)
	if err != nil {
		return nil, err
	}
	err = c.open(false)
	if !errors.Is(err, syscall.ENOSPC) {
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	c.log.Warn("the disk is full: opening the cache read-only; it serves the blocks it holds but stores none until it is opened again with free space on the disk", "err", err)
	if c, err = newCache(cfg); err == nil { // afresh: the failed open left state in memory
		err = c.open(true)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (opening read-only because the disk is full)", err)
	}
	return c, nil
}

// newCache makes the in-memory Cache for cfg, holding no block yet.
func newCache(cfg Config) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("cache: no directory")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", cfg.Dir, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Cache{
		cfg:       cfg,
		dir:       dir,
		blocksDir: filepath.Join(dir, "blocks"),
		log:       log.With("component", "cache", "dir", dir),
		verify:    cfg.verify,
		entries:   make(map[flist.BlockID]*entry),
		busy:      make(map[flist.BlockID]chan struct{}),
		space:     make(chan struct{}),
		pins:      make(map[flist.BlockID]int32),
		owners:    make(map[string]int),
		dirty:     make(map[flist.BlockID]uint64),
	}
	if c.verify == nil {
		c.verify = flist.VerifyBlock
	}
	return c, nil
}

// open opens the index (read-only if readOnly) and loads the cache from it and the disk.
func (c *Cache) open(readOnly bool) error {
	c.readOnly = readOnly
	if err := os.MkdirAll(c.blocksDir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", c, err)
	}
	var err error
	if c.db, err = c.openIndex(filepath.Join(c.dir, "index")); err != nil {
		return fmt.Errorf("%s: index: %w", c, err)
	}
	if err := c.load(); err != nil {
		c.db.Close()
		return fmt.Errorf("%s: %w", c, err)
	}
	return nil
}

// openIndex opens the goleveldb index, repairing it if it is damaged (a repaired index
// may have lost records: load then drops the files it no longer lists). A read-only
// index is not repaired: that would write it.
func (c *Cache) openIndex(path string) (*leveldb.DB, error) {
	var o *opt.Options
	if c.readOnly {
		o = &opt.Options{ReadOnly: true}
	}
	db, err := leveldb.OpenFile(path, o)
	if errors.Is(err, syscall.EAGAIN) { // the index's lock file is held
		return nil, fmt.Errorf("%s is in use by another process (is another daemon running with the same --data?): %w", path, err)
	}
	if lerrors.IsCorrupted(err) && !c.readOnly {
		c.log.Warn("index damaged; recovering what it holds", "err", err)
		db, err = leveldb.RecoverFile(path, nil)
	}
	return db, err
}

// record is what load learns of a block from the index and the disk.
type record struct {
	size      int64
	seq       uint64
	listed    bool // has a "b" record
	seen      bool // has a file of the recorded size
	wrongSize bool // has a file of another size
}

// load reads the index, reconciles it with the block files and builds the in-memory
// state. A read-only cache writes nothing to its index (no format record, no deletion of
// the records reconcile found stale: the next Open deletes them) and evicts nothing (the
// bound taken from a full disk is below what it holds); reconcile still removes the
// files no block is served from, which frees space.
func (c *Cache) load() error {
	recs, junk, version, err := c.scanIndex()
	if err != nil {
		return err
	}
	if err := c.checkFormat(version); err != nil {
		return err
	}
	st, err := c.reconcile(recs)
	if err != nil {
		return err
	}
	c.enterBlocks(recs, junk, &st)
	if !c.readOnly {
		if err := c.db.Write(junk, nil); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	}
	if err := c.setBounds(); err != nil {
		return err
	}
	evicted := 0
	if !c.readOnly {
		evicted = c.trimToMax()
	}
	c.logOpened(st, evicted)
	return nil
}

// scanIndex reads the whole index once: it returns what it says of each block, the
// records it cannot parse (to delete: junk) and the index format, and fills c.owners and
// c.pins, which need nothing from the disk.
func (c *Cache) scanIndex() (recs map[flist.BlockID]*record, junk *leveldb.Batch, version string, err error) {
	recs = make(map[flist.BlockID]*record)
	rec := func(id flist.BlockID) *record {
		r := recs[id]
		if r == nil {
			r = &record{}
			recs[id] = r
		}
		return r
	}
	junk = new(leveldb.Batch)
	it := c.db.NewIterator(nil, nil)
	defer it.Release()
	for it.Next() {
		k, v := it.Key(), it.Value()
		switch k[0] {
		case prefixVersion:
			version = string(v)
		case prefixBlock, prefixRecency:
			id, err := flist.ParseBlockID(k[1:])
			n, ok := decodeUint(v)
			if err != nil || !ok || (k[0] == prefixBlock && n > MaxBlockSize) {
				junk.Delete(bytes.Clone(k))
				continue
			}
			if k[0] == prefixBlock {
				r := rec(id)
				r.size, r.listed = int64(n), true
			} else {
				rec(id).seq = n
			}
		case prefixOwner:
			owner := string(k[1:])
			if checkOwner(owner) != nil {
				junk.Delete(bytes.Clone(k))
				continue
			}
			if _, ok := c.owners[owner]; !ok {
				c.owners[owner] = 0
			}
		case prefixPin:
			owner, id, ok := parsePinKey(k)
			if !ok {
				junk.Delete(bytes.Clone(k))
				continue
			}
			c.owners[owner]++
			c.pins[id]++
		}
	}
	if err := it.Error(); err != nil {
		return nil, nil, "", fmt.Errorf("reading the index: %w", err)
	}
	return recs, junk, version, nil
}

// checkFormat refuses an index written in another format (by a later version), and
// records the format in a new one.
func (c *Cache) checkFormat(version string) error {
	switch version {
	case formatVersion:
	case "":
		if c.readOnly {
			return nil
		}
		if err := c.db.Put([]byte{prefixVersion}, []byte(formatVersion), nil); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	default:
		return fmt.Errorf("index format %q, this version reads %q", version, formatVersion)
	}
	return nil
}

// enterBlocks builds the in-memory state from the reconciled records: a block whose file
// is right becomes an entry (evictable unless pinned); the records of the others go to
// junk, and a listed block with no file at all counts as missing in st.
func (c *Cache) enterBlocks(recs map[flist.BlockID]*record, junk *leveldb.Batch, st *reconcileStats) {
	for id, r := range recs {
		if !r.seen {
			junk.Delete(recencyKey(id))
			if r.listed {
				junk.Delete(blockKey(id))
				if !r.wrongSize {
					st.missing++
				}
			}
			continue
		}
		e := &entry{id: id, size: r.size, seq: r.seq, idx: -1}
		c.entries[id] = e
		c.bytes += r.size
		c.seq = max(c.seq, r.seq)
		if c.pins[id] == 0 {
			e.idx = len(c.lru)
			c.lru = append(c.lru, e)
			c.lruBytes += e.size
		}
	}
	heap.Init(&c.lru)
}

// trimToMax evicts the least recently used unpinned blocks while the cache holds more
// than MaxBytes (it was lowered since the last run, or the disk has less room), and
// returns how many it evicted. Nothing has been announced yet: no OnEvict.
func (c *Cache) trimToMax() int {
	var victims []*entry
	for c.maxBytes > 0 && c.bytes > c.maxBytes && len(c.lru) > 0 {
		e := c.lru[0]
		c.detachLocked(e)
		victims = append(victims, e)
	}
	if len(victims) > 0 {
		c.removeBlocks(victims)
		for _, e := range victims {
			delete(c.busy, e.id)
		}
	}
	return len(victims)
}

// logOpened logs what the cache holds, and, as a warning, what Open had to clean up (a
// sign of an unclean stop or of an outside change) and pinned blocks above the maximum.
func (c *Cache) logOpened(st reconcileStats, evicted int) {
	attrs := []any{"blocks", len(c.entries), "bytes", c.bytes, "max", c.maxBytes,
		"pinned_bytes", c.bytes - c.lruBytes, "owners", len(c.owners),
		"disk_free", c.disk.free, "min_free", c.minFree, "read_only", c.readOnly}
	if st != (reconcileStats{}) || evicted > 0 {
		c.log.Warn("cache opened; cleaned up after an unclean stop or an outside change", append(attrs,
			"temp_files_removed", st.temp, "unlisted_files_removed", st.unlisted,
			"wrong_size_removed", st.wrongSize, "missing_files_dropped", st.missing,
			"foreign_files_removed", st.foreign, "evicted_over_max", evicted)...)
	} else {
		c.log.Info("cache opened", attrs...)
	}
	if c.maxBytes > 0 && c.bytes > c.maxBytes && !c.readOnly {
		c.log.Warn("pinned blocks exceed the cache's maximum", "bytes", c.bytes, "max", c.maxBytes)
	}
}

// reconcileStats counts what reconcile cleaned up.
type reconcileStats struct {
	temp, unlisted, wrongSize, missing, foreign int
}

// reconcile walks blocks/: it removes temporary files, files the index does not list,
// files whose size differs from the index (marking their records wrongSize) and anything
// else that is not a block file, and marks seen the records whose file is right.
func (c *Cache) reconcile(recs map[flist.BlockID]*record) (reconcileStats, error) {
	var st reconcileStats
	remove := func(p string, n *int) {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			c.log.Warn("removing a stray file", "path", p, "err", err)
		}
		*n++
	}
	top, err := os.ReadDir(c.blocksDir)
	if err != nil {
		return st, err
	}
	for _, d := range top {
		name := d.Name()
		sub := filepath.Join(c.blocksDir, name)
		b, isFan := parseFanout(name)
		if !d.IsDir() || !isFan {
			if d.IsDir() {
				c.log.Warn("unexpected directory in the cache, left alone", "path", sub)
				continue
			}
			remove(sub, &st.foreign)
			continue
		}
		c.dirMade[b].Store(true)
		files, err := os.ReadDir(sub)
		if err != nil {
			return st, err
		}
		for _, f := range files {
			fn := f.Name()
			p := filepath.Join(sub, fn)
			if strings.HasPrefix(fn, tmpPrefix) {
				remove(p, &st.temp)
				continue
			}
			id, ok := parseName(fn)
			if !ok || fn[:2] != name {
				if f.IsDir() {
					c.log.Warn("unexpected directory in the cache, left alone", "path", p)
					continue
				}
				remove(p, &st.foreign)
				continue
			}
			r := recs[id]
			if r == nil || !r.listed {
				remove(p, &st.unlisted)
				continue
			}
			info, err := f.Info()
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				return st, err
			}
			if !info.Mode().IsRegular() || info.Size() != r.size {
				r.wrongSize = true
				remove(p, &st.wrongSize)
				continue
			}
			r.seen = true
		}
	}
	return st, nil
}
