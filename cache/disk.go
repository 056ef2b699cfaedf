package cache

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The free space of the cache's filesystem (issue 13: a full data disk must not take the
// node down). Put keeps Config.MinFree free, evicting unpinned blocks for it; a cache
// with no Config.MaxBytes is bounded by what the disk had at Open; and Open on a disk so
// full that the index cannot be written opens the cache read-only.
const (
	// defaultMinFree and defaultMinFreePercent make the default Config.MinFree: the
	// smaller of 1 GiB and 5 % of the filesystem, room for the daemon's other files (the
	// index's compactions, the flists, the logs) on a disk of any size.
	defaultMinFree        = 1 << 30
	defaultMinFreePercent = 5
	// defaultMaxPercent makes the default Config.MaxBytes: that share of the free space
	// plus what the cache already holds, measured at Open.
	defaultMaxPercent = 80
	// statfsEvery and statfsPuts bound how stale Put's view of the free space may get: it
	// measures again (one statfs(2)) when statfsEvery has passed or statfsPuts Puts have
	// been made since the last measurement. In between it counts its own writes and
	// removals, so that only the other writers of the filesystem go unseen for that long,
	// which MinFree leaves room for.
	statfsEvery = time.Second
	statfsPuts  = 256
)

// ErrDiskFull: storing a block would take the free space of the cache's filesystem below
// Config.MinFree even after evicting every unpinned block, or the filesystem had no room
// for it. It wraps ErrFull, so that callers testing ErrFull need not know the difference.
var ErrDiskFull error = &fullError{"disk full"}

// ErrReadOnly: the cache was opened read-only because the disk was too full to write its
// index; it serves the blocks it holds but stores none, and pins nothing, until it is
// opened again with room on the disk. It wraps ErrFull.
var ErrReadOnly error = &fullError{"cache is read-only: the disk was full when it was opened"}

// fullError is a reason for the cache to refuse a block that errors.Is also reports as
// ErrFull, with a message of its own ("cache full of pinned blocks" would mislead).
type fullError struct{ msg string }

func (e *fullError) Error() string        { return e.msg }
func (e *fullError) Is(target error) bool { return target == ErrFull }

// diskSpace is what the cache knows of its filesystem's free space; guarded by Cache.mu.
type diskSpace struct {
	free      int64     // bytes available, as the last statfs said
	delta     int64     // bytes of blocks stored minus those evicted since that statfs
	at        time.Time // when that statfs was made; zero: measure at the next Put
	puts      int       // Puts since that statfs
	measuring bool      // a goroutine is making a statfs
}

// statfs returns the bytes available (to unprivileged users, as df(1) shows them) and the
// size of the filesystem holding dir.
func statfs(dir string) (free, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Blocks) * st.Bsize, nil
}

// setBounds measures the disk once the blocks are known at Open, and works out the
// bounds in force: the free-space reserve (Config.MinFree or its default) and the quota
// (Config.MaxBytes, or defaultMaxPercent of the free space plus the cache's bytes).
func (c *Cache) setBounds() error {
	free, total, err := statfs(c.dir)
	if err != nil {
		return err
	}
	c.disk = diskSpace{free: free, at: time.Now()}
	switch {
	case c.cfg.MinFree > 0:
		c.minFree = c.cfg.MinFree
	case c.cfg.MinFree == 0:
		c.minFree = min(defaultMinFree, total/100*defaultMinFreePercent)
	}
	switch {
	case c.cfg.MaxBytes > 0:
		c.maxBytes = c.cfg.MaxBytes
	case c.cfg.MaxBytes == 0:
		// At least 1 byte: 0 would mean no bound (a full disk and an empty cache).
		c.maxBytes = max((free+c.bytes)/100*defaultMaxPercent, 1)
	}
	return nil
}

// refreshFree measures the free space again when the last measurement is stale (see
// statfsEvery); put counts the call as a Put. It makes the statfs with no lock held, and
// at most one goroutine makes it at a time.
func (c *Cache) refreshFree(put bool) {
	c.mu.Lock()
	if put {
		c.disk.puts++
	}
	if c.disk.measuring || (c.disk.puts < statfsPuts && time.Since(c.disk.at) < statfsEvery) {
		c.mu.Unlock()
		return
	}
	c.disk.measuring = true
	delta := c.disk.delta // what the statfs will include
	c.mu.Unlock()

	free, _, err := statfs(c.dir)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.disk.measuring = false
	c.disk.at, c.disk.puts = time.Now(), 0
	if err != nil {
		c.log.Warn("measuring the free space", "err", err) // keep the last measurement
		return
	}
	c.disk.free = free
	c.disk.delta -= delta
}

// expireFreeLocked makes the next Put measure the free space: the filesystem just said
// it had none.
func (c *Cache) expireFreeLocked() { c.disk.at = time.Time{} }

// freeLocked estimates the free space now, not counting the Puts in progress.
func (c *Cache) freeLocked() int64 { return c.disk.free - c.disk.delta }

// diskOverLocked returns how many bytes of blocks must go for size more bytes to leave
// MinFree free (0 or less: none).
func (c *Cache) diskOverLocked(size int64) int64 {
	if c.minFree <= 0 {
		return 0
	}
	return c.minFree - (c.freeLocked() - c.reserved - size)
}

// diskError makes a write's "no space left on device" an ErrDiskFull, and has the next
// Put measure the free space again.
func (c *Cache) diskError(err error) error {
	if !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	c.mu.Lock()
	c.expireFreeLocked()
	c.mu.Unlock()
	return fmt.Errorf("%w: %w", ErrDiskFull, err)
}
