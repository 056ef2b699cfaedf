package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/flight"
	"github.com/zosfs/zosfs-agent/internal/lru"
	"github.com/zosfs/zosfs-agent/metrics"
)

// Source gives the stored (encrypted) bytes of a block by id, verified against the id
// (see sources.go: the hub client verifies, stores are wrapped in verified). The cache,
// the hubs and the flists' routes are Sources; decorators (verified, limited) wrap
// them.
type Source interface {
	Get(ctx context.Context, id flist.BlockID) ([]byte, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, id flist.BlockID) ([]byte, error)

// Get implements Source.
func (f SourceFunc) Get(ctx context.Context, id flist.BlockID) ([]byte, error) { return f(ctx, id) }

// BlockCache is what the resolver needs of the local cache. Get returns verified bytes;
// PutVerified stores bytes the resolver has verified, without hashing them again.
type BlockCache interface {
	Source
	PutVerified(ctx context.Context, id flist.BlockID, data []byte) error
}

// Neighbours is the site's peer network as the resolver uses it (the p2p node). Get asks
// the neighbours that have a block; Fetcher names the block's designated fetcher of the
// first wave (ok = false when it is this node) and FetchVia asks it, which makes it
// fetch the block if it lacks it. Their blocks arrive verified.
type Neighbours interface {
	Get(ctx context.Context, id flist.BlockID) ([]byte, error)
	Fetcher(id flist.BlockID) (peer.ID, bool)
	FetchVia(ctx context.Context, p peer.ID, id flist.BlockID) ([]byte, error)
}

// Tuning of the fetch path.
const (
	// fetchAttempts is how many times a remote fetch of a block is tried (with backoff)
	// before the read fails.
	fetchAttempts = 3
	// fetchBackoff is the first pause between attempts; it doubles, with jitter.
	fetchBackoff = 200 * time.Millisecond
	// decodedCacheBlocks bounds the in-memory LRU of decoded blocks (64 × 512 KiB = 32 MiB):
	// enough for the read-ahead windows of a few sequential readers.
	decodedCacheBlocks = 64
)

// FetchStats counts the bytes of stored blocks the resolver obtained, by source.
type FetchStats struct {
	Cache atomic.Int64
	Peers atomic.Int64
	Hub   atomic.Int64
}

// ResolverConfig is what a Resolver is built on.
type ResolverConfig struct {
	// Cache is the node's block cache: asked first, filled with what is fetched.
	Cache BlockCache
	// Peers, if set, is asked before the remote sources: its Get for at most
	// PeerTimeout, then the block's designated fetcher for at most Timeout.
	Peers       Neighbours
	PeerTimeout time.Duration
	// Remote is the hubs, tried in random order, falling back to the next.
	Remote []Source
	// Timeout bounds one fetch attempt from a remote source or the designated fetcher.
	Timeout time.Duration
	// Stats counts the bytes obtained, by source.
	Stats *FetchStats
	// Latency, if set, records how long each fetch from outside took, by source.
	Latency *metrics.Latency
	// CanFetch, if set, is told whether the resolver can fetch blocks for neighbours
	// (it has hubs, or the routes of a mounted or pulled flist): the p2p node advertises
	// it, so that only such nodes are designated fetchers.
	CanFetch func(bool)
	Log      *slog.Logger
}

// Resolver answers block reads in order: decoded LRU, local cache, one shared in-flight
// fetch per block, the neighbours that have it, the block's designated fetcher (the
// first wave: see p2p.Node.Fetcher), then the remote sources (hubs, the flist's routes),
// each try bounded by a deadline, with retries and backoff. Every block from outside is
// verified against its id before it is cached or used.
type Resolver struct {
	cfg      ResolverConfig
	log      *slog.Logger
	decoded  *lru.Cache[flist.BlockID, []byte]
	inflight flight.Group[flist.BlockID, []byte]
	// waiting counts the node's own reads waiting for a block from outside (Busy).
	waiting atomic.Int64

	routesMu sync.Mutex
	routes   map[*routeSet]struct{} // the routes of the flists in use, for FetchForPeer
	// inUse is the blocks of the flists in use: FetchForPeer fetches only those.
	inUse blocksInUse
}

// routeSet is one registration of an flist's routes (see useRoutes).
type routeSet struct{ src Source }

// useRoutes makes src (an flist's routes, while it is mounted or pulled) a source of
// FetchForPeer too: a node that reads an flist from its routes alone, with no hub of its
// own, can still fetch that flist's blocks for its neighbours. The returned func ends it.
func (r *Resolver) useRoutes(src Source) (done func()) {
	rs := &routeSet{src}
	r.routesMu.Lock()
	if r.routes == nil {
		r.routes = map[*routeSet]struct{}{}
	}
	r.routes[rs] = struct{}{}
	r.routesMu.Unlock()
	r.announceFetching()
	return func() {
		r.routesMu.Lock()
		delete(r.routes, rs)
		r.routesMu.Unlock()
		r.announceFetching()
	}
}

// peerSources is what FetchForPeer fetches from: the hubs and the routes in use.
func (r *Resolver) peerSources() []Source {
	r.routesMu.Lock()
	defer r.routesMu.Unlock()
	out := append([]Source{}, r.cfg.Remote...)
	for rs := range r.routes {
		out = append(out, rs.src)
	}
	return out
}

// announceFetching tells canFetch whether the resolver has anything to fetch from.
func (r *Resolver) announceFetching() {
	if r.cfg.CanFetch != nil {
		r.cfg.CanFetch(len(r.peerSources()) > 0)
	}
}

// NewResolver returns a resolver built on cfg.
func NewResolver(cfg ResolverConfig) *Resolver {
	return &Resolver{cfg: cfg, log: cfg.Log, decoded: lru.New[flist.BlockID, []byte](decodedCacheBlocks)}
}

// Fetch returns the stored bytes of block id: from the cache, or fetched (once, however
// many callers ask at the same time) from the remote sources plus extra, verified and
// cached.
func (r *Resolver) Fetch(ctx context.Context, id flist.BlockID, extra ...Source) ([]byte, error) {
	if data, err := r.cfg.Cache.Get(ctx, id); err == nil {
		r.cfg.Stats.Cache.Add(int64(len(data)))
		return data, nil
	}
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	remote := append(append([]Source{}, r.cfg.Remote...), extra...)
	return r.inflight.Do(ctx, id, func(ctx context.Context) ([]byte, error) {
		return r.fetchMissing(ctx, id, remote, true)
	})
}

// Busy reports whether the node's own reads are waiting for blocks from outside: the
// p2p node then serves its neighbours behind them.
func (r *Resolver) Busy() bool { return r.waiting.Load() > 0 }

// FetchForPeer gets block id for a neighbour that asked this node as the block's
// designated fetcher (p2p.Service.Fetch): like Fetch, from the hubs and the routes of the
// flists in use (useRoutes), sharing the fetch with the node's own reads of the block,
// but never passing the request on to another designated fetcher (so requests cannot go
// round in circles), and only for a block of an flist this node has in use (mounted or
// being pulled), when it too sees itself as the fetcher and has somewhere to fetch from:
// otherwise the neighbour goes to its hub itself. (The p2p node bounds how many a peer
// may ask for.)
func (r *Resolver) FetchForPeer(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if data, err := r.cfg.Cache.Get(ctx, id); err == nil {
		return data, nil
	}
	if !r.inUse.has(id) {
		return nil, fmt.Errorf("block %x: %w: it is of no flist in use here", id, errNotFetcher)
	}
	if r.cfg.Peers != nil {
		if p, ok := r.cfg.Peers.Fetcher(id); ok {
			return nil, fmt.Errorf("block %x: %w: its designated fetcher is %s", id, errNotFetcher, p)
		}
	}
	sources := r.peerSources()
	if len(sources) == 0 {
		return nil, fmt.Errorf("block %x: %w: no hub and no flist's routes", id, errNotFetcher)
	}
	return r.inflight.Do(ctx, id, func(ctx context.Context) ([]byte, error) {
		return r.fetchMissing(ctx, id, sources, false)
	})
}

var errNotFetcher = errors.New("not fetching for a neighbour")

// fetchMissing is the fetch shared by the readers of a block missing from the cache:
// the neighbours that have it, then (for the node's own reads) the block's designated
// fetcher, then the remote sources. What it gets is cached.
func (r *Resolver) fetchMissing(ctx context.Context, id flist.BlockID, remote []Source, own bool) ([]byte, error) {
	if data, err := r.cfg.Cache.Get(ctx, id); err == nil { // filled while we waited
		return data, nil
	}
	start := time.Now()
	data, err := r.fetchPeers(ctx, id)
	source := "peers"
	if err != nil && own {
		data, err = r.fetchVia(ctx, id)
		source = "fetcher"
	}
	if err == nil {
		r.cfg.Stats.Peers.Add(int64(len(data)))
	} else {
		if data, err = r.fetchRemote(ctx, id, remote); err != nil {
			return nil, err
		}
		source = "hub"
		r.cfg.Stats.Hub.Add(int64(len(data)))
	}
	r.cfg.Latency.Observe(source, time.Since(start))
	if err := r.cfg.Cache.PutVerified(ctx, id, data); err != nil {
		r.log.Warn("caching a block failed", "id", id.String(), "err", err)
	}
	return data, nil
}

// fetchVia asks the block's designated fetcher, if that is a neighbour, bounded by the
// remote fetch timeout (the fetcher may have to get the block from its hub first).
func (r *Resolver) fetchVia(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if r.cfg.Peers == nil {
		return nil, errNoPeers
	}
	p, ok := r.cfg.Peers.Fetcher(id)
	if !ok {
		return nil, errNotFetcher
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	data, err := r.cfg.Peers.FetchVia(ctx, p, id)
	if err != nil {
		r.log.Debug("the designated fetcher did not give the block", "id", id.String(), "peer", p, "err", err)
	}
	return data, err
}

// fetchPeers asks the neighbours, bounded by peerTimeout so that a block no neighbour
// has soon goes to the hub. The p2p layer verifies what it returns.
func (r *Resolver) fetchPeers(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if r.cfg.Peers == nil {
		return nil, errNoPeers
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PeerTimeout)
	defer cancel()
	data, err := r.cfg.Peers.Get(ctx, id)
	if err != nil {
		r.log.Debug("no neighbour gave the block", "id", id.String(), "err", err)
	}
	return data, err
}

var errNoPeers = errors.New("no peer network")

// fetchRemote tries every one of sources, in random order, up to fetchAttempts rounds.
func (r *Resolver) fetchRemote(ctx context.Context, id flist.BlockID, sources []Source) ([]byte, error) {
	if len(sources) == 0 {
		return nil, fmt.Errorf("block %x: no hub or store to fetch it from", id)
	}
	var errs []error
	backoff := fetchBackoff
	for attempt := 0; attempt < fetchAttempts; attempt++ {
		if attempt > 0 {
			pause := backoff/2 + rand.N(backoff)
			select {
			case <-ctx.Done():
				return nil, errors.Join(append(errs, ctx.Err())...)
			case <-time.After(pause):
			}
			backoff *= 2
		}
		notFound := 0
		for _, i := range rand.Perm(len(sources)) {
			data, err := r.tryOne(ctx, sources[i], id)
			if err == nil {
				return data, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if isNotFound(err) {
				notFound++
			}
			errs = append(errs, err)
		}
		if notFound == len(sources) {
			break // every source answered: retrying will not help
		}
	}
	return nil, fmt.Errorf("block %x: %w", id, errors.Join(errs...))
}

func (r *Resolver) tryOne(ctx context.Context, src Source, id flist.BlockID) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	return src.Get(ctx, id)
}

// GetBlock returns the plain content of block b (mount.BlockGetter), decoding through the
// in-memory LRU so that repeated reads of a block decode it once.
func (r *Resolver) GetBlock(ctx context.Context, b flist.Block, extra ...Source) ([]byte, error) {
	if plain, ok := r.decoded.Get(b.ID); ok {
		return plain, nil
	}
	data, err := r.Fetch(ctx, b.ID, extra...)
	if err != nil {
		return nil, err
	}
	plain, err := flist.DecodeVerifiedBlock(b, data) // Fetch returns verified bytes only
	if err != nil {
		return nil, err
	}
	r.decoded.Add(b.ID, plain)
	return plain, nil
}

// flistGetter is the resolver as seen by one mount: with the flist's own routes as extra
// sources.
type flistGetter struct {
	r      *Resolver
	routes []Source
}

func (g flistGetter) GetBlock(ctx context.Context, b flist.Block) ([]byte, error) {
	return g.r.GetBlock(ctx, b, g.routes...)
}
