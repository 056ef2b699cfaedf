package p2p

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/zosfs/zosfs-agent/flist"
)

// Tuning of Get.
const (
	// askConnectedMax: when the node is connected to at most this many peers that speak
	// the block protocol, Get asks them (in random order) without waiting for the DHT: a
	// peer that lacks the block says so in one LAN round trip, cheaper than a lookup.
	// With more peers than that, Get asks only the providers the DHT names.
	askConnectedMax = 16
	// getMaxProviders bounds the providers one Get takes from the DHT.
	getMaxProviders = 16
	// getParallel bounds the peers one Get asks at the same time: the first one and one
	// hedge.
	getParallel = 2
)

// Provide announces in the DHT that this node has block id (its CID is
// flist.BlockCID(id)): the record is stored at the peers closest to the CID. It fails
// while the node knows no peer.
func (n *Node) Provide(ctx context.Context, id flist.BlockID) error {
	c, err := n.blockCID(id)
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

// FindProviders looks up in the DHT the peers that announced block id, up to max of
// them (this node and banned peers left out). It returns when max are found, when the
// lookup ends, or when ctx ends (with what it found, or ctx's error if nothing). It does
// not ask connected peers: Get does.
func (n *Node) FindProviders(ctx context.Context, id flist.BlockID, max int) ([]peer.ID, error) {
	c, err := n.blockCID(id)
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

// Get returns the stored bytes of block id from some peer, verified: it is the agent's
// Source for neighbours. Candidates come in this order: connected peers the DHT names as
// providers, then the other connected peers (when there are at most askConnectedMax of
// them), then providers the DHT names that are not connected (dialled). Get asks one
// candidate, a second one too if the first has not answered within Config.HedgeDelay,
// and the next one as soon as one fails; the first verified answer wins. When every
// candidate failed (none had it, or those that had it failed or sent a wrong block) the
// error wraps ErrNotFound (and what each peer answered, e.g. flist.ErrBlockCorrupt).
// When ctx ends first, the error wraps both ErrNotFound and ctx's error.
func (n *Node) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	c, err := n.blockCID(id)
	if err != nil {
		return nil, err
	}
	if len(n.Peers()) == 0 { // alone: no one to ask, and no lookup to pay for
		return nil, fmt.Errorf("p2p: %x: %w (no peer connected)", id, ErrNotFound)
	}
	it := n.candidates(c, ProtocolID)
	data, errs, err := hedge(ctx, n.cfg.HedgeDelay, getParallel, it.Next,
		func(ctx context.Context, ai peer.AddrInfo) ([]byte, error) {
			n.rememberAddrs(ai)
			return n.Fetch(ctx, ai.ID, id)
		})
	switch {
	case err == nil:
		return data, nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("p2p: block %s: %w: %w", id.String(), ErrNotFound, ctx.Err())
	case len(errs) == 0:
		return nil, fmt.Errorf("p2p: block %s: %w (no peer to ask)", id.String(), ErrNotFound)
	}
	return nil, fmt.Errorf("p2p: block %s: %w (asked %d peers): %w", id.String(), ErrNotFound, len(errs), errors.Join(errs...))
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

// blockCID checks id and that the node runs, and returns the block's CID.
func (n *Node) blockCID(id flist.BlockID) (cid.Cid, error) {
	if _, ok := n.running(); !ok {
		return cid.Undef, ErrNotStarted
	}
	c, err := flist.BlockCID(id)
	if err != nil {
		return cid.Undef, fmt.Errorf("p2p: %w", err)
	}
	return c, nil
}
