package flist

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Walk calls fn for every entry reachable from the root, parents before children, with
// the entry's absolute path. An entry is visited at most once, so a hostile flist whose
// parent links form a cycle cannot make it loop.
func Walk(ctx context.Context, f Flist, fn func(p string, e Entry) error) error {
	root, err := f.Get(ctx, RootIno)
	if err != nil {
		return err
	}
	type item struct {
		p string
		e Entry
	}
	seen := map[uint64]bool{RootIno: true}
	stack := []item{{"/", root}}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if err := fn(it.p, it.e); err != nil {
			return err
		}
		if it.e.Type != TypeDir {
			continue
		}
		children, err := f.ReadDir(ctx, it.e.Ino)
		if err != nil {
			return fmt.Errorf("%s: %w", it.p, err)
		}
		for i := len(children) - 1; i >= 0; i-- {
			c := children[i]
			if seen[c.Ino] {
				return fmt.Errorf("%w: inode %d reached twice (at %s)", ErrCorrupt, c.Ino, path.Join(it.p, c.Name))
			}
			seen[c.Ino] = true
			stack = append(stack, item{path.Join(it.p, c.Name), c})
		}
	}
	return nil
}

// DistinctBlocks lists every distinct block of f's files, in walk order: what a pull
// fetches and a push uploads.
func DistinctBlocks(ctx context.Context, f Flist) ([]Block, error) {
	seen := map[BlockID]bool{}
	var out []Block
	err := Walk(ctx, f, func(_ string, e Entry) error {
		if e.Type != TypeFile { // not NBlocks: a reader may leave it 0
			return nil
		}
		blocks, err := f.Blocks(ctx, e.Ino)
		if err != nil {
			return err
		}
		for _, b := range blocks {
			if !seen[b.ID] {
				seen[b.ID] = true
				out = append(out, b)
			}
		}
		return nil
	})
	return out, err
}

// WriteManifest writes the canonical TSV listing of f: one line per entry, sorted by the
// raw path in byte order, with the columns of the fixtures' golden files (type, path,
// permission bits, uid, gid, size, mtime, block count, first block, target or device).
func WriteManifest(ctx context.Context, w io.Writer, f Flist) error {
	type line struct{ path, text string }
	var lines []line
	err := Walk(ctx, f, func(p string, e Entry) error {
		first := "-"
		if e.NBlocks > 0 {
			blocks, err := f.Blocks(ctx, e.Ino)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if len(blocks) > 0 {
				first = fmt.Sprintf("%s:%x", blocks[0].ID, blocks[0].Key)
			}
		}
		last := "-"
		switch e.Type {
		case TypeSymlink:
			last = manifestQuote(e.Target)
		case TypeBlockDev, TypeCharDev:
			last = fmt.Sprintf("%d,%d", e.Major(), e.Minor())
		}
		lines = append(lines, line{p, fmt.Sprintf("%c\t%s\t%04o\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
			e.Type.Letter(), manifestQuote(p), e.Perm(), e.UID, e.GID, e.Size, e.Mtime, e.NBlocks, first, last)})
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].path < lines[j].path })
	bw := bufio.NewWriter(w)
	for _, l := range lines {
		if _, err := bw.WriteString(l.text); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// manifestQuote Go-quotes a path or target holding a tab, a newline or a backslash, so
// every manifest line stays one line; other strings are written as they are.
func manifestQuote(s string) string {
	if strings.ContainsAny(s, "\t\n\\") {
		return strconv.Quote(s)
	}
	return s
}
