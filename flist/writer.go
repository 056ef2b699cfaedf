package flist

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
)

// v2Schema is upstream rfs's schema, statement for statement, so that rfs reads what we
// write and what it writes reads back the same.
var v2Schema = []string{
	`CREATE TABLE inode (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER,
    name VARCHAR(255),
    size INTEGER,
    uid INTEGER,
    gid INTEGER,
    mode INTEGER,
    rdev INTEGER,
    ctime INTEGER,
    mtime INTEGER
)`,
	`CREATE INDEX parents ON inode (parent)`,
	`CREATE INDEX names ON inode (name)`,
	`CREATE TABLE extra (
    ino INTEGER PRIMARY KEY,
    data VARCHAR(4096)
)`,
	`CREATE TABLE block (
    ino INTEGER,
    id VARCHAR(32),
    key VARCHAR(32)
)`,
	`CREATE INDEX block_ino ON block (ino)`,
	`CREATE TABLE tag (
    key VARCHAR(10) PRIMARY KEY,
    value VARCHAR(255)
)`,
	`CREATE TABLE route (
    start integer, -- one byte hash prefix
    end integer, -- one byte hash prefix
    url VARCHAR(2048)
)`,
}

// dirSize is the size stored for directories. rfs stores the packing host's st_size,
// which depends on the host's filesystem; a constant keeps flists reproducible.
const dirSize = 4096

// Node is one entry of a tree being written: its metadata, its blocks (files) and its
// children (directories). Ino and Parent of the embedded Entry are assigned by WriteV2.
type Node struct {
	Entry
	Blocks   []Block
	Children []*Node
}

// WriteV2 writes the tree under root as a v2 `.fl` at path. Inode numbers are assigned
// depth-first with children in byte order of their names, and every row is written in
// that order, so the same tree always gives a byte-identical file. The file appears at
// path only once complete.
func WriteV2(ctx context.Context, path string, root *Node, routes []Route, tags map[string]string) (err error) {
	if root == nil || root.Type != TypeDir {
		return fmt.Errorf("write %s: root must be a directory", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	tmp.Close()
	defer func() {
		if err != nil {
			os.Remove(tmpPath)
		}
	}()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: tmpPath}).EscapedPath())
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	defer db.Close()
	if err := writeV2(ctx, db, root, routes, tags); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	if err := syncFile(tmpPath); err != nil {
		return err
	}
	return os.Rename(tmpPath, path)
}

func writeV2(ctx context.Context, db *sql.DB, root *Node, routes []Route, tags map[string]string) error {
	for _, p := range []string{"PRAGMA page_size = 4096", "PRAGMA journal_mode = DELETE"} {
		if _, err := db.ExecContext(ctx, p); err != nil {
			return err
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, s := range v2Schema {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	insInode, err := tx.PrepareContext(ctx, `INSERT INTO inode (ino, parent, name, size, uid, gid, mode, rdev, ctime, mtime) VALUES (?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return err
	}
	insExtra, err := tx.PrepareContext(ctx, `INSERT INTO extra (ino, data) VALUES (?,?)`)
	if err != nil {
		return err
	}
	insBlock, err := tx.PrepareContext(ctx, `INSERT INTO block (ino, id, key) VALUES (?,?,?)`)
	if err != nil {
		return err
	}
	var next int64 = 1
	var write func(n *Node, parent int64, name string) error
	write = func(n *Node, parent int64, name string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ino := next
		next++
		size := int64(n.Size)
		switch n.Type {
		case TypeDir:
			size = dirSize
		case TypeSymlink:
			size = int64(len(n.Target))
		}
		mode := int64(n.Type.ModeBits() | n.Mode&ModePerm)
		if _, err := insInode.ExecContext(ctx, ino, parent, name, size, int64(n.UID), int64(n.GID),
			mode, int64(n.Rdev), n.Mtime, n.Mtime); err != nil {
			return err
		}
		if n.Type == TypeSymlink {
			if _, err := insExtra.ExecContext(ctx, ino, []byte(n.Target)); err != nil {
				return err
			}
		}
		for _, b := range n.Blocks {
			if _, err := insBlock.ExecContext(ctx, ino, b.ID.Bytes(), b.Key); err != nil {
				return err
			}
		}
		sort.Slice(n.Children, func(i, j int) bool { return n.Children[i].Name < n.Children[j].Name })
		for _, c := range n.Children {
			if err := write(c, ino, c.Name); err != nil {
				return err
			}
		}
		return nil
	}
	if err := write(root, 0, "/"); err != nil {
		return err
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tag (key, value) VALUES (?,?)`, k, tags[k]); err != nil {
			return err
		}
	}
	for _, r := range routes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO route (start, end, url) VALUES (?,?,?)`, int64(r.Start), int64(r.End), r.URL); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	// VACUUM rewrites the file compactly, leaving no trace of the order pages were filled in.
	_, err = db.ExecContext(ctx, "VACUUM")
	return err
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
