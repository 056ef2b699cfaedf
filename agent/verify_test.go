package agent

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/p2p"
)

// TestWrongBlocksRejected (issues 10 and 13, 15): a wrong block is refused where it
// enters the daemon, for each kind of source: a store (verified), a hub (the hub client),
// a neighbour (the p2p node, which also bans it). The read gets the block from a good
// source instead, and no wrong block is cached.
func TestWrongBlocksRejected(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("the real block"))
	_, other := flist.EncodeBlock([]byte("something else"))
	lies := func(flist.BlockID) ([]byte, error) { return other, nil }
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// A hub that answers every block with the wrong bytes.
	lyingHub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(other) }))
	t.Cleanup(lyingHub.Close)
	hc, err := hub.NewClient(lyingHub.URL, "", lyingHub.Client())
	if err != nil {
		t.Fatal(err)
	}

	for name, bad := range map[string]Source{
		"store": verified{&fakeSource{fn: lies}, quiet},
		"hub":   hubSource{hc},
	} {
		t.Run(name, func(t *testing.T) {
			good := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
			r, c, _ := newTestResolver(ResolverConfig{}, bad, good)
			for range 5 { // random order: the bad one is met first some of the time
				c.blocks = map[flist.BlockID][]byte{}
				if got, err := r.Fetch(t.Context(), b.ID); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("fetch with a lying and a good source: %v", err)
				}
			}
			r, c, _ = newTestResolver(ResolverConfig{}, bad)
			if _, err := r.Fetch(t.Context(), b.ID); !errors.Is(err, flist.ErrBlockCorrupt) {
				t.Errorf("only a lying source: err = %v, want ErrBlockCorrupt", err)
			}
			if len(c.blocks) != 0 {
				t.Error("a wrong block was cached")
			}
		})
	}

	t.Run("neighbour", func(t *testing.T) {
		liar := startTestNode(t, p2p.Config{}, p2p.Service{Blocks: &heldBlocks{m: map[flist.BlockID][]byte{b.ID: other}}})
		node := startTestNode(t, p2p.Config{Bootstrap: liar.Addrs()[:1]}, p2p.Service{})
		for deadline := time.Now().Add(10 * time.Second); len(node.Peers()) == 0; {
			if time.Now().After(deadline) {
				t.Fatal("the node did not connect to the lying neighbour")
			}
			time.Sleep(20 * time.Millisecond)
		}
		good := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
		r, c, stats := newTestResolver(ResolverConfig{Peers: node, PeerTimeout: 5 * time.Second}, good)
		if got, err := r.Fetch(t.Context(), b.ID); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch with a lying neighbour: %v", err)
		}
		if stats.Peers.Load() != 0 || stats.Hub.Load() != int64(len(data)) || good.calls.Load() != 1 {
			t.Errorf("peers %d bytes, hub %d bytes, hub calls %d: want the block from the hub only", stats.Peers.Load(), stats.Hub.Load(), good.calls.Load())
		}
		if !bytes.Equal(c.blocks[b.ID], data) {
			t.Error("the cache does not hold the good block")
		}
		if node.Stats().Banned != 1 {
			t.Errorf("%d neighbours banned, want the liar", node.Stats().Banned)
		}
	})
}
