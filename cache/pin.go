package cache

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/zosfs/zosfs-agent/flist"
)

// pinCheckEvery is how many ids Pin looks up in the index between two checks of its
// context.
const pinCheckEvery = 4096

// syncWrite makes pin changes durable before Pin and Unpin return: they are rare, and a
// pin lost to a power failure would let a pulled flist's blocks be evicted.
var syncWrite = &opt.WriteOptions{Sync: true}

// checkOwner refuses owners that cannot be stored.
func checkOwner(owner string) error {
	if owner == "" || len(owner) > maxOwnerLen || strings.IndexByte(owner, 0) >= 0 {
		return fmt.Errorf("invalid pin owner %q (want 1 to %d bytes, no NUL)", owner, maxOwnerLen)
	}
	return nil
}

// Pin adds ids to the blocks owner pins (owner is typically the CID of a pulled flist).
// A pinned block is never evicted, whoever else pins it; ids not in the cache yet are
// pinned when they arrive. Pinning is cumulative and idempotent, durable when Pin
// returns, and survives restarts. An owner pinning no id at all is still recorded (see
// Owners). Pin does not fetch anything.
func (c *Cache) Pin(ctx context.Context, owner string, ids []flist.BlockID) error {
	if err := checkOwner(owner); err != nil {
		return fmt.Errorf("cache: pin: %w", err)
	}
	for _, id := range ids {
		if !id.Valid() {
			return fmt.Errorf("cache: pin %s: no block id", owner)
		}
	}
	if err := c.enter(ctx); err != nil {
		return fmt.Errorf("cache: pin %s: %w", owner, err)
	}
	defer c.ops.Done()
	if c.readOnly {
		return fmt.Errorf("cache: pin %s: %w", owner, ErrReadOnly)
	}
	c.pinMu.Lock()
	defer c.pinMu.Unlock()

	c.mu.Lock()
	n, known := c.owners[owner]
	c.mu.Unlock()
	lookup := known && n > 0 // an owner pinning nothing yet has no pin to look up

	b := new(leveldb.Batch)
	b.Put(ownerKey(owner), nil)
	seen := make(map[flist.BlockID]struct{}, len(ids))
	var added []flist.BlockID
	for i, id := range ids {
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		if lookup {
			if i%pinCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("cache: pin %s: %w", owner, err)
				}
			}
			has, err := c.db.Has(pinKey(owner, id), nil)
			if err != nil {
				return fmt.Errorf("cache: pin %s: index: %w", owner, err)
			}
			if has {
				continue
			}
		}
		added = append(added, id)
		b.Put(pinKey(owner, id), nil)
	}
	if err := c.db.Write(b, syncWrite); err != nil {
		return fmt.Errorf("cache: pin %s: index: %w", owner, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.owners[owner] += len(added)
	for _, id := range added {
		c.pins[id]++
		if c.pins[id] == 1 {
			if e := c.entries[id]; e != nil && e.idx >= 0 {
				c.lruRemove(e)
			}
		}
	}
	c.log.Debug("pinned", "owner", owner, "ids", len(ids), "new", len(added))
	return nil
}

// Unpin drops every pin of owner: blocks no other owner pins become evictable again, in
// the order of their last use. Unpinning an unknown owner does nothing.
func (c *Cache) Unpin(ctx context.Context, owner string) error {
	if err := checkOwner(owner); err != nil {
		return fmt.Errorf("cache: unpin: %w", err)
	}
	if err := c.enter(ctx); err != nil {
		return fmt.Errorf("cache: unpin %s: %w", owner, err)
	}
	defer c.ops.Done()
	if c.readOnly {
		return fmt.Errorf("cache: unpin %s: %w", owner, ErrReadOnly)
	}
	c.pinMu.Lock()
	defer c.pinMu.Unlock()

	prefix := pinPrefix(owner)
	b := new(leveldb.Batch)
	var ids []flist.BlockID
	it := c.db.NewIterator(util.BytesPrefix(prefix), nil)
	for it.Next() {
		k := it.Key()
		if _, id, ok := parsePinKey(k); ok { // Open removed those that do not parse
			ids = append(ids, id)
		}
		b.Delete(bytes.Clone(k))
	}
	it.Release()
	if err := it.Error(); err != nil {
		return fmt.Errorf("cache: unpin %s: index: %w", owner, err)
	}
	b.Delete(ownerKey(owner))
	if err := c.db.Write(b, syncWrite); err != nil {
		return fmt.Errorf("cache: unpin %s: index: %w", owner, err)
	}

	c.mu.Lock()
	delete(c.owners, owner)
	for _, id := range ids {
		if n := c.pins[id] - 1; n > 0 {
			c.pins[id] = n
			continue
		}
		delete(c.pins, id)
		if e := c.entries[id]; e != nil {
			c.lruPush(e)
		}
	}
	// Back under MaxBytes if pins held the cache above it (MaxBytes lowered).
	var victims []*entry
	for c.maxBytes > 0 && c.bytes+c.reserved > c.maxBytes && len(c.lru) > 0 {
		e := c.lru[0]
		c.detachLocked(e)
		victims = append(victims, e)
	}
	c.mu.Unlock()
	c.forget(victims)
	c.log.Debug("unpinned", "owner", owner, "ids", len(ids))
	return nil
}

// Pinned reports whether owner pins anything (or was recorded by Pin with no id).
func (c *Cache) Pinned(owner string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.owners[owner]
	return ok
}

// Owners returns the owners that hold pins, sorted.
func (c *Cache) Owners(ctx context.Context) ([]string, error) {
	if err := c.enter(ctx); err != nil {
		return nil, fmt.Errorf("cache: owners: %w", err)
	}
	defer c.ops.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedKeys(c.owners), nil
}
