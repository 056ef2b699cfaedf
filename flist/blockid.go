package flist

import (
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/blake2b"
)

// BlockID names a block: the hash of its stored bytes, 32 bytes (BLAKE2b-256) for v2
// blocks, 16 (BLAKE2b-128) for legacy ones. It is a comparable value: use it as a map
// key. The zero value names no block (Valid reports false); every other value was made
// by ParseBlockID, ParseBlockIDHex or a hash, so it has one of the two lengths.
type BlockID struct {
	n uint8 // length in bytes: 32, 16, or 0 for the zero value
	// b holds the id in its first n bytes; the rest stays zero, so that == compares ids.
	b [32]byte
}

// ParseBlockID returns the block id whose bytes are b. It is the one rule for a block
// id, applied wherever one comes in from outside (a file, a peer, a URL): 32 bytes, or
// 16 for a legacy block.
func ParseBlockID(b []byte) (BlockID, error) {
	if len(b) != 32 && len(b) != legacyHashSize {
		return BlockID{}, fmt.Errorf("invalid block id of %d bytes (want 32, or 16 for a legacy block)", len(b))
	}
	var id BlockID
	id.n = uint8(copy(id.b[:], b))
	return id, nil
}

// ParseBlockIDHex returns the block id written in hex as s: 64 hex digits, or 32 for a
// legacy block. Upper-case digits are accepted; String writes lower case.
func ParseBlockIDHex(s string) (BlockID, error) {
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 32 && len(b) != legacyHashSize) {
		// %.80q: the string may be long, or not text at all.
		return BlockID{}, fmt.Errorf("invalid block id %.80q: want 64 hex digits, or 32 for a legacy block", s)
	}
	return ParseBlockID(b)
}

// HashBlock returns the v2 id of stored bytes: their BLAKE2b-256.
func HashBlock(data []byte) BlockID {
	return BlockID{n: 32, b: blake2b.Sum256(data)}
}

// legacyBlockID is the id of a legacy block whose BLAKE2b-128 is sum.
func legacyBlockID(sum []byte) BlockID {
	id := BlockID{n: legacyHashSize}
	copy(id.b[:], sum)
	return id
}

// Bytes returns the id's bytes, a copy of its own: nil for the zero value.
func (id BlockID) Bytes() []byte {
	if id.n == 0 {
		return nil
	}
	b := id.b
	return b[:id.n:id.n]
}

// String is the lower-case hex form of the id, as logs, paths and URLs write it; empty
// for the zero value.
func (id BlockID) String() string { return hex.EncodeToString(id.b[:id.n]) }

// Valid reports whether id names a block: false only for the zero value.
func (id BlockID) Valid() bool { return id.n != 0 }

// Len is the length of the id in bytes: 32, 16 (legacy), or 0 for the zero value.
func (id BlockID) Len() int { return int(id.n) }

// Legacy reports whether id names a legacy block (BLAKE2b-128).
func (id BlockID) Legacy() bool { return id.n == legacyHashSize }

// Format writes the id in hex for %s, %v and %x alike (%X in upper case), so that a %x
// written for the []byte ids of before does not print the hex of the hex.
func (id BlockID) Format(f fmt.State, verb rune) {
	s := id.String()
	switch verb {
	case 'X':
		s = strings.ToUpper(s)
	case 'q':
		s = strconv.Quote(s)
	}
	_, _ = io.WriteString(f, s)
}

// FirstByte is the id's first byte, on which stores route ids and caches fan them out
// over directories; 0 for the zero value.
func (id BlockID) FirstByte() byte { return id.b[0] }
