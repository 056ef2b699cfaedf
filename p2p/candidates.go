package p2p

import (
	"context"
	"errors"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// candidateIter yields the peers to ask for an flist, in GetFlist's order, each
// peer once: connected peers the DHT names as providers, then the other connected peers,
// then the providers that are not connected (to be dialled). This node and banned peers
// are never yielded.
//
// The DHT lookup is started by Next, only when no connected peer is left to yield, or
// once lookupAfter has passed (the caller still wants candidates after a hedge delay: a
// lookup then runs while the connected peers are asked), so that a block a neighbour has
// costs no lookup. It is not safe for concurrent use.
type candidateIter struct {
	self        peer.ID
	connected   []peer.ID                                      // not yet yielded, in order
	lookup      func(ctx context.Context) <-chan peer.AddrInfo // starts the DHT lookup
	isConnected func(peer.ID) bool
	banned      func(peer.ID) bool
	lookupAfter time.Time

	looked    bool                 // the lookup has started
	found     <-chan peer.AddrInfo // the lookup's providers; nil once it has ended
	providers []peer.AddrInfo      // found, not yet yielded
	seen      map[peer.ID]bool     // yielded, or this node
}

// candidates returns the iterator of the peers to ask for the flist named c:
// the connected peers that speak FlistProtocolID (or may), in random order, when there
// are at most askConnectedMax of them, and the DHT's providers of c.
func (n *Node) candidates(c cid.Cid) *candidateIter {
	var connected []peer.ID
	if ps := n.peersSpeaking(FlistProtocolID); len(ps) <= askConnectedMax {
		connected = ps
		shuffle(connected)
	}
	return &candidateIter{
		self:      n.id,
		connected: connected,
		lookup: func(ctx context.Context) <-chan peer.AddrInfo {
			return n.dht.FindProvidersAsync(ctx, c, getMaxProviders+1)
		},
		isConnected: func(p peer.ID) bool { return n.host.Network().Connectedness(p) == network.Connected },
		banned:      n.bans.banned,
		lookupAfter: time.Now().Add(n.cfg.HedgeDelay),
	}
}

// Next returns the next peer to ask, waiting for the DHT lookup if it has to; false when
// there is no one left, or when ctx ends first. The lookup runs under the ctx of the
// Next call that starts it: that ctx must outlive the iterator's use.
func (it *candidateIter) Next(ctx context.Context) (peer.AddrInfo, bool) {
	if it.seen == nil {
		it.seen = map[peer.ID]bool{it.self: true}
	}
	for {
		it.dropConnected()
		if !it.looked && (len(it.connected) == 0 || !time.Now().Before(it.lookupAfter)) {
			it.looked = true
			it.found = it.lookup(ctx)
		}
		it.takeFound()
		if ai, ok := it.pick(); ok {
			it.seen[ai.ID] = true
			return ai, true
		}
		if it.found == nil {
			return peer.AddrInfo{}, false // the lookup has ended: no one left
		}
		select {
		case ai, ok := <-it.found:
			it.add(ai, ok)
		case <-ctx.Done():
			return peer.AddrInfo{}, false
		}
	}
}

// dropConnected drops the connected peers at the head of the list that were yielded
// already (as providers) or are banned now.
func (it *candidateIter) dropConnected() {
	for len(it.connected) > 0 && (it.seen[it.connected[0]] || it.banned(it.connected[0])) {
		it.connected = it.connected[1:]
	}
}

// takeFound takes the providers the lookup has ready, without waiting.
func (it *candidateIter) takeFound() {
	for it.found != nil {
		select {
		case ai, ok := <-it.found:
			it.add(ai, ok)
		default:
			return
		}
	}
}

// add keeps a provider the lookup found (ok false: the lookup has ended).
func (it *candidateIter) add(ai peer.AddrInfo, ok bool) {
	if !ok {
		it.found = nil
		return
	}
	if !it.seen[ai.ID] && !it.banned(ai.ID) && !it.has(ai.ID) {
		it.providers = append(it.providers, ai)
	}
}

func (it *candidateIter) has(p peer.ID) bool {
	for _, ai := range it.providers {
		if ai.ID == p {
			return true
		}
	}
	return false
}

// pick takes the next candidate at hand: a connected provider, a connected peer, any
// provider.
func (it *candidateIter) pick() (peer.AddrInfo, bool) {
	for i, ai := range it.providers {
		if it.isConnected(ai.ID) && !it.seen[ai.ID] && !it.banned(ai.ID) {
			it.providers = append(it.providers[:i], it.providers[i+1:]...)
			return ai, true
		}
	}
	if len(it.connected) > 0 {
		p := it.connected[0]
		it.connected = it.connected[1:]
		return peer.AddrInfo{ID: p}, true
	}
	for len(it.providers) > 0 {
		ai := it.providers[0]
		it.providers = it.providers[1:]
		if !it.seen[ai.ID] && !it.banned(ai.ID) {
			return ai, true
		}
	}
	return peer.AddrInfo{}, false
}

// errNoCandidate: hedge ran out of candidates before one succeeded.
var errNoCandidate = errors.New("no candidate left")

// hedge asks the candidates next yields with try: the first one at once, the next one
// too when the last one asked has not answered within delay (at most parallel at once),
// and the next one at once when one fails. The first success wins: hedge returns its
// value and cancels the context of the others. Otherwise it returns the failures, and
// errNoCandidate when next has no more (ctx's error when ctx ends first). next is called
// from one goroutine at a time, and only when a candidate is wanted.
func hedge[C, T any](ctx context.Context, delay time.Duration, parallel int,
	next func(context.Context) (C, bool), try func(context.Context, C) (T, error)) (T, []error, error) {
	var zero T
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type candidate struct {
		c  C
		ok bool
	}
	type result struct {
		v   T
		err error
	}
	cands := make(chan candidate, 1)
	results := make(chan result, parallel) // at most parallel tries run: none blocks
	var errs []error
	active := 0       // tries running
	asking := false   // a next call is running
	noneLeft := false // next had no more
	due := false      // another candidate is due (delay passed, or a try failed)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		if !asking && !noneLeft && (active == 0 || (due && active < parallel)) {
			asking = true
			go func() {
				c, ok := next(ctx)
				cands <- candidate{c, ok}
			}()
		}
		if !asking && active == 0 {
			return zero, errs, errNoCandidate
		}
		select {
		case c := <-cands:
			asking = false
			if !c.ok {
				noneLeft = true
				continue
			}
			active++
			due = false
			timer.Reset(delay)
			go func() {
				v, err := try(ctx, c.c)
				results <- result{v, err}
			}()
		case r := <-results:
			active--
			if r.err == nil {
				return r.v, errs, nil
			}
			errs = append(errs, r.err)
			due = true // a failure frees its place at once
		case <-timer.C:
			due = true
		case <-ctx.Done():
			return zero, errs, ctx.Err()
		}
	}
}
