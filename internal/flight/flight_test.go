package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestShared: concurrent callers of one key share one call and its result.
func TestShared(t *testing.T) {
	var g Group[string, int]
	var calls atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan int, 10)
	for range 10 {
		wg.Go(func() {
			v, err := g.Do(t.Context(), "k", func(context.Context) (int, error) {
				calls.Add(1)
				<-release
				return 42, nil
			})
			if err != nil {
				t.Error(err)
			}
			results <- v
		})
	}
	// Every caller is waiting once the call has started and the group counts them.
	for deadline := time.Now().Add(5 * time.Second); waiters(&g, "k") < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("%d callers waiting, want 10", waiters(&g, "k"))
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != 42 {
			t.Errorf("a caller got %d", v)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// waiters is how many callers wait on key's call.
func waiters[V any](g *Group[string, V], key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		return c.waiters
	}
	return 0
}

// TestOneLeaves: a caller that gives up gets its ctx's error; the call goes on for the
// others, uncancelled, and they get its result.
func TestOneLeaves(t *testing.T) {
	var g Group[string, string]
	started, release := make(chan struct{}), make(chan struct{})
	callErr := make(chan error, 1)
	fn := func(ctx context.Context) (string, error) {
		close(started)
		<-release
		callErr <- ctx.Err()
		return "done", nil
	}
	leaver, leave := context.WithCancel(t.Context())
	left := make(chan error, 1)
	go func() { _, err := g.Do(leaver, "k", fn); left <- err }()
	<-started
	stayed := make(chan string, 1)
	go func() { v, _ := g.Do(t.Context(), "k", fn); stayed <- v }()
	for waiters(&g, "k") < 2 {
		time.Sleep(time.Millisecond)
	}
	leave()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Errorf("the caller that left got %v", err)
	}
	close(release)
	if v := <-stayed; v != "done" {
		t.Errorf("the caller that stayed got %q", v)
	}
	if err := <-callErr; err != nil {
		t.Errorf("the call's context ended while a caller waited: %v", err)
	}
}

// TestAllLeave: when the last caller gives up, the call's context is cancelled.
func TestAllLeave(t *testing.T) {
	var g Group[string, int]
	cancelled := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		g.Do(ctx, "k", func(fctx context.Context) (int, error) {
			<-fctx.Done()
			cancelled <- fctx.Err()
			return 0, fctx.Err()
		})
		close(done)
	}()
	for waiters(&g, "k") < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the call ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call's context was not cancelled when its last caller left")
	}
}
