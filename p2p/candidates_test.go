package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// fakeLookup is a DHT lookup the test feeds: started tells whether it was started, C is
// what it yields (the test closes it to end the lookup).
type fakeLookup struct {
	started atomic.Bool
	C       chan peer.AddrInfo
}

func (l *fakeLookup) start(context.Context) <-chan peer.AddrInfo {
	l.started.Store(true)
	return l.C
}

// testIter is an iterator over connected peers, with the given peers connected and
// banned, whose lookup is l; the lookup is due at once when early.
func testIter(l *fakeLookup, connected, isConnected, banned []peer.ID, early bool) *candidateIter {
	after := time.Now().Add(time.Hour)
	if early {
		after = time.Time{}
	}
	return &candidateIter{
		self:        "self",
		connected:   slices.Clone(connected),
		lookup:      l.start,
		isConnected: func(p peer.ID) bool { return slices.Contains(isConnected, p) },
		banned:      func(p peer.ID) bool { return slices.Contains(banned, p) },
		lookupAfter: after,
	}
}

// drain returns the ids it yields until it has no more.
func drain(t *testing.T, it *candidateIter) []peer.ID {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var out []peer.ID
	for {
		ai, ok := it.Next(ctx)
		if !ok {
			if ctx.Err() != nil {
				t.Fatalf("Next waited: %v", ctx.Err())
			}
			return out
		}
		out = append(out, ai.ID)
	}
}

func provided(ids ...peer.ID) chan peer.AddrInfo {
	c := make(chan peer.AddrInfo, len(ids))
	for _, p := range ids {
		c <- peer.AddrInfo{ID: p}
	}
	close(c)
	return c
}

// TestCandidateIterConnectedFirst: the connected peers come first, in their order, with
// no lookup while any is left; then the providers, each peer once, never this node or a
// banned peer.
func TestCandidateIterConnectedFirst(t *testing.T) {
	l := &fakeLookup{C: provided("b", "x", "self", "y", "banned", "x", "z")}
	conn := []peer.ID{"a", "b", "banned", "c"}
	it := testIter(l, conn, conn, []peer.ID{"banned"}, false)
	ctx := t.Context()
	for _, want := range []peer.ID{"a", "b", "c"} {
		ai, ok := it.Next(ctx)
		if !ok || ai.ID != want {
			t.Fatalf("Next = %v, %v; want %s", ai.ID, ok, want)
		}
		if l.started.Load() {
			t.Fatalf("the lookup started while connected peers were left (after %s)", want)
		}
	}
	if got, want := drain(t, it), []peer.ID{"x", "y", "z"}; !slices.Equal(got, want) {
		t.Errorf("after the connected peers: %v, want %v", got, want)
	}
	if !l.started.Load() {
		t.Error("the lookup never started")
	}
}

// TestCandidateIterConnectedProviders: once the lookup is due (the hedge delay passed),
// a connected peer that the DHT names as a provider comes before the other connected
// peers, and the unconnected providers come last.
func TestCandidateIterConnectedProviders(t *testing.T) {
	l := &fakeLookup{C: provided("far", "c")}
	conn := []peer.ID{"a", "b", "c"}
	it := testIter(l, conn, conn, nil, true)
	got := drain(t, it)
	// The lookup starts at the first Next; its providers are taken as they come, so "c"
	// may come first or after "a", never after "b".
	if !slices.Equal(got, []peer.ID{"c", "a", "b", "far"}) && !slices.Equal(got, []peer.ID{"a", "c", "b", "far"}) {
		t.Errorf("order %v: want the connected provider c before b, the unconnected provider last", got)
	}
}

// TestCandidateIterWaitsForLookup: with no connected peer, Next waits for the lookup's
// providers, and gives up when ctx ends.
func TestCandidateIterWaitsForLookup(t *testing.T) {
	l := &fakeLookup{C: make(chan peer.AddrInfo)}
	it := testIter(l, nil, nil, nil, false)
	go func() { l.C <- peer.AddrInfo{ID: "p"} }()
	if ai, ok := it.Next(t.Context()); !ok || ai.ID != "p" {
		t.Fatalf("Next = %v, %v; want p", ai.ID, ok)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if ai, ok := it.Next(ctx); ok {
		t.Fatalf("Next = %v with a lookup that yields nothing more", ai.ID)
	}
	close(l.C)
	if ai, ok := it.Next(t.Context()); ok {
		t.Fatalf("Next = %v after the lookup ended", ai.ID)
	}
}

// hedgeTry is a try for hedge tests: each candidate (an int) answers after its delay in
// delays, with success when ok[c]; it records the calls and the tries running at once.
type hedgeTry struct {
	delays []time.Duration
	ok     map[int]bool

	mu        sync.Mutex
	calls     []int
	cancelled []int
	running   int
	most      int
}

func (h *hedgeTry) try(ctx context.Context, c int) (int, error) {
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.running++
	h.most = max(h.most, h.running)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running--
		h.mu.Unlock()
	}()
	select {
	case <-time.After(h.delays[c]):
	case <-ctx.Done():
		h.mu.Lock()
		h.cancelled = append(h.cancelled, c)
		h.mu.Unlock()
		return 0, ctx.Err()
	}
	if h.ok[c] {
		return c, nil
	}
	return 0, fmt.Errorf("candidate %d failed", c)
}

func (h *hedgeTry) snapshot() (calls, cancelled []int, most int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls), slices.Clone(h.cancelled), h.most
}

// ints yields 0..n-1, counting the calls to it.
func ints(n int, calls *atomic.Int64) func(context.Context) (int, bool) {
	i := 0
	return func(context.Context) (int, bool) {
		calls.Add(1)
		if i == n {
			return 0, false
		}
		i++
		return i - 1, true
	}
}

// TestHedgeFirstAnswers: a first candidate that answers within the delay is the only
// one asked; next is called only when a candidate is wanted.
func TestHedgeFirstAnswers(t *testing.T) {
	h := &hedgeTry{delays: []time.Duration{0, 0, 0}, ok: map[int]bool{0: true, 1: true, 2: true}}
	var nexts atomic.Int64
	v, errs, err := hedge(t.Context(), time.Hour, 2, ints(3, &nexts), h.try)
	calls, _, _ := h.snapshot()
	if err != nil || v != 0 || len(errs) != 0 || !slices.Equal(calls, []int{0}) || nexts.Load() != 1 {
		t.Errorf("hedge = %v, %v, %v; calls %v, next called %d times; want 0 from the first only", v, errs, err, calls, nexts.Load())
	}
}

// TestHedgeSlowFirst: when the first has not answered within the delay, the second is
// asked too; its answer wins and the first is cancelled; no more than parallel run.
func TestHedgeSlowFirst(t *testing.T) {
	h := &hedgeTry{delays: []time.Duration{time.Hour, 10 * time.Millisecond, time.Hour}, ok: map[int]bool{0: true, 1: true, 2: true}}
	var nexts atomic.Int64
	start := time.Now()
	v, _, err := hedge(t.Context(), 20*time.Millisecond, 2, ints(3, &nexts), h.try)
	if err != nil || v != 1 {
		t.Fatalf("hedge = %v, %v; want 1", v, err)
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > 5*time.Second {
		t.Errorf("hedge took %v; want the delay plus the second's answer", d)
	}
	// The first is cancelled once the second has won.
	deadline := time.Now().Add(5 * time.Second)
	for {
		calls, cancelled, most := h.snapshot()
		if slices.Contains(cancelled, 0) {
			if !slices.Equal(calls, []int{0, 1}) || most > 2 {
				t.Errorf("calls %v, at most %d at once; want 0 then 1", calls, most)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first try was never cancelled (calls %v, cancelled %v)", calls, cancelled)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHedgeFailureMovesOn: a failure asks the next at once (no waiting for the delay);
// when every candidate failed, hedge returns every failure and errNoCandidate.
func TestHedgeFailureMovesOn(t *testing.T) {
	h := &hedgeTry{delays: []time.Duration{0, 0, 0, 0}, ok: map[int]bool{2: true}}
	var nexts atomic.Int64
	v, errs, err := hedge(t.Context(), time.Hour, 2, ints(4, &nexts), h.try)
	if err != nil || v != 2 || len(errs) != 2 {
		t.Errorf("hedge = %v, %v, %v; want 2 after two failures", v, errs, err)
	}
	h = &hedgeTry{delays: []time.Duration{0, 0, 0}, ok: map[int]bool{}}
	_, errs, err = hedge(t.Context(), time.Hour, 2, ints(3, &nexts), h.try)
	if !errors.Is(err, errNoCandidate) || len(errs) != 3 {
		t.Errorf("hedge with every candidate failing = %v, %d failures; want errNoCandidate, 3", err, len(errs))
	}
	_, errs, err = hedge(t.Context(), time.Hour, 2, ints(0, &nexts), h.try)
	if !errors.Is(err, errNoCandidate) || len(errs) != 0 {
		t.Errorf("hedge with no candidate = %v, %v; want errNoCandidate, none", err, errs)
	}
}

// TestHedgeParallelAndContext: with every candidate hanging, at most parallel are asked
// at once, whatever the delays passed; when ctx ends, hedge returns ctx's error.
func TestHedgeParallelAndContext(t *testing.T) {
	h := &hedgeTry{delays: slices.Repeat([]time.Duration{time.Hour}, 10), ok: map[int]bool{}}
	var nexts atomic.Int64
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, _, err := hedge(ctx, time.Millisecond, 2, ints(10, &nexts), h.try)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hedge = %v; want the context's error", err)
	}
	if calls, _, most := h.snapshot(); len(calls) != 2 || most != 2 {
		t.Errorf("calls %v, at most %d at once; want 2", calls, most)
	}
}
