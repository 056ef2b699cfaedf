package p2p_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/p2p"
)

// rawHost is a bare libp2p host on loopback connected to n: a peer that speaks the block
// protocol by hand.
func rawHost(t testing.TB, n *p2p.Node) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ai, err := peer.AddrInfoFromString(loopAddr(t, n))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(ctxTimeout(t, 10*time.Second), *ai); err != nil {
		t.Fatal(err)
	}
	return h
}

// request is the wire frame of a block request (see wire.go).
func request(reqID uint64, id flist.BlockID, flags byte) []byte {
	body := binary.AppendUvarint(nil, reqID)
	body = append(body, id.Bytes()...)
	if flags != 0 {
		body = append(body, flags)
	}
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

// TestStallingReader: a peer that opens block streams, sends requests on them and never
// reads the answers holds no more than its own share of the serving memory: an honest
// neighbour's Get of 20 blocks still completes within a bound while the staller holds
// its streams, and the staller, whose writes time out, ends banned.
func TestStallingReader(t *testing.T) {
	blocks := makeBlocks(t, 20, 512<<10)
	store := newStore(blocks...)
	// A short write timeout, so that the staller's strikes come within the test's time.
	a := startNode(t, p2p.Config{WriteTimeout: 3 * time.Second}, p2p.Service{Blocks: store})

	// The staller: 3 streams, 32 requests on each (the most a stream is served at
	// once), never a byte read.
	staller := rawHost(t, a)
	ctx := ctxTimeout(t, 60*time.Second)
	const streams, perStream = 3, 32
	for i := range streams {
		s, err := staller.NewStream(ctx, a.ID(), p2p.ProtocolID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Reset() })
		w := bufio.NewWriter(s)
		for j := range perStream {
			w.Write(request(uint64(j+1), blocks[(i*perStream+j)%len(blocks)].id, 0))
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, "the node to serve the staller", 5*time.Second, func() bool { return store.gets.Load() >= 8 })
	stallerGets := store.gets.Load()

	// The honest neighbour gets every block, all at once, while the staller holds its
	// streams.
	b := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "b to connect to a", 5*time.Second, func() bool { return connected(b, a.ID()) })
	getCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for _, blk := range blocks {
		wg.Go(func() {
			if _, err := b.Get(getCtx, blk.id); err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("honest Get of %d blocks beside the staller (%d blocks read for it): %v, %d failed", len(blocks), stallerGets, took, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d of %d Gets failed beside a stalling reader, the first: %v", len(failed), len(blocks), failed[0])
	}
	if bound := 5 * time.Second; took > bound {
		t.Errorf("the honest Get took %v beside a stalling reader (bound %v)", took, bound)
	}
	if staller.Network().Connectedness(a.ID()) != network.Connected {
		t.Errorf("the staller was cut off before the honest Get was done: the test proves nothing")
	}

	// The staller's writes time out, stream after stream: it ends banned.
	testkit.WaitFor(t, "the staller to be banned", 30*time.Second, func() bool { return a.Banned(staller.ID()) })
	if a.Banned(b.ID()) {
		t.Errorf("the honest neighbour was banned")
	}
}

// TestFetchBudget: a stranger that asks a node, as designated fetcher, to fetch 2,000
// blocks makes it call its Fetch hook (its hub) at most the burst plus the rate × the
// time; the other requests are refused at once. A stranger that asks again and again
// for blocks the hook finds nowhere ends banned.
func TestFetchBudget(t *testing.T) {
	var calls atomic.Int64
	var notFound atomic.Bool
	hook := func(ctx context.Context, id flist.BlockID) ([]byte, error) {
		calls.Add(1)
		if notFound.Load() {
			return nil, fmt.Errorf("block %x: %w on the hub", id, p2p.ErrNotFound)
		}
		return nil, errors.New("hub unavailable")
	}
	a := startNode(t, p2p.Config{}, p2p.Service{Blocks: newStore(), Fetch: hook})
	stranger := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "the stranger to connect", 5*time.Second, func() bool { return connected(stranger, a.ID()) })

	const requests = 2000
	ctx := ctxTimeout(t, 60*time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	var succeeded atomic.Int64
	ids := make(chan flist.BlockID)
	for range 32 {
		wg.Go(func() {
			for id := range ids {
				if _, err := stranger.FetchVia(ctx, a.ID(), id); err == nil {
					succeeded.Add(1)
				}
			}
		})
	}
	for range requests {
		ids <- missingID()
	}
	close(ids)
	wg.Wait()
	took := time.Since(start)
	got := calls.Load()
	bound := int64(p2p.DefaultFetchBurst + p2p.DefaultFetchRate*took.Seconds() + 1)
	t.Logf("%d FetchVia requests in %v: %d hook calls (bound %d), %d refused", requests, took, got, bound, a.Stats().FetchRefused)
	if got > bound {
		t.Errorf("%d FetchVia requests made %d hook calls in %v, want at most %d", requests, got, took, bound)
	}
	if succeeded.Load() != 0 {
		t.Errorf("%d FetchVia of missing blocks succeeded", succeeded.Load())
	}
	if refused := a.Stats().FetchRefused; refused+got != requests {
		t.Errorf("%d refused + %d fetched, want %d requests", refused, got, requests)
	}
	if a.Banned(stranger.ID()) {
		t.Errorf("the stranger was banned for the hook's failures")
	}

	// Another stranger asks for blocks the hook finds nowhere: it is banned before its
	// budget is spent.
	notFound.Store(true)
	calls.Store(0)
	other := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "the other stranger to connect", 5*time.Second, func() bool { return connected(other, a.ID()) })
	for i := 0; i < p2p.DefaultFetchBurst && !a.Banned(other.ID()); i++ {
		if _, err := other.FetchVia(ctx, a.ID(), missingID()); err == nil {
			t.Fatal("FetchVia of a missing block succeeded")
		}
	}
	if !a.Banned(other.ID()) {
		t.Errorf("a stranger that asked for %d blocks found nowhere (%d hook calls) is not banned", p2p.DefaultFetchBurst, calls.Load())
	}
	if a.Banned(stranger.ID()) {
		t.Errorf("the first stranger was banned for the other's requests")
	}
}
