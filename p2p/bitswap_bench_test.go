package p2p_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/zosfs/zosfs-agent/flist"
)

// BenchmarkBitswap moves the same 256 MiB of 512 KiB blocks as BenchmarkFetch between
// two libp2p hosts on loopback, but with boxo bitswap (client and server, defaults) in
// place of ProtocolID, and reports MiB/s the same way. The blocks are named by
// flist.BlockCID (BLAKE2b-256 multihash), which bitswap hashes on receipt, as Fetch
// verifies every block. docs/p2p.md compares the two.
//
// session: one GetBlocks call for all blocks (one bitswap session, as a blockservice
// fetching a file would do). workers32: 32 callers, each GetBlock one block at a time,
// like BenchmarkFetch's callers.
func BenchmarkBitswap(b *testing.B) {
	const total = 256 << 20
	tblocks := makeBlocks(b, total/flist.BlockSize, flist.BlockSize)
	var bytesPer int64
	cids := make([]cid.Cid, len(tblocks))
	want := make(map[cid.Cid][]byte, len(tblocks))
	blks := make([]blocks.Block, len(tblocks))
	for i, tb := range tblocks {
		c, err := flist.BlockCID(tb.id)
		if err != nil {
			b.Fatal(err)
		}
		blk, err := blocks.NewBlockWithCid(tb.data, c)
		if err != nil {
			b.Fatal(err)
		}
		cids[i], blks[i], want[c] = c, blk, tb.data
		bytesPer += int64(len(tb.data))
	}

	ctx := b.Context()
	// Server: a host whose bitswap serves every block from an in-memory blockstore.
	serverStore := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	if err := serverStore.PutMany(ctx, blks); err != nil {
		b.Fatal(err)
	}
	sh := newBenchHost(b)
	sbs := bitswap.New(ctx, bsnet.NewFromIpfsHost(sh), nil, serverStore)
	b.Cleanup(func() { sbs.Close() })

	// Fetcher: a host with an empty blockstore and a bitswap client (no server: it only
	// leeches). The client does not store what it receives, so every iteration fetches
	// every block again.
	ch := newBenchHost(b)
	cbs := bitswap.New(ctx, bsnet.NewFromIpfsHost(ch),
		nil, blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore())),
		bitswap.WithServerEnabled(false))
	b.Cleanup(func() { cbs.Close() })
	if err := ch.Connect(ctx, peer.AddrInfo{ID: sh.ID(), Addrs: sh.Addrs()}); err != nil {
		b.Fatal(err)
	}
	// Warm up: one block, so both sides have seen the connection and the protocol.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := cbs.GetBlock(wctx, cids[0]); err != nil {
		b.Fatalf("warm-up GetBlock: %v", err)
	}
	cancel()

	check := func(blk blocks.Block) bool {
		if !bytes.Equal(blk.RawData(), want[blk.Cid()]) {
			b.Errorf("block %s: wrong bytes", blk.Cid())
			return false
		}
		return true
	}

	b.Run("session", func(b *testing.B) {
		b.SetBytes(bytesPer)
		start := time.Now()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // a stall fails, not hangs
			out, err := cbs.GetBlocks(ctx, cids)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for blk := range out {
				if check(blk) {
					n++
				}
			}
			err = ctx.Err()
			cancel()
			if n != len(cids) {
				b.Fatalf("got %d of %d blocks: %v", n, len(cids), err)
			}
		}
		secs := time.Since(start).Seconds()
		b.ReportMetric(float64(bytesPer)*float64(b.N)/(1<<20)/secs, "MiB/s")
	})

	b.Run("workers32", func(b *testing.B) {
		b.SetBytes(bytesPer)
		start := time.Now()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			var mu sync.Mutex
			next := 0
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= len(cids) {
							return
						}
						blk, err := cbs.GetBlock(ctx, cids[i])
						if err != nil {
							b.Error(err)
							return
						}
						if !check(blk) {
							return
						}
					}
				})
			}
			wg.Wait()
			cancel()
		}
		secs := time.Since(start).Seconds()
		b.ReportMetric(float64(bytesPer)*float64(b.N)/(1<<20)/secs, "MiB/s")
	})
}

// newBenchHost is a libp2p host on 127.0.0.1 TCP with the default security and muxer,
// as p2p.Node builds its TCP host (no QUIC listen address, as in startNode).
func newBenchHost(b *testing.B) host.Host {
	b.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}
