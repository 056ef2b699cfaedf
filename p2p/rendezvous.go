package p2p

import (
	"bytes"
	"crypto/sha256"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/zosfs/zosfs-agent/flist"
)

// FetcherProtocolID is advertised (through identify; no stream is ever served) by the
// nodes that can fetch blocks for the site (SetCanFetch), so that only they are
// designated fetchers.
const FetcherProtocolID protocol.ID = "/zosfs/fetcher/1.0.0"

// SetCanFetch says whether this node can fetch blocks for the site now (its Service.Fetch
// has a hub or an flist's routes to fetch from; true from the start when Service.Fetch is
// set). Only such nodes are designated fetchers: they advertise FetcherProtocolID, and
// identify tells the peers when that changes. A node without Service.Fetch never can.
func (n *Node) SetCanFetch(can bool) {
	can = can && n.svc.Fetch != nil
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.canFetch.Swap(can) != can && n.started.Load() && !n.closed.Load() {
		n.advertiseFetcher(can)
	}
}

// advertiseFetcher adds or removes the FetcherProtocolID handler (it serves nothing:
// the protocol is only a mark that identify shows the peers).
func (n *Node) advertiseFetcher(can bool) {
	if can {
		n.host.SetStreamHandler(FetcherProtocolID, func(s network.Stream) { s.Reset() })
	} else {
		n.host.RemoveStreamHandler(FetcherProtocolID)
	}
}

// Fetcher names block id's designated fetcher among the site: this node and the
// connected peers known to be able to fetch (those that advertise FetcherProtocolID; not
// banned). It is rendezvous (highest random weight) hashing: every member scores
// sha256(peer id ‖ block id) and the highest score wins, so nodes that see the same
// peers agree on one fetcher per block without talking, and a node joining or leaving
// moves only its own share. When several nodes cold-start the same flist (the first
// wave), each asks a block's designated fetcher (FetchVia) instead of the hub, and the
// hub sends each block once. It returns ok = false when this node is the fetcher or
// when no connected peer can fetch.
func (n *Node) Fetcher(id flist.BlockID) (p peer.ID, ok bool) {
	var best peer.ID
	var bestScore [sha256.Size]byte
	if n.canFetch.Load() {
		best, bestScore = n.id, rendezvousScore(n.id, id)
	}
	for _, q := range n.sitePeers() {
		if s := rendezvousScore(q, id); best == "" || bytes.Compare(s[:], bestScore[:]) > 0 {
			best, bestScore = q, s
		}
	}
	return best, best != "" && best != n.id
}

func rendezvousScore(p peer.ID, id flist.BlockID) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(p))
	h.Write(id.Bytes())
	var s [sha256.Size]byte
	h.Sum(s[:0])
	return s
}

// sitePeers returns the connected peers, not banned, that are known to be able to fetch
// for the site (they advertise FetcherProtocolID): the members of the rendezvous besides
// this node. A peer whose protocols are not known yet is left out, so that nodes agree
// as soon as identify ran.
func (n *Node) sitePeers() []peer.ID {
	if _, ok := n.running(); !ok {
		return nil
	}
	var out []peer.ID
	ps := n.host.Peerstore()
	for _, p := range n.host.Network().Peers() {
		if n.bans.banned(p) {
			continue
		}
		if yes, err := ps.SupportsProtocols(p, FetcherProtocolID); err == nil && len(yes) > 0 {
			out = append(out, p)
		}
	}
	return out
}
