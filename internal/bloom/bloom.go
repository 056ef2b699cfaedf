// Package bloom is a Bloom filter over keys that are already uniform hashes (block ids),
// with a compact binary form to send to peers.
//
// A filter answers "maybe" or "no": a key added is always "maybe", a key never added is
// "maybe" with the false-positive rate the filter was sized for. Nodes send their
// neighbours a filter of their cache, so that a neighbour asks only the nodes that may
// hold a block; a false positive costs one "not found" answer.
package bloom

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// KeyMin is the shortest key a filter takes: its bit positions come from the key's first
// 16 bytes (double hashing), so keys must be uniform hashes at least that long, as block
// ids are (BLAKE2b-256, or BLAKE2b-128 for legacy blocks).
const KeyMin = 16

// Filter is a Bloom filter. It is not safe for concurrent use.
type Filter struct {
	bits []uint64
	m    uint64 // number of bits, len(bits)*64
	k    uint32 // bit positions per key
	n    int    // keys added (an estimate once filters are merged; counted with repeats)
}

// New returns an empty filter sized for n keys at false-positive rate fp (0 < fp < 1):
// about 9.6 bits, so 1.2 bytes, per key at 1 %.
func New(n int, fp float64) *Filter {
	n = max(n, 1)
	if !(fp > 0 && fp < 1) {
		fp = 0.01
	}
	m := uint64(math.Ceil(-float64(n) * math.Log(fp) / (math.Ln2 * math.Ln2)))
	words := (m + 63) / 64
	k := uint32(math.Round(float64(words*64) / float64(n) * math.Ln2))
	return &Filter{bits: make([]uint64, words), m: words * 64, k: min(max(k, 1), maxK)}
}

// maxK bounds the bit positions per key a filter uses or accepts: a 1e-9 rate needs 30.
const maxK = 32

// positions calls fn with the key's k bit positions (Kirsch–Mitzenmacher double
// hashing: h1 + i·h2 mod m, from the key's first 16 bytes).
func (f *Filter) positions(key []byte, fn func(uint64) bool) {
	if len(key) < KeyMin {
		panic(fmt.Sprintf("bloom: key of %d bytes, want at least %d", len(key), KeyMin))
	}
	h1 := binary.LittleEndian.Uint64(key)
	h2 := binary.LittleEndian.Uint64(key[8:]) | 1 // odd: every position differs
	for i := range uint64(f.k) {
		if !fn((h1 + i*h2) % f.m) {
			return
		}
	}
}

// Add adds key (a uniform hash of at least KeyMin bytes).
func (f *Filter) Add(key []byte) {
	f.positions(key, func(p uint64) bool {
		f.bits[p/64] |= 1 << (p % 64)
		return true
	})
	f.n++
}

// Has reports whether key may have been added: false means it was not.
func (f *Filter) Has(key []byte) bool {
	has := true
	f.positions(key, func(p uint64) bool {
		has = f.bits[p/64]&(1<<(p%64)) != 0
		return has
	})
	return has
}

// Len is the number of keys added.
func (f *Filter) Len() int { return f.n }

// Size is the filter's size in bytes (its bits).
func (f *Filter) Size() int { return len(f.bits) * 8 }

// headerLen: the binary form's header, k (uint32) and the number of keys (uint64).
const headerLen = 12

// MarshalBinary returns the filter's binary form: k and the number of keys added, then
// the bits (little-endian 64-bit words); the size follows from the length.
func (f *Filter) MarshalBinary() ([]byte, error) {
	out := make([]byte, headerLen, headerLen+len(f.bits)*8)
	binary.LittleEndian.PutUint32(out, f.k)
	binary.LittleEndian.PutUint64(out[4:], uint64(f.n))
	for _, w := range f.bits {
		out = binary.LittleEndian.AppendUint64(out, w)
	}
	return out, nil
}

// ErrFormat: bytes that are not a filter's binary form.
var ErrFormat = errors.New("bloom: not a filter")

// Unmarshal decodes a filter's binary form (from a peer: outside bytes), refusing one of
// more than maxBytes bytes of bits.
func Unmarshal(data []byte, maxBytes int) (*Filter, error) {
	if len(data) < headerLen+8 || (len(data)-headerLen)%8 != 0 {
		return nil, fmt.Errorf("%w: %d bytes", ErrFormat, len(data))
	}
	if len(data)-headerLen > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes of bits, more than %d", ErrFormat, len(data)-headerLen, maxBytes)
	}
	k := binary.LittleEndian.Uint32(data)
	if k == 0 || k > maxK {
		return nil, fmt.Errorf("%w: %d positions per key", ErrFormat, k)
	}
	n := binary.LittleEndian.Uint64(data[4:])
	words := (len(data) - headerLen) / 8
	if n > uint64(words*64) {
		return nil, fmt.Errorf("%w: %d keys in %d bits", ErrFormat, n, words*64)
	}
	f := &Filter{bits: make([]uint64, words), m: uint64(words) * 64, k: k, n: int(n)}
	for i := range f.bits {
		f.bits[i] = binary.LittleEndian.Uint64(data[headerLen+8*i:])
	}
	return f, nil
}
