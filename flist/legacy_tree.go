package flist

import (
	"context"
	"database/sql"
	"fmt"
	"path"
	"slices"
	"strings"
)

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

// readLegacyDB reads the metadata table and decodes the whole tree of the database.
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
	if err := bld.build(ctx, rootKey); err != nil {
		return nil, err
	}
	return l, nil
}

// build reads the root directory (key rootKey), then every directory below it.
func (b *legacyBuilder) build(ctx context.Context, rootKey string) error {
	root, err := b.readDir(ctx, rootKey, "/")
	if err != nil {
		return err
	}
	a, err := b.store.aci(ctx, root.aclkey)
	if err != nil {
		return fmt.Errorf("root directory: %w", err)
	}
	b.l.nodes = append(b.l.nodes, legacyNode{Entry: Entry{
		Ino: RootIno, Name: "/", Type: TypeDir, Mode: ModeDir | a.mode,
		UID: a.uid, GID: a.gid, Mtime: int64(root.mtime),
	}})
	if err := b.addChildren(ctx, RootIno, root, "/", 0); err != nil {
		return err
	}
	for len(b.pending) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := b.pending[len(b.pending)-1]
		b.pending = b.pending[:len(b.pending)-1]
		d, err := b.readDir(ctx, p.key, p.path)
		if err != nil {
			return err
		}
		if err := b.addChildren(ctx, p.ino, d, p.path, p.depth); err != nil {
			return err
		}
	}
	return nil
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
		ino := uint64(len(l.nodes)) + 1
		n, err := b.newNode(ctx, in, ino, dino, p, depth)
		if err != nil {
			return err
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

// newNode makes the node of inode in (at path p, inode number ino, in directory dino at
// the given depth), checking what its kind requires; a subdirectory is pushed on the stack
// of directories to read.
func (b *legacyBuilder) newNode(ctx context.Context, in *legacyInode, ino, dino uint64, p string, depth int) (legacyNode, error) {
	a, err := b.store.aci(ctx, in.aclkey)
	if err != nil {
		return legacyNode{}, fmt.Errorf("%q: %w", p, err)
	}
	n := legacyNode{Entry: Entry{
		Ino: ino, Parent: dino, Name: in.name, Type: in.typ,
		Mode: in.typ.ModeBits() | a.mode, UID: a.uid, GID: a.gid, Mtime: int64(in.mtime),
	}}
	switch in.typ {
	case TypeDir:
		if err := checkLegacyKey("directory", in.subkey); err != nil {
			return legacyNode{}, fmt.Errorf("%q: %w", p, err)
		}
		if b.seen[in.subkey] {
			return legacyNode{}, fmt.Errorf("%w: %q: directory key %q is used twice (a cycle or a shared directory)", ErrCorrupt, p, in.subkey)
		}
		if depth+1 > maxLegacyDepth {
			return legacyNode{}, fmt.Errorf("%w: %q: directories nested more than %d deep", ErrCorrupt, p, maxLegacyDepth)
		}
		b.seen[in.subkey] = true
		b.pending = append(b.pending, legacyPending{ino: ino, key: in.subkey, path: p, depth: depth + 1})
	case TypeFile:
		nb := len(in.blocks) / (2 * legacyHashSize)
		if in.size > uint64(nb)*legacyBlockSize {
			return legacyNode{}, fmt.Errorf("%w: %q: size %d does not fit in its %d blocks", ErrCorrupt, p, in.size, nb)
		}
		n.Size = in.size
		n.NBlocks = nb
		n.blocks = in.blocks
	case TypeSymlink:
		if in.target == "" || len(in.target) > maxLegacyTarget || strings.IndexByte(in.target, 0) >= 0 {
			return legacyNode{}, fmt.Errorf("%w: %q: bad symlink target %q", ErrCorrupt, p, in.target)
		}
		n.Target = in.target
		n.Size = uint64(len(in.target))
	case TypeBlockDev, TypeCharDev:
		n.Rdev = in.rdev
	}
	return n, nil
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
		out[i] = Block{ID: legacyBlockID(b[:legacyHashSize]), Key: b[legacyHashSize : 2*legacyHashSize : 2*legacyHashSize]}
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
