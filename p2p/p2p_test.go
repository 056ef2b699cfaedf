package p2p_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/p2p"
)

// --- helpers ---------------------------------------------------------------------------

// memStore is a BlockStore in memory. corrupt makes it serve every block with one byte
// flipped; gate, if set, makes Get wait until it is closed (or ctx ends); gets counts
// the Get calls.
type memStore struct {
	mu      sync.Mutex
	m       map[flist.BlockID][]byte
	corrupt bool
	gate    chan struct{}
	gets    atomic.Int64
}

func newStore(blocks ...testBlock) *memStore {
	s := &memStore{m: map[flist.BlockID][]byte{}}
	for _, b := range blocks {
		s.m[b.id] = b.data
	}
	return s
}

// put adds a block to the store.
func (s *memStore) put(b testBlock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[b.id] = b.data
}

// have is the store's Service.Have.
func (s *memStore) have(fn func(flist.BlockID) bool) {
	s.mu.Lock()
	ids := slices.Collect(maps.Keys(s.m))
	s.mu.Unlock()
	for _, id := range ids {
		if !fn(id) {
			return
		}
	}
}

func (s *memStore) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[id]
	return ok, nil
}

func (s *memStore) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	s.gets.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	data, ok := s.m[id]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("not found")
	}
	if s.corrupt {
		data = bytes.Clone(data)
		data[len(data)/2] ^= 0x55
	}
	return data, nil
}

type testBlock struct {
	id   flist.BlockID
	data []byte
}

// makeBlocks encodes n blocks of size random plain bytes each with flist.EncodeBlock
// (random content does not compress: the stored blocks are about size bytes).
func makeBlocks(t testing.TB, n, size int) []testBlock {
	t.Helper()
	rng := mrand.NewChaCha8([32]byte{byte(n), byte(size), byte(size >> 8), byte(size >> 16)})
	out := make([]testBlock, n)
	for i := range out {
		plain := make([]byte, size)
		rng.Read(plain)
		binary.LittleEndian.PutUint64(plain, uint64(i))
		b, data := flist.EncodeBlock(plain)
		out[i] = testBlock{id: b.ID, data: bytes.Clone(data)}
	}
	return out
}

// missingID is an id no node has.
func missingID() flist.BlockID {
	b := make([]byte, 32)
	rand.Read(b)
	return flist.HashBlock(b)
}

// startNode starts a node on loopback (TCP only, no mDNS) and closes it at cleanup.
func startNode(t testing.TB, cfg p2p.Config, svc p2p.Service) *p2p.Node {
	t.Helper()
	cfg.NoMDNS = true // mDNS would multicast on every interface, not only loopback
	return startNodeMDNS(t, cfg, svc)
}

// startNodeMDNS is startNode with cfg.NoMDNS as given: only inside a network namespace
// whose only interface is loopback (see TestMDNS).
func startNodeMDNS(t testing.TB, cfg p2p.Config, svc p2p.Service) *p2p.Node {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	if cfg.Logger == nil {
		cfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	}
	n, err := p2p.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx, svc); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

// loopAddr is one of n's addresses on 127.0.0.1.
func loopAddr(t testing.TB, n *p2p.Node) string {
	t.Helper()
	for _, a := range n.Addrs() {
		if bytes.HasPrefix([]byte(a), []byte("/ip4/127.0.0.1/")) {
			return a
		}
	}
	t.Fatalf("node %s has no loopback address: %v", n.ID(), n.Addrs())
	return ""
}

func connected(n *p2p.Node, p peer.ID) bool { return slices.Contains(n.Peers(), p) }

// provideFlist announces the flist digest from n, retrying while n's DHT routing table
// is still empty.
func provideFlist(t testing.TB, n *p2p.Node, digest []byte) {
	t.Helper()
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = n.ProvideFlist(ctx, digest)
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ProvideFlist: %v", err)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// --- tests -----------------------------------------------------------------------------

func TestFetchAndGet(t *testing.T) {
	blocks := makeBlocks(t, 8, 512<<10)
	a := startNode(t, p2p.Config{}, p2p.Service{Blocks: newStore(blocks...)})
	b := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "b to connect to a (bootstrap)", 5*time.Second, func() bool { return connected(b, a.ID()) })

	ctx := ctxTimeout(t, 20*time.Second)
	for _, blk := range blocks[:4] {
		data, err := b.Fetch(ctx, a.ID(), blk.id)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if !bytes.Equal(data, blk.data) {
			t.Fatalf("Fetch: bytes differ")
		}
	}
	for _, blk := range blocks[4:] {
		data, err := b.Get(ctx, blk.id)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !bytes.Equal(data, blk.data) {
			t.Fatalf("Get: bytes differ")
		}
	}

	// A block no one has: "not found", quickly, from Fetch and from Get.
	start := time.Now()
	_, err := b.Fetch(ctx, a.ID(), missingID())
	if !errors.Is(err, p2p.ErrNotFound) {
		t.Fatalf("Fetch of a missing block: %v, want ErrNotFound", err)
	}
	_, err = b.Get(ctx, missingID())
	if !errors.Is(err, p2p.ErrNotFound) {
		t.Fatalf("Get of a missing block: %v, want ErrNotFound", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("missing block took %v to report", d)
	}
	// Bad ids are refused before anything is sent.
	if _, err := b.Fetch(ctx, a.ID(), flist.BlockID{}); err == nil {
		t.Errorf("Fetch of the zero id succeeded")
	}

	as, bs := a.Stats(), b.Stats()
	var total int64
	for _, blk := range blocks {
		total += int64(len(blk.data))
	}
	if as.ServedBlocks != 8 || as.ServedBytes != total {
		t.Errorf("a served %d blocks, %d bytes; want 8, %d", as.ServedBlocks, as.ServedBytes, total)
	}
	if bs.FetchedBlocks != 8 || bs.FetchedBytesByPeer[a.ID()] != total {
		t.Errorf("b fetched %d blocks, %d bytes from a; want 8, %d", bs.FetchedBlocks, bs.FetchedBytesByPeer[a.ID()], total)
	}
	if bs.Rejected != 0 || b.Banned(a.ID()) {
		t.Errorf("b rejected %d blocks, banned a: %v", bs.Rejected, b.Banned(a.ID()))
	}
}

func TestConcurrentFetches(t *testing.T) {
	blocks := makeBlocks(t, 200, 64<<10)
	a := startNode(t, p2p.Config{}, p2p.Service{Blocks: newStore(blocks...)})
	b := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "b to connect to a", 5*time.Second, func() bool { return connected(b, a.ID()) })

	ctx := ctxTimeout(t, 30*time.Second)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(blocks))
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(blocks) {
					return
				}
				var data []byte
				var err error
				if i%2 == 0 {
					data, err = b.Fetch(ctx, a.ID(), blocks[i].id)
				} else {
					data, err = b.Get(ctx, blocks[i].id)
				}
				if err != nil {
					errs <- fmt.Errorf("block %d: %w", i, err)
					return
				}
				if !bytes.Equal(data, blocks[i].data) {
					errs <- fmt.Errorf("block %d: bytes differ", i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := b.Stats().FetchedBlocks; got != int64(len(blocks)) {
		t.Errorf("b fetched %d blocks, want %d", got, len(blocks))
	}
	// One connection between the two, carrying every request.
	if ps := b.Peers(); len(ps) != 1 || ps[0] != a.ID() {
		t.Errorf("b's peers: %v, want only a", ps)
	}
}

// TestHaveFilters: a node asks for a block only the neighbours whose have-filter says
// they may hold it, learns of the blocks a neighbour stores after its filter was sent,
// and, for a block no filter holds, answers "not found" without a message.
func TestHaveFilters(t *testing.T) {
	blocks := makeBlocks(t, 4, 32<<10)
	holder := newStore(blocks[:2]...)
	empty := newStore()
	a := startNode(t, p2p.Config{}, p2p.Service{Blocks: holder, Have: holder.have})
	b := startNode(t, p2p.Config{}, p2p.Service{Blocks: empty, Have: empty.have})
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a), loopAddr(t, b)}}, p2p.Service{})
	testkit.WaitFor(t, "c to hold both filters", 10*time.Second, func() bool {
		return c.Stats().HaveHeldBytes >= 2*minFilterBytes
	})
	ctx := ctxTimeout(t, 20*time.Second)
	for _, blk := range blocks[:2] {
		data, err := c.Get(ctx, blk.id)
		if err != nil || !bytes.Equal(data, blk.data) {
			t.Fatalf("Get: %v", err)
		}
	}
	if n := empty.gets.Load(); n != 0 {
		t.Errorf("b, whose filter holds nothing, was asked %d times", n)
	}

	// A block a stores now reaches c in an update, not a new filter.
	holder.put(blocks[2])
	a.Stored(blocks[2].id)
	testkit.WaitFor(t, "the update to reach c", 10*time.Second, func() bool {
		data, err := c.Get(ctx, blocks[2].id)
		return err == nil && bytes.Equal(data, blocks[2].data)
	})

	// No filter holds blocks[3]: not found, and no one asked.
	aGets, bGets := holder.gets.Load(), empty.gets.Load()
	if _, err := c.Get(ctx, blocks[3].id); !errors.Is(err, p2p.ErrNotFound) {
		t.Errorf("Get of a block no one holds: %v, want ErrNotFound", err)
	}
	if holder.gets.Load() != aGets || empty.gets.Load() != bGets {
		t.Errorf("a block no filter holds was asked for")
	}
	if got := a.Stats().HaveSentBytes; got < minFilterBytes {
		t.Errorf("a sent %d bytes of have-filter", got)
	}
}

// minFilterBytes is the size of the smallest have-filter (sized for 64 Ki blocks at 1 %).
const minFilterBytes = 64 << 10

func TestPoisonedPeer(t *testing.T) {
	blocks := makeBlocks(t, 24, 64<<10)
	good := startNode(t, p2p.Config{}, p2p.Service{Blocks: newStore(blocks...)})
	poisonStore := newStore(blocks...)
	poisonStore.corrupt = true
	bad := startNode(t, p2p.Config{}, p2p.Service{Blocks: poisonStore})
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, good), loopAddr(t, bad)}}, p2p.Service{})
	testkit.WaitFor(t, "c to connect to both", 5*time.Second, func() bool {
		return connected(c, good.ID()) && connected(c, bad.ID())
	})
	ctx := ctxTimeout(t, 30*time.Second)

	// Get asks connected peers in random order: over many blocks the bad peer is asked
	// first at some point (all but surely), is caught and banned, and every Get still
	// returns the right bytes from the good peer.
	for i, blk := range blocks[1:] {
		data, err := c.Get(ctx, blk.id)
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		if !bytes.Equal(data, blk.data) {
			t.Fatalf("Get %d: bytes differ", i)
		}
	}
	if poisonStore.gets.Load() == 0 {
		t.Fatalf("the poisoned peer was never asked in %d Gets", len(blocks)-1)
	}
	if !c.Banned(bad.ID()) {
		t.Fatalf("the poisoned peer is not banned")
	}
	if got := c.Stats().Rejected; got != 1 {
		t.Errorf("rejected %d blocks, want 1", got)
	}
	testkit.WaitFor(t, "the poisoned peer to be disconnected", 5*time.Second, func() bool { return !connected(c, bad.ID()) })
	if connected(c, good.ID()) == false || c.Banned(good.ID()) {
		t.Errorf("the good peer was dropped too")
	}

	// Fetching from a banned peer fails at once; it cannot connect again.
	_, err := c.Fetch(ctx, bad.ID(), blocks[0].id)
	if !errors.Is(err, p2p.ErrBanned) {
		t.Errorf("Fetch from a banned peer: %v, want ErrBanned", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := bad.Connect(cctx, loopAddr(t, c)); err == nil {
		// The dial may complete on the bad peer's side before c's gater closes it.
		time.Sleep(200 * time.Millisecond)
		if connected(c, bad.ID()) {
			t.Errorf("a banned peer connected again")
		}
	}

	// Fetch directly from a poisoned peer: the error wraps flist.ErrBlockCorrupt.
	d := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, bad)}}, p2p.Service{})
	testkit.WaitFor(t, "d to connect to the bad peer", 5*time.Second, func() bool { return connected(d, bad.ID()) })
	_, err = d.Fetch(ctx, bad.ID(), blocks[0].id)
	if !errors.Is(err, flist.ErrBlockCorrupt) {
		t.Fatalf("Fetch of a corrupt block: %v, want flist.ErrBlockCorrupt", err)
	}
	if !d.Banned(bad.ID()) || d.Stats().Rejected != 1 || d.Stats().Banned != 1 {
		t.Errorf("after a corrupt block: banned %v, stats %+v", d.Banned(bad.ID()), d.Stats())
	}
}

func TestPeerKilledMidTransfer(t *testing.T) {
	blocks := makeBlocks(t, 16, 512<<10)
	good := startNode(t, p2p.Config{}, p2p.Service{Blocks: newStore(blocks...)})
	victimStore := newStore(blocks...)
	victimStore.gate = make(chan struct{}) // never opened: its Gets hang until it dies
	victim := startNode(t, p2p.Config{}, p2p.Service{Blocks: victimStore})
	// No hedging: a Get that picked the victim only moves on when the victim fails.
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, good), loopAddr(t, victim)}, HedgeDelay: time.Minute}, p2p.Service{})
	testkit.WaitFor(t, "c to connect to both", 5*time.Second, func() bool {
		return connected(c, good.ID()) && connected(c, victim.ID())
	})
	ctx := ctxTimeout(t, 30*time.Second)

	type outcome struct {
		i     int
		fetch bool
		data  []byte
		err   error
	}
	results := make(chan outcome, 2*len(blocks))
	for i, blk := range blocks {
		go func() {
			data, err := c.Fetch(ctx, victim.ID(), blk.id)
			results <- outcome{i, true, data, err}
		}()
		go func() {
			data, err := c.Get(ctx, blk.id)
			results <- outcome{i, false, data, err}
		}()
	}
	// Wait until the victim reads blocks for c (at most 8 at a time, its per-peer budget:
	// the other requests, the Fetches and the Gets that picked it, wait their turn on its
	// stream), then kill it.
	testkit.WaitFor(t, "Fetches and Gets to reach the victim", 10*time.Second, func() bool { return victimStore.gets.Load() >= 8 })
	killed := time.Now()
	if err := victim.Close(); err != nil {
		t.Errorf("closing the victim: %v", err)
	}
	for range 2 * len(blocks) {
		select {
		case r := <-results:
			if r.fetch {
				if r.err == nil {
					t.Errorf("Fetch %d from the killed peer succeeded", r.i)
				}
				continue
			}
			if r.err != nil {
				t.Errorf("Get %d: %v", r.i, r.err)
			} else if !bytes.Equal(r.data, blocks[r.i].data) {
				t.Errorf("Get %d: bytes differ", r.i)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("calls still hanging 15s after the peer was killed")
		}
	}
	t.Logf("all calls returned %v after the kill", time.Since(killed).Round(time.Millisecond))
	if c.Banned(victim.ID()) {
		t.Errorf("a peer that died was banned (it only failed)")
	}
}

func TestPrivateNetwork(t *testing.T) {
	blocks := makeBlocks(t, 2, 32<<10)
	psk := pskFile()
	a := startNode(t, p2p.Config{PSK: psk}, p2p.Service{Blocks: newStore(blocks...)})
	b := startNode(t, p2p.Config{PSK: psk, Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "b to connect to a", 5*time.Second, func() bool { return connected(b, a.ID()) })
	for _, addr := range a.Addrs() {
		if bytes.Contains([]byte(addr), []byte("quic")) {
			t.Errorf("a private node listens on QUIC: %s", addr)
		}
	}
	ctx := ctxTimeout(t, 30*time.Second)
	data, err := b.Get(ctx, blocks[0].id)
	if err != nil || !bytes.Equal(data, blocks[0].data) {
		t.Fatalf("Get within the private network: %v", err)
	}
	_, digest := randomFlist(1000, 1)
	provideFlist(t, a, digest)
	testkit.WaitFor(t, "b to find a as a provider", 10*time.Second, func() bool {
		provs, err := b.FindFlistProviders(ctx, digest, 4)
		return err == nil && slices.Contains(provs, a.ID())
	})

	outsiders := map[string]*p2p.Node{
		"no key":      startNode(t, p2p.Config{}, p2p.Service{}),
		"another key": startNode(t, p2p.Config{PSK: pskFile()}, p2p.Service{}),
	}
	for name, o := range outsiders {
		t.Run(name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			cstart := time.Now()
			if err := o.Connect(cctx, loopAddr(t, a)); err == nil {
				t.Errorf("an outsider connected to a private node")
			} else {
				t.Logf("outsider's connect (%v): %v", time.Since(cstart), err)
			}
			if connected(a, o.ID()) || connected(o, a.ID()) {
				t.Errorf("outsider and private node are connected")
			}
			fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if data, err := o.Fetch(fctx, a.ID(), blocks[1].id); err == nil {
				t.Errorf("an outsider fetched %d bytes", len(data))
			}
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if _, err := o.Get(gctx, blocks[1].id); !errors.Is(err, p2p.ErrNotFound) {
				t.Errorf("Get by an outsider: %v, want ErrNotFound", err)
			}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if provs, _ := o.FindFlistProviders(pctx, digest, 4); len(provs) != 0 {
				t.Errorf("an outsider found providers: %v", provs)
			}
		})
	}
	if got := a.Stats().ServedBlocks; got != 1 {
		t.Errorf("a served %d blocks, want 1 (to b only)", got)
	}

	// QUIC cannot carry a private network; a bad key file is refused.
	if _, err := p2p.New(p2p.Config{PSK: psk, Listen: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}}); err == nil {
		t.Errorf("New accepted a QUIC listen address with a PSK")
	}
	if _, err := p2p.New(p2p.Config{PSK: []byte("not a key\n")}); err == nil {
		t.Errorf("New accepted a malformed PSK")
	}
}

func TestQUIC(t *testing.T) {
	blocks := makeBlocks(t, 4, 256<<10)
	quicOnly := []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	a := startNode(t, p2p.Config{Listen: quicOnly}, p2p.Service{Blocks: newStore(blocks...)})
	b := startNode(t, p2p.Config{Listen: quicOnly, Bootstrap: a.Addrs()}, p2p.Service{})
	testkit.WaitFor(t, "b to connect to a over QUIC", 5*time.Second, func() bool { return connected(b, a.ID()) })
	ctx := ctxTimeout(t, 10*time.Second)
	for _, blk := range blocks {
		data, err := b.Get(ctx, blk.id)
		if err != nil || !bytes.Equal(data, blk.data) {
			t.Fatalf("Get over QUIC: %v", err)
		}
	}
}

// pskFile returns the content of a new libp2p private-network key file.
func pskFile() []byte {
	key := make([]byte, 32)
	rand.Read(key)
	return []byte("/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n")
}

func TestPersistentIdentity(t *testing.T) {
	dir := t.TempDir()
	a := startNode(t, p2p.Config{DataDir: dir}, p2p.Service{})
	id := a.ID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "p2p", "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v, want 0600", fi.Mode().Perm())
	}
	b := startNode(t, p2p.Config{DataDir: dir}, p2p.Service{})
	if b.ID() != id {
		t.Errorf("restarted node has id %s, want %s", b.ID(), id)
	}
	if other := startNode(t, p2p.Config{DataDir: t.TempDir()}, p2p.Service{}); other.ID() == id {
		t.Errorf("two data dirs gave the same id")
	}

	// A damaged identity is an error, never silently replaced.
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, "p2p"), 0o700)
	os.WriteFile(filepath.Join(bad, "p2p", "identity.key"), []byte("garbage"), 0o600)
	if _, err := p2p.New(p2p.Config{DataDir: bad}); err == nil {
		t.Errorf("New accepted a damaged identity file")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []p2p.Config{
		{Listen: []string{"not a multiaddr"}},
		{Bootstrap: []string{"/ip4/127.0.0.1/tcp/4001"}}, // no /p2p/ID
	} {
		if _, err := p2p.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	n, err := p2p.New(p2p.Config{NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Get(t.Context(), missingID()); !errors.Is(err, p2p.ErrNotStarted) {
		t.Errorf("Get before Start: %v, want ErrNotStarted", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("Close of a node never started: %v", err)
	}
}

// TestBadResponses runs a fake peer that breaks the wire format: the client must reset,
// ban the peer and count a protocol error, and never hang.
func TestBadResponses(t *testing.T) {
	blocks := makeBlocks(t, 1, 1024)
	id := blocks[0].id
	// truncated is not a protocol violation (a peer may die mid-block): an error, no ban.
	const truncated = "truncated block"
	cases := map[string]func(w *bufio.Writer, reqID uint64){
		truncated: func(w *bufio.Writer, reqID uint64) {
			w.Write(binary.AppendUvarint(nil, reqID))
			w.WriteByte(0)
			w.Write(binary.AppendUvarint(nil, 1000))
			w.Write(make([]byte, 10))
		},
		"oversized block": func(w *bufio.Writer, reqID uint64) {
			w.Write(binary.AppendUvarint(nil, reqID))
			w.WriteByte(0)
			w.Write(binary.AppendUvarint(nil, flist.MaxBlockStored+1))
		},
		"unknown status": func(w *bufio.Writer, reqID uint64) {
			w.Write(binary.AppendUvarint(nil, reqID))
			w.WriteByte(7)
			w.Write(binary.AppendUvarint(nil, 0))
		},
		"never asked": func(w *bufio.Writer, reqID uint64) {
			w.Write(binary.AppendUvarint(nil, reqID+1000))
			w.WriteByte(1)
			w.Write(binary.AppendUvarint(nil, 0))
		},
		"varint overflow": func(w *bufio.Writer, reqID uint64) {
			w.Write(bytes.Repeat([]byte{0xff}, 11))
		},
		"not-found with data": func(w *bufio.Writer, reqID uint64) {
			w.Write(binary.AppendUvarint(nil, reqID))
			w.WriteByte(1)
			w.Write(binary.AppendUvarint(nil, 10))
			w.Write(make([]byte, 10))
		},
	}
	for name, respond := range cases {
		t.Run(name, func(t *testing.T) {
			h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			h.SetStreamHandler(p2p.ProtocolID, func(s network.Stream) {
				defer s.Close()
				r := bufio.NewReader(s)
				n, err := binary.ReadUvarint(r)
				if err != nil || n > 64 {
					s.Reset()
					return
				}
				body := make([]byte, n)
				if _, err := io.ReadFull(r, body); err != nil {
					s.Reset()
					return
				}
				reqID, _ := binary.Uvarint(body)
				w := bufio.NewWriter(s)
				respond(w, reqID)
				w.Flush()
				if name == truncated {
					s.Reset()
					return
				}
				io.Copy(io.Discard, s) // hold the stream open until the client resets it
			})
			c := startNode(t, p2p.Config{}, p2p.Service{})
			ctx := ctxTimeout(t, 10*time.Second)
			if err := c.Connect(ctx, h.Addrs()[0].String()+"/p2p/"+h.ID().String()); err != nil {
				t.Fatal(err)
			}
			_, err = c.Fetch(ctx, h.ID(), id)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("Fetch from a broken peer: %v (ctx %v)", err, ctx.Err())
			}
			wantBan := name != truncated
			if c.Banned(h.ID()) != wantBan || c.Stats().ProtocolErrors != map[bool]int64{true: 1}[wantBan] {
				t.Errorf("broken peer: err %v, banned %v (want %v), stats %+v", err, c.Banned(h.ID()), wantBan, c.Stats())
			}
		})
	}
}

// TestRawRequests sends malformed requests to a node: it resets the stream and bans the
// sender, and keeps serving others.
func TestRawRequests(t *testing.T) {
	blocks := makeBlocks(t, 1, 1024)
	a := startNode(t, p2p.Config{}, p2p.Service{Blocks: newStore(blocks...)})
	for name, req := range map[string][]byte{
		"huge length": binary.AppendUvarint(nil, 1<<40),
		"zero length": {0},
		"bad id size": append(binary.AppendUvarint(nil, 6), 1, 2, 3, 4, 5, 6),
	} {
		t.Run(name, func(t *testing.T) {
			h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			ctx := ctxTimeout(t, 10*time.Second)
			ai, _ := peer.AddrInfoFromString(loopAddr(t, a))
			if err := h.Connect(ctx, *ai); err != nil {
				t.Fatal(err)
			}
			s, err := h.NewStream(ctx, a.ID(), p2p.ProtocolID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			s.SetDeadline(time.Now().Add(5 * time.Second))
			s.Write(req)
			if _, err := io.ReadAll(s); err == nil {
				t.Errorf("the node answered a malformed request without resetting")
			}
			testkit.WaitFor(t, "the sender to be banned", 5*time.Second, func() bool { return a.Banned(h.ID()) })
		})
	}
	// A well-formed client still gets its block.
	b := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	ctx := ctxTimeout(t, 10*time.Second)
	testkit.WaitFor(t, "b to connect", 5*time.Second, func() bool { return connected(b, a.ID()) })
	if _, err := b.Fetch(ctx, a.ID(), blocks[0].id); err != nil {
		t.Errorf("Fetch after bad clients: %v", err)
	}
}

// mdnsNetnsEnv marks the copy of the test binary that TestMDNS runs in a private
// network namespace.
const mdnsNetnsEnv = "ZOSFS_P2P_MDNS_NETNS"

// TestMDNS checks that two nodes on one LAN find each other with mDNS alone. mDNS
// multicasts on every multicast-capable interface, so the test never runs in the host's
// network namespace: it runs itself again under `unshare -n` (as root), in a namespace
// whose only interface is loopback with multicast turned on. Where that cannot be done
// it skips, or fails under CI (which runs as root with ip and unshare).
func TestMDNS(t *testing.T) {
	if os.Getenv(mdnsNetnsEnv) == "1" {
		ifaces, _ := net.Interfaces()
		if len(ifaces) != 1 || ifaces[0].Flags&net.FlagLoopback == 0 {
			t.Fatalf("not in a loopback-only network namespace: %v", ifaces)
		}
		a := startNodeMDNS(t, p2p.Config{}, p2p.Service{})
		b := startNodeMDNS(t, p2p.Config{}, p2p.Service{})
		// zeroconf queries at 0 s, 4 s, then 1.5–2.5 times the last interval (about 10–14 s,
		// then 25–49 s): a node whose first queries went out before the other answered
		// (both start at once, on a loaded machine) finds it at one of the later ones.
		testkit.WaitFor(t, "the nodes to find each other with mDNS", 50*time.Second, func() bool {
			return connected(a, b.ID()) && connected(b, a.ID())
		})
		return
	}
	// A loopback-only network namespace needs root, unshare and ip: it must not multicast
	// on the host's interfaces.
	testkit.NeedRoot(t)
	testkit.NeedCommand(t, "unshare")
	testkit.NeedCommand(t, "ip")
	if out, err := exec.Command("unshare", "-n", "true").CombinedOutput(); err != nil {
		testkit.Unavailable(t, "mDNS test cannot make a network namespace here (unshare -n: %v: %s)", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 80*time.Second)
	defer cancel()
	script := `ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec "$0" -test.run '^TestMDNS$' -test.v -test.count=1`
	cmd := exec.CommandContext(ctx, "unshare", "-n", "sh", "-c", script, os.Args[0])
	cmd.Env = append(os.Environ(), mdnsNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mDNS test in a network namespace: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestMDNS")) {
		t.Fatalf("mDNS test in a network namespace did not pass:\n%s", out)
	}
}

// BenchmarkFetch fetches 256 MiB of 512 KiB blocks from one peer on loopback, with 32
// callers (Fetch over one pipelined stream), and reports MiB/s. Compare with curl of
// the same bytes from a plain HTTP server (make bench does).
func BenchmarkFetch(b *testing.B) {
	const total = 256 << 20
	blocks := makeBlocks(b, total/flist.BlockSize, flist.BlockSize)
	var bytesPer int64
	for _, blk := range blocks {
		bytesPer += int64(len(blk.data))
	}
	a := startNode(b, p2p.Config{}, p2p.Service{Blocks: newStore(blocks...)})
	c := startNode(b, p2p.Config{Bootstrap: []string{loopAddr(b, a)}}, p2p.Service{})
	testkit.WaitFor(b, "connection", 5*time.Second, func() bool { return connected(c, a.ID()) })
	ctx := ctxTimeout(b, 5*time.Minute) // a stall fails the benchmark instead of hanging it
	b.SetBytes(bytesPer)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= len(blocks) {
						return
					}
					if _, err := c.Fetch(ctx, a.ID(), blocks[i].id); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	secs := time.Since(start).Seconds()
	b.ReportMetric(float64(bytesPer)*float64(b.N)/(1<<20)/secs, "MiB/s")
}

// TestJoinFlist: c's only neighbour is b; a holds an flist's blocks and announces the
// flist. Before c joins the flist, it cannot get a's blocks (b has none); once it has,
// it is connected to a, holds a's filter and gets them from a.
func TestJoinFlist(t *testing.T) {
	blocks := makeBlocks(t, 2, 16<<10)
	holder, empty := newStore(blocks...), newStore()
	a := startNode(t, p2p.Config{}, p2p.Service{Blocks: holder, Have: holder.have})
	b := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{Blocks: empty, Have: empty.have})
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, b)}}, p2p.Service{})
	testkit.WaitFor(t, "b-a and c-b connections", 5*time.Second, func() bool {
		return connected(b, a.ID()) && connected(c, b.ID())
	})
	ctx := ctxTimeout(t, 30*time.Second)
	// c's DHT may have dialled a (b names it in the first lookups): on a site of hundreds
	// a holder is often no neighbour. Cut c from a, once the DHT's first dials are over.
	time.Sleep(time.Second)
	c.Host().Network().ClosePeer(a.ID())
	testkit.WaitFor(t, "c cut from a", 5*time.Second, func() bool { return !connected(c, a.ID()) })
	if _, err := c.Get(ctx, blocks[0].id); !errors.Is(err, p2p.ErrNotFound) {
		t.Fatalf("Get before joining: %v, want ErrNotFound", err)
	}
	_, digest := randomFlist(1000, 2)
	provideFlist(t, a, digest)
	leave := c.JoinFlist(digest)
	defer leave()
	testkit.WaitFor(t, "c to connect to a and hold its filter", 20*time.Second, func() bool {
		return connected(c, a.ID()) && c.Stats().HaveHeldBytes >= 2*minFilterBytes
	})
	for _, blk := range blocks {
		data, err := c.Get(ctx, blk.id)
		if err != nil || !bytes.Equal(data, blk.data) {
			t.Fatalf("Get after joining: %v", err)
		}
	}
	leave()
	leave() // twice is harmless
}
