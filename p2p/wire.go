package p2p

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/zosfs/zosfs-agent/flist"
)

// The block exchange wire format (protocol ProtocolID). All integers are unsigned varints
// (encoding/binary's Uvarint).
//
// The client opens one stream per peer and writes request frames:
//
//	request  = len(body) body
//	body     = reqID blockID [flags]      blockID: 16 or 32 bytes; flags: one byte, absent = 0
//	flags    = bit 0 (flagFetch): "you are this block's designated fetcher: if you lack
//	           it, fetch it (from your neighbours or your hub) and answer with it"
//
// The server answers each request with one response frame, in any order (it serves a few
// requests of a stream concurrently and answers in completion order; the client matches
// responses to requests by reqID):
//
//	response = reqID status len(data) data
//	status   = 0 (ok: data is the stored block, at most flist.MaxBlockStored bytes)
//	         | 1 (not found: no data)
//	         | 2 (error: data is a short UTF-8 message, at most maxErrorMessage bytes)
//
// Request ids are chosen by the client, unique among the requests of a stream (a counter).
// Anything else — an oversized frame, an unknown status, a block id of another length, a
// response to a request never sent — is a protocol error: the reader resets the stream
// and bans the peer.

// Response statuses.
const (
	statusOK       = 0
	statusNotFound = 1
	statusError    = 2
)

// Request flags.
const (
	// flagFetch asks the server to fetch a block it lacks instead of answering "not
	// found" (the first wave's fetch-through, see Node.Fetcher).
	flagFetch = 1 << 0
	// knownFlags are the flags this version understands; others are a protocol error.
	knownFlags = flagFetch
)

// Wire bounds.
const (
	// maxRequestBody bounds a request's body: a 10-byte request id, a 32-byte block id
	// and the flags.
	maxRequestBody = binary.MaxVarintLen64 + 32 + 1
	// maxErrorMessage bounds the message of an error response.
	maxErrorMessage = 256
	// maxRequestFrame bounds the bytes of one encoded request frame.
	maxRequestFrame = 1 + maxRequestBody
	// maxResponseHeader bounds the bytes of an encoded response header.
	maxResponseHeader = binary.MaxVarintLen64 + 1 + binary.MaxVarintLen64
)

// errProtocol marks violations of the wire format by the peer (as opposed to I/O errors).
var errProtocol = errors.New("block protocol violation")

// appendRequest appends the frame of request reqID for block id, with flags, to buf.
func appendRequest(buf []byte, reqID uint64, id flist.BlockID, flags byte) []byte {
	n := uvarintLen(reqID) + id.Len()
	if flags != 0 {
		n++
	}
	buf = binary.AppendUvarint(buf, uint64(n))
	buf = binary.AppendUvarint(buf, reqID)
	buf = append(buf, id.Bytes()...)
	if flags != 0 {
		buf = append(buf, flags)
	}
	return buf
}

// readRequest reads one request frame. An I/O error (io.EOF at a frame boundary when the
// client is done) is returned as is; a malformed frame wraps errProtocol.
func readRequest(r *bufio.Reader) (reqID uint64, id flist.BlockID, flags byte, err error) {
	n, err := readUvarint(r, "request length")
	if err != nil {
		return 0, id, 0, err
	}
	if n == 0 || n > maxRequestBody {
		return 0, id, 0, fmt.Errorf("%w: request of %d bytes", errProtocol, n)
	}
	var body [maxRequestBody]byte
	if _, err := io.ReadFull(r, body[:n]); err != nil {
		return 0, id, 0, unexpectedEOF(err)
	}
	reqID, k := binary.Uvarint(body[:n])
	if k <= 0 {
		return 0, id, 0, fmt.Errorf("%w: bad request id", errProtocol)
	}
	raw := body[k:n]
	switch len(raw) {
	case 16, 32:
	case 17, 33: // the id and the flags
		flags, raw = raw[len(raw)-1], raw[:len(raw)-1]
		if flags == 0 || flags&^knownFlags != 0 {
			return 0, id, 0, fmt.Errorf("%w: request flags %#x", errProtocol, flags)
		}
	default:
		return 0, id, 0, fmt.Errorf("%w: block id of %d bytes", errProtocol, len(raw))
	}
	if id, err = flist.ParseBlockID(raw); err != nil {
		return 0, id, 0, fmt.Errorf("%w: %v", errProtocol, err)
	}
	return reqID, id, flags, nil
}

// appendResponseHeader appends the header of a response to buf; the n bytes of data
// follow it on the wire.
func appendResponseHeader(buf []byte, reqID uint64, status byte, n int) []byte {
	buf = binary.AppendUvarint(buf, reqID)
	buf = append(buf, status)
	return binary.AppendUvarint(buf, uint64(n))
}

// readResponseHeader reads a response header and checks the data length against the
// bound of its status. The caller reads (or discards) the n bytes of data that follow.
func readResponseHeader(r *bufio.Reader) (reqID uint64, status byte, n int, err error) {
	reqID, err = readUvarint(r, "response id")
	if err != nil {
		return 0, 0, 0, err
	}
	status, err = r.ReadByte()
	if err != nil {
		return 0, 0, 0, unexpectedEOF(err)
	}
	size, err := readUvarint(r, "response length")
	if err != nil {
		return 0, 0, 0, unexpectedEOF(err)
	}
	var max uint64
	switch status {
	case statusOK:
		max = flist.MaxBlockStored
	case statusNotFound:
		max = 0
	case statusError:
		max = maxErrorMessage
	default:
		return 0, 0, 0, fmt.Errorf("%w: unknown status %d", errProtocol, status)
	}
	if size > max {
		return 0, 0, 0, fmt.Errorf("%w: response of status %d with %d bytes (at most %d)", errProtocol, status, size, max)
	}
	return reqID, status, int(size), nil
}

// readUvarint is binary.ReadUvarint with a varint overflow (the peer's fault) reported
// as a protocol error and an EOF after the first byte as io.ErrUnexpectedEOF; an EOF
// before any byte is returned as io.EOF.
func readUvarint(r io.ByteReader, what string) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 {
				return 0, unexpectedEOF(err)
			}
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, fmt.Errorf("%w: %s: varint overflows 64 bits", errProtocol, what)
}

// unexpectedEOF turns an EOF in the middle of a frame into io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}
