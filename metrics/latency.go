package metrics

import (
	"sync"
	"time"
)

// latencyBuckets are the upper bounds, in seconds, of the lookup latency histogram: from
// a LAN round trip to a hub fetch over a thin, busy uplink.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Latency is a histogram of durations by label (the daemon's block lookup latency, by
// the source that delivered). A nil *Latency ignores observations; the zero value is
// ready to use.
type Latency struct {
	mu      sync.Mutex
	byLabel map[string]*Histogram
}

// Histogram is one label's durations: counts per bucket of latencyBuckets (not
// cumulative), their number and their sum in seconds.
type Histogram struct {
	Counts []uint64
	Count  uint64
	Sum    float64
}

// Observe records one duration under label.
func (l *Latency) Observe(label string, d time.Duration) {
	if l == nil {
		return
	}
	sec := d.Seconds()
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.byLabel[label]
	if h == nil {
		if l.byLabel == nil {
			l.byLabel = map[string]*Histogram{}
		}
		h = &Histogram{Counts: make([]uint64, len(latencyBuckets))}
		l.byLabel[label] = h
	}
	for i, b := range latencyBuckets {
		if sec <= b {
			h.Counts[i]++
			break
		}
	}
	h.Count++
	h.Sum += sec
}

// Snapshot returns a copy of the histograms by label.
func (l *Latency) Snapshot() map[string]Histogram {
	out := map[string]Histogram{}
	if l == nil {
		return out
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for label, h := range l.byLabel {
		out[label] = Histogram{Counts: append([]uint64(nil), h.Counts...), Count: h.Count, Sum: h.Sum}
	}
	return out
}
