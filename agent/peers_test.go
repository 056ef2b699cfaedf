package agent

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/p2p"
)

// connectedNode starts a node that joins peer, and waits until it sees peer as a
// neighbour (and, if fetcher, as one that can fetch for the site).
func connectedNode(t *testing.T, peer *p2p.Node, fetcher bool) *p2p.Node {
	t.Helper()
	n := startTestNode(t, p2p.Config{Bootstrap: peer.Addrs()[:1]}, p2p.Service{})
	testkit.WaitFor(t, "the node to see its neighbour", 10*time.Second, func() bool {
		if len(n.Peers()) == 0 {
			return false
		}
		p, ok := n.Fetcher(flist.HashBlock([]byte("any block")))
		return !fetcher || (ok && p == peer.ID())
	})
	return n
}

// TestResolverAsksNeighboursFirst (issue 13, 15): a block a neighbour holds comes from it,
// not from the hub.
func TestResolverAsksNeighboursFirst(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("held by a neighbour"))
	holder := startTestNode(t, p2p.Config{}, p2p.Service{Blocks: &heldBlocks{m: map[flist.BlockID][]byte{b.ID: data}}})
	node := connectedNode(t, holder, false)
	hub := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
	r, c, stats := newTestResolver(ResolverConfig{Peers: node, PeerTimeout: 5 * time.Second}, hub)
	if got, err := r.Fetch(t.Context(), b.ID); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Fetch: %v", err)
	}
	if hub.calls.Load() != 0 || stats.Peers.Load() != int64(len(data)) {
		t.Errorf("hub calls %d, bytes from peers %d: want the block from the neighbour", hub.calls.Load(), stats.Peers.Load())
	}
	if !bytes.Equal(c.blocks[b.ID], data) {
		t.Error("the neighbour's block was not cached")
	}
}

// TestResolverPeerTimeout (issue 13, 15): a neighbour that says it has a block but never
// sends it holds a read for PeerTimeout, not longer; then the hub gives the block.
func TestResolverPeerTimeout(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("stuck at a neighbour"))
	staller := startTestNode(t, p2p.Config{}, p2p.Service{Blocks: stallingBlocks{}})
	node := connectedNode(t, staller, false)
	hub := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
	const peerTimeout = 300 * time.Millisecond
	r, _, _ := newTestResolver(ResolverConfig{Peers: node, PeerTimeout: peerTimeout, Timeout: 30 * time.Second}, hub)
	start := time.Now()
	if got, err := r.Fetch(t.Context(), b.ID); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Fetch: %v", err)
	}
	if d := time.Since(start); d > peerTimeout+2*time.Second {
		t.Errorf("the read took %s with a stalling neighbour, want about the peer timeout (%s)", d, peerTimeout)
	}
	if hub.calls.Load() != 1 {
		t.Errorf("hub calls %d, want 1", hub.calls.Load())
	}
}

// stallingBlocks has every block and never delivers one.
type stallingBlocks struct{}

func (stallingBlocks) Has(context.Context, flist.BlockID) (bool, error) { return true, nil }
func (stallingBlocks) Get(ctx context.Context, _ flist.BlockID) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestResolverLyingFetcher (issue 13, 15): the block's designated fetcher sends a wrong
// block: it is refused (and the fetcher banned), and the block comes from the hub.
func TestResolverLyingFetcher(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("asked of the fetcher"))
	_, other := flist.EncodeBlock([]byte("not it"))
	liar := startTestNode(t, p2p.Config{}, p2p.Service{
		Blocks: &heldBlocks{m: map[flist.BlockID][]byte{}},
		Fetch:  func(context.Context, flist.BlockID) ([]byte, error) { return other, nil },
	})
	node := connectedNode(t, liar, true)
	hub := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
	r, c, stats := newTestResolver(ResolverConfig{Peers: node, PeerTimeout: 2 * time.Second, Timeout: 5 * time.Second}, hub)
	if got, err := r.Fetch(t.Context(), b.ID); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Fetch: %v", err)
	}
	if stats.Peers.Load() != 0 || hub.calls.Load() != 1 {
		t.Errorf("bytes from peers %d, hub calls %d: want the block from the hub", stats.Peers.Load(), hub.calls.Load())
	}
	if !bytes.Equal(c.blocks[b.ID], data) {
		t.Error("the cache does not hold the good block")
	}
	if node.Stats().Banned != 1 {
		t.Errorf("%d neighbours banned, want the lying fetcher", node.Stats().Banned)
	}
}
