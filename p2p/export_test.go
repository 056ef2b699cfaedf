package p2p

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// ClearDialBackoff forgets the dial backoff of n's swarm for p: after a dial to p fails
// (a DHT query's dial that timed out on a loaded machine, say), the swarm refuses to dial
// p again for BackoffBase (5 s) and more with "dial backoff". Tests that need a later
// dial to p to be tried clear it.
func ClearDialBackoff(n *Node, p peer.ID) {
	if sw, ok := n.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
}
