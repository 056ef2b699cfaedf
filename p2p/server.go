package p2p

import (
	"bufio"
	"context"
	"errors"
	"io"
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
	// streams together (64 × 512 KiB ≈ 32 MiB), whatever the number of peers.
	serveMemBlocks = 64
	// serveGetTimeout bounds one read of the block store.
	serveGetTimeout = 10 * time.Second
	// serveWriteTimeout bounds one response write: a peer that stops reading its stream
	// for that long loses it (and the memory it held is freed).
	serveWriteTimeout = 30 * time.Second
	// ioBufferSize is the size of the buffers on each side of a block stream.
	ioBufferSize = 64 << 10
)

// response is one answer of the server, on its way to the stream's writer.
type response struct {
	reqID  uint64
	status byte
	data   []byte
	mem    bool // holds a serveMem token, released once written
}

// handleStream serves the block requests of one stream from a peer.
func (n *Node) handleStream(s network.Stream) {
	p := s.Conn().RemotePeer()
	if n.bans.banned(p) || !n.track() {
		s.Reset()
		return
	}
	defer n.bg.Done()
	n.serve(s, p)
}

// serve reads requests until the stream ends, serves up to serveInflight of them at a
// time and answers each as soon as it is ready (out of order).
func (n *Node) serve(s network.Stream, p peer.ID) {
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	out := make(chan response, serveInflight)
	slots := make(chan struct{}, serveInflight)
	writeErr := make(chan error, 1)
	go func() {
		err := n.writeResponses(s, out, slots)
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
		reqID, id, err := readRequest(br)
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
		workers.Go(func() { out <- n.serveOne(ctx, reqID, id) })
	}
	workers.Wait()
	close(out)
	werr := <-writeErr
	switch {
	case errors.Is(readErr, errProtocol):
		n.penalise(p, readErr)
		s.Reset()
	case readErr == io.EOF && werr == nil:
		s.Close()
	default:
		s.Reset()
	}
}

// serveOne answers one request from the block store.
func (n *Node) serveOne(ctx context.Context, reqID uint64, id []byte) response {
	notFound := response{reqID: reqID, status: statusNotFound}
	if n.cfg.Blocks == nil {
		return notFound
	}
	ctx, cancel := context.WithTimeout(ctx, serveGetTimeout)
	defer cancel()
	// failed answers a request the node could not serve for a reason of its own (shutting
	// down, store too slow): an error, not "not found", which would be a lie.
	failed := func() response {
		return response{reqID: reqID, status: statusError, data: []byte("not served: " + ctx.Err().Error())}
	}
	has, err := n.cfg.Blocks.Has(ctx, id)
	if ctx.Err() != nil {
		return failed()
	}
	if err != nil || !has {
		return notFound
	}
	select {
	case n.serveMem <- struct{}{}:
	case <-ctx.Done():
		return failed()
	}
	data, err := n.cfg.Blocks.Get(ctx, id)
	if err != nil || len(data) > flist.MaxBlockStored {
		<-n.serveMem
		if ctx.Err() != nil {
			return failed()
		}
		// Gone since Has (evicted), or unreadable: to the peer it is all "not here".
		n.log.Debug("serving a block failed", "id", hexID(id), "err", err, "size", len(data))
		return notFound
	}
	return response{reqID: reqID, status: statusOK, data: data, mem: true}
}

// writeResponses writes the responses of out to s, flushing whenever no other response
// is ready. After a write error it keeps draining out (releasing what each response
// holds) without writing; it returns the first error.
func (n *Node) writeResponses(s network.Stream, out <-chan response, slots <-chan struct{}) error {
	bw := bufio.NewWriterSize(s, ioBufferSize)
	var err error
	var hdr []byte
	for r := range out {
		if err == nil {
			s.SetWriteDeadline(time.Now().Add(serveWriteTimeout))
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
			<-n.serveMem
		}
		<-slots
	}
	if err == nil {
		err = bw.Flush()
	}
	return err
}
