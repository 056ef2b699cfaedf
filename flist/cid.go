package flist

import (
	"fmt"
	"io"
	"os"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"golang.org/x/crypto/blake2b"
)

// Multihash codes for the BLAKE2b variants used by the formats.
const (
	mhBlake2b256 = 0xb220
	mhBlake2b128 = 0xb210
)

// FileCID names an flist: CIDv1, codec raw, multihash BLAKE2b-256 of the file's bytes.
func FileCID(r io.Reader) (cid.Cid, error) {
	h, _ := blake2b.New256(nil)
	if _, err := io.Copy(h, r); err != nil {
		return cid.Undef, err
	}
	return cidOf(h.Sum(nil), mhBlake2b256)
}

// FileCIDPath is FileCID of the file at path.
func FileCIDPath(path string) (cid.Cid, error) {
	f, err := os.Open(path)
	if err != nil {
		return cid.Undef, err
	}
	defer f.Close()
	return FileCID(f)
}

// FileCIDOf is the CID of the flist file whose BLAKE2b-256 is digest (as FileCID makes
// it), for the peers that exchange flists by digest.
func FileCIDOf(digest []byte) (cid.Cid, error) {
	if len(digest) != 32 {
		return cid.Undef, fmt.Errorf("flist digest of %d bytes (want 32, BLAKE2b-256)", len(digest))
	}
	return cidOf(digest, mhBlake2b256)
}

// FileDigest is the inverse of FileCIDOf: the BLAKE2b-256 of the flist file c names.
func FileDigest(c cid.Cid) ([]byte, error) {
	d, err := decodeRaw(c)
	if err != nil {
		return nil, err
	}
	if d.Code != mhBlake2b256 || d.Length != 32 {
		return nil, fmt.Errorf("cid %s: multihash %#x/%d: not an flist CID (BLAKE2b-256)", c, d.Code, d.Length)
	}
	return d.Digest, nil
}

// BlockCID names a block by its id: CIDv1 raw whose multihash is the id itself
// (BLAKE2b-256 for v2 blocks, BLAKE2b-128 for legacy ones), so any holder of the stored
// bytes can prove them by hashing. Only the zero id has no CID.
func BlockCID(id BlockID) (cid.Cid, error) {
	switch {
	case id.Legacy():
		return cidOf(id.Bytes(), mhBlake2b128)
	case id.Valid():
		return cidOf(id.Bytes(), mhBlake2b256)
	}
	return cid.Undef, fmt.Errorf("no block id")
}

// BlockIDFromCID is the inverse of BlockCID.
func BlockIDFromCID(c cid.Cid) (BlockID, error) {
	d, err := decodeRaw(c)
	if err != nil {
		return BlockID{}, err
	}
	if (d.Code == mhBlake2b256 && d.Length == 32) || (d.Code == mhBlake2b128 && d.Length == legacyHashSize) {
		return ParseBlockID(d.Digest)
	}
	return BlockID{}, fmt.Errorf("cid %s: multihash %#x/%d is not a block id", c, d.Code, d.Length)
}

// decodeRaw decodes the multihash of a raw CID: blocks and flist files are both named so.
func decodeRaw(c cid.Cid) (*mh.DecodedMultihash, error) {
	if c.Prefix().Codec != cid.Raw {
		return nil, fmt.Errorf("cid %s: codec %#x, want raw", c, c.Prefix().Codec)
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, fmt.Errorf("cid %s: %w", c, err)
	}
	return d, nil
}

func cidOf(digest []byte, code uint64) (cid.Cid, error) {
	m, err := mh.Encode(digest, code)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.Raw, m), nil
}
