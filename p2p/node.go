package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/zosfs/zosfs-agent/flist"
)

// Protocol names.
const (
	// ProtocolID is the block exchange protocol (see wire.go for the format).
	ProtocolID protocol.ID = "/zosfs/blocks/1.0.0"
	// DHTPrefix is the private protocol prefix of the site's kad-dht: its protocol is
	// /zosfs/kad/1.0.0, so it never mixes with the public IPFS DHT.
	DHTPrefix protocol.ID = "/zosfs"
	// MDNSService is the DNS-SD service name under which nodes announce themselves on the
	// LAN (the "zosfs" tag in the usual _service._proto form).
	MDNSService = "_zosfs._udp"
)

// Defaults of Config's zero values.
const (
	// DefaultMaxInflight is the default bound on the requests in flight to one peer over
	// its stream: enough to keep a LAN link busy with 512 KiB blocks (32 × 512 KiB =
	// 16 MiB in flight) without asking a peer for more than it serves at once.
	DefaultMaxInflight = 32
	// DefaultHedgeDelay is how long Get waits for a first peer before asking a second
	// one in parallel: a LAN round trip plus a disk read is well under it.
	DefaultHedgeDelay = 150 * time.Millisecond
	// DefaultWriteTimeout bounds one response write (up to a whole block of
	// flist.BlockSize, 512 KiB: 10 s is a link slower than 52 KiB/s, too slow to be a
	// neighbour worth serving). A peer that stops reading its stream for that long
	// loses it: the stream is reset and the memory its answers held is freed; one whose
	// writes time out again and again is banned (writeTimeoutStrikes). Waits for
	// Config.ServeRate are not part of it.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultBanDuration is how long a peer that sent a wrong block, or broke the
	// protocol, stays banned (disconnected, no dial, no inbound connection).
	DefaultBanDuration = 10 * time.Minute
)

// DefaultListen is the listen addresses when Config.Listen is empty: TCP, plus QUIC when
// the network is not private (QUIC does not support a libp2p private network).
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}

// Tuning of the node's background work.
const (
	// bootstrapDialTimeout bounds one dial of a bootstrap or mDNS-discovered peer.
	bootstrapDialTimeout = 10 * time.Second
	// bootstrapInterval is how often disconnected bootstrap peers are dialled again.
	bootstrapInterval = 30 * time.Second
	// protectTag marks bootstrap peers in the connection manager so it never trims them.
	protectTag = "zosfs-bootstrap"
	// closeTimeout bounds how long Close waits for the block exchange's goroutines.
	closeTimeout = 5 * time.Second
	// connLow and connHigh are the connection manager's water marks: above connHigh
	// connections it trims back to connLow. libp2p's defaults (160/192) would let a
	// node of a site of hundreds hold a connection, a have-filter and a DHT slot for
	// nearly every other one; 32 neighbours are enough to find a block held by a
	// few percent of the site, and the DHT finds an flist's holders beyond them.
	connLow, connHigh = 32, 48
	// connGrace keeps a new connection from being trimmed before it has been used.
	connGrace = 30 * time.Second
)

// Sentinel errors; test them with errors.Is.
var (
	// ErrNotFound: no peer answered with the block or flist (none has it, or every one
	// that has it failed or sent a wrong one): fetch it elsewhere.
	ErrNotFound = flist.NotFound("not found on peers")
	// ErrBanned: the peer is banned (it sent a wrong block or broke the protocol).
	ErrBanned = errors.New("peer banned")
	// ErrNotStarted: the node has not been started, or has been closed.
	ErrNotStarted = errors.New("p2p node not running")
)

// BlockStore is what the node serves to its peers: the stored (encrypted) bytes of the
// blocks it holds, as they hash to their id. The daemon's cache is one. Get's bytes must
// be verified (the cache verifies on read): a peer that receives a wrong block bans the
// sender.
type BlockStore interface {
	Get(ctx context.Context, id flist.BlockID) ([]byte, error)
	Has(ctx context.Context, id flist.BlockID) (bool, error)
}

// Config configures a Node. The zero value of every field is a usable default.
type Config struct {
	// DataDir holds the node's persistent identity in p2p/identity.key (an Ed25519 key,
	// created with mode 0600 if missing). Empty means a new random identity each time.
	DataDir string
	// Listen is the multiaddrs to listen on; empty means DefaultListen (without its QUIC
	// address when PSK is set). A QUIC address with a PSK is an error.
	Listen []string
	// Bootstrap is multiaddrs of peers, each ending in /p2p/<peer id>, dialled at start
	// and again whenever they are disconnected (every bootstrapInterval), for sites that
	// are routed rather than one LAN. They also seed the DHT.
	Bootstrap []string
	// PSK is the content of a libp2p private-network key file ("/key/swarm/psk/1.0.0/"
	// then the encoding and the key); empty means a public network. With a PSK, only
	// nodes holding the same key can connect (TCP only).
	PSK []byte
	// NoMDNS turns off mDNS discovery of peers on the LAN (on by default).
	NoMDNS bool
	// MaxInflight bounds the requests in flight to one peer; 0 means DefaultMaxInflight.
	MaxInflight int
	// HedgeDelay is how long Get waits for a peer before also asking the next one;
	// 0 means DefaultHedgeDelay.
	HedgeDelay time.Duration
	// BanDuration is how long a misbehaving peer stays banned; 0 means DefaultBanDuration.
	BanDuration time.Duration
	// WriteTimeout bounds one response write to a peer; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ServeRate bounds the bytes per second of blocks served to peers, all peers
	// together; 0 means no bound.
	ServeRate int64
	// FetchRate bounds the blocks per second this node fetches (Service.Fetch) on one
	// peer's behalf, as their designated fetcher; FetchBurst is how many it may fetch at
	// once beyond that rate (a token bucket per peer). A request beyond them is answered
	// with an error at once, and the peer goes to its own hub. 0 means DefaultFetchRate
	// and DefaultFetchBurst; a negative FetchRate means no bound.
	FetchRate  float64
	FetchBurst int
	// Logger receives the node's logs, tagged component=p2p; nil means slog.Default().
	Logger *slog.Logger
	// Host, when set, is the libp2p host the node runs on instead of one of its own: the
	// benchmarks simulate a site of hundreds of nodes in one process on a libp2p mocknet.
	// The node then takes its identity from it; DataDir, Listen, PSK and the connection
	// manager and gater are not used (bans still refuse to talk, but do not disconnect),
	// and Close closes the host.
	Host host.Host
}

// Service is what a node serves to its peers, handed to Start: the parts that serve are
// built on the node (they fetch through it), so they exist only once it does. Every
// field may be nil.
type Service struct {
	// Blocks is what the node serves to its peers; nil serves nothing (every request is
	// answered "not found").
	Blocks BlockStore
	// Flists is the flist files the node serves to its peers (FlistProtocolID); nil
	// serves none.
	Flists FlistStore
	// Fetch gets a block this node lacks when a peer asks for it with this node as the
	// block's designated fetcher (FetchVia, the first wave). It must return verified
	// stored bytes (the agent's resolver: cache, neighbours, hub, shared with the node's
	// own reads of the block). nil means this node cannot fetch (it has no hub): it is
	// then never a designated fetcher, and answers such requests "not found". Its error
	// must wrap ErrNotFound when no source has the block (as opposed to failing to
	// answer): a peer that asks for such blocks fetchMissesBan times in a row is banned.
	// It is called at most Config.FetchRate times a second per peer (Config.FetchBurst
	// at once).
	Fetch func(ctx context.Context, id flist.BlockID) ([]byte, error)
	// Have calls fn with the id of each block Blocks holds, until fn returns false: the
	// node builds its have-filter from it (have.go). Stored and Evicted keep the filter
	// current between builds. nil means the node holds no block.
	Have func(fn func(id flist.BlockID) bool)
	// Busy reports whether the node's own reads are waiting for blocks. While it does,
	// at most serveWhileBusy blocks are read for peers at a time, so that the node's own
	// reads go first (the disk and the CPU that verifies blocks are shared). nil means
	// never busy.
	Busy func() bool
}

// Node is a libp2p host with the site's DHT, mDNS discovery and the block exchange. New
// prepares one; Start starts it; Close stops it. It is safe for concurrent use.
type Node struct {
	cfg       Config
	svc       Service // set by Start
	log       *slog.Logger
	priv      crypto.PrivKey
	id        peer.ID
	psk       pnet.PSK
	listen    []ma.Multiaddr
	bootstrap []peer.AddrInfo
	bans      *banList
	stats     counters

	lifeMu  sync.Mutex // serialises Start and Close
	started atomic.Bool
	closed  atomic.Bool
	// Set by Start before started is set, then read-only until Close.
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	host   host.Host
	dht    *dht.IpfsDHT
	mdns   mdns.Service
	bg     sync.WaitGroup // background goroutines (bootstrap loop, mDNS dials, serving)
	bgMu   sync.Mutex     // guards bgDone and bg.Add
	bgDone bool           // Close is waiting for bg: no new goroutine

	sessMu   sync.Mutex
	sessions map[peer.ID]*session
	opening  map[peer.ID]*opening

	serveMem    chan struct{} // bounds the blocks held in memory for serving, all peers
	peersMu     sync.Mutex
	peers       map[peer.ID]*peerServe // the serving state of each peer (peers.go)
	serveBusy   chan struct{}          // bounds the blocks read for peers while Busy
	serveFlists chan struct{}          // bounds the flists served at once, all peers
	serveLimit  *rate.Limiter          // Config.ServeRate; nil without one
	canFetch    atomic.Bool            // see SetCanFetch

	haves       ownHaves      // this node's have-filter (have.go)
	rebuild     chan struct{} // asks rebuildLoop for a new filter
	haveMu      sync.Mutex
	haveSending map[peer.ID]bool       // peers a have-sender runs for
	peerHaves   map[peer.ID]*peerHaves // the neighbours' filters
}

// New checks cfg, loads (or creates) the node's identity and returns a node that has not
// started: no socket is opened and no goroutine runs until Start.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.HedgeDelay <= 0 {
		cfg.HedgeDelay = DefaultHedgeDelay
	}
	if cfg.BanDuration <= 0 {
		cfg.BanDuration = DefaultBanDuration
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.FetchRate == 0 {
		cfg.FetchRate = DefaultFetchRate
	}
	if cfg.FetchBurst <= 0 {
		cfg.FetchBurst = DefaultFetchBurst
	}
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "p2p"),
		bans:        newBanList(cfg.BanDuration),
		sessions:    map[peer.ID]*session{},
		opening:     map[peer.ID]*opening{},
		serveMem:    make(chan struct{}, serveMemBlocks),
		peers:       map[peer.ID]*peerServe{},
		serveBusy:   make(chan struct{}, serveWhileBusy),
		serveFlists: make(chan struct{}, serveFlistsMax),
		rebuild:     make(chan struct{}, 1),
		haveSending: map[peer.ID]bool{},
		peerHaves:   map[peer.ID]*peerHaves{},
	}
	if cfg.ServeRate > 0 {
		// The burst is the largest block: a block is written whole, its tokens taken at once.
		n.serveLimit = rate.NewLimiter(rate.Limit(cfg.ServeRate), flist.MaxBlockStored)
	}
	if len(cfg.PSK) > 0 {
		psk, err := pnet.DecodeV1PSK(bytes.NewReader(cfg.PSK))
		if err != nil {
			return nil, fmt.Errorf("p2p: private network key: %w", err)
		}
		n.psk = psk
	}
	listen := cfg.Listen
	if len(listen) == 0 {
		listen = DefaultListen
		if n.psk != nil {
			listen = listen[:1]
		}
	}
	for _, s := range listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p: listen address %q: %w", s, err)
		}
		if n.psk != nil && isQUIC(a) {
			return nil, fmt.Errorf("p2p: listen address %s: QUIC cannot be used with a private network key", a)
		}
		n.listen = append(n.listen, a)
	}
	var boot []ma.Multiaddr
	for _, s := range cfg.Bootstrap {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p: bootstrap address %q: %w", s, err)
		}
		boot = append(boot, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(boot...)
	if err != nil {
		return nil, fmt.Errorf("p2p: bootstrap addresses (each must end in /p2p/<peer id>): %w", err)
	}
	n.bootstrap = infos
	if cfg.Host != nil {
		n.id = cfg.Host.ID()
	} else {
		n.priv, err = loadIdentity(cfg.DataDir, n.log)
		if err != nil {
			return nil, fmt.Errorf("p2p: identity: %w", err)
		}
		n.id, err = peer.IDFromPrivateKey(n.priv)
		if err != nil {
			return nil, fmt.Errorf("p2p: identity: %w", err)
		}
	}
	for _, b := range n.bootstrap {
		if b.ID == n.id {
			return nil, fmt.Errorf("p2p: bootstrap address %s is this node itself", b)
		}
	}
	return n, nil
}

func isQUIC(a ma.Multiaddr) bool {
	for _, c := range a {
		if code := c.Protocol().Code; code == ma.P_QUIC || code == ma.P_QUIC_V1 {
			return true
		}
	}
	return false
}

// Start opens the host (listening on the configured addresses), the DHT and mDNS, starts
// serving svc and dials the bootstrap peers (in the background: an unreachable
// bootstrap peer is not an error). ctx bounds the start only; the node runs until Close.
//
// The node has Start/Close rather than only a blocking Run because the daemon needs it
// running while it builds on it (the resolver asks it for blocks, the status reports its
// addresses) and closes it in its own defer chain; Run is there for callers that prefer
// the blocking form.
func (n *Node) Start(ctx context.Context, svc Service) (err error) {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.started.Load() || n.closed.Load() {
		return errors.New("p2p: node already started or closed")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.svc = svc
	n.canFetch.Store(svc.Fetch != nil)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.closeLocked()
		}
	}()

	if n.host, err = n.newHost(); err != nil {
		return err
	}
	n.host.SetStreamHandler(ProtocolID, n.handleStream)
	n.host.SetStreamHandler(FlistProtocolID, n.handleFlistStream)
	if n.canFetch.Load() {
		n.advertiseFetcher(true)
	}

	// The DHT's routing table fills with the connected peers that speak its protocol
	// (bootstrap peers, mDNS peers, peers met in lookups); bootstrapLoop keeps the
	// bootstrap peers connected.
	// The DHT sees the host through countingHost, which counts its messages (Stats).
	n.dht, err = dht.New(countingHost{n.host, &n.stats.dhtSent}, dht.Mode(dht.ModeServer), dht.ProtocolPrefix(DHTPrefix))
	if err != nil {
		return fmt.Errorf("p2p: dht: %w", err)
	}

	for _, b := range n.bootstrap {
		n.host.Peerstore().AddAddrs(b.ID, b.Addrs, peerstoreTTL)
		n.host.ConnManager().Protect(b.ID, protectTag)
	}
	if n.track() {
		go n.bootstrapLoop()
	}

	if err := n.startHaves(); err != nil {
		return err
	}

	if !n.cfg.NoMDNS {
		n.mdns = mdns.NewMdnsService(n.host, MDNSService, mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			// No multicast interface is no reason to stop: bootstrap peers still work.
			n.log.Warn("mDNS discovery not available", "err", err)
			n.mdns = nil
		}
	}
	n.started.Store(true)
	n.log.Info("p2p node started", "peer_id", n.id.String(), "addrs", n.Addrs(),
		"private", n.psk != nil, "mdns", n.mdns != nil, "bootstrap", len(n.bootstrap))
	return nil
}

// newHost returns the host to run on: Config.Host, or a new one on the configured
// addresses, behind the ban list and a connection manager.
func (n *Node) newHost() (host.Host, error) {
	if n.cfg.Host != nil {
		return n.cfg.Host, nil
	}
	cm, err := connmgr.NewConnManager(connLow, connHigh, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(n.priv),
		libp2p.ListenAddrs(n.listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ConnectionGater(gater{n.bans}),
		libp2p.ConnectionManager(cm),
		libp2p.DisableRelay(),
		// The daemon exports its own metrics; libp2p's would land in the process-wide
		// Prometheus registry.
		libp2p.DisableMetrics(),
		libp2p.UserAgent("zosfs-agent"),
	}
	if n.psk != nil {
		opts = append(opts, libp2p.PrivateNetwork(n.psk))
	} else {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: host: %w", err)
	}
	return h, nil
}

// peerstoreTTL is how long the addresses of bootstrap peers are kept in the peerstore.
const peerstoreTTL = 365 * 24 * time.Hour

// Close stops the node: it stops discovery, fails the fetches in flight, closes the DHT
// and the host, in the reverse order of Start. It may be called more than once, and on
// a node that was never started.
func (n *Node) Close() error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.closed.Load() {
		return nil
	}
	return n.closeLocked()
}

func (n *Node) closeLocked() error {
	n.closed.Store(true)
	n.started.Store(false)
	var errs []error
	if n.mdns != nil {
		if err := n.mdns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mdns: %w", err))
		}
	}
	if n.cancel != nil {
		n.cancel()
	}
	n.sessMu.Lock()
	var sessions []*session
	for _, s := range n.sessions {
		sessions = append(sessions, s)
	}
	n.sessMu.Unlock()
	for _, s := range sessions {
		s.end(ErrNotStarted)
	}
	if n.host != nil {
		n.host.RemoveStreamHandler(ProtocolID)
		n.host.RemoveStreamHandler(FlistProtocolID)
		n.host.RemoveStreamHandler(FetcherProtocolID)
		n.host.RemoveStreamHandler(HaveProtocolID)
	}
	if n.dht != nil {
		if err := n.dht.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dht: %w", err))
		}
	}
	if n.host != nil {
		if err := n.host.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: %w", err))
		}
	}
	n.bgMu.Lock()
	n.bgDone = true
	n.bgMu.Unlock()
	done := make(chan struct{})
	go func() { n.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		n.log.Warn("p2p goroutines still running after close")
	}
	if n.host != nil {
		n.log.Info("p2p node stopped")
	}
	if len(errs) > 0 {
		return fmt.Errorf("p2p: close: %w", errors.Join(errs...))
	}
	return nil
}

// Run starts the node, runs it until ctx ends, then closes it.
func (n *Node) Run(ctx context.Context, svc Service) error {
	if err := n.Start(ctx, svc); err != nil {
		return err
	}
	<-ctx.Done()
	return n.Close()
}

// Host is the node's libp2p host while it runs (nil before Start), for tools that speak
// the site's protocols themselves (internal/tools/badpeer).
func (n *Node) Host() host.Host {
	h, _ := n.running()
	return h
}

// ID is the node's peer id (known from New on).
func (n *Node) ID() peer.ID { return n.id }

// Addrs returns the node's full multiaddrs, each ending in /p2p/<peer id> (usable as
// another node's Bootstrap); none before Start.
func (n *Node) Addrs() []string {
	h, ok := n.running()
	if !ok {
		return nil
	}
	var out []string
	for _, a := range h.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.id.String())
	}
	return out
}

// Peers returns the peers the node is connected to.
func (n *Node) Peers() []peer.ID {
	h, ok := n.running()
	if !ok {
		return nil
	}
	return h.Network().Peers()
}

// Connect dials a peer given by a full multiaddr (ending in /p2p/<peer id>) and waits
// for the connection. The node keeps no special tie to it (see Config.Bootstrap).
func (n *Node) Connect(ctx context.Context, addr string) error {
	h, ok := n.running()
	if !ok {
		return ErrNotStarted
	}
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return fmt.Errorf("p2p: address %q: %w", addr, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return fmt.Errorf("p2p: address %q: %w", addr, err)
	}
	if err := h.Connect(ctx, *ai); err != nil {
		return fmt.Errorf("p2p: connect %s: %w", ai.ID, err)
	}
	return nil
}

// track registers a background goroutine about to start (the caller then calls
// n.bg.Done when it ends); false once Close has begun waiting: start nothing.
func (n *Node) track() bool {
	n.bgMu.Lock()
	defer n.bgMu.Unlock()
	if n.bgDone {
		return false
	}
	n.bg.Add(1)
	return true
}

// running returns the host while the node is started.
func (n *Node) running() (host.Host, bool) {
	if !n.started.Load() {
		return nil, false
	}
	return n.host, true
}

// bootstrapLoop dials the bootstrap peers now and redials those that are disconnected
// every bootstrapInterval, until the node closes.
func (n *Node) bootstrapLoop() {
	defer n.bg.Done()
	if len(n.bootstrap) == 0 {
		return
	}
	t := time.NewTicker(bootstrapInterval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		connected := 0
		for _, b := range n.bootstrap {
			if n.host.Network().Connectedness(b.ID) == network.Connected {
				connected++
				continue
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(n.ctx, bootstrapDialTimeout)
				defer cancel()
				if err := n.host.Connect(ctx, b); err != nil {
					if n.ctx.Err() == nil {
						n.log.Warn("bootstrap peer unreachable", "peer", b.ID.String(), "err", err)
					}
					return
				}
				n.log.Debug("connected to bootstrap peer", "peer", b.ID.String())
			})
		}
		wg.Wait()
		if connected < len(n.bootstrap) && n.ctx.Err() == nil {
			// Newly connected peers join the DHT's routing table once identified;
			// a refresh fills it beyond them.
			n.dht.RefreshRoutingTable()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// mdnsNotifee dials the peers mDNS finds on the LAN; connected peers join the DHT's
// routing table once identified.
type mdnsNotifee struct{ n *Node }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	n := m.n
	if ai.ID == n.id || n.ctx.Err() != nil || n.bans.banned(ai.ID) ||
		n.host.Network().Connectedness(ai.ID) == network.Connected {
		return
	}
	if !n.track() {
		return
	}
	go func() {
		defer n.bg.Done()
		// Spread the dials when many nodes boot at once and find each other together.
		jitter := time.Duration(rand.Int64N(int64(100 * time.Millisecond)))
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(jitter):
		}
		ctx, cancel := context.WithTimeout(n.ctx, bootstrapDialTimeout)
		defer cancel()
		if err := n.host.Connect(ctx, ai); err != nil {
			n.log.Debug("mDNS peer unreachable", "peer", ai.ID.String(), "err", err)
			return
		}
		n.log.Debug("connected to mDNS peer", "peer", ai.ID.String())
	}()
}
