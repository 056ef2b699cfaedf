package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/metrics"
)

func TestHandler(t *testing.T) {
	var lookup metrics.Latency
	lookup.Observe("hub", 3*time.Millisecond)
	lookup.Observe("hub", 2*time.Second)
	lookup.Observe("peers", 200*time.Microsecond)
	srv := httptest.NewServer(metrics.Handler(func() metrics.Snapshot {
		return metrics.Snapshot{
			FetchedBytes: map[string]int64{"hub": 1234, "peers": 56},
			PeerBytes:    map[string]int64{"12D3KooWpeer": 56},
			ServedBytes:  789, ServedBlocks: 3, ServedFlists: 2, Rejected: 1, CacheBytes: 1290, CacheBlocks: 4, Peers: 2, Mounts: 1,
			DHTMessages: 17, HaveSentBytes: 80000, HaveHeldBytes: 160000,
			Lookup: lookup.Snapshot(),
		}
	}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`zosfs_fetched_bytes_total{source="hub"} 1234`,
		`zosfs_fetched_bytes_total{source="peers"} 56`,
		`zosfs_peer_fetched_bytes_total{peer="12D3KooWpeer"} 56`,
		`zosfs_served_bytes_total 789`,
		`zosfs_served_blocks_total 3`,
		`zosfs_served_flists_total 2`,
		`zosfs_rejected_blocks_total 1`,
		`zosfs_cache_bytes 1290`,
		`zosfs_peers 2`,
		`zosfs_mounts 1`,
		`zosfs_dht_messages_sent_total 17`,
		`zosfs_have_sent_bytes_total 80000`,
		`zosfs_have_held_bytes 160000`,
		`zosfs_lookup_seconds_bucket{source="hub",le="0.0025"} 0`,
		`zosfs_lookup_seconds_bucket{source="hub",le="0.005"} 1`,
		`zosfs_lookup_seconds_bucket{source="hub",le="2.5"} 2`,
		`zosfs_lookup_seconds_count{source="hub"} 2`,
		`zosfs_lookup_seconds_sum{source="hub"} 2.003`,
		`zosfs_lookup_seconds_bucket{source="peers",le="0.001"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
