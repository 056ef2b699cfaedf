package flist

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/golang/snappy"
	"golang.org/x/crypto/blake2b"
)

// The legacy block pipeline (0-flist / lib0stor), for blocks of legacy `.flist` files:
//
//	key        = BLAKE2b-128(plain)
//	compressed = raw snappy (block format, not framed)
//	stored     = XXTEA(key, compressed packed little-endian into uint32 words, followed by
//	             one more word holding len(compressed)); 4*ceil(n/4)+4 bytes
//	id         = BLAKE2b-128(stored)
//
// XXTEA is the corrected block TEA ("btea") of Wheeler and Needham with delta 0x9E3779B9,
// run over all the words, the length word included, with the full 16-byte key (upstream's
// xxtea_*_bkey functions; the NUL-truncating "fixed key" variant is not used for blocks).

// maxLegacyBlockPlain bounds the decoded size of a legacy block; snappy's declared length is
// checked against it before anything is allocated.
const maxLegacyBlockPlain = 4 << 20

// legacyHashSize is the length of legacy block ids and keys (BLAKE2b-128).
const legacyHashSize = 16

const xxteaDelta = 0x9E3779B9

// maxLegacyBlockStored bounds the stored size of a legacy block: the largest snappy output
// for maxLegacyBlockPlain bytes, rounded up to whole words, plus the length word.
var maxLegacyBlockStored = 4*((snappy.MaxEncodedLen(maxLegacyBlockPlain)+3)/4) + 4

func blake2b128(b []byte) []byte {
	h, err := blake2b.New(legacyHashSize, nil)
	if err != nil { // only for an invalid size or key, which are constants here
		panic(err)
	}
	h.Write(b)
	return h.Sum(nil)
}

// encodeLegacyBlock runs the legacy block pipeline on plain and returns the block's id and
// key and the bytes to store.
func encodeLegacyBlock(plain []byte) (Block, []byte) {
	key := blake2b128(plain)
	compressed := snappy.Encode(nil, plain)

	n := (len(compressed) + 3) / 4
	v := make([]uint32, n+1)
	var pad [4]byte
	for i := range n {
		chunk := compressed[4*i:]
		if len(chunk) < 4 {
			pad = [4]byte{}
			copy(pad[:], chunk)
			chunk = pad[:]
		}
		v[i] = binary.LittleEndian.Uint32(chunk)
	}
	v[n] = uint32(len(compressed))
	k := xxteaKey(key)
	xxteaEncrypt(v, &k)

	data := make([]byte, 4*len(v))
	for i, w := range v {
		binary.LittleEndian.PutUint32(data[4*i:], w)
	}
	return Block{ID: legacyBlockID(blake2b128(data)), Key: key}, data
}

// decodeLegacyBlock verifies stored bytes against b.ID, decrypts and decompresses them and
// verifies the result against b.Key.
func decodeLegacyBlock(b Block, data []byte) ([]byte, error) {
	if !b.ID.Legacy() || len(b.Key) != legacyHashSize {
		return nil, fmt.Errorf("%w: legacy block id of %d bytes and key of %d bytes, want %d",
			ErrBlockCorrupt, b.ID.Len(), len(b.Key), legacyHashSize)
	}
	if legacyBlockID(blake2b128(data)) != b.ID {
		return nil, fmt.Errorf("%w: legacy block %s: content does not match its id", ErrBlockCorrupt, b.ID)
	}
	switch {
	case len(data) < 8 || len(data)%4 != 0:
		return nil, fmt.Errorf("%w: legacy block %s: %d bytes is not a whole number (>= 2) of words",
			ErrBlockCorrupt, b.ID, len(data))
	case len(data) > maxLegacyBlockStored:
		return nil, fmt.Errorf("%w: legacy block %s: %d bytes, more than the limit of %d",
			ErrBlockCorrupt, b.ID, len(data), maxLegacyBlockStored)
	}

	v := make([]uint32, len(data)/4)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(data[4*i:])
	}
	k := xxteaKey(b.Key)
	xxteaDecrypt(v, &k)

	// The last word is the length of the compressed bytes, which fill all the words before
	// it but the padding of the last one.
	room := 4 * (len(v) - 1)
	m := int(v[len(v)-1])
	if m > room || m < room-3 {
		return nil, fmt.Errorf("%w: legacy block %s does not decrypt with its key", ErrBlockCorrupt, b.ID)
	}
	compressed := make([]byte, room)
	for i, w := range v[:len(v)-1] {
		binary.LittleEndian.PutUint32(compressed[4*i:], w)
	}
	compressed = compressed[:m]

	n, err := snappy.DecodedLen(compressed)
	if err != nil {
		return nil, fmt.Errorf("%w: legacy block %s: snappy: %v", ErrBlockCorrupt, b.ID, err)
	}
	if n > maxLegacyBlockPlain {
		return nil, fmt.Errorf("%w: legacy block %s declares %d decoded bytes, more than the limit of %d",
			ErrBlockCorrupt, b.ID, n, maxLegacyBlockPlain)
	}
	plain, err := snappy.Decode(make([]byte, n), compressed)
	if err != nil {
		return nil, fmt.Errorf("%w: legacy block %s: snappy: %v", ErrBlockCorrupt, b.ID, err)
	}
	if !bytes.Equal(blake2b128(plain), b.Key) {
		return nil, fmt.Errorf("%w: legacy block %s: decoded content does not match its key", ErrBlockCorrupt, b.ID)
	}
	return plain, nil
}

func xxteaKey(key []byte) [4]uint32 {
	var k [4]uint32
	for i := range k {
		k[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	return k
}

func xxteaMX(sum, y, z uint32, p int, e uint32, k *[4]uint32) uint32 {
	return ((z>>5 ^ y<<2) + (y>>3 ^ z<<4)) ^ ((sum ^ y) + (k[(uint32(p)&3)^e] ^ z))
}

// xxteaEncrypt enciphers v in place (corrected block TEA). Fewer than 2 words are left as
// they are, as the reference implementation does.
func xxteaEncrypt(v []uint32, k *[4]uint32) {
	n := len(v)
	if n < 2 {
		return
	}
	var sum uint32
	z := v[n-1]
	for rounds := 6 + 52/n; rounds > 0; rounds-- {
		sum += xxteaDelta
		e := sum >> 2 & 3
		for p := 0; p < n-1; p++ {
			y := v[p+1]
			v[p] += xxteaMX(sum, y, z, p, e, k)
			z = v[p]
		}
		y := v[0]
		v[n-1] += xxteaMX(sum, y, z, n-1, e, k)
		z = v[n-1]
	}
}

// xxteaDecrypt deciphers v in place; the inverse of xxteaEncrypt.
func xxteaDecrypt(v []uint32, k *[4]uint32) {
	n := len(v)
	if n < 2 {
		return
	}
	rounds := 6 + 52/n
	sum := uint32(rounds) * xxteaDelta
	y := v[0]
	for ; rounds > 0; rounds-- {
		e := sum >> 2 & 3
		for p := n - 1; p > 0; p-- {
			z := v[p-1]
			v[p] -= xxteaMX(sum, y, z, p, e, k)
			y = v[p]
		}
		z := v[n-1]
		v[0] -= xxteaMX(sum, y, z, 0, e, k)
		y = v[0]
		sum -= xxteaDelta
	}
}
