package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/zosfs/zosfs-agent/flist"
)

// routeRange matches the optional `xx-xx=` prefix of a route spec.
var routeRange = regexp.MustCompile(`^([0-9a-fA-F]{2})-([0-9a-fA-F]{2})=`)

// ParseRouteSpec parses `[xx-xx=]URL`: a range of first id bytes in hex, inclusive, then the
// store URL; without a range the route covers 00-ff. The URL's scheme must be one Open
// knows (else ErrUnsupported); the store is not opened.
func ParseRouteSpec(spec string) (flist.Route, error) {
	r := flist.Route{Start: 0x00, End: 0xff, URL: spec}
	if m := routeRange.FindStringSubmatch(spec); m != nil {
		start, _ := strconv.ParseUint(m[1], 16, 8)
		end, _ := strconv.ParseUint(m[2], 16, 8)
		r = flist.Route{Start: uint8(start), End: uint8(end), URL: spec[len(m[0]):]}
	}
	if err := checkRoute(r); err != nil {
		return flist.Route{}, err
	}
	return r, nil
}

// RouteSpec formats r as `xx-xx=URL`, the URL with its password stripped.
func RouteSpec(r flist.Route) string {
	return fmt.Sprintf("%02x-%02x=%s", r.Start, r.End, StripPassword(r.URL))
}

func checkRoute(r flist.Route) error {
	if r.Start > r.End {
		return fmt.Errorf("%w: route %02x-%02x=%s: start after end", ErrUnsupported, r.Start, r.End, StripPassword(r.URL))
	}
	u, err := parseURL(r.URL)
	if err != nil {
		return err
	}
	if !knownScheme(u.Scheme) {
		return fmt.Errorf("%w: unknown scheme %q in route %s", ErrUnsupported, u.Scheme, StripPassword(r.URL))
	}
	return nil
}

// Router is a Store over the routes of an flist: each route gives the stores that hold
// blocks whose id starts with a byte in its range.
//
// Get tries the stores whose range covers id[0] in random order, going on to the next on
// any error; it wraps ErrNotFound only if every one said the block is absent. Has is true
// if any of them has the block. Put writes to every matching store and fails if none
// matches or any fails.
type Router struct {
	routes []route
	stores []Store // distinct stores, for Close
}

type route struct {
	start, end uint8
	url        string // as given, with password: never shown
	store      Store
}

var _ Store = (*Router)(nil)

// NewRouter opens the store of each route (routes with the same URL share one store). It
// fails if there is no route, a range is inverted, or a URL cannot be opened; opening
// does not connect, so an unreachable store only fails when used.
func NewRouter(ctx context.Context, routes []flist.Route) (*Router, error) {
	if len(routes) == 0 {
		return nil, errors.New("router: no routes")
	}
	rt := &Router{}
	byURL := map[string]Store{}
	for _, r := range routes {
		if err := checkRoute(r); err != nil {
			rt.Close()
			return nil, fmt.Errorf("router: %w", err)
		}
		s, ok := byURL[r.URL]
		if !ok {
			var err error
			s, err = Open(ctx, r.URL)
			if err != nil {
				rt.Close()
				return nil, fmt.Errorf("router: %w", err)
			}
			byURL[r.URL] = s
			rt.stores = append(rt.stores, s)
		}
		rt.routes = append(rt.routes, route{start: r.Start, end: r.End, url: r.URL, store: s})
	}
	return rt, nil
}

// Routes returns the routes, passwords stripped, in the order given.
func (rt *Router) Routes() []flist.Route {
	out := make([]flist.Route, len(rt.routes))
	for i, r := range rt.routes {
		out[i] = flist.Route{Start: r.start, End: r.end, URL: StripPassword(r.url)}
	}
	return out
}

// String lists the routes: router[00-7f=URL 80-ff=URL].
func (rt *Router) String() string {
	specs := make([]string, len(rt.routes))
	for i, r := range rt.routes {
		specs[i] = RouteSpec(flist.Route{Start: r.start, End: r.end, URL: r.url})
	}
	return "router[" + strings.Join(specs, " ") + "]"
}

// Close closes every store.
func (rt *Router) Close() error {
	var errs []error
	for _, s := range rt.stores {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// matching returns the distinct stores whose range covers id's first byte, in route order.
func (rt *Router) matching(id flist.BlockID) []Store {
	var out []Store
	first := id.FirstByte()
	for _, r := range rt.routes {
		if first < r.start || first > r.end {
			continue
		}
		dup := false
		for _, s := range out {
			if s == r.store {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, r.store)
		}
	}
	return out
}

// Get reads a block from one of the matching stores, trying them in random order.
func (rt *Router) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if err := begin(ctx, rt, "get", id); err != nil {
		return nil, err
	}
	stores := rt.matching(id)
	if len(stores) == 0 {
		return nil, fmt.Errorf("router: get %x: no route for first byte %02x: %w", id, id.FirstByte(), ErrNotFound)
	}
	rand.Shuffle(len(stores), func(i, j int) { stores[i], stores[j] = stores[j], stores[i] })
	var failed []error
	notFound := 0
	for _, s := range stores {
		data, err := s.Get(ctx, id)
		if err == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("router: get %x: %w", id, ctx.Err())
		}
		if errors.Is(err, ErrNotFound) {
			notFound++
		} else {
			failed = append(failed, err)
		}
	}
	if len(failed) == 0 {
		return nil, fmt.Errorf("router: get %x: %d store(s): %w", id, notFound, ErrNotFound)
	}
	// Some store failed: the block may exist, so this is not ErrNotFound.
	return nil, fmt.Errorf("router: get %x: %d store(s) failed, %d said not found: %w", id, len(failed), notFound, errors.Join(failed...))
}

// Has reports whether any matching store has the block. It fails only if none has it and
// some store could not answer.
func (rt *Router) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	if err := begin(ctx, rt, "has", id); err != nil {
		return false, err
	}
	stores := rt.matching(id)
	rand.Shuffle(len(stores), func(i, j int) { stores[i], stores[j] = stores[j], stores[i] })
	var failed []error
	for _, s := range stores {
		ok, err := s.Has(ctx, id)
		if err == nil && ok {
			return true, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return false, fmt.Errorf("router: has %x: %w", id, ctx.Err())
			}
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return false, fmt.Errorf("router: has %x: %w", id, errors.Join(failed...))
	}
	return false, nil
}

// Put writes a block to every matching store that lacks it, concurrently.
func (rt *Router) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	if err := begin(ctx, rt, "put", id); err != nil {
		return err
	}
	stores := rt.matching(id)
	if len(stores) == 0 {
		return fmt.Errorf("router: put %x: no route for first byte %02x", id, id.FirstByte())
	}
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			if ok, err := s.Has(ctx, id); err == nil && ok {
				return
			}
			errs[i] = s.Put(ctx, id, data)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("router: put %x: %w", id, err)
	}
	return nil
}

// Sync makes the blocks written so far durable in every store that buffers writes.
func (rt *Router) Sync(ctx context.Context) error {
	var errs []error
	for _, s := range rt.stores {
		if sy, ok := s.(interface{ Sync(context.Context) error }); ok {
			errs = append(errs, sy.Sync(ctx))
		}
	}
	return errors.Join(errs...)
}

// WriteSink is the router as a packer's block sink: a block counts as present only when
// every matching store has it, so that a store added to a route gets the blocks the
// others already hold.
func (rt *Router) WriteSink() flist.BlockSink { return writeSink{rt} }

type writeSink struct{ *Router }

func (w writeSink) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	stores := w.matching(id)
	if len(stores) == 0 {
		return false, nil
	}
	for _, s := range stores {
		if ok, err := s.Has(ctx, id); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}
