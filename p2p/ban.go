package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// banList is an in-memory list of banned peers, each until an expiry. A peer is banned
// for a provable fault only — a block that does not hash to the id asked for, or a
// violation of the wire format — so one fault is enough. Slow or failing peers are not
// banned: Get simply moves on to another provider.
type banList struct {
	dur time.Duration
	mu  sync.Mutex
	m   map[peer.ID]time.Time // peer -> end of the ban
}

func newBanList(dur time.Duration) *banList {
	return &banList{dur: dur, m: map[peer.ID]time.Time{}}
}

// ban bans p for the list's duration from now; expired bans are dropped on the way so
// that the list stays as small as the set of peers banned in the last duration.
func (b *banList) ban(p peer.ID) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for q, until := range b.m {
		if now.After(until) {
			delete(b.m, q)
		}
	}
	b.m[p] = now.Add(b.dur)
}

// banned reports whether p is banned now.
func (b *banList) banned(p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	until, ok := b.m[p]
	if !ok {
		return false
	}
	if time.Now().After(until) {
		delete(b.m, p)
		return false
	}
	return true
}

// count returns the number of peers banned now.
func (b *banList) count() int {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, until := range b.m {
		if !now.After(until) {
			n++
		}
	}
	return n
}

// gater keeps banned peers out: no dial to them, no connection from them once their
// identity is known (after the security handshake).
type gater struct{ bans *banList }

func (g gater) InterceptPeerDial(p peer.ID) bool                 { return !g.bans.banned(p) }
func (g gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return !g.bans.banned(p) }
func (g gater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.bans.banned(p)
}
func (g gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
