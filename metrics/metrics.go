// Package metrics exposes the daemon's figures in Prometheus format, every name starting
// with zosfs_. The figures are read from a snapshot taken at each scrape, so nothing on
// the read path pays for metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is the daemon's state at one scrape.
type Snapshot struct {
	// FetchedBytes counts bytes of blocks obtained, by source: cache, peers, hub.
	FetchedBytes map[string]int64
	// PeerBytes counts bytes of verified blocks obtained from each peer (by peer id).
	PeerBytes    map[string]int64
	ServedBytes  int64 // bytes of blocks sent to neighbours
	ServedBlocks int64 // blocks sent to neighbours
	ServedFlists int64 // flist files sent to neighbours
	Rejected     int64 // blocks from peers that did not match their id
	// WriteTimeouts counts block streams dropped because the peer stopped reading;
	// FetchRefused the requests to fetch for a peer beyond its budget.
	WriteTimeouts int64
	FetchRefused  int64
	// DHTMessages counts the DHT messages sent; HaveSentBytes the bytes of have-filters
	// and updates sent to neighbours; HaveHeldBytes the neighbours' filters held now.
	DHTMessages   int64
	HaveSentBytes int64
	HaveHeldBytes int64
	CacheBytes    int64
	CacheBlocks   int64
	CacheMax      int64 // 0: no bound
	Peers         int   // connected neighbours
	Mounts        int
	// Lookup is how long blocks missing from the cache took to arrive, by the source
	// that delivered them (peers, fetcher, hub).
	Lookup map[string]Histogram
}

var (
	descFetched      = prometheus.NewDesc("zosfs_fetched_bytes_total", "Bytes of blocks the daemon obtained, by source (cache, peers, hub).", []string{"source"}, nil)
	descPeerBytes    = prometheus.NewDesc("zosfs_peer_fetched_bytes_total", "Bytes of verified blocks obtained from each neighbour.", []string{"peer"}, nil)
	descServedBytes  = prometheus.NewDesc("zosfs_served_bytes_total", "Bytes of blocks sent to neighbours.", nil, nil)
	descServedBlocks = prometheus.NewDesc("zosfs_served_blocks_total", "Blocks sent to neighbours.", nil, nil)
	descServedFlists = prometheus.NewDesc("zosfs_served_flists_total", "Flist files sent to neighbours.", nil, nil)
	descRejected     = prometheus.NewDesc("zosfs_rejected_blocks_total", "Blocks from neighbours that did not match their id.", nil, nil)
	descCacheBytes   = prometheus.NewDesc("zosfs_cache_bytes", "Bytes held in the block cache.", nil, nil)
	descCacheBlocks  = prometheus.NewDesc("zosfs_cache_blocks", "Blocks held in the block cache.", nil, nil)
	descCacheMax     = prometheus.NewDesc("zosfs_cache_max_bytes", "Bound on the block cache (0: none).", nil, nil)
	descPeers        = prometheus.NewDesc("zosfs_peers", "Connected neighbours.", nil, nil)
	descMounts       = prometheus.NewDesc("zosfs_mounts", "Flists mounted.", nil, nil)
	descWriteTimeout = prometheus.NewDesc("zosfs_serve_write_timeouts_total", "Block streams dropped because the neighbour stopped reading.", nil, nil)
	descFetchRefused = prometheus.NewDesc("zosfs_fetch_for_peer_refused_total", "Requests to fetch a block for a neighbour refused: beyond its budget.", nil, nil)
	descDHTMessages  = prometheus.NewDesc("zosfs_dht_messages_sent_total", "DHT messages sent (queries, answers, flist provider records).", nil, nil)
	descHaveSent     = prometheus.NewDesc("zosfs_have_sent_bytes_total", "Bytes of have-filters and their updates sent to neighbours.", nil, nil)
	descHaveHeld     = prometheus.NewDesc("zosfs_have_held_bytes", "Bytes of the neighbours' have-filters held.", nil, nil)
	descLookup       = prometheus.NewDesc("zosfs_lookup_seconds", "Time for a block missing from the cache to arrive, by the source that delivered it (peers, fetcher: the block's designated fetcher of the first wave, hub).", []string{"source"}, nil)
)

// collector turns a snapshot into metrics at each scrape.
type collector struct{ snapshot func() Snapshot }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFetched, descPeerBytes, descServedBytes, descServedBlocks, descServedFlists,
		descRejected, descCacheBytes, descCacheBlocks, descCacheMax, descPeers, descMounts, descWriteTimeout, descFetchRefused,
		descDHTMessages, descHaveSent, descHaveHeld, descLookup} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	for src, n := range s.FetchedBytes {
		ch <- prometheus.MustNewConstMetric(descFetched, prometheus.CounterValue, float64(n), src)
	}
	for p, n := range s.PeerBytes {
		ch <- prometheus.MustNewConstMetric(descPeerBytes, prometheus.CounterValue, float64(n), p)
	}
	ch <- prometheus.MustNewConstMetric(descServedBytes, prometheus.CounterValue, float64(s.ServedBytes))
	ch <- prometheus.MustNewConstMetric(descServedBlocks, prometheus.CounterValue, float64(s.ServedBlocks))
	ch <- prometheus.MustNewConstMetric(descServedFlists, prometheus.CounterValue, float64(s.ServedFlists))
	ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(s.Rejected))
	ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(s.CacheBytes))
	ch <- prometheus.MustNewConstMetric(descCacheBlocks, prometheus.GaugeValue, float64(s.CacheBlocks))
	ch <- prometheus.MustNewConstMetric(descCacheMax, prometheus.GaugeValue, float64(s.CacheMax))
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(s.Peers))
	ch <- prometheus.MustNewConstMetric(descMounts, prometheus.GaugeValue, float64(s.Mounts))
	ch <- prometheus.MustNewConstMetric(descWriteTimeout, prometheus.CounterValue, float64(s.WriteTimeouts))
	ch <- prometheus.MustNewConstMetric(descFetchRefused, prometheus.CounterValue, float64(s.FetchRefused))
	ch <- prometheus.MustNewConstMetric(descDHTMessages, prometheus.CounterValue, float64(s.DHTMessages))
	ch <- prometheus.MustNewConstMetric(descHaveSent, prometheus.CounterValue, float64(s.HaveSentBytes))
	ch <- prometheus.MustNewConstMetric(descHaveHeld, prometheus.GaugeValue, float64(s.HaveHeldBytes))
	for src, h := range s.Lookup {
		buckets := make(map[float64]uint64, len(latencyBuckets))
		var cum uint64
		for i, b := range latencyBuckets {
			if i < len(h.Counts) {
				cum += h.Counts[i]
			}
			buckets[b] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descLookup, h.Count, h.Sum, buckets, src)
	}
}

// Handler serves the metrics of snapshot, plus the Go runtime's and the process's, at
// each scrape.
func Handler(snapshot func() Snapshot) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{snapshot},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
