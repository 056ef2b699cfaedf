package flist

// Legacy `.flist` files, as made by 0-hub, zflist and the older jumpscale tools
// (threefoldtech/0-flist, format/flist.capnp; doc/flist.md).
//
// The file is a gzip-compressed tar archive holding one SQLite database, flistdb.sqlite3,
// with two tables:
//
//	entries(key VARCHAR(64) PRIMARY KEY, value BLOB)  -- capnp messages
//	metadata(key VARCHAR(64) PRIMARY KEY, value TEXT) -- optional; e.g. "backend" (JSON)
//
// Each directory is one capnp Dir message, keyed by the hex BLAKE2b-128 of its path relative
// to the root (the root's key is the hash of ""). A Dir lists its contents as Inode structs;
// an Inode's attributes union says what it is: a subdirectory (SubDir: the key of its Dir),
// a regular file (File: its blocks, each a 16-byte id and key), a symlink (Link: its target)
// or a special file (Special: a type and, for devices, "major,minor"). Owners and permission
// bits live in ACI messages, deduplicated and keyed by 16 hex characters; Dirs and Inodes
// name theirs by aclkey.
//
// Capnp messages are decoded here by a small schema-driven reader of the wire format (no
// capnp library): every pointer, offset and length is bounds-checked, far pointers may not
// chain, the nesting depth is fixed by the schema and capped, and each message may read at
// most a few times its own size in words, so a hostile message cannot make the reader
// allocate or loop without limit. The whole tree is decoded once, at open, into memory.
//
// Choices where upstream is silent or inconsistent:
//   - uid/gid: the ACI's uid/gid integer fields when set (they default to -1); otherwise
//     the uname/gname strings: a decimal number is that id, "root" is 0, any other name
//     maps to 65534 (nobody), because no host user database is consulted.
//   - mode: the ACI mode's 12 permission bits; the type bits come from the attributes union.
//   - a subdirectory's owner, mode and mtime come from its Inode in the parent, like every
//     other entry's; the root's come from the root Dir.
//   - a file larger than its blocks can hold (len(blocks) * 512 KiB) is corrupt, and so is
//     a non-empty file without blocks (a "metadata only" flist made without a backend:
//     its content cannot be read). More blocks than the size needs are accepted; the extra
//     ones are never read.
//   - names longer than 255 bytes or targets longer than 4095 are corrupt (Linux limits), as
//     are an ACI that is missing, duplicate names in a directory, a directory referenced
//     twice (which covers cycles), a missing directory, block ids or keys not 16 bytes long,
//     a special file of type "unknown" and a device whose data is not "major,minor".
//
// The reader is split by concern: legacy_tar.go takes the database out of the archive,
// legacy_db.go reads its tables, legacy_capnp.go decodes the capnp messages, and
// legacy_tree.go builds the tree and serves it as an Flist.

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"

	_ "modernc.org/sqlite" // pure-Go SQLite driver "sqlite"
)

const (
	// maxLegacyDB bounds the size of flistdb.sqlite3 inside a legacy archive.
	maxLegacyDB = 1 << 30
	// maxLegacyArchive bounds the decompressed tar stream read while looking for the
	// database (so that a gzip bomb of other members cannot keep the reader busy).
	maxLegacyArchive = 2 * maxLegacyDB
	// maxLegacyValue bounds one capnp message (one directory or ACI).
	maxLegacyValue = 128 << 20
	// maxLegacyEntries bounds the number of entries of a legacy flist (all in memory).
	maxLegacyEntries = 1 << 22
	// maxLegacyDepth bounds the nesting of directories.
	maxLegacyDepth = 1024
	// maxLegacyName and maxLegacyTarget are Linux's NAME_MAX and PATH_MAX-1.
	maxLegacyName   = 255
	maxLegacyTarget = 4095
	// maxLegacyKey bounds a directory or ACI key (the column is VARCHAR(64)).
	maxLegacyKey = 128
	// maxLegacyTags and maxLegacyTagBytes bound the metadata table.
	maxLegacyTags     = 4096
	maxLegacyTagBytes = 1 << 20
	// legacyBlockSize is the plain size of every block of a legacy file but the last.
	legacyBlockSize = 512 << 10
	// legacyDBName is the archive member holding the database.
	legacyDBName = "flistdb.sqlite3"
	// legacyNobody is the id given to an owner named neither by number nor as root.
	legacyNobody = 65534
)

// Legacy is an open legacy `.flist`, decoded into memory at open. It is read-only and safe
// for concurrent use.
type Legacy struct {
	nodes  []legacyNode // nodes[ino-1]
	routes []Route
	tags   map[string]string
}

type legacyNode struct {
	Entry
	children []uint64 // directories: inode numbers, sorted by name
	blocks   []byte   // files: NBlocks * (16-byte id, 16-byte key)
}

var _ Flist = (*Legacy)(nil)

// OpenLegacy reads a legacy `.flist` (tar.gz holding flistdb.sqlite3) and decodes its whole
// tree. Errors wrap ErrFormat when the file is not such an archive, and ErrCorrupt when its
// content is malformed or inconsistent.
func OpenLegacy(ctx context.Context, path string) (*Legacy, error) {
	l, err := openLegacy(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

func openLegacy(ctx context.Context, archive string) (*Legacy, error) {
	tmp, err := os.CreateTemp("", "zosfs-legacy-*.sqlite3")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	err = extractLegacyDB(ctx, archive, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}

	dsn := "file:" + (&url.URL{Path: tmp.Name()}).EscapedPath() + "?mode=ro&immutable=1"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	return readLegacyDB(ctx, db)
}
