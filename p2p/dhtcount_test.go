package p2p

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
)

// TestCountFrames: messages are counted by their varint framing, however the writes cut
// them (a length split from its body, several messages in one write, a long length).
func TestCountFrames(t *testing.T) {
	var stream []byte
	for _, size := range []int{0, 1, 127, 128, 300, 70_000} {
		stream = binary.AppendUvarint(stream, uint64(size))
		stream = append(stream, make([]byte, size)...)
	}
	for _, cut := range []int{1, 2, 3, 7, 1000, len(stream)} {
		var sent atomic.Int64
		s := &countingStream{sent: &sent}
		for p := stream; len(p) > 0; {
			k := min(cut, len(p))
			s.count(p[:k])
			p = p[k:]
		}
		if sent.Load() != 6 {
			t.Errorf("writes of %d bytes: counted %d messages, want 6", cut, sent.Load())
		}
	}
}
