// Package agent is the daemon every node runs: it owns the block cache, the p2p node
// (serving the cache to neighbours and announcing it), the resolver (cache, then one
// shared fetch per block, then neighbours, then hubs and the flists' routes), the FUSE
// mounts and the local API the CLI talks to.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/time/rate"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/cache"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/metrics"
	"github.com/zosfs/zosfs-agent/mount"
	"github.com/zosfs/zosfs-agent/p2p"
)

// Config configures the daemon. The zero value works: defaults are in the field comments.
type Config struct {
	// DataDir holds the cache, the flists and the daemon's state. Default /var/lib/zosfs.
	DataDir string
	// Hubs are base URLs of hubs to fetch flists and blocks from.
	Hubs []string
	// APISocket is the unix socket of the local API. Default api.DefaultSocket.
	APISocket string
	// CacheMax bounds the block cache in bytes; 0 means 80 % of the disk's free space
	// (plus what the cache holds) at start, a negative value no bound. Blocks of pulled
	// flists are pinned and never evicted.
	CacheMax int64
	// CacheMinFree is the free space the cache leaves on its disk, evicting unpinned
	// blocks to keep it; 0 means the smaller of 1 GiB and 5 % of the disk, a negative
	// value no reserve.
	CacheMinFree int64
	// FetchTimeout bounds one attempt to fetch a block from a hub or store. Default 20s.
	FetchTimeout time.Duration
	// ReadTimeout bounds a read through a mount: past it the read fails with EIO.
	// Default 60s.
	ReadTimeout time.Duration
	// Listen is the p2p multiaddrs to listen on; empty means p2p.DefaultListen.
	Listen []string
	// Bootstrap is multiaddrs of peers (ending in /p2p/ID) to join, for routed sites.
	Bootstrap []string
	// PSKFile holds a libp2p private-network key: only nodes with the same key can join
	// the site's network. Empty means an open network.
	PSKFile string
	// NoMDNS turns off mDNS discovery of peers on the LAN.
	NoMDNS bool
	// HubRate bounds the bytes per second fetched from hubs and stores (the thin
	// uplink); 0 means no bound.
	HubRate int64
	// ServeRate bounds the bytes per second served to neighbours; 0 means no bound.
	ServeRate int64
	// PeerTimeout bounds the attempt to get a block from neighbours before the hubs are
	// asked. Default 3s.
	PeerTimeout time.Duration
	// MetricsAddr, if set, is where Prometheus metrics are served (GET /metrics), e.g.
	// 127.0.0.1:9100. Empty: no metrics server.
	MetricsAddr string
	// Logger receives the daemon's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultDataDir = "/var/lib/zosfs"
	// DefaultFetchTimeout bounds one attempt at a block from a hub: a 512 KiB block over
	// a thin link of 256 kbit/s takes 16 s.
	DefaultFetchTimeout = 20 * time.Second
	// DefaultReadTimeout is the mount's: past it a read fails with EIO.
	DefaultReadTimeout = mount.DefaultReadTimeout
	// DefaultPeerTimeout is how long neighbours get before the hubs are asked: a LAN
	// round trip and a disk read are far below it, a neighbour that is slower than
	// that is no better than the hub.
	DefaultPeerTimeout = 3 * time.Second
	// pullParallel is how many blocks a pull fetches at once.
	pullParallel = 16
)

func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.APISocket == "" {
		c.APISocket = api.DefaultSocket
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = DefaultFetchTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Daemon is the node's agent. New checks the configuration and prepares the parts that
// need no I/O beyond it (the hub clients, the p2p node's identity); Run builds the rest
// in dependency order, serves, and closes them in reverse.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	http     *http.Client
	hubs     []*hub.Client
	uplink   *rate.Limiter // Config.HubRate: hubs and routes share it; nil without one
	cache    *cache.Cache
	resolver *Resolver
	flists   *flistStore
	mounts   *mountManager
	node     *p2p.Node
	announce *announcer
	fetched  FetchStats
	lookup   metrics.Latency
}

// New checks the configuration and returns a daemon that has not started.
func New(cfg Config) (*Daemon, error) {
	cfg = cfg.withDefaults()
	httpClient := &http.Client{Transport: http.DefaultTransport}
	var hubs []*hub.Client
	for _, u := range cfg.Hubs {
		h, err := hub.NewClient(u, "", httpClient)
		if err != nil {
			return nil, fmt.Errorf("hub %q: %w", u, err)
		}
		hubs = append(hubs, h)
	}
	var psk []byte
	if cfg.PSKFile != "" {
		var err error
		if psk, err = os.ReadFile(cfg.PSKFile); err != nil {
			return nil, fmt.Errorf("psk: %w", err)
		}
	}
	node, err := p2p.New(p2p.Config{
		DataDir:   cfg.DataDir,
		Listen:    cfg.Listen,
		Bootstrap: cfg.Bootstrap,
		PSK:       psk,
		NoMDNS:    cfg.NoMDNS,
		ServeRate: cfg.ServeRate,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	return &Daemon{cfg: cfg, log: cfg.Logger.With("component", "agent"), http: httpClient, hubs: hubs,
		node: node, announce: newAnnouncer()}, nil
}

// Run opens the cache, restores the mounts of the last run, serves the local API and
// blocks until ctx ends; then it unmounts everything and closes what it opened, in
// reverse order. The mounts are remembered and restored by the next Run.
func (d *Daemon) Run(ctx context.Context) (err error) {
	cfg := d.cfg
	for _, sub := range []string{"cache", "flists", "state"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, sub), 0o700); err != nil {
			return err
		}
	}
	// The parts, in dependency order: each is built on those before it. The p2p node
	// (prepared by New) is what the resolver and the flist store fetch through; once they
	// exist, it starts serving them.
	d.cache, err = cache.Open(cache.Config{
		Dir: filepath.Join(cfg.DataDir, "cache"), MaxBytes: cfg.CacheMax, MinFree: cfg.CacheMinFree, Logger: cfg.Logger,
		// The have-filter the node sends its neighbours follows the cache.
		OnStore: d.node.Stored, OnEvict: d.node.Evicted,
	})
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer d.cache.Close()

	d.uplink = newUplink(cfg.HubRate)
	var remote []Source
	for _, h := range d.hubs {
		remote = append(remote, limited(hubSource{h}, d.uplink))
	}
	d.resolver = NewResolver(ResolverConfig{
		Cache:       d.cache,
		Peers:       d.node,
		PeerTimeout: cfg.PeerTimeout,
		Remote:      remote,
		Timeout:     cfg.FetchTimeout,
		Stats:       &d.fetched,
		Latency:     &d.lookup,
		CanFetch:    d.node.SetCanFetch,
		Log:         d.log,
	})
	d.flists = &flistStore{dir: filepath.Join(cfg.DataDir, "flists"), hubs: d.hubs, http: d.http,
		peers: d.node, added: d.announce.add, peerFirst: cfg.PeerTimeout}
	d.mounts = newMountManager(d, filepath.Join(cfg.DataDir, "state", "mounts.json"))

	err = d.node.Start(ctx, p2p.Service{
		Blocks: d.cache,
		Have: func(fn func(flist.BlockID) bool) {
			d.cache.Range(func(id flist.BlockID, _ int64) bool { return fn(id) })
		},
		Flists: d.flists,
		Fetch:  d.resolver.FetchForPeer,
		Busy:   d.resolver.Busy,
	})
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	defer d.node.Close()
	// Only a node with somewhere to fetch from (hubs, or the routes of an flist in use)
	// is a designated fetcher of the first wave.
	d.resolver.announceFetching()
	announceCtx, stopAnnounce := context.WithCancel(ctx)
	defer stopAnnounce()
	go d.announce.run(announceCtx, d.node, d.flists, d.log)

	// Claim the socket first (it refuses to start beside a live daemon, whose mounts
	// restore would otherwise clear), restore the mounts, then answer: a client sees a
	// consistent state (the flists are local, so restoring is quick).
	l, err := api.Listen(cfg.APISocket)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	defer os.Remove(cfg.APISocket)
	d.mounts.restore(ctx)
	defer d.mounts.closeAll()
	srv := &http.Server{Handler: api.NewHandler(d, d.log), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()

	if cfg.MetricsAddr != "" {
		ml, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler(d.metricsSnapshot))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go msrv.Serve(ml)
		defer msrv.Close()
		d.log.Info("serving metrics", "addr", ml.Addr().String())
	}

	d.log.Info("daemon ready", "api", cfg.APISocket, "data", cfg.DataDir, "hubs", cfg.Hubs,
		"peer_id", d.node.ID().String(), "addrs", d.node.Addrs())
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("api: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	d.log.Info("daemon stopping")
	return nil
}

// Status implements api.Backend.
func (d *Daemon) Status(ctx context.Context) (api.Status, error) {
	cs := d.cache.Stats()
	pinned, err := d.cache.Owners(ctx)
	if err != nil {
		return api.Status{}, err
	}
	peers := []api.Peer{}
	for _, p := range d.node.Peers() {
		peers = append(peers, api.Peer{ID: p.String()})
	}
	ns := d.node.Stats()
	return api.Status{
		PeerID: d.node.ID().String(),
		Addrs:  d.node.Addrs(),
		Peers:  peers,
		Mounts: d.mounts.list(),
		Pinned: pinned,
		Cache: api.CacheStatus{Bytes: cs.Bytes, Max: cs.Max, Blocks: cs.Blocks,
			MinFree: cs.MinFree, DiskFree: cs.DiskFree, ReadOnly: cs.ReadOnly},
		Fetched:  api.Fetched{Cache: d.fetched.Cache.Load(), Peers: d.fetched.Peers.Load(), Hub: d.fetched.Hub.Load()},
		Served:   api.Served{Bytes: ns.ServedBytes, Blocks: ns.ServedBlocks, FetchedFor: ns.FetchedFor, Flists: ns.ServedFlists},
		Rejected: ns.Rejected,
		Banned:   ns.Banned,
		Hubs:     append([]string{}, d.cfg.Hubs...),
	}, nil
}

// metricsSnapshot gathers the figures the metrics server exposes.
func (d *Daemon) metricsSnapshot() metrics.Snapshot {
	cs := d.cache.Stats()
	ns := d.node.Stats()
	peerBytes := make(map[string]int64, len(ns.FetchedBytesByPeer))
	for p, n := range ns.FetchedBytesByPeer {
		peerBytes[p.String()] = n
	}
	return metrics.Snapshot{
		FetchedBytes: map[string]int64{"cache": d.fetched.Cache.Load(), "peers": d.fetched.Peers.Load(), "hub": d.fetched.Hub.Load()},
		PeerBytes:    peerBytes,
		ServedBytes:  ns.ServedBytes, ServedBlocks: ns.ServedBlocks, ServedFlists: ns.ServedFlists, Rejected: ns.Rejected,
		WriteTimeouts: ns.WriteTimeouts, FetchRefused: ns.FetchRefused,
		DHTMessages: ns.DHTMessages, HaveSentBytes: ns.HaveSentBytes, HaveHeldBytes: ns.HaveHeldBytes,
		CacheBytes: cs.Bytes, CacheBlocks: cs.Blocks, CacheMax: cs.Max,
		Peers: len(d.node.Peers()), Mounts: len(d.mounts.list()),
		Lookup: d.lookup.Snapshot(),
	}
}

// Mount implements api.Backend.
func (d *Daemon) Mount(ctx context.Context, req api.MountRequest) (api.Mount, error) {
	return d.mounts.mount(ctx, req)
}

// Unmount implements api.Backend.
func (d *Daemon) Unmount(ctx context.Context, mountpoint string) error {
	return d.mounts.unmount(ctx, mountpoint)
}
