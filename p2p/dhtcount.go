package p2p

import (
	"context"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// countingHost is the host as the DHT sees it: every stream the DHT opens or accepts
// counts the messages this node writes on it. kad-dht frames each message with an
// unsigned varint length (msgio), so counting frames counts messages whatever the
// writes look like. The count is the node's DHT chatter, which the site's design must
// keep bounded (Stats.DHTMessages).
type countingHost struct {
	host.Host
	sent *atomic.Int64
}

func (h countingHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return &countingStream{Stream: s, sent: h.sent}, nil
}

func (h countingHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) {
		handler(&countingStream{Stream: s, sent: h.sent})
	})
}

func (h countingHost) SetStreamHandlerMatch(pid protocol.ID, match func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, match, func(s network.Stream) {
		handler(&countingStream{Stream: s, sent: h.sent})
	})
}

// countingStream counts the varint-framed messages written on a stream.
type countingStream struct {
	network.Stream
	sent *atomic.Int64
	// The framing state: the length being read (and its shift), or the bytes of the
	// current message still to come.
	length, shift uint64
	left          uint64
	inBody        bool
}

func (s *countingStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	s.count(p[:n])
	return n, err
}

func (s *countingStream) count(p []byte) {
	for len(p) > 0 {
		if s.inBody {
			k := min(uint64(len(p)), s.left)
			s.left -= k
			p = p[k:]
			if s.left == 0 {
				s.inBody = false
			}
			continue
		}
		b := p[0]
		p = p[1:]
		s.length |= uint64(b&0x7f) << s.shift
		s.shift += 7
		if b&0x80 != 0 && s.shift < 64 {
			continue
		}
		s.sent.Add(1)
		s.left, s.inBody = s.length, s.length > 0
		s.length, s.shift = 0, 0
	}
}
