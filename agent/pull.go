package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/cache"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/units"
)

// pullProgressEvery is how often a pull reports progress.
const pullProgressEvery = 250 * time.Millisecond

// Pull implements api.Backend: it fetches the flist, pins all its blocks in the cache
// (so they are never evicted) and fetches every block the cache lacks, reporting
// progress. A pull interrupted (by the client going away or the daemon being killed)
// keeps what it fetched; running it again fetches the rest.
func (d *Daemon) Pull(ctx context.Context, ref string, progress func(api.PullProgress)) (api.PullProgress, error) {
	c, err := d.flists.resolve(ctx, ref)
	if err != nil {
		return api.PullProgress{}, err
	}
	fl, err := d.flists.open(ctx, c)
	if err != nil {
		return api.PullProgress{}, err
	}
	defer fl.Close()
	blocks, err := flist.DistinctBlocks(ctx, fl)
	if err != nil {
		return api.PullProgress{}, err
	}
	ids := make([]flist.BlockID, len(blocks))
	for i, b := range blocks {
		ids[i] = b.ID
	}
	if err := d.cache.Pin(ctx, c.String(), ids); err != nil {
		return api.PullProgress{}, err
	}
	defer d.resolver.inUse.add(blocks)()
	defer d.joinFlist(c)()
	var extra []Source
	routes, closeRoutes, err := d.openRoutes(ctx, fl)
	if err != nil {
		d.log.Warn("the flist's routes cannot be used; pulling from the hubs only", "cid", c.String(), "err", err)
	} else if routes != nil {
		extra = append(extra, routes)
	}
	defer closeRoutes()

	var done, fetchedBytes atomic.Int64
	snapshot := func() api.PullProgress {
		return api.PullProgress{CID: c.String(), Blocks: done.Load(), TotalBlocks: int64(len(blocks)), Bytes: fetchedBytes.Load()}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(pullProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				progress(snapshot())
			}
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pullParallel)
	for _, b := range blocks {
		if has, _ := d.cache.Has(gctx, b.ID); has {
			done.Add(1)
			continue
		}
		g.Go(func() error {
			data, err := d.resolver.Fetch(gctx, b.ID, extra...)
			if err != nil {
				return err
			}
			fetchedBytes.Add(int64(len(data)))
			// Fetch stores what it gets, but a cache full of pinned blocks refuses it: a
			// block not kept is not pulled. It is pinned, so nothing evicted it since.
			if has, err := d.cache.Has(gctx, b.ID); err != nil {
				return err
			} else if !has {
				return errNotKept
			}
			done.Add(1)
			return nil
		})
	}
	err = g.Wait()
	close(stop)
	wg.Wait()
	last := snapshot()
	if errors.Is(err, errNotKept) {
		// A pin that the cache cannot hold would promise blocks that are not there.
		if uerr := d.cache.Unpin(context.WithoutCancel(ctx), c.String()); uerr != nil {
			d.log.Error("unpinning a pull the cache cannot hold", "cid", c.String(), "err", uerr)
		}
		cs := d.cache.Stats()
		return last, fmt.Errorf("pull %s: %w: %d of its %d blocks kept, the cache holds %s of at most %s; raise --cache-max or unpin another flist; it is not pinned",
			c, errNotKept, last.Blocks, last.TotalBlocks, units.Bytes(cs.Bytes), units.Bytes(cs.Max))
	}
	if err != nil {
		return last, fmt.Errorf("pull %s: %w", c, err)
	}
	d.log.Info("pulled", "cid", c.String(), "blocks", last.TotalBlocks, "fetched_bytes", last.Bytes)
	return last, nil
}

// errNotKept: a pull fetched a block that the cache, full of pinned blocks, refused.
var errNotKept = fmt.Errorf("the cache cannot keep the flist: %w", cache.ErrFull)
