package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
)

// Fetch asks peer p for block id over the node's stream to p (opened if there is none)
// and verifies the answer. A peer that lacks the block answers at once: the error wraps
// ErrNotFound. A peer that sends bytes that do not hash to id is banned and disconnected,
// and the error wraps flist.ErrBlockCorrupt. ctx bounds the call; a stream that dies
// fails every call waiting on it, and the next call opens a new one.
func (n *Node) Fetch(ctx context.Context, p peer.ID, id flist.BlockID) ([]byte, error) {
	return n.fetch(ctx, p, id, 0)
}

// FetchVia asks peer p, as block id's designated fetcher (see Fetcher), for the block:
// p answers from its store or, lacking it, fetches it first (from its neighbours or
// its hub) and then answers. Otherwise it is Fetch: verified, a wrong block bans p, ctx
// bounds the call — which, this time, includes p's own fetch.
func (n *Node) FetchVia(ctx context.Context, p peer.ID, id flist.BlockID) ([]byte, error) {
	return n.fetch(ctx, p, id, flagFetch)
}

func (n *Node) fetch(ctx context.Context, p peer.ID, id flist.BlockID, flags byte) ([]byte, error) {
	if !id.Valid() {
		return nil, fmt.Errorf("p2p: no block id")
	}
	if _, ok := n.running(); !ok {
		return nil, ErrNotStarted
	}
	if p == n.id {
		return nil, fmt.Errorf("p2p: fetch block %s: peer %s is this node", id.String(), p)
	}
	if n.bans.banned(p) {
		return nil, fmt.Errorf("p2p: fetch block %s from %s: %w", id.String(), p, ErrBanned)
	}
	s, err := n.session(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("p2p: fetch block %s from %s: %w", id.String(), p, err)
	}
	status, data, err := s.roundTrip(ctx, id, flags)
	if err != nil {
		return nil, fmt.Errorf("p2p: fetch block %s from %s: %w", id.String(), p, err)
	}
	switch status {
	case statusNotFound:
		return nil, fmt.Errorf("p2p: block %s: %w (asked %s)", id.String(), ErrNotFound, p)
	case statusError:
		return nil, fmt.Errorf("p2p: block %s: peer %s failed: %q", id.String(), p, data)
	}
	if err := flist.VerifyBlock(id, data); err != nil {
		n.stats.rejected.Add(1)
		n.penalise(p, err)
		return nil, fmt.Errorf("p2p: block from %s: %w", p, err)
	}
	n.stats.addFetched(p, len(data))
	return data, nil
}

// penalise bans p (see banList), ends the node's stream to it and closes its
// connections; the connection gater keeps it out until the ban ends.
func (n *Node) penalise(p peer.ID, why error) {
	n.bans.ban(p)
	if errors.Is(why, errProtocol) {
		n.stats.protocolErrors.Add(1)
	}
	n.log.Warn("peer banned", "peer", p.String(), "for", n.cfg.BanDuration.String(), "err", why)
	n.sessMu.Lock()
	s := n.sessions[p]
	n.sessMu.Unlock()
	if s != nil {
		s.end(fmt.Errorf("%w: %w", ErrBanned, why))
	}
	if h, ok := n.running(); ok {
		h.Network().ClosePeer(p)
	}
}

// session is the client side of the node's block stream to one peer: a writer goroutine
// sends request frames, a reader goroutine hands each response to the call waiting for
// it, by request id. At most Config.MaxInflight calls are in flight on it.
type session struct {
	n     *Node
	p     peer.ID
	s     network.Stream
	slots chan struct{} // one per call in flight
	reqs  chan []byte   // request frames for the writer
	done  chan struct{} // closed when the session has ended

	mu      sync.Mutex
	pending map[uint64]chan result // nil once ended
	nextID  uint64                 // last request id handed out
	err     error                  // why the session ended
	once    sync.Once
}

// result is a response (or the session's end) for one call.
type result struct {
	status byte
	data   []byte
	err    error
}

// opening is a stream being opened to a peer, shared by the calls that want it.
type opening struct {
	done chan struct{}
	s    *session
	err  error
}

// session returns the live session to p, opening a stream if there is none. Concurrent
// callers share one attempt to open.
func (n *Node) session(ctx context.Context, p peer.ID) (*session, error) {
	for {
		n.sessMu.Lock()
		if s := n.sessions[p]; s != nil {
			n.sessMu.Unlock()
			return s, nil
		}
		if o := n.opening[p]; o != nil {
			n.sessMu.Unlock()
			select {
			case <-o.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if o.err == nil {
				return o.s, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(o.err, context.Canceled) || errors.Is(o.err, context.DeadlineExceeded) {
				continue // the opener gave up, not the peer: try ourselves
			}
			return nil, o.err
		}
		if n.closed.Load() {
			n.sessMu.Unlock()
			return nil, ErrNotStarted
		}
		o := &opening{done: make(chan struct{})}
		n.opening[p] = o
		n.sessMu.Unlock()

		st, err := n.host.NewStream(ctx, p, ProtocolID)
		var s *session
		if err == nil {
			s = &session{
				n: n, p: p, s: st,
				slots:   make(chan struct{}, n.cfg.MaxInflight),
				reqs:    make(chan []byte, n.cfg.MaxInflight),
				done:    make(chan struct{}),
				pending: map[uint64]chan result{},
			}
		} else {
			err = fmt.Errorf("open stream: %w", err)
		}
		n.sessMu.Lock()
		delete(n.opening, p)
		if s != nil {
			n.sessions[p] = s
		}
		o.s, o.err = s, err
		n.sessMu.Unlock()
		close(o.done)
		if err != nil {
			return nil, err
		}
		s.start()
		return s, nil
	}
}

// start runs the session's reader and writer.
func (s *session) start() {
	if !s.n.track() {
		s.end(ErrNotStarted)
		return
	}
	if !s.n.track() {
		s.n.bg.Done()
		s.end(ErrNotStarted)
		return
	}
	go s.readLoop()
	go s.writeLoop()
}

// end ends the session once: it resets the stream, fails every waiting call with err
// and forgets the session, so that the next call opens a new stream.
func (s *session) end(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		pending := s.pending
		s.pending = nil
		s.mu.Unlock()
		s.s.Reset()
		close(s.done)
		for _, w := range pending {
			w <- result{err: err} // buffered, and no one else sends to w any more
		}
		s.n.sessMu.Lock()
		if s.n.sessions[s.p] == s {
			delete(s.n.sessions, s.p)
		}
		s.n.sessMu.Unlock()
	})
}

// roundTrip sends a request for id, with flags, and waits for its response.
func (s *session) roundTrip(ctx context.Context, id flist.BlockID, flags byte) (byte, []byte, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-s.done:
		return 0, nil, s.err
	}
	defer func() { <-s.slots }()
	w := make(chan result, 1)
	s.mu.Lock()
	if s.pending == nil {
		s.mu.Unlock()
		return 0, nil, s.err
	}
	s.nextID++
	reqID := s.nextID
	s.pending[reqID] = w
	s.mu.Unlock()

	forget := func() {
		s.mu.Lock()
		if s.pending != nil {
			delete(s.pending, reqID)
		}
		s.mu.Unlock()
	}
	select {
	case s.reqs <- appendRequest(nil, reqID, id, flags):
	case <-ctx.Done():
		forget()
		return 0, nil, ctx.Err()
	case <-s.done:
		return 0, nil, s.err
	}
	select {
	case r := <-w:
		return r.status, r.data, r.err
	case <-ctx.Done():
		// The response, if it comes, is read and dropped by the reader.
		forget()
		return 0, nil, ctx.Err()
	}
}

// writeLoop writes request frames, flushing whenever no other one is queued.
func (s *session) writeLoop() {
	defer s.n.bg.Done()
	bw := bufio.NewWriterSize(s.s, 4096)
	for {
		select {
		case <-s.done:
			return
		case f := <-s.reqs:
			_, err := bw.Write(f)
			if err == nil && len(s.reqs) == 0 {
				err = bw.Flush()
			}
			if err != nil {
				s.end(fmt.Errorf("write: %w", err))
				return
			}
		}
	}
}

// readLoop reads responses and hands each to the call waiting for it, until the stream
// fails; a protocol violation bans the peer.
func (s *session) readLoop() {
	defer s.n.bg.Done()
	br := bufio.NewReaderSize(s.s, ioBufferSize)
	for {
		reqID, status, size, err := readResponseHeader(br)
		if err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		w, ok := s.pending[reqID]
		issued := reqID >= 1 && reqID <= s.nextID
		delete(s.pending, reqID)
		s.mu.Unlock()
		if !ok && !issued {
			s.fail(fmt.Errorf("%w: response to request %d, never sent", errProtocol, reqID))
			return
		}
		if !ok { // the caller gave up on it
			if _, err := br.Discard(size); err != nil {
				s.fail(unexpectedEOF(err))
				return
			}
			continue
		}
		var data []byte
		if size > 0 {
			data = make([]byte, size)
			if _, err := io.ReadFull(br, data); err != nil {
				err = fmt.Errorf("read: %w", unexpectedEOF(err))
				w <- result{err: err}
				s.fail(err)
				return
			}
		}
		w <- result{status: status, data: data}
	}
}

// fail ends the session after a read error, banning the peer for protocol violations.
func (s *session) fail(err error) {
	if errors.Is(err, errProtocol) {
		s.n.penalise(s.p, err) // bans first, then ends the session: waiters see the ban
		s.end(err)
		return
	}
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("stream closed by peer: %w", err)
	}
	s.end(err)
}
