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
	root, err := v.Get(ctx, RootIno)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if root.Type != TypeDir || root.Parent != 0 {
		return fmt.Errorf("%w: root is not a directory with parent 0", ErrCorrupt)
	}
	// Every row must be valid and reachable from the root through directories: one pass
	// now gives a clear error up front instead of a surprise in the middle of a mount.
	rows, err := v.db.QueryContext(ctx, entryColumns)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var total int64
	for rows.Next() {
		if _, err := scanEntry(rows); err != nil {
			return err
		}
		total++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var reachable int64
	if err := v.db.QueryRowContext(ctx, reachableQuery).Scan(&reachable); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if reachable != total {
		return fmt.Errorf("%w: %d of %d entries are not reachable from the root (a parent-link cycle, a missing parent or a parent that is not a directory)",
			ErrCorrupt, total-reachable, total)
	}
	return nil
}

// reachableQuery counts the entries reachable from the root through directories. UNION
// (not UNION ALL) makes it terminate on cycles.
const reachableQuery = `WITH RECURSIVE t(ino) AS (
	SELECT 1
	UNION
	SELECT i.ino FROM t JOIN inode d ON d.ino = t.ino JOIN inode i ON i.parent = t.ino
	WHERE i.ino <> 1 AND (d.mode & 61440) = 16384
) SELECT count(*) FROM t`

// Format implements Flist.
func (v *V2) Format() Format { return FormatV2 }

// Close implements Flist.
func (v *V2) Close() error {
	for _, st := range []*sql.Stmt{v.getStmt, v.lookupStmt, v.readDirStmt, v.blocksStmt} {
		if st != nil {
			st.Close()
		}
	}
	return v.db.Close()
}

// entryColumns selects one inode with its symlink target and its block count.
const entryColumns = `SELECT i.ino, i.parent, i.name, i.size, i.uid, i.gid, i.mode, i.rdev, i.mtime,
	e.data, (SELECT count(*) FROM block b WHERE b.ino = i.ino)
	FROM inode i LEFT JOIN extra e ON e.ino = i.ino `

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
	e, err := scanEntry(v.getStmt.QueryRowContext(ctx, int64(ino)))
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
	rows, err := v.readDirStmt.QueryContext(ctx, int64(ino))
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
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, fmt.Errorf("%w: directory inode %d has two entries named %q", ErrCorrupt, ino, out[i].Name)
		}
	}
	return out, nil
}

// Blocks implements Flist.
func (v *V2) Blocks(ctx context.Context, ino uint64) ([]Block, error) {
	if ino > math.MaxInt64 {
		return nil, ErrNotFound
	}
	rows, err := v.blocksStmt.QueryContext(ctx, int64(ino))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var out []Block
	for rows.Next() {
		var b Block
		if err := rows.Scan(&b.ID, &b.Key); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if len(b.ID) != 32 || len(b.Key) != 32 {
			return nil, fmt.Errorf("%w: inode %d: block id/key of %d/%d bytes, want 32", ErrCorrupt, ino, len(b.ID), len(b.Key))
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return out, nil
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
