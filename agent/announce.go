package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/zosfs/zosfs-agent/p2p"
)

// Tuning of flist announcements.
const (
	// announceWorkers run DHT provide calls in parallel: each is a network round trip
	// or several.
	announceWorkers = 2
	// reannounceEvery re-announces every stored flist, as provider records expire.
	reannounceEvery = 12 * time.Hour
	// announceQueue bounds the flists waiting to be announced; beyond it new ones wait
	// for the next re-announce round instead of blocking the flist store.
	announceQueue = 256
)

// announcer announces the flists the flist store holds to the DHT (p2p.ProvideFlist),
// in the background, and re-announces them periodically. Blocks are never announced:
// a site holds millions of them, and neighbours learn them from the have-filters
// (p2p's Stored and Evicted, called by the cache). The DHT tells a node which peers hold
// an flist, such as one it mounts and no neighbour has.
type announcer struct {
	queue chan []byte // flist digests
}

func newAnnouncer() *announcer {
	return &announcer{queue: make(chan []byte, announceQueue)}
}

// add queues the digest of an flist stored (flistStore.added).
func (a *announcer) add(digest []byte) {
	select {
	case a.queue <- digest:
	default: // the queue is full: the next re-announce round will cover it
	}
}

// run announces queued flists until ctx ends, and every stored flist at start and every
// reannounceEvery.
func (a *announcer) run(ctx context.Context, node *p2p.Node, flists *flistStore, log *slog.Logger) {
	var wg sync.WaitGroup
	for range announceWorkers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case digest := <-a.queue:
					if !flists.has(digest) {
						continue // removed since: no longer announced
					}
					if err := node.ProvideFlist(ctx, digest); err != nil && ctx.Err() == nil {
						log.Debug("announcing an flist failed", "digest", fmt.Sprintf("%x", digest), "err", err)
					}
				}
			}
		})
	}
	reannounce := func() {
		flists.digests(func(digest []byte) bool {
			select {
			case a.queue <- digest:
				return true
			case <-ctx.Done():
				return false
			}
		})
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
