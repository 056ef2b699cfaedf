package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/p2p"
	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// TestPeersConformance runs the block store conformance suite (store/storetest) against
// the site's neighbours as the resolver uses them: a real libp2p node on loopback asking a
// neighbour that serves the suite's blocks. Every block the suite seeds hashes to its id,
// as the neighbours check.
func TestPeersConformance(t *testing.T) {
	storetest.RunVerifiedReadOnly(t, func(t *testing.T) (store.Store, storetest.Putter) {
		held := &heldBlocks{m: map[flist.BlockID][]byte{}}
		server := startTestNode(t, p2p.Config{}, p2p.Service{Blocks: held})
		client := startTestNode(t, p2p.Config{Bootstrap: server.Addrs()[:1]}, p2p.Service{})
		deadline := time.Now().Add(10 * time.Second)
		for len(client.Peers()) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the client did not connect to the server")
			}
			time.Sleep(20 * time.Millisecond)
		}
		return peerStore{client}, held
	})
}

// peerStore is a p2p node seen as a read-only store: Get and Has ask its neighbours.
type peerStore struct{ n *p2p.Node }

func (s peerStore) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	data, err := s.n.Get(ctx, id)
	if errors.Is(err, p2p.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return data, err
}

func (s peerStore) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	_, err := s.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
		return false, nil
	}
	return err == nil, err
}

func (s peerStore) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	if !id.Valid() {
		return errors.New("no id")
	}
	return store.ErrReadOnly
}

func (s peerStore) String() string { return "peers of " + s.n.ID().String() }
func (s peerStore) Close() error   { return nil }

// heldBlocks is what the serving node holds (p2p.BlockStore), seeded by the suite.
type heldBlocks struct {
	mu sync.Mutex
	m  map[flist.BlockID][]byte
}

func (h *heldBlocks) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[id] = data
	return nil
}

func (h *heldBlocks) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d, ok := h.m[id]; ok {
		return d, nil
	}
	return nil, store.ErrNotFound
}

func (h *heldBlocks) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.m[id]
	return ok, nil
}

// startTestNode starts a p2p node on loopback, without mDNS, stopped at the test's end.
func startTestNode(t *testing.T, cfg p2p.Config, svc p2p.Service) *p2p.Node {
	t.Helper()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.NoMDNS = true
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := p2p.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}
