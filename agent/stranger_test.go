package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/p2p"
	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// TestStrangerHubBudget (issue 13, 3): strangers on the site network (no PSK) ask this
// node, as their designated fetcher, for blocks. Blocks of no flist the node has in use
// cost its hub nothing; blocks of one it uses cost at most the per-peer budget. The hub
// is a real one, and its block GETs are counted.
func TestStrangerHubBudget(t *testing.T) {
	blocksDir := t.TempDir()
	blockStore, err := store.NewDir(filepath.Join(blocksDir, "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	var held []flist.Block
	for range 100 {
		b, data := flist.EncodeBlock(storetest.Bytes(1000))
		if err := blockStore.Put(t.Context(), b.ID, data); err != nil {
			t.Fatal(err)
		}
		held = append(held, b)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := hub.New(hub.Config{Dir: blocksDir, Blocks: blockStore, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var gets atomic.Int64
	hubServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/blocks/") {
			gets.Add(1)
		}
		srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(hubServer.Close)
	hc, err := hub.NewClient(hubServer.URL, "", hubServer.Client())
	if err != nil {
		t.Fatal(err)
	}

	const rate, burst = 2, 10
	var r *Resolver
	node := startTestNode(t, p2p.Config{FetchRate: rate, FetchBurst: burst}, p2p.Service{
		Blocks: &heldBlocks{m: map[flist.BlockID][]byte{}}, // holds nothing: every block is fetched
		Fetch:  func(ctx context.Context, id flist.BlockID) ([]byte, error) { return r.FetchForPeer(ctx, id) },
	})
	r, _, _ = newTestResolver(ResolverConfig{Peers: node}, hubSource{hc})

	ask := func(ids []flist.BlockID) (got int) {
		stranger := startTestNode(t, p2p.Config{Bootstrap: node.Addrs()[:1]}, p2p.Service{})
		testkit.WaitFor(t, "the stranger to connect", 10*time.Second, func() bool { return len(stranger.Peers()) > 0 })
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			if _, err := stranger.FetchVia(ctx, node.ID(), id); err == nil {
				got++
			}
			cancel()
		}
		return got
	}

	// Random ids and the hub's own blocks, of no flist in use here: no hub GET.
	var ids []flist.BlockID
	for range 200 {
		ids = append(ids, storetest.ID(32, -1))
	}
	for _, b := range held {
		ids = append(ids, b.ID)
	}
	if got := ask(ids); got != 0 || gets.Load() != 0 {
		t.Fatalf("a stranger got %d blocks of no flist in use, costing %d hub GETs; want none", got, gets.Load())
	}

	// The same blocks once they are of an flist in use: at most the budget.
	defer r.inUse.add(held)()
	start := time.Now()
	ids = ids[200:]
	got := ask(ids)
	bound := int64(burst + rate*time.Since(start).Seconds() + 1)
	t.Logf("%d requests for blocks in use: %d served, %d hub GETs (bound %d)", len(ids), got, gets.Load(), bound)
	if gets.Load() > bound || gets.Load() < burst/2 || int64(got) != gets.Load() {
		t.Errorf("%d hub GETs and %d blocks served for a stranger's %d requests; want at least %d and at most %d, one GET a block",
			gets.Load(), got, len(ids), burst/2, bound)
	}
}
