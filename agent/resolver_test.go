package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/store"
)

// memCache is a BlockCache in memory (a unit-test fake of the real cache package).
type memCache struct {
	mu     sync.Mutex
	blocks map[flist.BlockID][]byte
}

func (c *memCache) Get(_ context.Context, id flist.BlockID) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.blocks[id]; ok {
		return b, nil
	}
	return nil, store.ErrNotFound
}

func (c *memCache) PutVerified(_ context.Context, id flist.BlockID, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blocks[id] = data
	return nil
}

// fakeSource answers with fn after delay, counting calls.
type fakeSource struct {
	calls atomic.Int64
	delay time.Duration
	fn    func(id flist.BlockID) ([]byte, error)
}

func (s *fakeSource) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.fn(id)
}

// newTestResolver builds a resolver as cfg says, on a cache in memory, with remote as its
// hubs and (unless cfg has one) a timeout of a second.
func newTestResolver(cfg ResolverConfig, remote ...Source) (*Resolver, *memCache, *FetchStats) {
	c := &memCache{blocks: map[flist.BlockID][]byte{}}
	cfg.Cache, cfg.Remote, cfg.Stats = c, remote, &FetchStats{}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return NewResolver(cfg), c, cfg.Stats
}

func serving(blocks map[flist.BlockID][]byte) func(flist.BlockID) ([]byte, error) {
	return func(id flist.BlockID) ([]byte, error) {
		if b, ok := blocks[id]; ok {
			return b, nil
		}
		return nil, store.ErrNotFound
	}
}

// TestResolverSharesOneFetch: many concurrent readers of one block cost one remote fetch,
// and later reads come from the cache.
func TestResolverSharesOneFetch(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("shared block"))
	src := &fakeSource{delay: 50 * time.Millisecond, fn: serving(map[flist.BlockID][]byte{b.ID: data})}
	r, _, stats := newTestResolver(ResolverConfig{}, src)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := r.Fetch(t.Context(), b.ID)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("fetch: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := src.calls.Load(); n != 1 {
		t.Errorf("20 concurrent readers made %d remote fetches, want 1", n)
	}
	if _, err := r.Fetch(t.Context(), b.ID); err != nil || src.calls.Load() != 1 {
		t.Errorf("a cached block was fetched again (%v)", err)
	}
	if stats.Hub.Load() != int64(len(data)) || stats.Cache.Load() != int64(len(data)) {
		t.Errorf("stats hub=%d cache=%d, want %d each", stats.Hub.Load(), stats.Cache.Load(), len(data))
	}
}

// TestResolverRetries: a source that fails once then works is retried; one that says
// "not found" is not retried; one that hangs is cut by the fetch timeout.
func TestResolverRetries(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("retried block"))
	var failures atomic.Int64
	flaky := &fakeSource{fn: func(id flist.BlockID) ([]byte, error) {
		if failures.Add(1) == 1 {
			return nil, errors.New("connection reset")
		}
		return data, nil
	}}
	r, _, _ := newTestResolver(ResolverConfig{}, flaky)
	if _, err := r.Fetch(t.Context(), b.ID); err != nil || flaky.calls.Load() != 2 {
		t.Errorf("flaky source: err %v after %d calls, want success after 2", err, flaky.calls.Load())
	}

	missing := &fakeSource{fn: serving(nil)}
	r, _, _ = newTestResolver(ResolverConfig{}, missing)
	if _, err := r.Fetch(t.Context(), b.ID); !errors.Is(err, store.ErrNotFound) || missing.calls.Load() != 1 {
		t.Errorf("missing block: err %v after %d calls, want not found after 1", err, missing.calls.Load())
	}

	hang := &fakeSource{delay: time.Hour, fn: serving(nil)}
	r, _, _ = newTestResolver(ResolverConfig{Timeout: 100 * time.Millisecond}, hang)
	start := time.Now()
	if _, err := r.Fetch(t.Context(), b.ID); err == nil {
		t.Error("a hanging source gave no error")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("a hanging source held the read %s", el)
	}
}

// TestResolverInterruptedReader: one reader giving up does not fail the others sharing
// its fetch.
func TestResolverInterruptedReader(t *testing.T) {
	b, data := flist.EncodeBlock([]byte("patient block"))
	release := make(chan struct{})
	src := &fakeSource{fn: func(id flist.BlockID) ([]byte, error) {
		<-release
		return serving(map[flist.BlockID][]byte{b.ID: data})(id)
	}}
	r, _, _ := newTestResolver(ResolverConfig{}, src)
	impatient, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := r.Fetch(impatient, b.ID); errc <- err }()
	done := make(chan error, 1)
	go func() {
		got, err := r.Fetch(t.Context(), b.ID)
		if err == nil && !bytes.Equal(got, data) {
			err = errors.New("wrong bytes")
		}
		done <- err
	}()
	testkit.WaitFor(t, "both readers to wait for the block", 5*time.Second, func() bool { return r.waiting.Load() == 2 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("the interrupted reader got %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the patient reader got %v", err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d source calls, want 1: the shared fetch was not kept for the patient reader", n)
	}
}

// TestResolverGetBlockDecodes: GetBlock returns plain content, and repeated reads of a
// block are served decoded from memory.
func TestResolverGetBlockDecodes(t *testing.T) {
	plain := bytes.Repeat([]byte("decoded "), 1000)
	b, data := flist.EncodeBlock(plain)
	src := &fakeSource{fn: serving(map[flist.BlockID][]byte{b.ID: data})}
	r, c, stats := newTestResolver(ResolverConfig{}, src)
	for range 3 {
		got, err := r.GetBlock(t.Context(), b)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("GetBlock: %v", err)
		}
	}
	if src.calls.Load() != 1 || len(c.blocks) != 1 || stats.Cache.Load() != 0 {
		t.Errorf("remote calls %d, cached %d, cache reads %d: want 1, 1, 0", src.calls.Load(), len(c.blocks), stats.Cache.Load())
	}
}

// TestRateLimited: sources behind the uplink bound (a hub and an flist's routes, say)
// cannot deliver faster than it together (past the one-block burst).
func TestRateLimited(t *testing.T) {
	block := make([]byte, flist.BlockSize)
	src := SourceFunc(func(context.Context, flist.BlockID) ([]byte, error) { return block, nil })
	uplink := newUplink(4 << 20)
	sources := []Source{limited(src, uplink), limited(src, uplink)}
	start := time.Now()
	total := 0
	for i := range 16 { // 8 MiB over both sources: at least (8 MiB - burst) / 4 MiB/s
		data, err := sources[i%2].Get(t.Context(), flist.HashBlock(block))
		if err != nil {
			t.Fatal(err)
		}
		total += len(data)
	}
	minimum := time.Duration(float64(total-flist.MaxBlockStored) / float64(4<<20) * float64(time.Second))
	if el := time.Since(start); el < minimum*9/10 {
		t.Errorf("%d bytes in %s through a 4 MiB/s bound, want at least %s", total, el, minimum)
	}
}
