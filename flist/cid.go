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

// BlockCID names a block by its id: CIDv1 raw whose multihash is the id itself
// (BLAKE2b-256 for v2 blocks, BLAKE2b-128 for legacy ones), so any holder of the stored
// bytes can prove them by hashing.
func BlockCID(id []byte) (cid.Cid, error) {
	switch len(id) {
	case 32:
		return cidOf(id, mhBlake2b256)
	case 16:
		return cidOf(id, mhBlake2b128)
	}
	return cid.Undef, fmt.Errorf("block id of %d bytes", len(id))
}

// BlockID is the inverse of BlockCID.
func BlockID(c cid.Cid) ([]byte, error) {
	if c.Prefix().Codec != cid.Raw {
		return nil, fmt.Errorf("cid %s: codec %#x, want raw", c, c.Prefix().Codec)
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, fmt.Errorf("cid %s: %w", c, err)
	}
	if (d.Code == mhBlake2b256 && d.Length == 32) || (d.Code == mhBlake2b128 && d.Length == 16) {
		return d.Digest, nil
	}
	return nil, fmt.Errorf("cid %s: multihash %#x/%d is not a block id", c, d.Code, d.Length)
}

func cidOf(digest []byte, code uint64) (cid.Cid, error) {
	m, err := mh.Encode(digest, code)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.Raw, m), nil
}
