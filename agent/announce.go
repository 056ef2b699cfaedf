package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/zosfs/zosfs-agent/cache"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/p2p"
)

// Tuning of block announcements.
const (
	// announceWorkers run DHT provide calls in parallel: each is a network round trip
	// or several, so a few in parallel keep up with a pull.
	announceWorkers = 4
	// reannounceEvery re-announces every cached block, as provider records expire.
	reannounceEvery = 12 * time.Hour
	// announceQueue bounds the ids waiting to be announced; beyond it new ones wait for
	// the next re-announce round instead of blocking the cache.
	announceQueue = 4096
)

// announcer announces the blocks the cache stores and the flists the flist store holds
// (under their CID, flist.BlockCID of its digest) to the DHT, in the background, and
// re-announces them periodically; an evicted block is no longer announced and its
// provider records expire. Neighbours
// already connected find blocks without it (they are asked directly); announcements let
// nodes further away find providers.
type announcer struct {
	queue chan flist.BlockID // blocks, and flists under the id that names their digest
}

func newAnnouncer() *announcer {
	return &announcer{queue: make(chan flist.BlockID, announceQueue)}
}

// add queues a block stored in the cache (cache.Config.OnStore).
func (a *announcer) add(id flist.BlockID) {
	select {
	case a.queue <- id:
	default: // the queue is full: the next re-announce round will cover it
	}
}

// addFlist queues the digest of an flist stored (flistStore.added): its CID is the
// block CID of a 32-byte id.
func (a *announcer) addFlist(digest []byte) {
	if id, err := flist.ParseBlockID(digest); err == nil {
		a.add(id)
	}
}

// run announces queued blocks and flists until ctx ends, and every cached block and
// stored flist at start and every reannounceEvery.
func (a *announcer) run(ctx context.Context, node *p2p.Node, c *cache.Cache, flists *flistStore, log *slog.Logger) {
	var wg sync.WaitGroup
	for range announceWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-a.queue:
					if has, _ := c.Has(ctx, id); !has && !flists.has(id.Bytes()) {
						continue // evicted since: no longer announced
					}
					if err := node.Provide(ctx, id); err != nil && ctx.Err() == nil {
						log.Debug("announcing a block failed", "id", id.String(), "err", err)
					}
				}
			}
		}()
	}
	queue := func(id flist.BlockID) bool {
		select {
		case a.queue <- id:
			return true
		case <-ctx.Done():
			return false
		}
	}
	reannounce := func() {
		flists.digests(func(digest []byte) bool {
			id, err := flist.ParseBlockID(digest)
			return err != nil || queue(id)
		})
		c.Range(func(id flist.BlockID, _ int64) bool { return queue(id) })
	}
	reannounce()
	t := time.NewTicker(reannounceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			reannounce()
		}
	}
}
