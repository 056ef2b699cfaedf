package agent

import (
	"context"
	"sync"

	"github.com/zosfs/zosfs-agent/flist"
)

// blocksInUse is the set of blocks of the flists this node has in use (mounted, or being
// pulled). They are the only blocks it fetches on a neighbour's behalf: a stranger cannot
// make it fetch from its hub (and cache, evicting its own) blocks of nothing it uses.
type blocksInUse struct {
	mu  sync.Mutex
	ids map[flist.BlockID]int // by id: how many flists in use hold it
	// listing counts the flists whose blocks are still being listed (see useFlist):
	// until they are, any block may be one of theirs.
	listing int
}

// has reports whether id is a block of an flist in use, or may be.
func (u *blocksInUse) has(id flist.BlockID) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ids[id] > 0 || u.listing > 0
}

// add adds blocks to the set; done removes them.
func (u *blocksInUse) add(blocks []flist.Block) (done func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.addLocked(blocks, 1)
	return func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.addLocked(blocks, -1)
	}
}

func (u *blocksInUse) addLocked(blocks []flist.Block, n int) {
	if u.ids == nil {
		u.ids = map[flist.BlockID]int{}
	}
	for _, b := range blocks {
		if u.ids[b.ID] += n; u.ids[b.ID] <= 0 {
			delete(u.ids, b.ID)
		}
	}
}

// useFlist adds fl's blocks to the set, listed in the background so that a mount is
// live at once; done stops a listing in progress (before fl may be closed) and removes
// them.
func (u *blocksInUse) useFlist(fl flist.Flist, log func(error)) (done func()) {
	ctx, cancel := context.WithCancel(context.Background())
	u.mu.Lock()
	u.listing++
	u.mu.Unlock()
	var remove func()
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		blocks, err := flist.DistinctBlocks(ctx, fl)
		if err != nil && ctx.Err() == nil {
			log(err)
		}
		remove = u.add(blocks)
		u.mu.Lock()
		u.listing--
		u.mu.Unlock()
	}()
	return func() {
		cancel()
		<-finished
		remove()
	}
}
