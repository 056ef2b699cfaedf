package flist

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// LookupPath resolves an absolute or relative slash path from the root, without following
// symlinks.
func LookupPath(ctx context.Context, f Flist, p string) (Entry, error) {
	e, err := f.Get(ctx, RootIno)
	if err != nil {
		return e, err
	}
	for _, name := range strings.Split(p, "/") {
		if name == "" || name == "." {
			continue
		}
		if e.Type != TypeDir {
			return e, fmt.Errorf("%s: %w", p, ErrNotDir)
		}
		if e, err = f.Lookup(ctx, e.Ino, name); err != nil {
			return e, fmt.Errorf("%s: %w", p, err)
		}
	}
	return e, nil
}

// BlockSource gives the stored bytes of a block by id.
type BlockSource interface {
	Get(ctx context.Context, id BlockID) ([]byte, error)
}

// readAhead is how many blocks WriteFile fetches ahead of the one it writes, to hide the
// store's latency.
const readAhead = 4

// WriteFile writes the content of file e to w, fetching its blocks from src a few at a
// time, decoding and verifying each, and checking the total length against e.Size.
func WriteFile(ctx context.Context, w io.Writer, f Flist, e Entry, src BlockSource) error {
	if e.Type != TypeFile {
		return fmt.Errorf("inode %d: not a regular file", e.Ino)
	}
	blocks, err := f.Blocks(ctx, e.Ino)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		plain []byte
		err   error
	}
	pending := make([]chan result, len(blocks))
	fetch := func(i int) {
		ch := make(chan result, 1)
		pending[i] = ch
		go func() {
			data, err := src.Get(ctx, blocks[i].ID)
			if err != nil {
				ch <- result{err: fmt.Errorf("block %d (%s): %w", i, blocks[i].ID, err)}
				return
			}
			plain, err := DecodeBlock(blocks[i], data)
			if err != nil {
				err = fmt.Errorf("block %d: %w", i, err)
			}
			ch <- result{plain, err}
		}()
	}
	for i := 0; i < len(blocks) && i < readAhead; i++ {
		fetch(i)
	}
	var written uint64
	for i := range blocks {
		r := <-pending[i]
		if r.err != nil {
			return r.err
		}
		if next := i + readAhead; next < len(blocks) {
			fetch(next)
		}
		written += uint64(len(r.plain))
		if written > e.Size {
			return fmt.Errorf("%w: inode %d: blocks hold more than its size %d", ErrCorrupt, e.Ino, e.Size)
		}
		if _, err := w.Write(r.plain); err != nil {
			return err
		}
	}
	if written != e.Size {
		return fmt.Errorf("%w: inode %d: blocks hold %d bytes, size is %d", ErrCorrupt, e.Ino, written, e.Size)
	}
	return nil
}
