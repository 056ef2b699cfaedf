package p2p

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/zosfs/zosfs-agent/flist"
)

// Tuning of Get.
const (
	// askConnectedMax bounds the connected peers asked on the chance that they hold
	// what is wanted, each that lacks it costing a LAN round trip: for a block, the
	// neighbours without a have-filter (they do not speak HaveProtocolID, or theirs has
	// not arrived); for an flist, GetFlist asks its connected peers before the DHT's
	// providers only when there are at most this many.
	askConnectedMax = 16
	// getMaxProviders bounds the providers one flist lookup takes from the DHT.
	getMaxProviders = 16
	// getParallel bounds the peers one Get asks at the same time: the first one and one
	// hedge.
	getParallel = 2
)

// ProvideFlist announces in the DHT that this node holds the flist whose digest is
// digest (its CID is flist.FileCIDOf(digest)): the record is stored at the peers
// closest to the CID. Only flists go into the DHT, never blocks: a site's blocks are
// millions, its flists a few hundred; blocks are found through the neighbours'
// have-filters. It fails while the node knows no peer.
func (n *Node) ProvideFlist(ctx context.Context, digest []byte) error {
	c, err := n.flistCID(digest)
	if err != nil {
		return err
	}
	// With no peer the announcement can reach no one, and each attempt would still add a
	// local provider record that every later lookup scans.
	if len(n.Peers()) == 0 {
		return fmt.Errorf("p2p: provide %s: no peer connected", c)
	}
	if err := n.dht.Provide(ctx, c, true); err != nil {
		return fmt.Errorf("p2p: provide %s: %w", c, err)
	}
	return nil
}

// FindFlistProviders looks up in the DHT the peers that announced the flist digest, up
// to max of them (this node and banned peers left out). It returns when max are found,
// when the lookup ends, or when ctx ends (with what it found, or ctx's error if
// nothing). It does not ask connected peers: GetFlist does.
func (n *Node) FindFlistProviders(ctx context.Context, digest []byte, max int) ([]peer.ID, error) {
	c, err := n.flistCID(digest)
	if err != nil {
		return nil, err
	}
	if max <= 0 {
		max = getMaxProviders
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []peer.ID
	for ai := range n.dht.FindProvidersAsync(ctx, c, max+1) {
		if ai.ID == n.id || n.bans.banned(ai.ID) {
			continue
		}
		n.rememberAddrs(ai)
		out = append(out, ai.ID)
		if len(out) == max {
			break
		}
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("p2p: find providers of %s: %w", c, ctx.Err())
	}
	return out, nil
}

// Get returns the stored bytes of block id from some neighbour, verified: it is the
// agent's Source for neighbours. It asks the connected peers whose have-filter says they
// may have the block, in random order, then (up to askConnectedMax of them) those that
// have sent no filter; a peer whose filter says it lacks the block is not asked. No DHT
// lookup is made. Get asks one candidate, a second one too if the first has not answered
// within Config.HedgeDelay, and the next one as soon as one fails; the first verified
// answer wins. When every candidate failed (none had it, or those that had it failed or
// sent a wrong block) the error wraps ErrNotFound (and what each peer answered, e.g.
// flist.ErrBlockCorrupt). When ctx ends first, the error wraps both ErrNotFound and
// ctx's error.
func (n *Node) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if !id.Valid() {
		return nil, fmt.Errorf("p2p: no block id")
	}
	if _, ok := n.running(); !ok {
		return nil, ErrNotStarted
	}
	cands := n.blockCandidates(id)
	if len(cands) == 0 {
		return nil, fmt.Errorf("p2p: block %s: %w (no neighbour may have it)", id, ErrNotFound)
	}
	next := func(context.Context) (peer.ID, bool) {
		for len(cands) > 0 {
			p := cands[0]
			cands = cands[1:]
			if !n.bans.banned(p) {
				return p, true
			}
		}
		return "", false
	}
	data, errs, err := hedge(ctx, n.cfg.HedgeDelay, getParallel, next,
		func(ctx context.Context, p peer.ID) ([]byte, error) { return n.Fetch(ctx, p, id) })
	switch {
	case err == nil:
		return data, nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("p2p: block %s: %w: %w", id, ErrNotFound, ctx.Err())
	case len(errs) == 0:
		return nil, fmt.Errorf("p2p: block %s: %w (no peer to ask)", id, ErrNotFound)
	}
	return nil, fmt.Errorf("p2p: block %s: %w (asked %d peers): %w", id, ErrNotFound, len(errs), errors.Join(errs...))
}

// blockCandidates returns the neighbours to ask for block id, in Get's order: those
// whose have-filter says they may have it, then up to askConnectedMax of those that sent
// no filter, each group in random order.
func (n *Node) blockCandidates(id flist.BlockID) []peer.ID {
	var maybe, unknown []peer.ID
	for _, p := range n.peersSpeaking(ProtocolID) {
		switch has, known := n.mayHave(p, id); {
		case has:
			maybe = append(maybe, p)
		case !known:
			unknown = append(unknown, p)
		}
	}
	shuffle(maybe)
	shuffle(unknown)
	return append(maybe, unknown[:min(len(unknown), askConnectedMax)]...)
}

func shuffle(ps []peer.ID) {
	rand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
}

// peersSpeaking returns the connected peers that speak proto, or may: those whose
// protocols identify has not told yet.
func (n *Node) peersSpeaking(proto protocol.ID) []peer.ID {
	var out []peer.ID
	ps := n.host.Peerstore()
	for _, p := range n.host.Network().Peers() {
		if n.bans.banned(p) {
			continue
		}
		if protos, err := ps.GetProtocols(p); err == nil && len(protos) > 0 {
			if yes, err := ps.SupportsProtocols(p, proto); err != nil || len(yes) == 0 {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// rememberAddrs keeps a provider's addresses long enough to dial it.
func (n *Node) rememberAddrs(ai peer.AddrInfo) {
	if len(ai.Addrs) > 0 {
		n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	}
}

// flistCID checks digest and that the node runs, and returns the flist's CID.
func (n *Node) flistCID(digest []byte) (cid.Cid, error) {
	if _, ok := n.running(); !ok {
		return cid.Undef, ErrNotStarted
	}
	c, err := flist.FileCIDOf(digest)
	if err != nil {
		return cid.Undef, fmt.Errorf("p2p: %w", err)
	}
	return c, nil
}
