package p2p

import (
	"context"
	"encoding/hex"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Tuning of flist sessions.
const (
	// sessionPeers is how many holders of an flist a session connects to beyond the
	// neighbours the node has: enough that most of the flist's blocks have a holder among
	// them, few enough to stay within the connection manager's bounds.
	sessionPeers = 8
	// sessionLookupTimeout bounds a session's DHT lookup and dials.
	sessionLookupTimeout = 20 * time.Second
	// sessionRetry is how long a session that found no holder waits before looking up
	// again (the holders may still be announcing).
	sessionRetry = time.Minute
)

// JoinFlist opens a session for the flist whose digest is digest, for as long as it is in
// use (mounted, pulled): the node looks its holders up in the DHT, connects to up to
// sessionPeers of them it is not connected to, and keeps them connected (protected from
// the connection manager's trimming) until leave is called. Their have-filters then tell
// the node which of the flist's blocks they hold, and Get asks them: on a site of
// hundreds, the holders of a rare flist are seldom among a node's neighbours. The lookup
// runs in the background, again after sessionRetry while it finds no holder; JoinFlist
// does not wait. leave may be called more than once.
func (n *Node) JoinFlist(digest []byte) (leave func()) {
	h, ok := n.running()
	if !ok || !n.track() {
		return func() {}
	}
	tag := "zosfs-flist-" + hex.EncodeToString(digest[:min(len(digest), 8)])
	ctx, cancel := context.WithCancel(n.ctx)
	var mu sync.Mutex
	var joined []peer.ID
	go func() {
		defer n.bg.Done()
		for {
			ps := n.joinHolders(ctx, h, digest, tag)
			mu.Lock()
			if ctx.Err() != nil { // left meanwhile: leave has unprotected the others
				for _, p := range ps {
					h.ConnManager().Unprotect(p, tag)
				}
			} else {
				joined = append(joined, ps...)
			}
			mu.Unlock()
			if len(ps) > 0 || ctx.Err() != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(sessionRetry):
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			mu.Lock()
			defer mu.Unlock()
			for _, p := range joined {
				h.ConnManager().Unprotect(p, tag)
			}
		})
	}
}

// joinHolders connects to up to sessionPeers holders of digest and protects them under
// tag; it returns the holders it protected (those connected already included), none when
// the DHT names none or none could be reached.
func (n *Node) joinHolders(ctx context.Context, h host.Host, digest []byte, tag string) []peer.ID {
	ctx, cancel := context.WithTimeout(ctx, sessionLookupTimeout)
	defer cancel()
	provs, err := n.FindFlistProviders(ctx, digest, sessionPeers)
	if err != nil {
		n.log.Debug("flist session: lookup failed", "tag", tag, "err", err)
		return nil
	}
	var mu sync.Mutex
	var out []peer.ID
	var wg sync.WaitGroup
	for _, p := range provs {
		wg.Go(func() {
			if h.Network().Connectedness(p) != network.Connected {
				// FindFlistProviders kept the addresses the DHT gave.
				if err := h.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
					n.log.Debug("flist session: holder unreachable", "peer", p.String(), "err", err)
					return
				}
			}
			h.ConnManager().Protect(p, tag)
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	n.log.Debug("flist session joined", "tag", tag, "holders", len(provs), "connected", len(out))
	return out
}
