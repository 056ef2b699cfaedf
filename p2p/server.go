package p2p

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/zosfs/zosfs-agent/flist"
)

// Tuning of the serving side.
const (
	// serveInflight bounds the requests of one stream being served or waiting to be
	// written; the server stops reading a stream's requests past it (back-pressure).
	serveInflight = 32
	// serveMemBlocks bounds the blocks read from the store and not yet written, all
	// streams together (64 × 512 KiB ≈ 32 MiB), whatever the number of peers; one peer
	// holds at most servePeerBlocks of them.
	serveMemBlocks = 64
	// serveWhileBusy bounds the blocks read for peers at a time while the node's own
	// reads wait for blocks (Service.Busy): serving goes on, slower, behind them.
	serveWhileBusy = 4
	// fetchThroughTimeout bounds the fetch of a block this node makes for a peer as the
	// block's designated fetcher: a hub fetch with its retries.
	fetchThroughTimeout = 60 * time.Second
	// serveGetTimeout bounds one read of the block store.
	serveGetTimeout = 10 * time.Second
	// ioBufferSize is the size of the buffers on each side of a block stream.
	ioBufferSize = 64 << 10
)

// response is one answer of the server, on its way to the stream's writer.
type response struct {
	reqID  uint64
	status byte
	data   []byte
	mem    bool // holds a token of serveMem and of the peer's budget, released once written
}

// handleStream serves the block requests of one stream from a peer.
func (n *Node) handleStream(s network.Stream) {
	p := s.Conn().RemotePeer()
	if n.bans.banned(p) || !n.track() {
		s.Reset()
		return
	}
	defer n.bg.Done()
	ps := n.servingPeer(p)
	defer n.donePeer(ps)
	n.serve(s, p, ps)
}

// serve reads requests until the stream ends, serves up to serveInflight of them at a
// time and answers each as soon as it is ready (out of order). ps is p's serving state,
// shared with its other streams.
func (n *Node) serve(s network.Stream, p peer.ID, ps *peerServe) {
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	out := make(chan response, serveInflight)
	slots := make(chan struct{}, serveInflight)
	writeErr := make(chan error, 1)
	go func() {
		err := n.writeResponses(s, ps, out, slots)
		if err != nil {
			cancel()
		}
		writeErr <- err
	}()

	br := bufio.NewReaderSize(s, 4096)
	var workers sync.WaitGroup
	var readErr error
read:
	for {
		reqID, id, flags, err := readRequest(br)
		if err != nil {
			readErr = err
			break
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			readErr = ctx.Err()
			break read
		}
		workers.Go(func() { out <- n.serveOne(ctx, p, ps, reqID, id, flags) })
	}
	workers.Wait()
	close(out)
	werr := <-writeErr
	switch {
	case isTimeout(werr):
		s.Reset()
		n.writeTimedOut(p, ps)
	case errors.Is(readErr, errProtocol):
		n.penalise(p, readErr)
		s.Reset()
	case readErr == io.EOF && werr == nil:
		s.Close()
	default:
		s.Reset()
	}
}

// serveOne answers one request from the block store, or through Service.Fetch when the
// request asks this node, as the block's designated fetcher, to fetch it.
func (n *Node) serveOne(ctx context.Context, p peer.ID, ps *peerServe, reqID uint64, id flist.BlockID, flags byte) response {
	notFound := response{reqID: reqID, status: statusNotFound}
	if n.svc.Blocks == nil {
		return notFound
	}
	getCtx, cancel := context.WithTimeout(ctx, serveGetTimeout)
	defer cancel()
	// failed answers a request the node could not serve for a reason of its own (shutting
	// down, store too slow): an error, not "not found", which would be a lie.
	failed := func(ctx context.Context) response {
		return response{reqID: reqID, status: statusError, data: []byte("not served: " + ctx.Err().Error())}
	}
	has, err := n.svc.Blocks.Has(getCtx, id)
	if getCtx.Err() != nil {
		return failed(getCtx)
	}
	if err == nil && !has && flags&flagFetch != 0 && n.svc.Fetch != nil {
		return n.serveFetched(ctx, p, ps, reqID, id)
	}
	if err != nil || !has {
		return notFound
	}
	ctx = getCtx
	if n.acquireMem(ctx, ps) != nil {
		return failed(ctx)
	}
	if n.svc.Busy != nil && n.svc.Busy() {
		select {
		case n.serveBusy <- struct{}{}:
			defer func() { <-n.serveBusy }()
		case <-ctx.Done():
			n.releaseMem(ps)
			return failed(ctx)
		}
	}
	data, err := n.svc.Blocks.Get(ctx, id)
	if err != nil || len(data) > flist.MaxBlockStored {
		n.releaseMem(ps)
		if ctx.Err() != nil {
			return failed(ctx)
		}
		// Gone since Has (evicted), or unreadable: to the peer it is all "not here".
		n.log.Debug("serving a block failed", "id", id.String(), "err", err, "size", len(data))
		return notFound
	}
	return response{reqID: reqID, status: statusOK, data: data, mem: true}
}

// serveFetched answers a request to this node as the block's designated fetcher, for a
// block it lacks: Service.Fetch gets it (shared with the node's own reads of it), bounded
// by fetchThroughTimeout. The requester waits; it falls back to its hub on an error. A
// request beyond p's fetch budget (Config.FetchRate, Config.FetchBurst) is answered with
// an error at once; a peer that keeps asking for blocks found nowhere is banned
// (fetchMissesBan).
func (n *Node) serveFetched(ctx context.Context, p peer.ID, ps *peerServe, reqID uint64, id flist.BlockID) response {
	if !ps.fetch.Allow() {
		n.stats.fetchRefused.Add(1)
		return response{reqID: reqID, status: statusError, data: []byte(errOverBudget.Error())}
	}
	ctx, cancel := context.WithTimeout(ctx, fetchThroughTimeout)
	defer cancel()
	data, err := n.svc.Fetch(ctx, id)
	if ctx.Err() == nil {
		n.fetchedFor(p, ps, err)
	}
	if err != nil || len(data) > flist.MaxBlockStored {
		n.log.Debug("fetching a block for a peer failed", "id", id.String(), "err", err, "size", len(data))
		msg := "fetch failed"
		if err != nil {
			msg += ": " + err.Error()
		}
		return response{reqID: reqID, status: statusError, data: []byte(msg[:min(len(msg), maxErrorMessage)])}
	}
	if n.acquireMem(ctx, ps) != nil {
		return response{reqID: reqID, status: statusError, data: []byte("not served: " + ctx.Err().Error())}
	}
	n.stats.fetchedFor.Add(1)
	return response{reqID: reqID, status: statusOK, data: data, mem: true}
}

// writeResponses writes the responses of out to s, flushing whenever no other response
// is ready. After a write error it keeps draining out (releasing what each response
// holds) without writing; it returns the first error.
func (n *Node) writeResponses(s network.Stream, ps *peerServe, out <-chan response, slots <-chan struct{}) error {
	bw := bufio.NewWriterSize(s, ioBufferSize)
	var err error
	var hdr []byte
	for r := range out {
		if err == nil {
			if n.serveLimit != nil && len(r.data) > 0 {
				// Send what is buffered before waiting for the rate.
				s.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
				if err = bw.Flush(); err == nil {
					err = n.serveLimit.WaitN(n.ctx, len(r.data))
				}
				if err != nil {
					s.Reset()
				}
			}
		}
		if err == nil {
			s.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
			hdr = appendResponseHeader(hdr[:0], r.reqID, r.status, len(r.data))
			_, err = bw.Write(hdr)
			if err == nil {
				_, err = bw.Write(r.data)
			}
			if err == nil && len(out) == 0 {
				err = bw.Flush()
			}
			if err != nil {
				s.Reset() // unblocks the reader
			} else if r.status == statusOK {
				n.stats.servedBlocks.Add(1)
				n.stats.servedBytes.Add(int64(len(r.data)))
			}
		}
		if r.mem {
			n.releaseMem(ps)
		}
		<-slots
	}
	if err == nil {
		s.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
		err = bw.Flush()
	}
	return err
}

// isTimeout reports whether err is a deadline's (a write that took longer than
// Config.WriteTimeout), as opposed to a reset or a closed stream.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
