// Package flight shares one call among the concurrent callers that want the same key,
// like golang.org/x/sync/singleflight, with one difference that matters to readers of a
// network: the shared call runs on its own context, cancelled only when every caller has
// gone, so that one interrupted reader does not fail the others.
package flight

import (
	"context"
	"sync"
)

// Group runs at most one call per key at a time. The zero value is ready to use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

type call[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int
	cancel  context.CancelFunc
}

// Do returns what fn returns for key: the first caller starts fn, later ones wait for
// the same result. fn's context keeps the first caller's values and deadline but is
// cancelled only when no caller waits any more. A caller whose ctx ends gets ctx.Err().
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func(context.Context) (V, error)) (V, error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[K]*call[V]{}
	}
	c, ok := g.calls[key]
	if !ok {
		var fctx context.Context
		var cancel context.CancelFunc
		if dl, ok := ctx.Deadline(); ok {
			fctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), dl)
		} else {
			fctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
		}
		c = &call[V]{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = c
		go func() {
			c.val, c.err = fn(fctx)
			cancel()
			g.mu.Lock()
			delete(g.calls, key)
			g.mu.Unlock()
			close(c.done)
		}()
	}
	c.waiters++
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		g.mu.Lock()
		if c.waiters--; c.waiters == 0 {
			c.cancel()
		}
		g.mu.Unlock()
		var zero V
		return zero, ctx.Err()
	}
}
