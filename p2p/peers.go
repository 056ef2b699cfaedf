package p2p

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/zosfs/zosfs-agent/flist"
)

// Per-peer bounds of the serving side: what one peer may cost this node, whatever it
// does, so that one peer cannot starve the others (a peer that never reads its streams,
// a stranger that asks this node to fetch ids at random).
const (
	// servePeerBlocks bounds the blocks read from the store for one peer and not yet
	// written to it, all its streams together (8 × 512 KiB = 4 MiB): an eighth of
	// serveMemBlocks, so that a peer that stops reading its streams holds at most its
	// own share of the serving memory, and the others are served from the rest. Eight
	// blocks in flight keep a LAN link to one peer busy.
	servePeerBlocks = 8
	// writeTimeoutStrikes is how many response writes to one peer may time out
	// (Config.WriteTimeout, each one costs it the stream) within strikeWindow before the
	// peer is banned like a protocol breaker: an honest client reads every answer as it
	// comes, so repeated stalls are an attack (or a link too slow to serve anyway).
	writeTimeoutStrikes = 3
	// strikeWindow is how long a write timeout counts against a peer.
	strikeWindow = 10 * time.Minute
	// fetchMissesBan is how many requests in a row a peer may make of this node as a
	// designated fetcher (FetchVia) for blocks Service.Fetch reports not found anywhere
	// (its error wraps ErrNotFound) before it is banned: a site's peers ask for the
	// blocks of the flists they read, which the hub has; a peer that asks for ids no one
	// has, again and again, makes this node query its hub for nothing.
	fetchMissesBan = 64
	// peerStateIdle is how long the serving state of a peer (budgets, strikes) is kept
	// after its last stream ended: a peer cannot reset its budget or its strikes by
	// closing its streams, and the state of peers long gone is dropped.
	peerStateIdle = 10 * time.Minute
)

// Defaults of the fetch budget (Config.FetchRate, Config.FetchBurst).
const (
	// DefaultFetchRate is the default rate, in blocks per second, at which this node
	// fetches blocks (Service.Fetch) on one peer's behalf as their designated fetcher:
	// 8 × 512 KiB = 4 MiB/s of hub traffic per peer, sustained.
	DefaultFetchRate = 8
	// DefaultFetchBurst is the default number of such fetches one peer may have made at
	// once beyond the rate: a cold start's first wave of an flist's blocks.
	DefaultFetchBurst = 64
)

// Reasons a peer is banned besides breaking the wire format.
var (
	errStalled    = errors.New("peer stops reading its block streams")
	errFetchMiss  = errors.New("peer keeps asking this node to fetch blocks no one has")
	errOverBudget = errors.New("over this peer's fetch budget")
)

// peerServe is the serving state of one peer, shared by its streams. Its fields other
// than mem and fetch (safe for concurrent use) are guarded by Node.peersMu.
type peerServe struct {
	mem   chan struct{} // servePeerBlocks tokens: blocks held in memory for the peer
	fetch *rate.Limiter // Service.Fetch calls on the peer's behalf

	streams     int       // streams of the peer being served
	idleSince   time.Time // when streams last fell to 0
	strikes     int       // write timeouts since firstStrike
	firstStrike time.Time
	fetchMisses int // fetches on its behalf in a row that found the block nowhere
}

// servingPeer returns p's serving state for one more stream of p; the caller calls
// donePeer when the stream ends. States idle for peerStateIdle are dropped on the way.
func (n *Node) servingPeer(p peer.ID) *peerServe {
	now := time.Now()
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	for q, ps := range n.peers {
		if ps.streams == 0 && now.Sub(ps.idleSince) > peerStateIdle {
			delete(n.peers, q)
		}
	}
	ps := n.peers[p]
	if ps == nil {
		lim := rate.Limit(n.cfg.FetchRate)
		if n.cfg.FetchRate < 0 {
			lim = rate.Inf
		}
		ps = &peerServe{
			mem:   make(chan struct{}, servePeerBlocks),
			fetch: rate.NewLimiter(lim, n.cfg.FetchBurst),
		}
		n.peers[p] = ps
	}
	ps.streams++
	return ps
}

// donePeer ends one stream's use of ps.
func (n *Node) donePeer(ps *peerServe) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if ps.streams--; ps.streams == 0 {
		ps.idleSince = time.Now()
	}
}

// acquireMem takes a token of ps's budget, then one of the node's (in that order: a
// peer waiting for its own budget holds none of the others'), until ctx ends.
func (n *Node) acquireMem(ctx context.Context, ps *peerServe) error {
	select {
	case ps.mem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case n.serveMem <- struct{}{}:
		return nil
	case <-ctx.Done():
		<-ps.mem
		return ctx.Err()
	}
}

// releaseMem gives back what acquireMem took.
func (n *Node) releaseMem(ps *peerServe) {
	<-n.serveMem
	<-ps.mem
}

// writeTimedOut counts a response write to p that timed out, and bans p at the
// writeTimeoutStrikes-th within strikeWindow.
func (n *Node) writeTimedOut(p peer.ID, ps *peerServe) {
	n.stats.writeTimeouts.Add(1)
	now := time.Now()
	n.peersMu.Lock()
	if ps.strikes == 0 || now.Sub(ps.firstStrike) > strikeWindow {
		ps.strikes, ps.firstStrike = 0, now
	}
	ps.strikes++
	strikes := ps.strikes
	if strikes >= writeTimeoutStrikes {
		ps.strikes = 0 // counted again from scratch once the ban ends
	}
	n.peersMu.Unlock()
	if strikes >= writeTimeoutStrikes {
		n.penalise(p, fmt.Errorf("%w: %d response writes timed out (after %v each)", errStalled, strikes, n.cfg.WriteTimeout))
	}
}

// fetchedFor records the outcome of a Service.Fetch call on p's behalf, and bans p at the
// fetchMissesBan-th block in a row found nowhere.
func (n *Node) fetchedFor(p peer.ID, ps *peerServe, err error) {
	n.peersMu.Lock()
	switch {
	case err == nil:
		ps.fetchMisses = 0
	case errors.Is(err, flist.ErrNotFound): // from any source the hook asked
		ps.fetchMisses++
	}
	misses := ps.fetchMisses
	if misses >= fetchMissesBan {
		ps.fetchMisses = 0
	}
	n.peersMu.Unlock()
	if misses >= fetchMissesBan {
		n.penalise(p, fmt.Errorf("%w: %d in a row", errFetchMiss, misses))
	}
}
