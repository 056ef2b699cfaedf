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

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

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

// extractLegacyDB copies the archive's flistdb.sqlite3 into dst.
func extractLegacyDB(ctx context.Context, archive string, dst io.Writer) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: not a gzip archive: %v", ErrFormat, err)
	}
	defer zr.Close()
	lr := &legacyLimitReader{r: zr, n: maxLegacyArchive}
	tr := tar.NewReader(lr)
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		switch {
		case err == io.EOF:
			return fmt.Errorf("%w: the archive holds no %s", ErrFormat, legacyDBName)
		case err != nil && first:
			return fmt.Errorf("%w: not a tar archive: %v", ErrFormat, err)
		case err != nil:
			return fmt.Errorf("%w: reading the archive: %v", ErrCorrupt, err)
		}
		if path.Clean(strings.TrimLeft(hdr.Name, "/")) != legacyDBName {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("%w: %s is not a regular file in the archive", ErrCorrupt, legacyDBName)
		}
		for k := range hdr.PAXRecords {
			// A sparse member would expand holes into zeros without reading input.
			if strings.HasPrefix(k, "GNU.sparse.") {
				return fmt.Errorf("%w: %s is a sparse file in the archive", ErrCorrupt, legacyDBName)
			}
		}
		if hdr.Size > maxLegacyDB {
			return fmt.Errorf("%w: %s is %d bytes, more than the limit of %d", ErrCorrupt, legacyDBName, hdr.Size, int64(maxLegacyDB))
		}
		buf := make([]byte, 1<<20)
		for left := hdr.Size; left > 0; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := io.ReadFull(tr, buf[:min(left, int64(len(buf)))])
			if err != nil {
				return fmt.Errorf("%w: reading %s: %v", ErrCorrupt, legacyDBName, err)
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
			left -= int64(n)
		}
		// Read the rest of the archive so that gzip verifies its checksum of the whole.
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			_, err := io.CopyN(io.Discard, lr, 16<<20)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: reading the archive after %s: %v", ErrCorrupt, legacyDBName, err)
			}
		}
	}
}

var errLegacyArchiveTooBig = fmt.Errorf("decompressed archive larger than %d bytes", int64(maxLegacyArchive))

// legacyLimitReader fails once more than n bytes were read.
type legacyLimitReader struct {
	r io.Reader
	n int64
}

func (l *legacyLimitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLegacyArchiveTooBig
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// legacyStore reads keyed capnp messages from the database: one indexed query per key,
// or, when the entries table has no index on key (which would make every lookup a scan of
// the table), from a map filled by a single scan.
type legacyStore struct {
	stmt *sql.Stmt
	all  map[string][]byte // nil when stmt is used
	acis map[string]legacyACI
}

const legacyValueColumns = `length(CAST(value AS BLOB)),
	CASE WHEN length(CAST(value AS BLOB)) <= ?1 THEN CAST(value AS BLOB) END`

func newLegacyStore(ctx context.Context, conn *sql.Conn) (*legacyStore, error) {
	const q = `SELECT ` + legacyValueColumns + ` FROM entries WHERE key = ?2 LIMIT 1`
	s := &legacyStore{acis: map[string]legacyACI{}}
	indexed := false
	rows, err := conn.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, maxLegacyValue, "")
	if err != nil {
		return nil, fmt.Errorf("no entries table: %w", legacySQLError(ctx, err))
	}
	for rows.Next() {
		var id, parent, unused any
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			rows.Close()
			return nil, legacySQLError(ctx, err)
		}
		indexed = indexed || strings.HasPrefix(detail, "SEARCH")
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, legacySQLError(ctx, err)
	}
	if indexed {
		if s.stmt, err = conn.PrepareContext(ctx, q); err != nil {
			return nil, legacySQLError(ctx, err)
		}
		return s, nil
	}

	rows, err = conn.QueryContext(ctx, `SELECT CAST(key AS BLOB), `+legacyValueColumns+` FROM entries`, maxLegacyValue)
	if err != nil {
		return nil, legacySQLError(ctx, err)
	}
	defer rows.Close()
	s.all = map[string][]byte{}
	for rows.Next() {
		var key []byte
		var n sql.NullInt64
		var b []byte
		if err := rows.Scan(&key, &n, &b); err != nil {
			return nil, legacySQLError(ctx, err)
		}
		if _, dup := s.all[string(key)]; dup {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrCorrupt, key)
		}
		if err := checkLegacyValue(string(key), n); err != nil {
			return nil, err
		}
		s.all[string(key)] = b
	}
	if err := rows.Err(); err != nil {
		return nil, legacySQLError(ctx, err)
	}
	return s, nil
}

func (s *legacyStore) close() {
	if s.stmt != nil {
		s.stmt.Close()
	}
}

func (s *legacyStore) value(ctx context.Context, key string) ([]byte, error) {
	if s.all != nil {
		b, ok := s.all[key]
		if !ok {
			return nil, fmt.Errorf("%w: key %q not found", ErrCorrupt, key)
		}
		return b, nil
	}
	var n sql.NullInt64
	var b []byte
	err := s.stmt.QueryRowContext(ctx, maxLegacyValue, key).Scan(&n, &b)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("%w: key %q not found", ErrCorrupt, key)
	case err != nil:
		return nil, legacySQLError(ctx, err)
	}
	if err := checkLegacyValue(key, n); err != nil {
		return nil, err
	}
	return b, nil
}

// checkLegacyValue checks the length of a value, as the query reports it.
func checkLegacyValue(key string, n sql.NullInt64) error {
	switch {
	case !n.Valid || n.Int64 == 0:
		return fmt.Errorf("%w: key %q has no value", ErrCorrupt, key)
	case n.Int64 > maxLegacyValue:
		return fmt.Errorf("%w: value of key %q is %d bytes, more than the limit of %d", ErrCorrupt, key, n.Int64, maxLegacyValue)
	}
	return nil
}

func (s *legacyStore) aci(ctx context.Context, key string) (legacyACI, error) {
	if a, ok := s.acis[key]; ok {
		return a, nil
	}
	if err := checkLegacyKey("acl", key); err != nil {
		return legacyACI{}, err
	}
	b, err := s.value(ctx, key)
	if err != nil {
		return legacyACI{}, fmt.Errorf("acl: %w", err)
	}
	a, err := decodeLegacyACI(b)
	if err != nil {
		return legacyACI{}, fmt.Errorf("acl %q: %w", key, err)
	}
	s.acis[key] = a
	return a, nil
}

func legacySQLError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

func checkLegacyKey(what, key string) error {
	if key == "" || len(key) > maxLegacyKey {
		return fmt.Errorf("%w: %s key %q", ErrCorrupt, what, key)
	}
	return nil
}

// legacyPending is a directory whose Dir message is still to be read.
type legacyPending struct {
	ino   uint64
	key   string
	path  string
	depth int
}

// legacyBuilder builds the in-memory tree: inode numbers are given in the order entries
// are appended (a directory's children get consecutive numbers, in name order), and
// directories are read depth-first, in name order.
type legacyBuilder struct {
	store   *legacyStore
	l       *Legacy
	seen    map[string]bool // directory keys already referenced
	pending []legacyPending // stack of directories to read
}

func readLegacyDB(ctx context.Context, db *sql.DB) (*Legacy, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, legacySQLError(ctx, err)
	}
	defer conn.Close()

	l := &Legacy{tags: map[string]string{}}
	if err := l.readMetadata(ctx, conn); err != nil {
		return nil, err
	}

	store, err := newLegacyStore(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer store.close()

	rootKey := legacyDirKey("")
	bld := &legacyBuilder{
		store: store,
		l:     l,
		seen:  map[string]bool{rootKey: true},
	}
	root, err := bld.readDir(ctx, rootKey, "/")
	if err != nil {
		return nil, err
	}
	a, err := bld.store.aci(ctx, root.aclkey)
	if err != nil {
		return nil, fmt.Errorf("root directory: %w", err)
	}
	l.nodes = append(l.nodes, legacyNode{Entry: Entry{
		Ino: RootIno, Name: "/", Type: TypeDir, Mode: ModeDir | a.mode,
		UID: a.uid, GID: a.gid, Mtime: int64(root.mtime),
	}})
	if err := bld.addChildren(ctx, RootIno, root, "/", 0); err != nil {
		return nil, err
	}
	for len(bld.pending) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p := bld.pending[len(bld.pending)-1]
		bld.pending = bld.pending[:len(bld.pending)-1]
		d, err := bld.readDir(ctx, p.key, p.path)
		if err != nil {
			return nil, err
		}
		if err := bld.addChildren(ctx, p.ino, d, p.path, p.depth); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (b *legacyBuilder) readDir(ctx context.Context, key, p string) (legacyDir, error) {
	v, err := b.store.value(ctx, key)
	if err != nil {
		return legacyDir{}, fmt.Errorf("directory %q: %w", p, err)
	}
	d, err := decodeLegacyDir(v)
	if err != nil {
		return legacyDir{}, fmt.Errorf("directory %q: %w", p, err)
	}
	return d, nil
}

// addChildren appends the contents of directory d (inode dino) to the tree, sorted by
// name, and pushes its subdirectories on the stack of directories to read.
func (b *legacyBuilder) addChildren(ctx context.Context, dino uint64, d legacyDir, dirPath string, depth int) error {
	l := b.l
	if len(d.contents) == 0 {
		return nil
	}
	if len(l.nodes)+len(d.contents) > maxLegacyEntries {
		return fmt.Errorf("%w: more than %d entries", ErrCorrupt, maxLegacyEntries)
	}
	slices.SortFunc(d.contents, func(x, y legacyInode) int { return strings.Compare(x.name, y.name) })
	children := make([]uint64, 0, len(d.contents))
	mark := len(b.pending)
	for i := range d.contents {
		in := &d.contents[i]
		if err := ValidName(in.name); err != nil {
			return fmt.Errorf("in directory %q: %w", dirPath, err)
		}
		p := path.Join(dirPath, in.name)
		if len(in.name) > maxLegacyName {
			return fmt.Errorf("%w: %q: name of %d bytes", ErrCorrupt, p, len(in.name))
		}
		if i > 0 && d.contents[i-1].name == in.name {
			return fmt.Errorf("%w: %q appears twice", ErrCorrupt, p)
		}
		a, err := b.store.aci(ctx, in.aclkey)
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		ino := uint64(len(l.nodes)) + 1
		n := legacyNode{Entry: Entry{
			Ino: ino, Parent: dino, Name: in.name, Type: in.typ,
			Mode: in.typ.ModeBits() | a.mode, UID: a.uid, GID: a.gid, Mtime: int64(in.mtime),
		}}
		switch in.typ {
		case TypeDir:
			if err := checkLegacyKey("directory", in.subkey); err != nil {
				return fmt.Errorf("%q: %w", p, err)
			}
			if b.seen[in.subkey] {
				return fmt.Errorf("%w: %q: directory key %q is used twice (a cycle or a shared directory)", ErrCorrupt, p, in.subkey)
			}
			if depth+1 > maxLegacyDepth {
				return fmt.Errorf("%w: %q: directories nested more than %d deep", ErrCorrupt, p, maxLegacyDepth)
			}
			b.seen[in.subkey] = true
			b.pending = append(b.pending, legacyPending{ino: ino, key: in.subkey, path: p, depth: depth + 1})
		case TypeFile:
			nb := len(in.blocks) / (2 * legacyHashSize)
			if in.size > uint64(nb)*legacyBlockSize {
				return fmt.Errorf("%w: %q: size %d does not fit in its %d blocks", ErrCorrupt, p, in.size, nb)
			}
			n.Size = in.size
			n.NBlocks = nb
			n.blocks = in.blocks
		case TypeSymlink:
			if in.target == "" || len(in.target) > maxLegacyTarget || strings.IndexByte(in.target, 0) >= 0 {
				return fmt.Errorf("%w: %q: bad symlink target %q", ErrCorrupt, p, in.target)
			}
			n.Target = in.target
			n.Size = uint64(len(in.target))
		case TypeBlockDev, TypeCharDev:
			n.Rdev = in.rdev
		}
		l.nodes = append(l.nodes, n)
		children = append(children, ino)
	}
	l.nodes[dino-1].children = children
	// The stack pops the last first: reverse this directory's subdirectories so that
	// they are read in name order.
	slices.Reverse(b.pending[mark:])
	return nil
}

// readMetadata reads the optional metadata table into tags and routes.
func (l *Legacy) readMetadata(ctx context.Context, conn *sql.Conn) error {
	var n int
	err := conn.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'metadata'`).Scan(&n)
	if err != nil {
		return fmt.Errorf("not a database: %w", legacySQLError(ctx, err))
	}
	if n == 0 {
		return nil
	}
	rows, err := conn.QueryContext(ctx, `SELECT CAST(key AS BLOB), CAST(value AS BLOB) FROM metadata`)
	if err != nil {
		return fmt.Errorf("metadata: %w", legacySQLError(ctx, err))
	}
	defer rows.Close()
	total := 0
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return fmt.Errorf("metadata: %w", legacySQLError(ctx, err))
		}
		total += len(k) + len(v)
		if len(l.tags) >= maxLegacyTags || total > maxLegacyTagBytes {
			return fmt.Errorf("%w: metadata larger than %d entries or %d bytes", ErrCorrupt, maxLegacyTags, maxLegacyTagBytes)
		}
		if _, dup := l.tags[string(k)]; dup {
			return fmt.Errorf("%w: metadata key %q appears twice", ErrCorrupt, k)
		}
		l.tags[string(k)] = string(v)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("metadata: %w", legacySQLError(ctx, err))
	}
	if backend, ok := l.tags["backend"]; ok {
		r, err := legacyBackendRoute(backend)
		if err != nil {
			return err
		}
		l.routes = []Route{r}
	}
	return nil
}

// legacyBackendRoute turns the metadata "backend" value, a JSON object naming a 0-db
// (host, port, namespace, password), into a route for every block.
func legacyBackendRoute(s string) (Route, error) {
	var b struct {
		Host      string      `json:"host"`
		Port      json.Number `json:"port"`
		Namespace string      `json:"namespace"`
		Password  string      `json:"password"`
	}
	if err := json.Unmarshal([]byte(s), &b); err != nil {
		return Route{}, fmt.Errorf("%w: metadata backend %q: %v", ErrCorrupt, s, err)
	}
	bad := func(what string) error {
		return fmt.Errorf("%w: metadata backend %q: bad %s", ErrCorrupt, s, what)
	}
	if b.Host == "" || len(b.Host) > 253 || strings.ContainsFunc(b.Host, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_:", r))
	}) {
		return Route{}, bad("host")
	}
	host := b.Host
	if b.Port != "" {
		port, err := strconv.ParseUint(b.Port.String(), 10, 16)
		if err != nil {
			return Route{}, bad("port")
		}
		if port != 0 {
			host = net.JoinHostPort(b.Host, strconv.FormatUint(port, 10))
		}
	}
	if host == b.Host && strings.Contains(b.Host, ":") {
		host = "[" + b.Host + "]"
	}
	if len(b.Namespace) > maxLegacyName || strings.ContainsFunc(b.Namespace, func(r rune) bool {
		return r == '/' || r < 0x20 || r == 0x7f
	}) {
		return Route{}, bad("namespace")
	}
	u := url.URL{Scheme: "zdb", Host: host}
	if b.Namespace != "" {
		u.Path = "/" + b.Namespace
	}
	if b.Password != "" {
		u.User = url.UserPassword("", b.Password)
	}
	return Route{Start: 0, End: 0xff, URL: u.String()}, nil
}

// legacyDirKey is the entries key of the directory at relative path p ("" for the root).
func legacyDirKey(p string) string {
	return fmt.Sprintf("%x", blake2b128([]byte(p)))
}

// Format reports FormatLegacy.
func (l *Legacy) Format() Format { return FormatLegacy }

func (l *Legacy) node(ino uint64) (*legacyNode, error) {
	if ino == 0 || ino > uint64(len(l.nodes)) {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
	}
	return &l.nodes[ino-1], nil
}

// Get returns the entry with inode number ino.
func (l *Legacy) Get(ctx context.Context, ino uint64) (Entry, error) {
	n, err := l.node(ino)
	if err != nil {
		return Entry{}, err
	}
	return n.Entry, nil
}

// Lookup returns the child called name of directory parent.
func (l *Legacy) Lookup(ctx context.Context, parent uint64, name string) (Entry, error) {
	n, err := l.node(parent)
	if err != nil {
		return Entry{}, err
	}
	if n.Type != TypeDir {
		return Entry{}, fmt.Errorf("inode %d: %w", parent, ErrNotDir)
	}
	i, ok := slices.BinarySearchFunc(n.children, name, func(ino uint64, name string) int {
		return strings.Compare(l.nodes[ino-1].Name, name)
	})
	if !ok {
		return Entry{}, fmt.Errorf("%q: %w", name, ErrNotFound)
	}
	return l.nodes[n.children[i]-1].Entry, nil
}

// ReadDir returns the children of directory ino, sorted by name in byte order.
func (l *Legacy) ReadDir(ctx context.Context, ino uint64) ([]Entry, error) {
	n, err := l.node(ino)
	if err != nil {
		return nil, err
	}
	if n.Type != TypeDir {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	out := make([]Entry, len(n.children))
	for i, c := range n.children {
		out[i] = l.nodes[c-1].Entry
	}
	return out, nil
}

// Blocks returns the content blocks of file ino, in file order (none for other entries).
func (l *Legacy) Blocks(ctx context.Context, ino uint64) ([]Block, error) {
	n, err := l.node(ino)
	if err != nil {
		return nil, err
	}
	if n.NBlocks == 0 {
		return nil, nil
	}
	buf := slices.Clone(n.blocks)
	out := make([]Block, n.NBlocks)
	for i := range out {
		b := buf[2*legacyHashSize*i:]
		out[i] = Block{ID: b[:legacyHashSize:legacyHashSize], Key: b[legacyHashSize : 2*legacyHashSize : 2*legacyHashSize]}
	}
	return out, nil
}

// Routes returns the 0-db named by the flist's metadata "backend", if any.
func (l *Legacy) Routes(ctx context.Context) ([]Route, error) {
	return slices.Clone(l.routes), nil
}

// Tags returns the flist's metadata table.
func (l *Legacy) Tags(ctx context.Context) (map[string]string, error) {
	out := make(map[string]string, len(l.tags))
	for k, v := range l.tags {
		out[k] = v
	}
	return out, nil
}

// Close releases nothing: everything was read at open.
func (l *Legacy) Close() error { return nil }

// Decoded capnp messages of the 0-flist schema (format/flist.capnp). Field positions, as
// laid out by the capnp compiler (and used by upstream's generated flist.capnp.c):
//
//	Dir       data 2 words, 5 pointers: name p0, location p1, contents p2 (List(Inode)),
//	          parent p3, aclkey p4; size u64 @0, modificationTime u32 @8, creationTime u32 @12
//	Inode     data 3 words, 3 pointers: name p0, attributes p1, aclkey p2; size u64 @0,
//	          attributes discriminant u16 @8 (0 dir, 1 file, 2 link, 3 special),
//	          modificationTime u32 @12, creationTime u32 @16
//	SubDir    key p0 (Text)
//	File      blockSize u16 @0, blocks p0 (List(FileBlock))
//	FileBlock hash p0, key p1 (Data)
//	Link      target p0 (Text)
//	Special   type u16 @0 (0 socket, 1 block, 2 chardev, 3 fifopipe, 4 unknown), data p0
//	ACI       uname p0, gname p1, rights p2; mode u16 @0, id u32 @4,
//	          uid i64 @8 and gid i64 @16, both stored XOR their default -1

type legacyDir struct {
	aclkey   string
	mtime    uint32
	contents []legacyInode
}

type legacyInode struct {
	name   string
	typ    Type
	size   uint64
	aclkey string
	mtime  uint32
	subkey string // directories
	target string // symlinks
	rdev   uint64 // devices
	blocks []byte // files: (16-byte id, 16-byte key) pairs
}

type legacyACI struct {
	uid, gid uint32
	mode     uint32 // permission bits only
}

func decodeLegacyDir(b []byte) (legacyDir, error) {
	m, err := newCapMsg(b)
	if err != nil {
		return legacyDir{}, err
	}
	root, err := m.root()
	if err != nil {
		return legacyDir{}, err
	}
	var d legacyDir
	if d.aclkey, err = root.text(4); err != nil {
		return legacyDir{}, err
	}
	d.mtime = root.u32(8)
	list, err := root.list(2)
	if err != nil {
		return legacyDir{}, err
	}
	if list.n > maxLegacyEntries {
		return legacyDir{}, fmt.Errorf("%w: directory of %d entries", ErrCorrupt, list.n)
	}
	d.contents = make([]legacyInode, 0, min(list.n, 1<<12))
	for i := range list.n {
		s, err := list.elem(i)
		if err != nil {
			return legacyDir{}, err
		}
		in, err := decodeLegacyInode(s)
		if err != nil {
			return legacyDir{}, err
		}
		d.contents = append(d.contents, in)
	}
	return d, nil
}

func decodeLegacyInode(s capStruct) (legacyInode, error) {
	var in legacyInode
	var err error
	if in.name, err = s.text(0); err != nil {
		return in, err
	}
	if err := ValidName(in.name); err != nil {
		return in, err
	}
	if len(in.name) > maxLegacyName {
		return in, fmt.Errorf("%w: name of %d bytes", ErrCorrupt, len(in.name))
	}
	if in.aclkey, err = s.text(2); err != nil {
		return in, err
	}
	in.size = s.u64(0)
	in.mtime = s.u32(12)
	attr, err := s.ptrStruct(1)
	if err != nil {
		return in, err
	}
	switch which := s.u16(8); which {
	case 0:
		in.typ = TypeDir
		in.size = 0
		if in.subkey, err = attr.text(0); err != nil {
			return in, err
		}
	case 1:
		in.typ = TypeFile
		list, err := attr.list(0)
		if err != nil {
			return in, err
		}
		in.blocks = make([]byte, 0, min(list.n, 1<<12)*2*legacyHashSize)
		for i := range list.n {
			fb, err := list.elem(i)
			if err != nil {
				return in, err
			}
			id, err := fb.bytes(0)
			if err != nil {
				return in, err
			}
			key, err := fb.bytes(1)
			if err != nil {
				return in, err
			}
			if len(id) != legacyHashSize || len(key) != legacyHashSize {
				return in, fmt.Errorf("%w: %q: block %d has an id of %d bytes and a key of %d, want %d",
					ErrCorrupt, in.name, i, len(id), len(key), legacyHashSize)
			}
			in.blocks = append(append(in.blocks, id...), key...)
		}
	case 2:
		in.typ = TypeSymlink
		if in.target, err = attr.text(0); err != nil {
			return in, err
		}
	case 3:
		data, err := attr.bytes(0)
		if err != nil {
			return in, err
		}
		in.size = 0
		switch t := attr.u16(0); t {
		case 0:
			in.typ = TypeSocket
		case 3:
			in.typ = TypeFifo
		case 1, 2:
			in.typ = TypeBlockDev
			if t == 2 {
				in.typ = TypeCharDev
			}
			ma, mi, ok := strings.Cut(strings.TrimRight(string(data), "\x00"), ",")
			major, err1 := strconv.ParseUint(ma, 10, 32)
			minor, err2 := strconv.ParseUint(mi, 10, 32)
			if !ok || err1 != nil || err2 != nil {
				return in, fmt.Errorf("%w: %q: device number %q is not major,minor", ErrCorrupt, in.name, data)
			}
			in.rdev = Mkdev(uint32(major), uint32(minor))
		default:
			return in, fmt.Errorf("%w: %q: special file of unknown type %d", ErrCorrupt, in.name, t)
		}
	default:
		return in, fmt.Errorf("%w: %q: unknown inode kind %d", ErrCorrupt, in.name, which)
	}
	return in, nil
}

func decodeLegacyACI(b []byte) (legacyACI, error) {
	m, err := newCapMsg(b)
	if err != nil {
		return legacyACI{}, err
	}
	root, err := m.root()
	if err != nil {
		return legacyACI{}, err
	}
	uname, err := root.text(0)
	if err != nil {
		return legacyACI{}, err
	}
	gname, err := root.text(1)
	if err != nil {
		return legacyACI{}, err
	}
	a := legacyACI{mode: uint32(root.u16(0)) & ModePerm}
	if a.uid, err = legacyOwner(int64(^root.u64(8)), uname); err != nil {
		return legacyACI{}, fmt.Errorf("uid: %w", err)
	}
	if a.gid, err = legacyOwner(int64(^root.u64(16)), gname); err != nil {
		return legacyACI{}, fmt.Errorf("gid: %w", err)
	}
	return a, nil
}

// legacyOwner is the numeric owner of an ACI: its id field when set (not -1), else its
// name: a decimal number, "root" for 0, or nobody.
func legacyOwner(id int64, name string) (uint32, error) {
	switch {
	case id >= 0 && id <= 1<<32-1:
		return uint32(id), nil
	case id != -1:
		return 0, fmt.Errorf("%w: id %d out of range", ErrCorrupt, id)
	case name == "root":
		return 0, nil
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	return legacyNobody, nil
}

// A minimal reader of the capnp wire format (unpacked, with the segment table), enough
// for the schema above. See https://capnproto.org/encoding.html.

const (
	maxCapSegments = 512
	maxCapDepth    = 16
	// capTraversalFactor: a message may read this many times its own size in words (plus
	// a little), which a well-formed message that shares nothing never needs.
	capTraversalFactor = 4
)

type capMsg struct {
	segs   [][]byte
	budget int // words that may still be read
}

type capStruct struct {
	m     *capMsg
	seg   int
	data  []byte // data section
	ptr   int    // word index of the first pointer in seg
	nptr  int
	depth int
}

type capList struct {
	m      *capMsg
	seg    int
	start  int // word index of the first element (after the tag of a composite list)
	n      int
	esz    int // element size code: 0 void, 1 bit, 2..5 1..8 bytes, 6 pointer, 7 composite
	dw, pc int // composite lists: data words and pointers per element
	depth  int
}

func capErr(format string, args ...any) error {
	return fmt.Errorf("%w: capnp: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

func newCapMsg(b []byte) (*capMsg, error) {
	if len(b) < 8 {
		return nil, capErr("message of %d bytes", len(b))
	}
	nseg := uint64(binary.LittleEndian.Uint32(b)) + 1
	if nseg > maxCapSegments {
		return nil, capErr("%d segments", nseg)
	}
	hdr := (4 + 4*int(nseg) + 7) &^ 7
	if len(b) < hdr {
		return nil, capErr("truncated segment table")
	}
	m := &capMsg{segs: make([][]byte, nseg)}
	off := hdr
	for i := range m.segs {
		w := uint64(binary.LittleEndian.Uint32(b[4+4*i:]))
		if w > uint64(len(b)-off)/8 {
			return nil, capErr("truncated: segment %d of %d words", i, w)
		}
		m.segs[i] = b[off : off+int(w)*8]
		off += int(w) * 8
	}
	if off != len(b) {
		return nil, capErr("%d bytes after the last segment", len(b)-off)
	}
	if len(m.segs[0]) < 8 {
		return nil, capErr("no root pointer")
	}
	m.budget = capTraversalFactor*(len(b)-hdr)/8 + 64
	return m, nil
}

func (m *capMsg) word(seg, i int) uint64 {
	return binary.LittleEndian.Uint64(m.segs[seg][8*i:])
}

func (m *capMsg) nwords(seg int) int { return len(m.segs[seg]) / 8 }

func (m *capMsg) charge(words uint64) error {
	if words == 0 {
		words = 1
	}
	if words > uint64(m.budget) {
		m.budget = 0
		return capErr("message reads more than its traversal limit")
	}
	m.budget -= int(words)
	return nil
}

// deref follows the pointer at word w of segment seg, through a far pointer if there is
// one. It returns the pointer word that describes the object and where the object starts;
// ok is false for a null pointer. The start is not bounds-checked yet.
func (m *capMsg) deref(seg, w int) (tag uint64, oseg, start int, ok bool, err error) {
	p := m.word(seg, w)
	if p == 0 {
		return 0, 0, 0, false, nil
	}
	switch p & 3 {
	case 0, 1:
		return p, seg, w + 1 + int(int32(uint32(p))>>2), true, nil
	case 2:
		if p>>32 >= uint64(len(m.segs)) {
			return 0, 0, 0, false, capErr("far pointer to segment %d", p>>32)
		}
		pseg, pad := int(p>>32), int(uint32(p)>>3)
		if p&4 == 0 {
			if pad >= m.nwords(pseg) {
				return 0, 0, 0, false, capErr("far pointer out of bounds")
			}
			q := m.word(pseg, pad)
			if q&3 >= 2 || q == 0 {
				return 0, 0, 0, false, capErr("far pointer lands on a far, capability or null pointer")
			}
			return q, pseg, pad + 1 + int(int32(uint32(q))>>2), true, nil
		}
		if pad+1 >= m.nwords(pseg) {
			return 0, 0, 0, false, capErr("double-far pointer out of bounds")
		}
		far, t := m.word(pseg, pad), m.word(pseg, pad+1)
		if far&7 != 2 || t&3 >= 2 {
			return 0, 0, 0, false, capErr("malformed double-far landing pad")
		}
		if far>>32 >= uint64(len(m.segs)) {
			return 0, 0, 0, false, capErr("far pointer to segment %d", far>>32)
		}
		return t, int(far >> 32), int(uint32(far) >> 3), true, nil
	}
	return 0, 0, 0, false, capErr("capability pointer")
}

func (m *capMsg) root() (capStruct, error) {
	s, ok, err := m.structAt(0, 0, 0)
	if err == nil && !ok {
		err = capErr("null root")
	}
	return s, err
}

// structAt reads the struct pointer at word w of segment seg. A null pointer gives a
// struct whose fields all read as their defaults.
func (m *capMsg) structAt(seg, w, depth int) (capStruct, bool, error) {
	if depth > maxCapDepth {
		return capStruct{}, false, capErr("nested more than %d deep", maxCapDepth)
	}
	tag, oseg, start, ok, err := m.deref(seg, w)
	if err != nil || !ok {
		return capStruct{}, false, err
	}
	if tag&3 != 0 {
		return capStruct{}, false, capErr("list where a struct was expected")
	}
	dw, pc := int(tag>>32&0xffff), int(tag>>48)
	if start < 0 || start+dw+pc > m.nwords(oseg) {
		return capStruct{}, false, capErr("struct out of bounds")
	}
	if err := m.charge(uint64(dw + pc)); err != nil {
		return capStruct{}, false, err
	}
	return capStruct{m: m, seg: oseg, data: m.segs[oseg][8*start : 8*(start+dw)], ptr: start + dw, nptr: pc, depth: depth}, true, nil
}

// listAt reads the list pointer at word w of segment seg; a null pointer is an empty list.
func (m *capMsg) listAt(seg, w, depth int) (capList, error) {
	if depth > maxCapDepth {
		return capList{}, capErr("nested more than %d deep", maxCapDepth)
	}
	tag, oseg, start, ok, err := m.deref(seg, w)
	if err != nil || !ok {
		return capList{}, err
	}
	if tag&3 != 1 {
		return capList{}, capErr("struct where a list was expected")
	}
	if start < 0 {
		return capList{}, capErr("list out of bounds")
	}
	l := capList{m: m, seg: oseg, esz: int(tag >> 32 & 7), depth: depth}
	count := tag >> 35
	if l.esz == 7 {
		// count is the number of words of the elements, after a tag word that has the
		// shape of a struct pointer whose offset is the number of elements.
		if uint64(start)+1+count > uint64(m.nwords(oseg)) {
			return capList{}, capErr("list out of bounds")
		}
		t := m.word(oseg, start)
		if t&3 != 0 {
			return capList{}, capErr("malformed composite list tag")
		}
		n := int32(uint32(t)) >> 2
		if n < 0 {
			return capList{}, capErr("composite list of %d elements", n)
		}
		l.n, l.dw, l.pc, l.start = int(n), int(t>>32&0xffff), int(t>>48), start+1
		if uint64(l.n)*uint64(l.dw+l.pc) > count {
			return capList{}, capErr("composite list elements overflow the list")
		}
		// Zero-sized elements cost a word each, so a tiny message cannot describe a huge list.
		return l, m.charge(max(count, uint64(l.n)) + 1)
	}
	bits := [...]uint64{0, 1, 8, 16, 32, 64, 64}[l.esz]
	words := (count*bits + 63) / 64
	if uint64(start)+words > uint64(m.nwords(oseg)) {
		return capList{}, capErr("list out of bounds")
	}
	l.n, l.start = int(count), start
	if l.esz == 0 {
		words = count
	}
	return l, m.charge(words)
}

// elem returns element i (< l.n) of a list of structs.
func (l capList) elem(i int) (capStruct, error) {
	switch l.esz {
	case 7:
		base := l.start + i*(l.dw+l.pc)
		return capStruct{m: l.m, seg: l.seg, data: l.m.segs[l.seg][8*base : 8*(base+l.dw)],
			ptr: base + l.dw, nptr: l.pc, depth: l.depth}, nil
	case 0:
		return capStruct{m: l.m, depth: l.depth}, nil
	case 2, 3, 4, 5:
		size := 1 << (l.esz - 2)
		off := 8*l.start + i*size
		return capStruct{m: l.m, seg: l.seg, data: l.m.segs[l.seg][off : off+size], depth: l.depth}, nil
	case 6:
		return capStruct{m: l.m, seg: l.seg, ptr: l.start + i, nptr: 1, depth: l.depth}, nil
	}
	return capStruct{}, capErr("list of bits where a list of structs was expected")
}

func (s capStruct) u16(off int) uint16 {
	if off+2 > len(s.data) {
		return 0
	}
	return binary.LittleEndian.Uint16(s.data[off:])
}

func (s capStruct) u32(off int) uint32 {
	if off+4 > len(s.data) {
		return 0
	}
	return binary.LittleEndian.Uint32(s.data[off:])
}

func (s capStruct) u64(off int) uint64 {
	if off+8 > len(s.data) {
		return 0
	}
	return binary.LittleEndian.Uint64(s.data[off:])
}

func (s capStruct) ptrStruct(i int) (capStruct, error) {
	if i >= s.nptr {
		return capStruct{m: s.m, depth: s.depth + 1}, nil
	}
	p, _, err := s.m.structAt(s.seg, s.ptr+i, s.depth+1)
	return p, err
}

func (s capStruct) list(i int) (capList, error) {
	if i >= s.nptr {
		return capList{}, nil
	}
	return s.m.listAt(s.seg, s.ptr+i, s.depth+1)
}

// bytes returns pointer i as Data (a list of bytes), sharing the message's memory.
func (s capStruct) bytes(i int) ([]byte, error) {
	l, err := s.list(i)
	if err != nil || l.n == 0 {
		return nil, err
	}
	if l.esz != 2 {
		return nil, capErr("list of size code %d where bytes were expected", l.esz)
	}
	off := 8 * l.start
	return l.m.segs[l.seg][off : off+l.n], nil
}

// text returns pointer i as Text, without its NUL terminator.
func (s capStruct) text(i int) (string, error) {
	b, err := s.bytes(i)
	if len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return string(b), err
}
