package cache

import "github.com/zosfs/zosfs-agent/flist"

// WithVerifier returns cfg with verify in place of flist.VerifyBlock, for tests whose
// blocks are random bytes under random ids (the store conformance suite).
func WithVerifier(cfg Config, verify func(id flist.BlockID, data []byte) error) Config {
	cfg.verify = verify
	return cfg
}

// ExpireDiskFree makes the next Put of c measure the free space of its filesystem, as
// if statfsEvery had passed: for tests that change the free space behind its back.
func ExpireDiskFree(c *Cache) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireFreeLocked()
}
