package agent

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/p2p"
)

// fakeNeighbours is a Neighbours in memory: no neighbour has any block (Get), the
// designated fetcher is fetcher ("" = this node), and FetchVia answers with via.
type fakeNeighbours struct {
	fetcher peer.ID
	via     func(id flist.BlockID) ([]byte, error)
	asked   atomic.Int64
}

func (n *fakeNeighbours) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	return nil, p2p.ErrNotFound
}

func (n *fakeNeighbours) Fetcher(id flist.BlockID) (peer.ID, bool) { return n.fetcher, n.fetcher != "" }

func (n *fakeNeighbours) FetchVia(ctx context.Context, p peer.ID, id flist.BlockID) ([]byte, error) {
	n.asked.Add(1)
	return n.via(id)
}

// TestResolverFirstWave: a block no neighbour has goes to its designated fetcher before
// the hub, and to the hub when the fetcher fails; as the fetcher, the resolver shares one
// hub fetch among every neighbour that asks and its own reads, and refuses to fetch a
// block whose fetcher it is not (so requests never go round in circles).
func TestResolverFirstWave(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("first wave"))
	hubBlocks := map[flist.BlockID][]byte{b.ID: data}

	t.Run("via the fetcher", func(t *testing.T) {
		hub := &fakeSource{fn: serving(hubBlocks)}
		r, c, stats := newTestResolver(ResolverConfig{Peers: &fakeNeighbours{fetcher: "other", via: serving(hubBlocks)}}, hub)
		got, err := r.Fetch(t.Context(), b.ID)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Fetch: %v", err)
		}
		if hub.calls.Load() != 0 || stats.Peers.Load() != int64(len(data)) || stats.Hub.Load() != 0 {
			t.Errorf("hub calls %d, stats peers %d hub %d", hub.calls.Load(), stats.Peers.Load(), stats.Hub.Load())
		}
		if _, err := c.Get(t.Context(), b.ID); err != nil {
			t.Errorf("not cached: %v", err)
		}
	})
	t.Run("fetcher fails", func(t *testing.T) {
		hub := &fakeSource{fn: serving(hubBlocks)}
		gone := &fakeNeighbours{fetcher: "other", via: func(flist.BlockID) ([]byte, error) { return nil, errors.New("gone") }}
		r, _, stats := newTestResolver(ResolverConfig{Peers: gone}, hub)
		if got, err := r.Fetch(t.Context(), b.ID); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Fetch: %v", err)
		}
		if hub.calls.Load() != 1 || stats.Hub.Load() != int64(len(data)) {
			t.Errorf("hub calls %d, stats hub %d", hub.calls.Load(), stats.Hub.Load())
		}
	})
	t.Run("as the fetcher", func(t *testing.T) {
		hub := &fakeSource{delay: 50 * time.Millisecond, fn: serving(hubBlocks)}
		nb := &fakeNeighbours{}
		r, _, stats := newTestResolver(ResolverConfig{Peers: nb}, hub)
		defer r.inUse.add([]flist.Block{b})() // a block of an flist this node uses
		var wg sync.WaitGroup
		errs := make(chan error, 11)
		for i := range 11 {
			wg.Go(func() {
				var got []byte
				var err error
				if i == 0 {
					got, err = r.Fetch(t.Context(), b.ID)
				} else {
					got, err = r.FetchForPeer(t.Context(), b.ID)
				}
				if err == nil && !bytes.Equal(got, data) {
					err = errors.New("wrong bytes")
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if hub.calls.Load() != 1 || nb.asked.Load() != 0 {
			t.Errorf("hub calls %d (want 1), fetchers asked %d (want 0)", hub.calls.Load(), nb.asked.Load())
		}
		if stats.Hub.Load() != int64(len(data)) {
			t.Errorf("stats hub %d, want %d", stats.Hub.Load(), len(data))
		}
	})
	t.Run("not the fetcher", func(t *testing.T) {
		hub := &fakeSource{fn: serving(hubBlocks)}
		nb := &fakeNeighbours{fetcher: "other", via: serving(hubBlocks)}
		r, _, _ := newTestResolver(ResolverConfig{Peers: nb}, hub)
		if _, err := r.FetchForPeer(t.Context(), b.ID); !errors.Is(err, errNotFetcher) {
			t.Errorf("FetchForPeer of a block whose fetcher is another node: %v, want errNotFetcher", err)
		}
		if hub.calls.Load() != 0 || nb.asked.Load() != 0 {
			t.Errorf("hub calls %d, fetchers asked %d: want none", hub.calls.Load(), nb.asked.Load())
		}
	})
}

// TestResolverRoutesForPeers: a resolver without hubs fetches for neighbours from the
// routes of the flists in use, and tells the p2p node whether it can (canFetch) as routes
// come and go.
func TestResolverRoutesForPeers(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("through routes"))
	var can []bool
	r, _, stats := newTestResolver(ResolverConfig{ // no hub
		Peers:    &fakeNeighbours{},
		CanFetch: func(ok bool) { can = append(can, ok) },
	})
	r.announceFetching()
	defer r.inUse.add([]flist.Block{b})()
	if _, err := r.FetchForPeer(t.Context(), b.ID); !errors.Is(err, errNotFetcher) {
		t.Fatalf("FetchForPeer with nowhere to fetch from: %v, want errNotFetcher", err)
	}
	route := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
	done := r.useRoutes(route)
	got, err := r.FetchForPeer(t.Context(), b.ID)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("FetchForPeer through a route: %v", err)
	}
	if route.calls.Load() != 1 || stats.Hub.Load() != int64(len(data)) {
		t.Errorf("route calls %d, stats hub %d", route.calls.Load(), stats.Hub.Load())
	}
	done()
	if want := []bool{false, true, false}; !slices.Equal(can, want) {
		t.Errorf("canFetch calls %v, want %v", can, want)
	}
}

// TestFetchForPeerOnlyInUse (issue 13, 3): the node fetches for a neighbour only the
// blocks of flists it has in use; while an flist's blocks are being listed, any block
// may be one of them.
func TestFetchForPeerOnlyInUse(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("in use"))
	hub := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
	r, _, _ := newTestResolver(ResolverConfig{Peers: &fakeNeighbours{}}, hub)
	if _, err := r.FetchForPeer(t.Context(), b.ID); !errors.Is(err, errNotFetcher) || hub.calls.Load() != 0 {
		t.Fatalf("a block of no flist in use: %v after %d hub calls, want errNotFetcher and none", err, hub.calls.Load())
	}
	done := r.inUse.add([]flist.Block{b})
	if got, err := r.FetchForPeer(t.Context(), b.ID); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a block of an flist in use: %v", err)
	}
	done()
	if r.inUse.has(b.ID) {
		t.Error("the block is still in use after its flist's use ended")
	}
	other, _ := flist.EncodeBlock([]byte("not in use"))

	// An flist being listed: its blocks are not known yet, so none is refused.
	r.inUse.mu.Lock()
	r.inUse.listing++
	r.inUse.mu.Unlock()
	if !r.inUse.has(other.ID) {
		t.Error("a block refused while an flist's blocks were being listed")
	}
}
