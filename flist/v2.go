package flist

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"

	_ "modernc.org/sqlite" // pure-Go SQLite driver "sqlite": the binary needs no cgo
)

// sqliteMagic starts every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// maxTarget bounds a symlink target (PATH_MAX).
const maxTarget = 4096

// V2 is an open v2 `.fl` flist: an upstream rfs SQLite database, read in place. Every
// navigation call is one indexed query, so lookups stay fast on large flists.
type V2 struct {
	db   *sql.DB
	path string
	// The navigation queries, prepared once: a mount runs them for every lookup, listing
	// and open.
	getStmt, lookupStmt, readDirStmt, blocksStmt *sql.Stmt
	// mem, for a flist without the rfs indexes (where every query by parent or by a
	// block's inode scans a whole table, so that reading the whole tree is quadratic),
	// holds what the indexes would give, gathered at open in one pass over each table;
	// nil when the indexes are there. Get, ReadDir and Blocks use it; Lookup does not.
	mem *v2Mem
	// memGetStmt is getStmt with the block count given as its second argument;
	// memChildStmt selects the rows of one inode number in one directory.
	// memBlockStmt one block by rowid.
	memGetStmt, memChildStmt, memBlockStmt *sql.Stmt
}

// v2Mem stands in for the indexes of a flist that lacks them.
type v2Mem struct {
	children map[uint64][]uint64 // parent -> inode numbers of the rows naming it, once each
	blocks   map[int64][]int64   // inode number -> rowids of its blocks, in rowid order
}

// prepare compiles the navigation queries once.
func (v *V2) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&v.getStmt, entryColumns + "WHERE i.ino = ?"},
		{&v.lookupStmt, entryColumns + "WHERE i.parent = ? AND i.name = ? AND i.ino <> i.parent AND i.ino <> 1 ORDER BY i.ino LIMIT 1"},
		{&v.readDirStmt, entryColumns + "WHERE i.parent = ? AND i.ino <> i.parent AND i.ino <> 1"},
		{&v.blocksStmt, "SELECT id, key FROM block WHERE ino = ? ORDER BY rowid"},
		{&v.memGetStmt, entrySelect("?2") + "WHERE i.ino = ?1"},
		{&v.memChildStmt, entrySelect("?3") + "WHERE i.ino = ?1 AND i.parent = ?2"},
		{&v.memBlockStmt, "SELECT id, key FROM block WHERE rowid = ?"},
	} {
		st, err := v.db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrFormat, err)
		}
		*p.stmt = st
	}
	return nil
}

// Open opens an flist of either format, telling them apart by their first bytes.
func Open(ctx context.Context, path string) (Flist, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	head := make([]byte, len(sqliteMagic))
	n, _ := io.ReadFull(f, head)
	f.Close()
	switch {
	case bytes.Equal(head[:n], sqliteMagic):
		return OpenV2(ctx, path)
	case n >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return OpenLegacy(ctx, path)
	}
	return nil, fmt.Errorf("%s: %w: neither SQLite (.fl) nor gzip (.flist)", path, ErrFormat)
}

// OpenV2 opens a v2 `.fl` file read-only and checks that it is a well-formed rfs flist.
func OpenV2(ctx context.Context, path string) (*V2, error) {
	// immutable=1: the file never changes under us, so SQLite takes no locks and needs no
	// write access to the file's directory.
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&immutable=1"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v := &V2{db: db, path: path}
	if err := v.check(ctx); err != nil {
		v.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func (v *V2) check(ctx context.Context) error {
	var res string
	if err := v.db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&res); err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if res != "ok" {
		return fmt.Errorf("%w: sqlite integrity: %s", ErrCorrupt, res)
	}
	for _, q := range []string{
		"SELECT ino, parent, name, size, uid, gid, mode, rdev, mtime FROM inode LIMIT 0",
		"SELECT ino, data FROM extra LIMIT 0",
		"SELECT ino, id, key FROM block LIMIT 0",
		"SELECT key, value FROM tag LIMIT 0",
		"SELECT start, end, url FROM route LIMIT 0",
	} {
		rows, err := v.db.QueryContext(ctx, q)
		if err != nil {
			return fmt.Errorf("%w: missing rfs schema: %v", ErrFormat, err)
		}
		rows.Close()
	}
	if err := v.prepare(ctx); err != nil {
		return err
	}
	if err := v.loadMemIfUnindexed(ctx); err != nil {
		return err
	}
	root, err := v.Get(ctx, RootIno)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if root.Type != TypeDir || root.Parent != 0 {
		return fmt.Errorf("%w: root is not a directory with parent 0", ErrCorrupt)
	}
	// Every row must be valid and reachable from the root through directories: one pass
	// now gives a clear error up front instead of a surprise in the middle of a mount.
	// The pass reads each table once and reachability is worked out from the rows read,
	// so that it stays linear on a flist without the rfs indexes, where a lookup per row
	// (counting an entry's blocks, finding a directory's children) scans a whole table.
	rows, err := v.db.QueryContext(ctx, allEntriesQuery)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var total int64
	reach := v2Reach{dirs: map[uint64]bool{}, children: map[uint64][]uint64{}}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return err
		}
		reach.add(e)
		total++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if reachable := reach.count(); reachable != total {
		return fmt.Errorf("%w: %d of %d entries are not reachable from the root (a parent-link cycle, a missing parent or a parent that is not a directory)",
			ErrCorrupt, total-reachable, total)
	}
	if v.mem != nil {
		for p, cs := range reach.children {
			slices.Sort(cs)
			reach.children[p] = slices.Compact(cs)
		}
		v.mem.children = reach.children
	}
	return nil
}

// loadMemIfUnindexed sets v.mem when SQLite would scan a table to list a directory or to
// find or count a file's blocks, and reads the rowids of all blocks into it.
func (v *V2) loadMemIfUnindexed(ctx context.Context) error {
	indexed := true
	for _, q := range []string{
		entryColumns + "WHERE i.parent = 1",
		"SELECT id, key FROM block WHERE ino = 1 ORDER BY rowid",
	} {
		rows, err := v.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		for rows.Next() {
			var id, parent, unused any
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				rows.Close()
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			indexed = indexed && !strings.HasPrefix(detail, "SCAN")
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	if indexed {
		return nil
	}
	// Blocks whose ino is not an integer match no inode's number (the column has integer
	// affinity, so a number stored in it is an integer).
	rows, err := v.db.QueryContext(ctx, "SELECT rowid, ino FROM block WHERE typeof(ino) = 'integer' ORDER BY rowid")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	m := &v2Mem{blocks: map[int64][]int64{}}
	for rows.Next() {
		var rowid, ino int64
		if err := rows.Scan(&rowid, &ino); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		m.blocks[ino] = append(m.blocks[ino], rowid)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	v.mem = m
	return nil
}

// allEntriesQuery selects every inode with the columns of entryColumns, counting the blocks
// of all in one grouped pass over the block table rather than with a lookup per inode.
const allEntriesQuery = `SELECT i.ino, i.parent, i.name, i.size, i.uid, i.gid, i.mode, i.rdev, i.mtime,
	e.data, coalesce(b.n, 0)
	FROM inode i LEFT JOIN extra e ON e.ino = i.ino
	LEFT JOIN (SELECT ino, count(*) AS n FROM block GROUP BY ino) b ON b.ino = i.ino`

// v2Reach counts the entries reachable from the root through directories, from the rows
// of the inode table, as a recursive query would: an inode is reached when its parent is
// a reached directory (any row of that number with a directory mode), the root is never
// anyone's child, and each inode number counts once, so cycles end.
type v2Reach struct {
	dirs     map[uint64]bool     // inode numbers with a directory row
	children map[uint64][]uint64 // parent -> inode numbers of the rows naming it
}

func (r *v2Reach) add(e Entry) {
	if e.Type == TypeDir {
		r.dirs[e.Ino] = true
	}
	if e.Ino != RootIno {
		r.children[e.Parent] = append(r.children[e.Parent], e.Ino)
	}
}

func (r *v2Reach) count() int64 {
	seen := map[uint64]bool{RootIno: true}
	stack := []uint64{RootIno}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !r.dirs[d] {
			continue
		}
		for _, c := range r.children[d] {
			if !seen[c] {
				seen[c] = true
				stack = append(stack, c)
			}
		}
	}
	return int64(len(seen))
}

// Format implements Flist.
func (v *V2) Format() Format { return FormatV2 }

// Close implements Flist.
func (v *V2) Close() error {
	for _, st := range []*sql.Stmt{v.getStmt, v.lookupStmt, v.readDirStmt, v.blocksStmt, v.memGetStmt, v.memChildStmt, v.memBlockStmt} {
		if st != nil {
			st.Close()
		}
	}
	return v.db.Close()
}

// entryColumns selects one inode with its symlink target and its block count.
var entryColumns = entrySelect("(SELECT count(*) FROM block b WHERE b.ino = i.ino)")

// entrySelect selects one inode with its symlink target and nblocks as its block count.
func entrySelect(nblocks string) string {
	return `SELECT i.ino, i.parent, i.name, i.size, i.uid, i.gid, i.mode, i.rdev, i.mtime,
	e.data, ` + nblocks + `
	FROM inode i LEFT JOIN extra e ON e.ino = i.ino `
}

func scanEntry(sc interface{ Scan(...any) error }) (Entry, error) {
	var (
		ino, parent, size, uid, gid, mode, rdev, mtime, nblocks int64
		name, target                                            []byte
	)
	if err := sc.Scan(&ino, &parent, &name, &size, &uid, &gid, &mode, &rdev, &mtime, &target, &nblocks); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Entry{}, ErrNotFound
		}
		return Entry{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	e := Entry{
		Ino: uint64(ino), Parent: uint64(parent), Name: string(name),
		Mode: uint32(mode), UID: uint32(uid), GID: uint32(gid), Size: uint64(size),
		Mtime: mtime, Rdev: uint64(rdev), Target: string(target), NBlocks: int(nblocks),
	}
	e.Type = TypeOfMode(e.Mode)
	switch {
	case ino <= 0 || parent < 0:
		return e, fmt.Errorf("%w: inode %d: bad inode or parent number %d", ErrCorrupt, ino, parent)
	case mode < 0 || mode > math.MaxUint32 || e.Type == 0:
		return e, fmt.Errorf("%w: inode %d: bad mode %#o", ErrCorrupt, ino, mode)
	case uid < 0 || uid > math.MaxUint32 || gid < 0 || gid > math.MaxUint32:
		return e, fmt.Errorf("%w: inode %d: bad owner %d:%d", ErrCorrupt, ino, uid, gid)
	case size < 0:
		return e, fmt.Errorf("%w: inode %d: negative size %d", ErrCorrupt, ino, size)
	case rdev < 0:
		return e, fmt.Errorf("%w: inode %d: bad rdev %d", ErrCorrupt, ino, rdev)
	case len(target) > maxTarget:
		return e, fmt.Errorf("%w: inode %d: symlink target of %d bytes", ErrCorrupt, ino, len(target))
	}
	if e.Ino == RootIno {
		if e.Name != "/" {
			return e, fmt.Errorf("%w: root named %q", ErrCorrupt, e.Name)
		}
	} else if err := ValidName(e.Name); err != nil {
		return e, fmt.Errorf("inode %d: %w", ino, err)
	}
	switch e.Type {
	case TypeDir:
		e.Size = 0 // rfs stores the host's directory size (4096); it means nothing here
	case TypeFile:
		if e.Size > uint64(e.NBlocks)*maxBlockPlain {
			return e, fmt.Errorf("%w: inode %d: size %d with only %d blocks", ErrCorrupt, ino, e.Size, e.NBlocks)
		}
	case TypeSymlink:
		if e.Target == "" {
			return e, fmt.Errorf("%w: inode %d: symlink without target", ErrCorrupt, ino)
		}
	}
	if e.Type != TypeSymlink {
		e.Target = ""
	}
	if e.Type != TypeBlockDev && e.Type != TypeCharDev {
		e.Rdev = 0
	}
	return e, nil
}

// Get implements Flist.
func (v *V2) Get(ctx context.Context, ino uint64) (Entry, error) {
	if ino > math.MaxInt64 {
		return Entry{}, ErrNotFound
	}
	var row *sql.Row
	if v.mem != nil {
		row = v.memGetStmt.QueryRowContext(ctx, int64(ino), len(v.mem.blocks[int64(ino)]))
	} else {
		row = v.getStmt.QueryRowContext(ctx, int64(ino))
	}
	e, err := scanEntry(row)
	if errors.Is(err, ErrNotFound) {
		return e, fmt.Errorf("inode %d: %w", ino, err)
	}
	return e, err
}

// Lookup implements Flist.
func (v *V2) Lookup(ctx context.Context, parent uint64, name string) (Entry, error) {
	if err := ValidName(name); err != nil || parent > math.MaxInt64 {
		return Entry{}, fmt.Errorf("%q: %w", name, ErrNotFound)
	}
	// A child is never the root and never its own parent: such rows would make the tree a
	// cycle, so they are not part of it.
	e, err := scanEntry(v.lookupStmt.QueryRowContext(ctx, int64(parent), name))
	if errors.Is(err, ErrNotFound) {
		return e, fmt.Errorf("%q in inode %d: %w", name, parent, err)
	}
	return e, err
}

// ReadDir implements Flist.
func (v *V2) ReadDir(ctx context.Context, ino uint64) ([]Entry, error) {
	dir, err := v.Get(ctx, ino)
	if err != nil {
		return nil, err
	}
	if dir.Type != TypeDir {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	var out []Entry
	if v.mem == nil {
		if out, err = v.scanEntries(ctx, v.readDirStmt, int64(ino)); err != nil {
			return nil, err
		}
	} else {
		for _, c := range v.mem.children[ino] {
			if c == ino || c == RootIno {
				continue
			}
			es, err := v.scanEntries(ctx, v.memChildStmt, int64(c), int64(ino), len(v.mem.blocks[int64(c)]))
			if err != nil {
				return nil, err
			}
			out = append(out, es...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, fmt.Errorf("%w: directory inode %d has two entries named %q", ErrCorrupt, ino, out[i].Name)
		}
	}
	return out, nil
}

// scanEntries runs the entry query st with args and scans every row.
func (v *V2) scanEntries(ctx context.Context, st *sql.Stmt, args ...any) ([]Entry, error) {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return out, nil
}

// Blocks implements Flist.
func (v *V2) Blocks(ctx context.Context, ino uint64) ([]Block, error) {
	if ino > math.MaxInt64 {
		return nil, ErrNotFound
	}
	if v.mem != nil {
		rowids := v.mem.blocks[int64(ino)]
		if len(rowids) == 0 {
			return nil, nil
		}
		out := make([]Block, 0, len(rowids))
		for _, r := range rowids {
			b, err := scanBlock(v.memBlockStmt.QueryRowContext(ctx, r), ino)
			if err != nil {
				return nil, err
			}
			out = append(out, b)
		}
		return out, nil
	}
	rows, err := v.blocksStmt.QueryContext(ctx, int64(ino))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var out []Block
	for rows.Next() {
		b, err := scanBlock(rows, ino)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return out, nil
}

func scanBlock(sc interface{ Scan(...any) error }, ino uint64) (Block, error) {
	var id, key []byte
	if err := sc.Scan(&id, &key); err != nil {
		return Block{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(id) != 32 || len(key) != 32 {
		return Block{}, fmt.Errorf("%w: inode %d: block id/key of %d/%d bytes, want 32", ErrCorrupt, ino, len(id), len(key))
	}
	b := Block{Key: key}
	b.ID, _ = ParseBlockID(id) // 32 bytes: a valid id
	return b, nil
}

// Routes implements Flist.
func (v *V2) Routes(ctx context.Context) ([]Route, error) {
	rows, err := v.db.QueryContext(ctx, "SELECT start, end, url FROM route ORDER BY rowid")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var out []Route
	for rows.Next() {
		var start, end int64
		var u string
		if err := rows.Scan(&start, &end, &u); err != nil {
			return nil, fmt.Errorf("%w: route: %v", ErrCorrupt, err)
		}
		if start < 0 || start > 255 || end < start || end > 255 || strings.TrimSpace(u) == "" {
			return nil, fmt.Errorf("%w: route %d-%d %q", ErrCorrupt, start, end, u)
		}
		out = append(out, Route{Start: uint8(start), End: uint8(end), URL: u})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return out, nil
}

// Tags implements Flist.
func (v *V2) Tags(ctx context.Context) (map[string]string, error) {
	rows, err := v.db.QueryContext(ctx, "SELECT key, value FROM tag")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, val sql.NullString
		if err := rows.Scan(&k, &val); err != nil {
			return nil, fmt.Errorf("%w: tag: %v", ErrCorrupt, err)
		}
		out[k.String] = val.String
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return out, nil
}

// Totals implements Totaler with one aggregate query: every row is an entry of the tree,
// since OpenV2 checked that all are reachable from the root.
func (v *V2) Totals(ctx context.Context) (entries, fileBytes uint64, err error) {
	var n, size int64
	err = v.db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(CASE WHEN (mode & 61440) = 32768 THEN size ELSE 0 END), 0) FROM inode`).Scan(&n, &size)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return uint64(n), uint64(size), nil
}
