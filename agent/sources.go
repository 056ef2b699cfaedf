package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/time/rate"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/store"
)

// The sources of blocks and their decorators. A Source returns verified bytes: each block
// is checked against its id once, where it enters the daemon. The hub client and the p2p
// node check what they receive themselves (a wrong block is theirs to blame on a hub or
// to ban a peer for); stores, which hand back what they hold, right or wrong, are wrapped
// in verified. The cache checks what it reads back from its own disk.

// hubSource reads blocks from a hub; hub.Client.GetBlock verifies them.
type hubSource struct{ h *hub.Client }

func (s hubSource) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	return s.h.GetBlock(ctx, id)
}
func (s hubSource) String() string { return s.h.String() }

// verified is a source whose blocks are checked against their ids before they are
// returned: a wrong one is an error wrapping flist.ErrBlockCorrupt, and the resolver goes
// on to the next source.
type verified struct {
	src Source
	log *slog.Logger
}

func (v verified) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	data, err := v.src.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := flist.VerifyBlock(id, data); err != nil {
		v.log.Warn("a store sent a wrong block", "source", fmt.Sprint(v.src), "err", err)
		return nil, fmt.Errorf("%s: %w", v.src, err)
	}
	return data, nil
}

func (v verified) String() string { return fmt.Sprint(v.src) }

// newUplink is the one token bucket of the thin uplink, shared by every hub and every
// flist's routes (Config.HubRate), with room for one block at a time; nil means no
// bound.
func newUplink(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSecond), flist.MaxBlockStored)
}

// limited makes what src delivers wait for the uplink; src itself when there is no
// bound.
func limited(src Source, uplink *rate.Limiter) Source {
	if uplink == nil {
		return src
	}
	return limitedSource{src, uplink}
}

// limitedSource is a Source whose deliveries wait for a shared rate limiter.
type limitedSource struct {
	src Source
	lim *rate.Limiter
}

func (s limitedSource) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	data, err := s.src.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.lim.WaitN(ctx, len(data)); err != nil {
		return nil, err
	}
	return data, nil
}

func (s limitedSource) String() string { return fmt.Sprint(s.src) }

// isNotFound reports whether err says a source does not have a block (as opposed to
// failing to answer): every package's not-found matches flist.ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, flist.ErrNotFound) }

// openRoutes opens the stores the routes of fl name, as one verified source (nil when
// fl has no routes), and makes it a source of the resolver's fetches for neighbours
// while fl is in use (Resolver.useRoutes). closeRoutes ends that; it is never nil.
func (d *Daemon) openRoutes(ctx context.Context, fl flist.Flist) (src Source, closeRoutes func(), err error) {
	rs, err := fl.Routes(ctx)
	if err != nil || len(rs) == 0 {
		return nil, func() {}, err
	}
	router, err := store.NewRouter(ctx, rs)
	if err != nil {
		return nil, func() {}, err
	}
	src = limited(verified{router, d.log}, d.uplink)
	done := d.resolver.useRoutes(src)
	return src, func() {
		done()
		router.Close()
	}, nil
}
