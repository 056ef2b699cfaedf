package p2p

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Stats is a snapshot of the node's block exchange counters, since New.
type Stats struct {
	ServedBlocks int64 // blocks sent to peers
	ServedBytes  int64 // bytes of the blocks sent to peers
	// FetchedFor counts the blocks this node fetched for a peer, as their designated
	// fetcher (served too, so also in ServedBlocks).
	FetchedFor int64
	// FetchedBlocks and FetchedBytes count the verified blocks obtained from peers.
	FetchedBlocks int64
	FetchedBytes  int64
	// FetchedBytesByPeer is FetchedBytes by the peer that sent them.
	FetchedBytesByPeer map[peer.ID]int64
	// ServedFlists and FetchedFlists count the flist files sent to peers and the
	// verified ones obtained from peers (FlistProtocolID).
	ServedFlists  int64
	FetchedFlists int64
	// Rejected counts blocks (and flists) from peers that did not hash to their id.
	Rejected int64
	// ProtocolErrors counts peers caught breaking the wire format (each is banned).
	ProtocolErrors int64
	// WriteTimeouts counts the block streams lost by peers that stopped reading them
	// (a response write took longer than Config.WriteTimeout).
	WriteTimeouts int64
	// FetchRefused counts the requests to fetch a block for a peer that were refused
	// because the peer was over its fetch budget (Config.FetchRate).
	FetchRefused int64
	// Banned is the number of peers banned now.
	Banned int
	// DHTMessages counts the DHT messages this node sent (queries, answers, provider
	// records): what the site's DHT costs it.
	DHTMessages int64
	// HaveSentBytes counts the bytes of have-filters and updates sent to neighbours;
	// HaveHeldBytes is the size of the neighbours' filters held now.
	HaveSentBytes int64
	HaveHeldBytes int64
}

// counters are the node's live counters.
type counters struct {
	servedBlocks, servedBytes   atomic.Int64
	fetchedBlocks, fetchedBytes atomic.Int64
	rejected, protocolErrors    atomic.Int64
	fetchedFor                  atomic.Int64
	writeTimeouts, fetchRefused atomic.Int64
	servedFlists, fetchedFlists atomic.Int64
	dhtSent, haveSent           atomic.Int64

	mu     sync.Mutex
	byPeer map[peer.ID]int64
}

func (c *counters) addFetched(p peer.ID, n int) {
	c.fetchedBlocks.Add(1)
	c.fetchedBytes.Add(int64(n))
	c.mu.Lock()
	if c.byPeer == nil {
		c.byPeer = map[peer.ID]int64{}
	}
	c.byPeer[p] += int64(n)
	c.mu.Unlock()
}

// Stats returns a snapshot of the node's counters.
func (n *Node) Stats() Stats {
	c := &n.stats
	c.mu.Lock()
	byPeer := maps.Clone(c.byPeer)
	c.mu.Unlock()
	if byPeer == nil {
		byPeer = map[peer.ID]int64{}
	}
	return Stats{
		ServedBlocks:       c.servedBlocks.Load(),
		ServedBytes:        c.servedBytes.Load(),
		FetchedFor:         c.fetchedFor.Load(),
		FetchedBlocks:      c.fetchedBlocks.Load(),
		FetchedBytes:       c.fetchedBytes.Load(),
		FetchedBytesByPeer: byPeer,
		ServedFlists:       c.servedFlists.Load(),
		FetchedFlists:      c.fetchedFlists.Load(),
		Rejected:           c.rejected.Load(),
		ProtocolErrors:     c.protocolErrors.Load(),
		WriteTimeouts:      c.writeTimeouts.Load(),
		FetchRefused:       c.fetchRefused.Load(),
		Banned:             n.bans.count(),
		DHTMessages:        c.dhtSent.Load(),
		HaveSentBytes:      c.haveSent.Load(),
		HaveHeldBytes:      n.haveBytes(),
	}
}

// Banned reports whether peer p is banned now (it sent a wrong block or broke the
// protocol within Config.BanDuration).
func (n *Node) Banned(p peer.ID) bool { return n.bans.banned(p) }
