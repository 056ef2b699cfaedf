package p2p_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coreconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/flight"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/p2p"
)

// Shape of the simulated site (BenchmarkSite); SITE_NODES and SITE_BLOCKS override the
// first two.
const (
	// siteNodes is the nodes of the site.
	siteNodes = 50
	// siteBlocks is the blocks in each node's cache, and in version 1 of the flist.
	siteBlocks = 20_000
	// siteDegree is the neighbours each node dials: the connection manager keeps 32 to 48.
	siteDegree = 32
	// siteChanged is the share of version 2's blocks that are new (not in version 1).
	siteChanged = 0.05
	// siteProvideSamples is how many block provides measure what the old design (every
	// block in the DHT) would cost.
	siteProvideSamples = 20
	// siteReaders is the parallel Gets of the node that reads version 2.
	siteReaders = 16
	// siteLatency is the one-way latency of every link: a LAN.
	siteLatency = 500 * time.Microsecond
	// siteWaveBlocks is the blocks of the new flist every node reads at once (the first
	// wave), siteWaveReaders the parallel reads of each node.
	siteWaveBlocks  = 2000
	siteWaveReaders = 4
	// siteGetTimeout bounds the ask of the neighbours before the designated fetcher, as
	// the agent's --peer-timeout does.
	siteGetTimeout = 3 * time.Second
)

// siteBlock is a block of the simulation: 8 bytes of content (the content does not matter
// to the exchange, only that it hashes to the id).
type siteBlock struct {
	id   flist.BlockID
	data []byte
}

func makeSiteBlock(tag byte, i int) siteBlock {
	data := binary.LittleEndian.AppendUint64([]byte{tag}, uint64(i))
	return siteBlock{id: flist.HashBlock(data), data: data}
}

// siteStore is one node's cache: version 1 of the flist (a pointer to the shared blocks)
// when it holds it, and blocks of other flists, listed by Have only (no one asks for
// them).
type siteStore struct {
	v1     map[flist.BlockID][]byte // nil when the node does not hold version 1
	node   int
	others int

	mu      sync.Mutex
	fetched map[flist.BlockID][]byte // blocks of the first wave it holds
}

func (s *siteStore) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	_, err := s.Get(ctx, id)
	return err == nil, nil
}

func (s *siteStore) Get(_ context.Context, id flist.BlockID) ([]byte, error) {
	if data, ok := s.v1[id]; ok {
		return data, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if data, ok := s.fetched[id]; ok {
		return data, nil
	}
	return nil, fmt.Errorf("block %s: %w", id, flist.ErrNotFound)
}

func (s *siteStore) put(id flist.BlockID, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fetched == nil {
		s.fetched = map[flist.BlockID][]byte{}
	}
	s.fetched[id] = data
}

// siteHub is the hub of the first wave: it counts what it sends.
type siteHub struct {
	blocks  map[flist.BlockID][]byte
	mu      sync.Mutex
	fetches int
}

func (h *siteHub) get(id flist.BlockID) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fetches++
	if data, ok := h.blocks[id]; ok {
		return data, nil
	}
	return nil, fmt.Errorf("block %s: %w", id, flist.ErrNotFound)
}

// siteNode is one node of the simulation and its read path, a stand-in for the agent's
// resolver: its cache, the neighbours (bounded by siteGetTimeout), the block's
// designated fetcher, the hub; one fetch per block however many reads want it.
type siteNode struct {
	n     *p2p.Node
	store *siteStore
	hub   *siteHub
	fl    flight.Group[flist.BlockID, []byte]
	// viaFailed counts the FetchVia calls that failed (the read then went to the hub):
	// with disagreement on fetchers, it tells why the first wave costs the hub more.
	viaFailed atomic.Int64
}

func (sn *siteNode) read(ctx context.Context, id flist.BlockID) error {
	if ok, _ := sn.store.Has(ctx, id); ok {
		return nil
	}
	_, err := sn.fl.Do(ctx, id, func(ctx context.Context) ([]byte, error) {
		gctx, cancel := context.WithTimeout(ctx, siteGetTimeout)
		data, err := sn.n.Get(gctx, id)
		cancel()
		if err != nil {
			if p, ok := sn.n.Fetcher(id); ok {
				if data, err = sn.n.FetchVia(ctx, p, id); err != nil {
					sn.viaFailed.Add(1)
				}
			}
		}
		if err != nil {
			data, err = sn.hub.get(id)
		}
		if err == nil {
			sn.keep(id, data)
		}
		return data, err
	})
	return err
}

// fetch is the node's Service.Fetch: what a neighbour asks of it as the designated
// fetcher, from its cache or the hub, once.
func (sn *siteNode) fetch(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if data, err := sn.store.Get(ctx, id); err == nil {
		return data, nil
	}
	return sn.fl.Do(ctx, id, func(context.Context) ([]byte, error) {
		data, err := sn.hub.get(id)
		if err == nil {
			sn.keep(id, data)
		}
		return data, err
	})
}

func (sn *siteNode) keep(id flist.BlockID, data []byte) {
	sn.store.put(id, data)
	sn.n.Stored(id)
}

func (s *siteStore) have(fn func(flist.BlockID) bool) {
	for id := range s.v1 {
		if !fn(id) {
			return
		}
	}
	for i := range s.others {
		if !fn(makeSiteBlock(byte(s.node), s.node<<24|i).id) {
			return
		}
	}
}

// cmHost is a mocknet host with a real connection manager: mocknet hosts have none, and
// without one a node of the simulation would keep a connection, and a filter, for every
// peer its DHT ever dialled.
type cmHost struct {
	host.Host
	cm *connmgr.BasicConnMgr
}

func (h cmHost) ConnManager() coreconnmgr.ConnManager { return h.cm }

// withConnManager gives h the daemon's water marks (32, 48), with a grace period and a
// silence short enough to trim within the simulation.
func withConnManager(b *testing.B, h host.Host) host.Host {
	cm, err := connmgr.NewConnManager(32, 48, connmgr.WithGracePeriod(2*time.Second), connmgr.WithSilencePeriod(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	h.Network().Notify(cm.Notifee())
	b.Cleanup(func() { cm.Close() })
	return cmHost{Host: h, cm: cm}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkSite simulates a site of real p2p nodes (the DHT, the have-filters, the block
// exchange) on a libp2p mocknet in one process, and measures what the design costs each
// node and what a reader gets:
//
//   - Half the nodes hold version 1 of an flist (siteBlocks blocks); every node also
//     holds siteBlocks blocks of other flists. Each node dials siteDegree others.
//   - Every holder announces version 1 (ProvideFlist): the only DHT records.
//   - One node that holds nothing reads version 2, which shares all but siteChanged of
//     its blocks with version 1 and which nobody announces: its shared blocks must come
//     from the neighbours, and only the new ones from the hub (hub/new, goal ≤ 1.05).
//
// The old design (every cached block provided in the DHT) is not run at this scale: its
// cost is siteProvideSamples block provides measured in the same run, times the mean
// blocks of a cache (old-provide-msgs/node, one announce round; it is repeated every 12 h), to
// set against the new design's DHT messages per node over the whole run.
//
//	go test ./p2p -run '^$' -bench BenchmarkSite -benchtime 1x [SITE_NODES=200]
func BenchmarkSite(b *testing.B) {
	nodes, blocks := envInt("SITE_NODES", siteNodes), envInt("SITE_BLOCKS", siteBlocks)
	b.ReportAllocs()
	for b.Loop() {
		runSite(b, nodes, blocks)
	}
}

func runSite(b *testing.B, nodes, blocks int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	v1 := make(map[flist.BlockID][]byte, blocks)
	var v2 []siteBlock
	for i := range blocks {
		blk := makeSiteBlock(0xf1, i)
		v1[blk.id] = blk.data
		if float64(i) < siteChanged*float64(blocks) {
			blk = makeSiteBlock(0xf2, i) // changed in version 2
		}
		v2 = append(v2, blk)
	}
	newBlocks := int(siteChanged * float64(blocks))

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()

	wave := &siteHub{blocks: map[flist.BlockID][]byte{}}
	var waveIDs []flist.BlockID
	for i := range siteWaveBlocks {
		blk := makeSiteBlock(0xf3, i)
		wave.blocks[blk.id] = blk.data
		waveIDs = append(waveIDs, blk.id)
	}

	mn := mocknet.New()
	defer mn.Close()
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: siteLatency})
	site := make([]*p2p.Node, nodes)
	sns := make([]*siteNode, nodes)
	for i := range site {
		mh, err := mn.GenPeer()
		if err != nil {
			b.Fatal(err)
		}
		h := withConnManager(b, mh)
		s := &siteStore{node: i, others: blocks}
		if i%2 == 1 {
			s.v1 = v1
		}
		n, err := p2p.New(p2p.Config{Host: h, NoMDNS: true, Logger: testkit.LoggerAt(b, slog.LevelError)})
		if err != nil {
			b.Fatal(err)
		}
		sn := &siteNode{n: n, store: s, hub: wave}
		if err := n.Start(ctx, p2p.Service{Blocks: s, Have: s.have, Fetch: sn.fetch}); err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		site[i], sns[i] = n, sn
	}
	if err := mn.LinkAll(); err != nil {
		b.Fatal(err)
	}
	for i, n := range site {
		for _, j := range mrand.Perm(nodes)[:min(siteDegree+1, nodes)] {
			if j != i && !slices.Contains(n.Peers(), site[j].ID()) {
				if _, err := mn.ConnectPeers(n.ID(), site[j].ID()); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	// Every node holds the filter of each neighbour (all nodes send one).
	testkit.WaitFor(b, "every neighbour's have-filter", 5*time.Minute, func() bool {
		for _, n := range site {
			if n.Stats().HaveHeldBytes < int64(len(n.Peers()))*minFilterBytes {
				return false
			}
		}
		return true
	})
	setup := time.Since(start)

	var digest [32]byte
	rand.Read(digest[:])
	var wg sync.WaitGroup
	for i := 1; i < nodes; i += 2 {
		wg.Go(func() {
			if err := site[i].ProvideFlist(ctx, digest[:]); err != nil {
				b.Errorf("node %d: ProvideFlist: %v", i, err)
			}
		})
	}
	wg.Wait()

	// The reader is node 0 (holds no version 1); it finds version 1's holders in the DHT
	// as a mount would, then reads version 2 block by block.
	reader := site[0]
	if provs, err := reader.FindFlistProviders(ctx, digest[:], 8); err != nil || len(provs) == 0 {
		b.Errorf("the reader found no holder of version 1: %v, %v", provs, err)
	}
	var mu sync.Mutex
	var lat []time.Duration
	hub := 0
	work := make(chan siteBlock)
	for range siteReaders {
		wg.Go(func() {
			for blk := range work {
				t0 := time.Now()
				_, err := reader.Get(ctx, blk.id)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					hub++ // the agent would fetch it from the hub
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	readStart := time.Now()
	for _, blk := range v2 {
		work <- blk
	}
	close(work)
	wg.Wait()
	read := time.Since(readStart)

	// The first wave: every node reads the new flist at once.
	dhtBefore := make([]int64, nodes)
	for i, n := range site {
		dhtBefore[i] = n.Stats().DHTMessages
	}
	waveStart := time.Now()
	waveTimes := make([]time.Duration, nodes)
	var waveErrs sync.Map
	for i, sn := range sns {
		wg.Go(func() {
			order := slices.Clone(waveIDs)
			mrand.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			ids := make(chan flist.BlockID)
			var rw sync.WaitGroup
			for range siteWaveReaders {
				rw.Go(func() {
					for id := range ids {
						if err := sn.read(ctx, id); err != nil {
							waveErrs.Store(i, err)
						}
					}
				})
			}
			for _, id := range order {
				ids <- id
			}
			close(ids)
			rw.Wait()
			waveTimes[i] = time.Since(waveStart)
		})
	}
	wg.Wait()
	waveErrs.Range(func(k, v any) bool {
		b.Errorf("node %v: a wave read failed: %v", k, v)
		return false
	})
	var waveDHT, viaFailed int64
	for i, n := range site {
		waveDHT += n.Stats().DHTMessages - dhtBefore[i]
		viaFailed += sns[i].viaFailed.Load()
	}
	slices.Sort(waveTimes)

	var dhtMsgs, haveSent, haveHeld, conns, refused int64
	for _, n := range site {
		conns += int64(len(n.Peers()))
		st := n.Stats()
		refused += st.FetchRefused
		dhtMsgs += st.DHTMessages
		haveSent += st.HaveSentBytes
		haveHeld += st.HaveHeldBytes
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	// The old design's price, measured now on the same site: one block provide.
	sampler := site[1]
	m0 := sampler.Stats().DHTMessages
	for range siteProvideSamples {
		var id [32]byte
		rand.Read(id[:])
		if err := sampler.ProvideFlist(ctx, id[:]); err != nil {
			b.Fatalf("sample provide: %v", err)
		}
	}
	perProvide := float64(sampler.Stats().DHTMessages-m0) / siteProvideSamples

	slices.Sort(lat)
	pct := func(q float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(nodes), "nodes")
	b.ReportMetric(float64(conns)/float64(nodes), "peers/node")
	b.ReportMetric(float64(dhtMsgs)/float64(nodes), "dht-msgs/node")
	b.ReportMetric(perProvide, "msgs/block-provide")
	b.ReportMetric(perProvide*1.5*float64(blocks), "old-provide-msgs/node")
	b.ReportMetric(float64(haveSent)/float64(nodes)/1024, "have-sent-KiB/node")
	b.ReportMetric(float64(haveHeld)/float64(nodes)/1024, "have-held-KiB/node")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(nodes)/(1<<20), "heap-MiB/node")
	b.ReportMetric(pct(0.5), "get-p50-ms")
	b.ReportMetric(pct(0.99), "get-p99-ms")
	b.ReportMetric(float64(hub)/float64(max(newBlocks, 1)), "hub/new")
	b.ReportMetric(float64(wave.fetches)/siteWaveBlocks, "wave-hub/distinct")
	b.ReportMetric(waveTimes[len(waveTimes)/2].Seconds(), "wave-p50-s")
	b.ReportMetric(waveTimes[len(waveTimes)*99/100].Seconds(), "wave-p99-s")
	b.ReportMetric(float64(waveDHT)/float64(nodes), "wave-dht-msgs/node")
	b.ReportMetric(float64(refused), "fetch-refused")
	b.ReportMetric(float64(viaFailed), "wave-fetchvia-failed")
	b.ReportMetric(setup.Seconds(), "setup-s")
	b.ReportMetric(read.Seconds(), "read-s")
	b.Logf("%d nodes, %d blocks each on average: %d of version 2's %d blocks from the hub (%d new); "+
		"%.0f DHT messages per node against %.0f for one round of the old design",
		nodes, 3*blocks/2, hub, len(v2), newBlocks, float64(dhtMsgs)/float64(nodes), perProvide*1.5*float64(blocks))
	b.Logf("first wave: %d nodes read %d new blocks at once; the hub sent %d (%.2f× the distinct blocks)",
		nodes, siteWaveBlocks, wave.fetches, float64(wave.fetches)/siteWaveBlocks)
	if wave.fetches > siteWaveBlocks*105/100 {
		// Not an error: a known gap (docs/BENCHMARKS.md). Nodes that see different
		// neighbours disagree on a block's designated fetcher.
		b.Logf("first wave: goal (≤ 1.05×) not met")
	}
	if hub > newBlocks*105/100 {
		b.Errorf("the hub sent %d blocks for %d new ones", hub, newBlocks)
	}
}
