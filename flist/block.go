package flist

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"

	"github.com/golang/snappy"
	"golang.org/x/crypto/blake2b"
)

// BlockSize is the size of the pieces files are cut into: every block of a file is this
// long except the last, which is shorter; an empty file has no block. Upstream rfs uses
// the same size, so identical content yields identical block ids across tools.
const BlockSize = 512 << 10

// maxBlockPlain bounds the decoded size of a block that a decoder accepts. It is larger
// than BlockSize so that flists made with other chunk sizes still read, and small enough
// that a hostile block cannot make a decoder allocate without limit.
const maxBlockPlain = 4 << 20

// MaxBlockStored bounds the stored (compressed, encrypted) size of a block a reader should
// accept from a store or a peer: snappy's worst case for maxBlockPlain plus cipher overhead.
const MaxBlockStored = 32 + maxBlockPlain + maxBlockPlain/6 + 64

// ErrBlockCorrupt: stored block bytes do not match the id, or do not decode to content
// matching the key.
var ErrBlockCorrupt = errors.New("corrupt block")

// EncodeBlock runs the v2 block pipeline on plain: key = BLAKE2b-256(plain), raw snappy,
// AES-256-GCM with nonce key[0:12] and the tag appended, id = BLAKE2b-256(ciphertext).
// It returns the block's id and key and the bytes to store.
func EncodeBlock(plain []byte) (Block, []byte) {
	var e blockEncoder
	return e.encode(plain)
}

// blockEncoder runs the v2 pipeline reusing its buffers from block to block, which spares
// the packer two large allocations per block. The bytes it returns are valid until its
// next call. Not safe for concurrent use.
type blockEncoder struct {
	compressed []byte
	sealed     []byte
}

func (e *blockEncoder) encode(plain []byte) (Block, []byte) {
	key := blake2b.Sum256(plain)
	if n := snappy.MaxEncodedLen(len(plain)); len(e.compressed) < n {
		e.compressed = make([]byte, n)
	}
	compressed := snappy.Encode(e.compressed, plain)
	e.sealed = newGCM(key[:]).Seal(e.sealed[:0], key[:12], compressed, nil)
	return Block{ID: HashBlock(e.sealed), Key: key[:]}, e.sealed
}

// DecodeBlock verifies stored bytes against b.ID, decrypts and decompresses them and
// verifies the result against b.Key. The format follows the id length: 32 bytes for v2
// blocks, 16 for legacy ones. Errors wrap ErrBlockCorrupt.
func DecodeBlock(b Block, data []byte) ([]byte, error) {
	switch {
	case b.ID.Len() == 32 && len(b.Key) == 32:
		return decodeV2Block(b, data)
	case b.ID.Legacy() && len(b.Key) == legacyHashSize:
		return decodeLegacyBlock(b, data)
	}
	return nil, fmt.Errorf("%w: id of %d bytes and key of %d bytes", ErrBlockCorrupt, b.ID.Len(), len(b.Key))
}

// VerifyBlock checks that stored bytes hash to id, without decoding them. Caches and peers
// use it to accept a block they cannot (and need not) decrypt.
func VerifyBlock(id BlockID, data []byte) error {
	var sum BlockID
	switch {
	case id.Legacy():
		sum = legacyBlockID(blake2b128(data))
	case id.Valid():
		sum = HashBlock(data)
	default:
		return fmt.Errorf("%w: no block id", ErrBlockCorrupt)
	}
	if sum != id {
		return fmt.Errorf("%w: content hashes to %s, want %s", ErrBlockCorrupt, sum, id)
	}
	return nil
}

// DecodeVerifiedBlock is DecodeBlock for stored bytes the caller has already checked
// against b.ID (flist.VerifyBlock, or a cache or peer that did): it hashes nothing. For
// a v2 block the key is not checked against the decoded content either: AES-GCM's tag
// already proves the ciphertext was made with that key, and the id proves it is the
// flist's own; a plain text that does not hash to its key could only come from the
// flist's author, who chooses the content anyway. That hash was a third of the CPU of a
// cold read. DecodeBlock (cat, pack checks) still checks everything.
func DecodeVerifiedBlock(b Block, data []byte) ([]byte, error) {
	if b.ID.Len() == 32 && len(b.Key) == 32 {
		return decodeV2Content(b, data, false)
	}
	return DecodeBlock(b, data)
}

func decodeV2Block(b Block, data []byte) ([]byte, error) {
	if err := VerifyBlock(b.ID, data); err != nil {
		return nil, err
	}
	return decodeV2Content(b, data, true)
}

// decryptBuffers recycles the decrypted (still compressed) bytes of a block: they live
// only until snappy has decoded them, and a fresh 512 KiB buffer per block was a tenth of
// a cold read's CPU (allocation and garbage collection).
var decryptBuffers = sync.Pool{New: func() any { return new([]byte) }}

func decodeV2Content(b Block, data []byte, checkKey bool) ([]byte, error) {
	buf := decryptBuffers.Get().(*[]byte)
	defer decryptBuffers.Put(buf)
	compressed, err := newGCM(b.Key).Open((*buf)[:0], b.Key[:12], data, nil)
	*buf = compressed[:0]
	if err != nil {
		return nil, fmt.Errorf("%w: %s: decrypt: %v", ErrBlockCorrupt, b.ID, err)
	}
	n, err := snappy.DecodedLen(compressed)
	if err != nil || n > maxBlockPlain {
		return nil, fmt.Errorf("%w: %s: bad snappy length (%d, %v)", ErrBlockCorrupt, b.ID, n, err)
	}
	plain, err := snappy.Decode(make([]byte, n), compressed)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: decompress: %v", ErrBlockCorrupt, b.ID, err)
	}
	if checkKey {
		if key := blake2b.Sum256(plain); !bytes.Equal(key[:], b.Key) {
			return nil, fmt.Errorf("%w: %s: content does not match its key", ErrBlockCorrupt, b.ID)
		}
	}
	return plain, nil
}

func newGCM(key []byte) cipher.AEAD {
	c, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // key is always 32 bytes here
	}
	g, err := cipher.NewGCM(c)
	if err != nil {
		panic(err)
	}
	return g
}
