// Command badpeer is a test-only poisoned neighbour, for the end-to-end tests: a p2p node
// of the site that claims to hold every block (it sends each neighbour a have-filter
// whose every bit is set) and answers every request with random bytes, which never hash
// to the id asked for. The tests run it to show that a daemon
// detects such a peer, bans it and still reads correct bytes. It is not part of the
// product: never run it on a real site.
//
//	go run ./internal/tools/badpeer [-listen MULTIADDR]... [-bootstrap MULTIADDR]... [-size N]
//
// It prints its full multiaddr (ending in /p2p/<peer id>) as one line on stdout once it
// listens, then serves until SIGINT or SIGTERM. Logs, one line per poisoned answer, go
// to stderr. mDNS is off: it meets only the peers it is told about and those that dial it.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/p2p"
)

// addrs is a repeatable string flag.
type addrs []string

func (a *addrs) String() string     { return strings.Join(*a, ",") }
func (a *addrs) Set(s string) error { *a = append(*a, s); return nil }

func main() {
	var listen, bootstrap addrs
	flag.Var(&listen, "listen", "multiaddr to listen on; repeatable (default /ip4/127.0.0.1/tcp/0)")
	flag.Var(&bootstrap, "bootstrap", "multiaddr of a peer to join (ending in /p2p/ID); repeatable")
	// An incompressible block's stored size: a full block plus the AES-GCM tag, what an
	// honest peer would send for most blocks.
	size := flag.Int("size", flist.BlockSize+16, "bytes of each poisoned answer")
	flag.Parse()
	if flag.NArg() != 0 || *size <= 0 || *size > flist.MaxBlockStored {
		fmt.Fprintf(os.Stderr, "usage: badpeer [-listen MULTIADDR]... [-bootstrap MULTIADDR]... [-size 1..%d]\n", flist.MaxBlockStored)
		os.Exit(2)
	}
	if len(listen) == 0 {
		listen = addrs{"/ip4/127.0.0.1/tcp/0"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, listen, bootstrap, *size); err != nil {
		fmt.Fprintln(os.Stderr, "badpeer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, bootstrap []string, size int) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	store := &poison{size: size, log: log}
	n, err := p2p.New(p2p.Config{
		Listen:    listen,
		Bootstrap: bootstrap,
		NoMDNS:    true,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	if err := n.Start(ctx, p2p.Service{Blocks: store}); err != nil {
		return err
	}
	defer n.Close()
	go claimAll(ctx, n, log)
	a := n.Addrs()
	if len(a) == 0 {
		return fmt.Errorf("node has no address")
	}
	fmt.Println(a[0])
	<-ctx.Done()
	log.Info("badpeer stopping", "poisoned_answers", store.served.Load())
	return nil
}

// claimAll sends every neighbour, as it connects, a have-filter that says "maybe" to
// every block, written as the protocol's spec says (p2p/have.go): message type 1, the
// length, then the filter's binary form (k, the number of keys, the bits).
func claimAll(ctx context.Context, n *p2p.Node, log *slog.Logger) {
	const words = 1024
	filter := binary.LittleEndian.AppendUint32(nil, 1) // one bit position per key
	filter = binary.LittleEndian.AppendUint64(filter, 0)
	filter = append(filter, bytes.Repeat([]byte{0xff}, 8*words)...)
	msg := binary.AppendUvarint([]byte{1}, uint64(len(filter)))
	msg = append(msg, filter...)
	sent := map[peer.ID]bool{}
	for ctx.Err() == nil {
		for _, p := range n.Peers() {
			if sent[p] {
				continue
			}
			s, err := n.Host().NewStream(ctx, p, p2p.HaveProtocolID)
			if err != nil {
				continue // not identified yet, or not speaking it: try again
			}
			if _, err := s.Write(msg); err == nil {
				sent[p] = true
				log.Info("claimed every block", "peer", p.String())
			}
			// The stream stays open: the neighbour forgets the filter when it closes.
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// poison is a p2p.BlockStore that has every block and whose every block is wrong.
type poison struct {
	size   int
	log    *slog.Logger
	served atomic.Int64
}

func (p *poison) Has(context.Context, flist.BlockID) (bool, error) { return true, nil }

func (p *poison) Get(_ context.Context, id flist.BlockID) ([]byte, error) {
	data := make([]byte, p.size)
	rand.Read(data)
	p.log.Info("poisoned answer", "id", id.String(), "n", p.served.Add(1))
	return data, nil
}
