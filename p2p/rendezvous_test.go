package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/p2p"
)

// TestFirstWave: nodes connected to each other agree on one designated fetcher per block
// (each gets a fair share); FetchVia makes the fetcher get a block it lacks through its
// Fetch hook (the agent's resolver, which shares one fetch among the askers: tested in
// agent); a node that has no hook, or a block no one can get, gives an error, not a hang.
func TestFirstWave(t *testing.T) {
	blocks := makeBlocks(t, 64, 16<<10)
	byID := map[flist.BlockID][]byte{}
	for _, b := range blocks {
		byID[b.id] = b.data
	}
	// hub is what every node's Fetch hook fetches from: it counts the fetches.
	var hubFetches atomic.Int64
	hub := func(ctx context.Context, id flist.BlockID) ([]byte, error) {
		hubFetches.Add(1)
		if data, ok := byID[id]; ok {
			return data, nil
		}
		return nil, errors.New("not on the hub")
	}
	const n = 4
	var nodes []*p2p.Node
	for i := range n {
		var cfg p2p.Config
		if i > 0 {
			cfg.Bootstrap = []string{loopAddr(t, nodes[0])}
		}
		nodes = append(nodes, startNode(t, cfg, p2p.Service{Blocks: newStore(), Fetch: hub}))
	}
	for _, x := range nodes[1:] {
		for _, y := range nodes[1:] {
			if x != y {
				if err := x.Connect(ctxTimeout(t, 5*time.Second), loopAddr(t, y)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Agreement, once every node knows every other speaks the block protocol.
	fetcherOf := func(x *p2p.Node, id flist.BlockID) peer.ID {
		if p, ok := x.Fetcher(id); ok {
			return p
		}
		return x.ID()
	}
	testkit.WaitFor(t, "the nodes to agree on the fetchers", 10*time.Second, func() bool {
		for _, b := range blocks {
			want := fetcherOf(nodes[0], b.id)
			for _, x := range nodes[1:] {
				if fetcherOf(x, b.id) != want {
					return false
				}
			}
		}
		return true
	})
	share := map[peer.ID]int{}
	for _, b := range blocks {
		share[fetcherOf(nodes[0], b.id)]++
	}
	for _, x := range nodes {
		if share[x.ID()] < len(blocks)/n/3 {
			t.Errorf("node %s is the fetcher of %d of %d blocks: not a fair share (%v)", x.ID(), share[x.ID()], len(blocks), share)
		}
	}

	// Every node asks every block's fetcher, all at the same time.
	ctx := ctxTimeout(t, 30*time.Second)
	errs := make(chan error, n*len(blocks))
	for _, x := range nodes {
		for _, b := range blocks {
			go func() {
				p, ok := x.Fetcher(b.id)
				if !ok {
					errs <- nil // its own: it would go to its hub
					return
				}
				data, err := x.FetchVia(ctx, p, b.id)
				if err == nil && !bytes.Equal(data, b.data) {
					err = errors.New("wrong bytes")
				}
				errs <- err
			}()
		}
	}
	for range n * len(blocks) {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Each block's fetcher was asked by the n-1 others, and fetched for each.
	want := int64((n - 1) * len(blocks))
	if got := hubFetches.Load(); got != want {
		t.Errorf("%d hub fetches, want %d", got, want)
	}
	var fetchedFor int64
	for _, x := range nodes {
		fetchedFor += x.Stats().FetchedFor
	}
	if fetchedFor != want {
		t.Errorf("fetched for peers %d times, want %d", fetchedFor, want)
	}

	// A block no hub has: an error from the fetcher, at once.
	id := missingID()
	for _, x := range nodes {
		if p, ok := x.Fetcher(id); ok {
			if _, err := x.FetchVia(ctx, p, id); err == nil {
				t.Error("FetchVia of a block no one has succeeded")
			}
			break
		}
	}
	// A node without a Fetch hook answers FetchVia "not found".
	plain := startNode(t, p2p.Config{}, p2p.Service{Blocks: newStore()})
	if err := nodes[0].Connect(ctx, loopAddr(t, plain)); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].FetchVia(ctx, plain.ID(), blocks[0].id); !errors.Is(err, p2p.ErrNotFound) {
		t.Errorf("FetchVia from a node without a Fetch hook: %v, want ErrNotFound", err)
	}
	// Such a node (it has no hub) is never a designated fetcher, and it sends every
	// block to one that can fetch.
	testkit.WaitFor(t, "the node without a hook to learn its peer can fetch", 10*time.Second, func() bool {
		_, ok := plain.Fetcher(blocks[0].id)
		return ok
	})
	for _, b := range blocks {
		if p, ok := plain.Fetcher(b.id); !ok || p == plain.ID() {
			t.Fatalf("the node without a Fetch hook names %s (ok %v) as a fetcher", p, ok)
		}
		if p, _ := nodes[0].Fetcher(b.id); p == plain.ID() {
			t.Fatalf("a node without a Fetch hook was designated")
		}
	}
}

// TestServeRate: a node with Config.ServeRate never sends faster than it (a lower bound on
// the time, which a shared machine cannot break), and the blocks still arrive whole.
func TestServeRate(t *testing.T) {
	blocks := makeBlocks(t, 24, 512<<10)
	var total int64
	for _, b := range blocks {
		total += int64(len(b.data))
	}
	const rate = 4 << 20
	a := startNode(t, p2p.Config{ServeRate: rate}, p2p.Service{Blocks: newStore(blocks...)})
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "connection", 5*time.Second, func() bool { return connected(c, a.ID()) })
	ctx := ctxTimeout(t, time.Minute)
	start := time.Now()
	errs := make(chan error, len(blocks))
	for _, b := range blocks {
		go func() {
			data, err := c.Fetch(ctx, a.ID(), b.id)
			if err == nil && !bytes.Equal(data, b.data) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		}()
	}
	for range blocks {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The limiter starts full: its burst is the largest block (flist.MaxBlockStored).
	min := time.Duration(float64(total-flist.MaxBlockStored) / rate * float64(time.Second))
	if took := time.Since(start); took < min {
		t.Errorf("%d bytes served in %v at a rate of %d B/s: faster than the bound allows (%v)", total, took, rate, min)
	}
	if got := a.Stats().ServedBytes; got != total {
		t.Errorf("served %d bytes, want %d", got, total)
	}
}
