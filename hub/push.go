package hub

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/zosfs/zosfs-agent/flist"
)

// pushWorkers is how many blocks PushBlocks uploads at once: enough to fill a link with
// some latency, few enough not to swamp a thin one.
const pushWorkers = 4

// MissingBlocks returns the ids of fl's distinct blocks that the hub lacks, and how many
// distinct blocks fl has.
func (c *Client) MissingBlocks(ctx context.Context, fl flist.Flist) (missing []flist.BlockID, distinct int, err error) {
	blocks, err := flist.DistinctBlocks(ctx, fl)
	if err != nil {
		return nil, 0, err
	}
	ids := make([]flist.BlockID, len(blocks))
	for i, b := range blocks {
		ids[i] = b.ID
	}
	missing, err = c.Missing(ctx, ids)
	return missing, len(ids), err
}

// BlockReader is where PushBlocks reads the blocks it uploads (a store router).
type BlockReader interface {
	Get(ctx context.Context, id flist.BlockID) ([]byte, error)
}

// PushBlocks uploads the blocks ids to the hub, read from src and verified on the way (a
// store hands back what it holds, right or wrong), pushWorkers at a time. progress is
// called after each block with the blocks and bytes uploaded so far.
func (c *Client) PushBlocks(ctx context.Context, ids []flist.BlockID, src BlockReader, progress func(blocks int, bytes int64)) (blocks int, bytes int64, err error) {
	var done, sent atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pushWorkers)
	for _, id := range ids {
		g.Go(func() error {
			data, err := src.Get(gctx, id)
			if err != nil {
				return err
			}
			if err := flist.VerifyBlock(id, data); err != nil {
				return fmt.Errorf("%s: %w", src, err)
			}
			if err := c.PutBlock(gctx, id, data); err != nil {
				return err
			}
			progress(int(done.Add(1)), sent.Add(int64(len(data))))
			return nil
		})
	}
	err = g.Wait()
	return int(done.Load()), sent.Load(), err
}
