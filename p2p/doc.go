// Package p2p is the site's peer-to-peer network: a libp2p host that finds its
// neighbours (mDNS on the LAN, static bootstrap peers for routed sites, a kad-dht under
// the private prefix /zosfs), serves the blocks and flist files its node holds and
// fetches them from the peers that have them.
//
// A Node is created with New (which loads or creates its identity and starts nothing),
// started with Start and stopped with Close; Run is the blocking form of the same. Its
// Get method is a block source for the agent's resolver: it finds peers that have a
// block, fetches it from the first to answer and verifies it.
//
// # Identity and transports
//
// The node's Ed25519 key lives in Config.DataDir/p2p/identity.key (mode 0600), so a
// node keeps its peer id across restarts. It listens on TCP and, on a public network,
// QUIC. Config.PSK closes the network with a libp2p private-network key: every
// connection is then encrypted under that key below the usual handshake, so a node
// without it cannot even complete a connection — it can neither fetch nor learn
// providers. QUIC does not support private networks, so with a PSK the node is TCP only
// (a QUIC listen address is refused).
//
// # Block exchange
//
// Blocks move over a purpose-built protocol, ProtocolID (/zosfs/blocks/1.0.0), rather
// than bitswap. Bitswap (boxo, measured in the same run on loopback) moved blocks at
// about 0.6–0.7× this protocol's rate and spent 1.4× its CPU: it pays want-lists,
// sessions, protobuf messages and batching meant for a public swarm of strangers. A
// site's peers need less: the client keeps one
// long-lived stream per peer, pipelines up to Config.MaxInflight requests on it, and the
// server answers each request as soon as it is ready with a length-prefixed frame
// matched by request id (so answers may come out of order; wire.go has the format).
// A peer that lacks a block says so at once, so asking is cheap. Every block received
// is checked with flist.VerifyBlock; a peer that sends a wrong block, or breaks the wire
// format (e.g. a response larger than flist.MaxBlockStored), is banned for
// Config.BanDuration: disconnected, and kept out by the connection gater.
// docs/p2p.md has the figures.
//
// # Flist exchange
//
// Flist files move over a second protocol, FlistProtocolID (/zosfs/flist/1.0.0), so that
// `mount <cid>` works with no hub when a neighbour has the flist, whatever its size (an
// flist of many entries is tens of MiB, far beyond a block's flist.MaxBlockStored). One
// stream carries one flist: the client sends the 32-byte digest of the flist's CID
// (BLAKE2b-256 of the file), the server answers a status and, when it has it, the length
// and the file, streamed from disk (Service.Flists) at Config.ServeRate; flists.go has the
// format. GetFlist asks one peer at a time, in Get's order (flists are announced in the
// DHT under their CID, which is flist.BlockCID of that digest), hashes the bytes as they
// arrive into the caller's file and bounds their size; a peer that sends a file that does
// not hash to the digest, or breaks the format, is banned like one that sends a wrong
// block. Each wait on a flist stream is bounded (flistIdleTimeout), the whole transfer by
// the caller's context.
//
// # Finding blocks
//
// Blocks are never put in the DHT: a site holds millions, and one provide costs about 50
// DHT messages and a record at each of 20 nodes. Each node sends its neighbours instead a
// have-filter (HaveProtocolID, have.go): a Bloom filter of its cache, then the ids it
// stores as they arrive. Get asks only the connected peers whose filter may hold the
// block, then (up to askConnectedMax) those that sent no filter, in random order; a
// second peer is asked after Config.HedgeDelay, the next as soon as one fails. The
// filter covers the whole cache, whatever flist a block came with, so a node that mounts
// version 2 of an flist gets the blocks it shares with version 1 from a neighbour that
// holds version 1. When no peer delivers, the error wraps ErrNotFound, so the agent goes
// to the hub. The DHT holds flists only (ProvideFlist, FindFlistProviders): GetFlist
// asks connected peers, then the providers the DHT names (candidateIter, candidates.go).
// A connection manager keeps 32 to 48 neighbours (connLow, connHigh).
//
// # The first wave
//
// When several nodes cold-start the same flist at once, no neighbour has a block yet and
// each would fetch it from the hub. Fetcher names one designated fetcher per block by
// rendezvous hashing over the site (this node and its connected peers that can fetch —
// a hub, or an flist's routes, to fetch from — and advertise FetcherProtocolID): nodes
// that see the same peers agree without talking. A node asks a block's
// fetcher with FetchVia; the fetcher, lacking the block, gets it through Service.Fetch
// (the agent's resolver, shared with its own reads) and answers. So the hub sends each
// block about once. A fetcher never passes such a request on (no cycles); when views of
// the site differ, the asker falls back to its hub.
//
// # Serving
//
// Config.ServeRate bounds the bytes per second sent to peers; while the node's own reads
// wait for blocks (Service.Busy), at most serveWhileBusy blocks are read for peers at a
// time. Announcing flists (on store, and again periodically) is the agent's job; the
// cache tells the node what it stores and evicts (Stored, Evicted).
//
// No one peer can starve the others (peers.go). The blocks held in memory for serving
// are bounded for all peers together (serveMemBlocks) and for each peer, across its
// streams (servePeerBlocks, an eighth of it). Each response write is bounded
// (Config.WriteTimeout): a peer that stops reading loses the stream and the memory it
// held, and one whose writes time out again and again (writeTimeoutStrikes) is banned. The
// blocks this node fetches on a peer's behalf, as their designated fetcher, are bounded
// by a token bucket per peer (Config.FetchRate, Config.FetchBurst): beyond it the request
// is answered with an error at once and the peer goes to its own hub. A peer that keeps
// asking for blocks that Service.Fetch finds nowhere (its error matches
// flist.ErrNotFound, fetchMissesBan in a row) is banned.
package p2p
