package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/time/rate"

	"github.com/zosfs/zosfs-agent/flist"
)

// FlistProtocolID is the flist exchange protocol: one flist file per stream, of any
// size, streamed from the server's disk to the client's. The format:
//
//	request  = digest                  32 bytes: BLAKE2b-256 of the flist file (its CID's digest)
//	response = status [len(data) data] len: unsigned varint
//	status   = 0 (ok: data is the whole file, len its size)
//	         | 1 (not found: nothing follows)
//	         | 2 (error: data is a short UTF-8 message, at most maxErrorMessage bytes)
//
// The client closes its side after the request, the server after the response. Bytes
// after the announced data, an unknown status or an oversized error message are protocol
// errors (the peer is banned); a file that does not hash to the digest bans the peer too.
const FlistProtocolID protocol.ID = "/zosfs/flist/1.0.0"

// Tuning of the flist exchange.
const (
	// serveFlistsMax bounds the flists served at the same time, all peers together; past
	// it a request is answered with an error (the client asks another peer).
	serveFlistsMax = 8
	// flistIdleTimeout bounds each wait on a flist stream (the request, the answer, each
	// read or write of the data): a peer that stalls that long loses the stream. A whole
	// transfer is bounded by the caller's context only, as an flist may be large.
	flistIdleTimeout = 15 * time.Second
)

// FlistStore is what the node serves of flists: the flist files it holds, named by the
// digest of their CID (BLAKE2b-256 of the file). The daemon's flist directory is one.
type FlistStore interface {
	// OpenFlist opens the flist file whose BLAKE2b-256 is digest and returns it with its
	// size. An flist the store does not hold is an error wrapping fs.ErrNotExist.
	// The file must hash to digest: a peer that receives other bytes bans the sender.
	OpenFlist(ctx context.Context, digest []byte) (io.ReadCloser, int64, error)
}

// FlistFile is where GetFlist writes an flist; an *os.File open for writing is one.
// GetFlist empties it (Truncate(0), then Seek to 0) before each peer it asks, so that a
// transfer that fails half way leaves nothing in front of the next one.
type FlistFile interface {
	io.Writer
	io.Seeker
	Truncate(size int64) error
}

// errWrite marks a failure to write into the caller's FlistFile: not the peer's fault,
// and no other peer would do better.
var errWrite = errors.New("writing the flist")

// errTooLarge marks a peer's flist larger than the caller accepts. The peer is not at
// fault (a digest names one file, whatever its size): it is not banned.
var errTooLarge = errors.New("flist too large")

// GetFlist fetches the flist file whose CID digest (BLAKE2b-256 of the file) is digest
// from a neighbour into f, verified: on success f holds exactly the file. It asks one
// peer at a time, in Get's order (connected peers that speak FlistProtocolID, then
// providers of flist.BlockCID(digest) named by the DHT), until one delivers. A peer that
// announces more than max bytes is refused (not banned); a peer that sends bytes that do
// not hash to digest is banned, and its error wraps flist.ErrBlockCorrupt. When no peer
// delivers the error wraps ErrNotFound and what each peer answered. On failure f's
// content is undefined: the caller discards it.
func (n *Node) GetFlist(ctx context.Context, digest []byte, f FlistFile, max int64) error {
	if len(digest) != 32 {
		return fmt.Errorf("p2p: invalid flist digest of %d bytes (want 32)", len(digest))
	}
	if max <= 0 {
		return fmt.Errorf("p2p: flist size bound %d: must be positive", max)
	}
	c, err := n.flistCID(digest)
	if err != nil {
		return err
	}
	if len(n.Peers()) == 0 {
		return fmt.Errorf("p2p: flist %s: %w (no peer connected)", c, ErrNotFound)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var errs []error
	cands := n.candidates(c)
	for {
		ai, ok := cands.Next(ctx)
		if !ok {
			break
		}
		n.rememberAddrs(ai)
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("p2p: flist %s: %w: %w", c, errWrite, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("p2p: flist %s: %w: %w", c, errWrite, err)
		}
		err := n.fetchFlist(ctx, ai.ID, digest, f, max)
		if err == nil {
			return nil
		}
		if errors.Is(err, errWrite) {
			return fmt.Errorf("p2p: flist %s: %w", c, err)
		}
		errs = append(errs, fmt.Errorf("peer %s: %w", ai.ID, err))
		if ctx.Err() != nil {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return fmt.Errorf("p2p: flist %s: %w (no peer to ask)", c, ErrNotFound)
	}
	return fmt.Errorf("p2p: flist %s: %w: %w", c, ErrNotFound, errors.Join(errs...))
}

// fetchFlist asks peer p for the flist digest over a new stream and writes it into w,
// verified. It returns nil only when the whole file hashed to digest.
func (n *Node) fetchFlist(ctx context.Context, p peer.ID, digest []byte, w io.Writer, max int64) (err error) {
	if p == n.id {
		return fmt.Errorf("peer %s is this node", p)
	}
	if n.bans.banned(p) {
		return ErrBanned
	}
	s, err := n.host.NewStream(ctx, p, FlistProtocolID)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	defer func() {
		if err != nil {
			s.Reset()
		} else {
			s.Close()
		}
	}()
	s.SetWriteDeadline(time.Now().Add(flistIdleTimeout))
	if _, err := s.Write(digest); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReaderSize(deadlineReader{s}, ioBufferSize)
	status, size, err := readFlistHeader(br, max)
	if err != nil {
		if errors.Is(err, errProtocol) {
			n.penalise(p, err)
		}
		return err
	}
	switch status {
	case statusNotFound:
		return ErrNotFound
	case statusError:
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			return fmt.Errorf("read: %w", unexpectedEOF(err))
		}
		return fmt.Errorf("peer failed: %q", msg)
	}
	h, _ := blake2b.New256(nil)
	hw := &hashWriter{h: h, w: w}
	if _, err := io.CopyN(hw, br, size); err != nil {
		if hw.err != nil {
			return fmt.Errorf("%w: %w", errWrite, hw.err)
		}
		return fmt.Errorf("read: %w", unexpectedEOF(err))
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, digest) {
		n.stats.rejected.Add(1)
		err := fmt.Errorf("%w: flist of %d bytes hashes to %x, want %x", flist.ErrBlockCorrupt, size, sum, digest)
		n.penalise(p, err)
		return err
	}
	// The server closes the stream after the data: anything more breaks the format. An
	// error instead of the end is no reason to drop a file that is whole and verified.
	if _, err := br.ReadByte(); err == nil {
		err := fmt.Errorf("%w: flist response longer than the %d bytes announced", errProtocol, size)
		n.penalise(p, err)
		return err
	}
	n.stats.fetchedFlists.Add(1)
	return nil
}

// handleFlistStream serves one flist request from a peer.
func (n *Node) handleFlistStream(s network.Stream) {
	p := s.Conn().RemotePeer()
	if n.bans.banned(p) || !n.track() {
		s.Reset()
		return
	}
	defer n.bg.Done()
	stop := context.AfterFunc(n.ctx, func() { s.Reset() })
	defer stop()
	if err := n.serveFlist(s); err != nil {
		n.log.Debug("serving an flist failed", "peer", p.String(), "err", err)
		s.Reset()
		return
	}
	s.Close()
}

// serveFlist reads the request and writes the response: the file from Service.Flists,
// streamed (at Config.ServeRate, if set), "not found" or an error.
func (n *Node) serveFlist(s network.Stream) error {
	s.SetReadDeadline(time.Now().Add(flistIdleTimeout))
	var digest [32]byte
	if _, err := io.ReadFull(s, digest[:]); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	var out io.Writer = deadlineWriter{s}
	if n.serveLimit != nil {
		out = &limitedWriter{ctx: n.ctx, w: out, lim: n.serveLimit}
	}
	bw := bufio.NewWriterSize(out, ioBufferSize)
	answer := func(status byte, msg string) error {
		bw.Write(appendFlistHeader(nil, status, int64(len(msg))))
		bw.WriteString(msg)
		return bw.Flush()
	}
	if n.svc.Flists == nil {
		return answer(statusNotFound, "")
	}
	select {
	case n.serveFlists <- struct{}{}:
		defer func() { <-n.serveFlists }()
	default:
		return answer(statusError, "busy: too many flists being served")
	}
	ctx, cancel := context.WithTimeout(n.ctx, serveGetTimeout)
	rc, size, err := n.svc.Flists.OpenFlist(ctx, digest[:])
	cancel()
	if errors.Is(err, fs.ErrNotExist) {
		return answer(statusNotFound, "")
	}
	if err != nil {
		n.log.Debug("opening an flist for a peer failed", "digest", hex.EncodeToString(digest[:]), "err", err)
		return answer(statusError, "not served: cannot open the flist")
	}
	defer rc.Close()
	if _, err := bw.Write(appendFlistHeader(nil, statusOK, size)); err != nil {
		return err
	}
	// Exactly size bytes: a file shorter than announced resets the stream.
	if _, err := io.CopyN(bw, rc, size); err != nil {
		return fmt.Errorf("send %d bytes: %w", size, unexpectedEOF(err))
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	n.stats.servedFlists.Add(1)
	return nil
}

// appendFlistHeader appends a flist response header to buf: the status and, unless it
// is "not found", the length of the data that follows.
func appendFlistHeader(buf []byte, status byte, n int64) []byte {
	buf = append(buf, status)
	if status == statusNotFound {
		return buf
	}
	return binary.AppendUvarint(buf, uint64(n))
}

// readFlistHeader reads a flist response header. For statusOK, n is the size of the file
// that follows; more than max is refused with errTooLarge (not a protocol error). For
// statusError, n is the length of the message; for statusNotFound it is 0. An EOF
// before the header is complete is io.ErrUnexpectedEOF; a malformed header wraps
// errProtocol.
func readFlistHeader(r *bufio.Reader, max int64) (status byte, n int64, err error) {
	status, err = r.ReadByte()
	if err != nil {
		return 0, 0, unexpectedEOF(err)
	}
	if status == statusNotFound {
		return status, 0, nil
	}
	if status != statusOK && status != statusError {
		return 0, 0, fmt.Errorf("%w: unknown flist status %d", errProtocol, status)
	}
	size, err := readUvarint(r, "flist length")
	if err != nil {
		return 0, 0, unexpectedEOF(err)
	}
	if status == statusError {
		if size > maxErrorMessage {
			return 0, 0, fmt.Errorf("%w: error message of %d bytes (at most %d)", errProtocol, size, maxErrorMessage)
		}
		return status, int64(size), nil
	}
	if size > uint64(max) {
		return 0, 0, fmt.Errorf("%w: the peer's is %d bytes, at most %d accepted", errTooLarge, size, max)
	}
	return status, int64(size), nil
}

// hashWriter hashes what it writes to w and remembers w's error.
type hashWriter struct {
	h   hash.Hash
	w   io.Writer
	err error
}

func (hw *hashWriter) Write(p []byte) (int, error) {
	hw.h.Write(p)
	k, err := hw.w.Write(p)
	if err != nil {
		hw.err = err
	}
	return k, err
}

// deadlineReader and deadlineWriter give each read or write of a stream
// flistIdleTimeout: a transfer may be long, but never stalls.
type deadlineReader struct{ s network.Stream }

func (d deadlineReader) Read(p []byte) (int, error) {
	d.s.SetReadDeadline(time.Now().Add(flistIdleTimeout))
	return d.s.Read(p)
}

type deadlineWriter struct{ s network.Stream }

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.s.SetWriteDeadline(time.Now().Add(flistIdleTimeout))
	return d.s.Write(p)
}

// limitedWriter writes no faster than lim allows, in pieces of at most its burst.
type limitedWriter struct {
	ctx context.Context
	w   io.Writer
	lim *rate.Limiter
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		k := min(len(p)-done, l.lim.Burst())
		if err := l.lim.WaitN(l.ctx, k); err != nil {
			return done, err
		}
		m, err := l.w.Write(p[done : done+k])
		done += m
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
