// Package flist reads and writes flists — the metadata databases that describe a whole
// filesystem image whose file contents live as encrypted, content-addressed blocks in a
// store — and implements the block codecs and the names (CIDs) of flists and blocks.
//
// Two formats are read into one model: v2 `.fl` (SQLite, as written by upstream rfs) and
// legacy `.flist` (tar.gz holding a SQLite database of capnp messages). Only v2 is written.
// The package imports nothing else of this project.
package flist

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Errors returned by readers. Callers test them with errors.Is.
var (
	// ErrNotFound: no entry with that inode number or name. It is also the one
	// not-found of the project: every package's own (a block no store, hub, cache or
	// peer has) is made with NotFound and matches it, so errors.Is(err, ErrNotFound)
	// asks them all.
	ErrNotFound = errors.New("not found")
	// ErrNotDir: a directory operation on an entry that is not a directory.
	ErrNotDir = errors.New("not a directory")
	// ErrCorrupt: the flist's bytes are malformed or inconsistent (a hostile or damaged file).
	ErrCorrupt = errors.New("corrupt flist")
	// ErrFormat: the file is not an flist of any known format.
	ErrFormat = errors.New("not an flist")
)

// NotFound returns a not-found error of its own (its own message, and errors.Is matches
// it as a sentinel) that also matches ErrNotFound.
func NotFound(msg string) error { return notFound(msg) }

type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == ErrNotFound }

// Format names an flist file format.
type Format string

const (
	FormatV2     Format = "fl"    // SQLite, upstream rfs
	FormatLegacy Format = "flist" // tar.gz + flistdb.sqlite3 + capnp
)

// Type is the kind of a filesystem entry.
type Type uint8

const (
	TypeDir Type = iota + 1
	TypeFile
	TypeSymlink
	TypeBlockDev
	TypeCharDev
	TypeFifo
	TypeSocket
)

// Letter is the one-letter code used in manifests: d f l b c p s.
func (t Type) Letter() byte {
	switch t {
	case TypeDir:
		return 'd'
	case TypeFile:
		return 'f'
	case TypeSymlink:
		return 'l'
	case TypeBlockDev:
		return 'b'
	case TypeCharDev:
		return 'c'
	case TypeFifo:
		return 'p'
	case TypeSocket:
		return 's'
	}
	return '?'
}

// st_mode file type bits (Linux values, independent of the build platform).
const (
	ModeTypeMask = 0o170000
	ModeSocket   = 0o140000
	ModeSymlink  = 0o120000
	ModeFile     = 0o100000
	ModeBlockDev = 0o060000
	ModeDir      = 0o040000
	ModeCharDev  = 0o020000
	ModeFifo     = 0o010000
	ModePerm     = 0o7777 // permission bits including setuid, setgid, sticky
)

// TypeOfMode returns the entry type encoded in a full st_mode, or 0 if it names none.
func TypeOfMode(mode uint32) Type {
	switch mode & ModeTypeMask {
	case ModeDir:
		return TypeDir
	case ModeFile:
		return TypeFile
	case ModeSymlink:
		return TypeSymlink
	case ModeBlockDev:
		return TypeBlockDev
	case ModeCharDev:
		return TypeCharDev
	case ModeFifo:
		return TypeFifo
	case ModeSocket:
		return TypeSocket
	}
	return 0
}

// ModeBits returns the st_mode file type bits for t.
func (t Type) ModeBits() uint32 {
	switch t {
	case TypeDir:
		return ModeDir
	case TypeFile:
		return ModeFile
	case TypeSymlink:
		return ModeSymlink
	case TypeBlockDev:
		return ModeBlockDev
	case TypeCharDev:
		return ModeCharDev
	case TypeFifo:
		return ModeFifo
	case TypeSocket:
		return ModeSocket
	}
	return 0
}

// RootIno is the inode number of the root directory in every flist.
const RootIno uint64 = 1

// Entry is one filesystem entry of an flist, in the model shared by both formats.
type Entry struct {
	Ino    uint64 // unique within the flist; RootIno for "/"
	Parent uint64 // 0 for the root
	Name   string // base name; "/" for the root
	Type   Type
	Mode   uint32 // full st_mode: type bits | all 12 permission bits
	UID    uint32
	GID    uint32
	Size   uint64 // bytes of content for files; 0 for directories; target length for symlinks
	Mtime  int64  // seconds since the epoch
	Rdev   uint64 // device number (Linux encoding) for block and char devices
	Target string // symlink target
	// NBlocks is the number of content blocks of a file. Readers fill it whenever it is
	// cheap to know; Blocks gives the blocks themselves.
	NBlocks int
}

// Perm returns the 12 permission bits (mode & 07777).
func (e *Entry) Perm() uint32 { return e.Mode & ModePerm }

// Major and Minor decode Rdev with the Linux (glibc) encoding.
func (e *Entry) Major() uint32 { return uint32((e.Rdev>>8)&0xfff) | uint32((e.Rdev>>32)&^0xfff) }
func (e *Entry) Minor() uint32 { return uint32(e.Rdev&0xff) | uint32((e.Rdev>>12)&^0xff) }

// Mkdev encodes a device number with the Linux (glibc) encoding.
func Mkdev(major, minor uint32) uint64 {
	ma, mi := uint64(major), uint64(minor)
	return (ma&0xfff)<<8 | (ma&^0xfff)<<32 | (mi & 0xff) | (mi&^0xff)<<12
}

// Block is one content block of a file: its id (hash of the stored, encrypted bytes) and
// the key that decrypts it (hash of the plain bytes). 32 bytes each for v2, 16 for legacy.
type Block struct {
	ID  BlockID
	Key []byte
}

// Route maps a range of block ids (by first byte, inclusive) to a store URL.
type Route struct {
	Start, End uint8
	URL        string
}

// Flist is an open flist of either format. Navigation is by inode number, as a FUSE
// filesystem needs it. Implementations are safe for concurrent use.
type Flist interface {
	Format() Format
	// Get returns the entry with inode number ino.
	Get(ctx context.Context, ino uint64) (Entry, error)
	// Lookup returns the child called name of directory parent.
	Lookup(ctx context.Context, parent uint64, name string) (Entry, error)
	// ReadDir returns the children of directory ino, sorted by name in byte order.
	ReadDir(ctx context.Context, ino uint64) ([]Entry, error)
	// Blocks returns the content blocks of file ino, in file order.
	Blocks(ctx context.Context, ino uint64) ([]Block, error)
	// Routes returns the stores the flist names for its blocks.
	Routes(ctx context.Context) ([]Route, error)
	// Tags returns the flist's key/value tags.
	Tags(ctx context.Context) (map[string]string, error)
	Close() error
}

// Totaler is implemented by flists that can count their entries and the bytes of their
// files without a walk (a mount's statfs wants both).
type Totaler interface {
	Totals(ctx context.Context) (entries, fileBytes uint64, err error)
}

// ValidName reports an error if name cannot be a single path component: empty, ".", "..",
// or containing '/' or NUL. Such names in an flist would let a mount escape its tree.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrCorrupt)
	case name == "." || name == "..":
		return fmt.Errorf("%w: name %q", ErrCorrupt, name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q contains '/' or NUL", ErrCorrupt, name)
	}
	return nil
}
