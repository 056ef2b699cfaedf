package cache

import (
	"github.com/zosfs/zosfs-agent/internal/atomicfile"

	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/syndtr/goleveldb/leveldb"

	"github.com/zosfs/zosfs-agent/flist"
)

// tmpPrefix starts the names of the temporary files a block write may make; Open removes
// any it finds (left by a crash).
const tmpPrefix = atomicfile.TmpPrefix

// parseName returns the id a block file name stands for, if it is one: the lower-case
// hex of a 32- or 16-byte id.
func parseName(name string) (flist.BlockID, bool) {
	id, err := flist.ParseBlockIDHex(name)
	if err != nil || id.String() != name {
		return flist.BlockID{}, false
	}
	return id, true
}

// parseFanout returns the first id byte a blocks/<hh> directory name stands for, if it
// is one.
func parseFanout(name string) (byte, bool) {
	if len(name) != 2 {
		return 0, false
	}
	b, err := hex.DecodeString(name)
	if err != nil || hex.EncodeToString(b) != name {
		return 0, false
	}
	return b[0], true
}

// writeBlock writes the file of block id, then records it in the index with access
// sequence seq. On failure it leaves neither.
func (c *Cache) writeBlock(id flist.BlockID, data []byte, seq uint64) error {
	p := c.path(id)
	mkdir := func() error {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		c.dirMade[id.FirstByte()].Store(true)
		return nil
	}
	if !c.dirMade[id.FirstByte()].Load() {
		if err := mkdir(); err != nil {
			return err
		}
	}
	err := atomicfile.Write(p, data)
	if errors.Is(err, os.ErrNotExist) { // the directory was removed behind our back
		if err = mkdir(); err == nil {
			err = atomicfile.Write(p, data)
		}
	}
	if err != nil {
		return err
	}
	b := new(leveldb.Batch)
	b.Put(blockKey(id), encodeUint(uint64(len(data))))
	b.Put(recencyKey(id), encodeUint(seq))
	if err := c.db.Write(b, nil); err != nil {
		os.Remove(p)
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

// readBlock reads the file of a block that the index says is size bytes long. A file of
// another size gives an error wrapping flist.ErrBlockCorrupt; a missing one, an error
// wrapping os.ErrNotExist.
func readBlock(name string, size int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != size {
		return nil, fmt.Errorf("%w: %s: %v of %d bytes, the index says %d", flist.ErrBlockCorrupt, name, fi.Mode().Type(), fi.Size(), size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: shorter than %d bytes", flist.ErrBlockCorrupt, name, size)
		}
		return nil, err
	}
	return data, nil
}
