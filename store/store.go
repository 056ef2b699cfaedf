// Package store reads and writes content blocks in the block stores that flists name by
// URL, and routes block ids to them.
//
// A Store holds blocks as they are stored (compressed and encrypted), keyed by their id:
// 32 bytes for v2 flists, 16 for legacy ones. Stores are named by URL:
//
//	dir:///path                              a local directory: <root>/<hex[0:2]>/<hex> (read falls back to <root>/<hex>)
//	http://base, https://base                read-only: GET base/<hex[0:2]>/<hex>, on 404 GET base/<hex>
//	zdb://[user[:pass]@]host[:port][/ns]      0-db over the redis protocol: GET/SET/EXISTS <raw id>; default port 9900
//	s3://key:secret@host:port/bucket         S3, path-style, object name = hex id (s3s:// for TLS); ?region=R (default us-east-1)
//
// Open picks the implementation by scheme; NewDir, NewHTTP, NewZdb and NewS3 build them
// directly. A Router spreads blocks over several stores by the first byte of their id, as
// the routes of an flist say (`[xx-xx=]URL`): reads try the matching stores in random
// order, writes go to all of them.
//
// Every error names the store it comes from, never with its password (see StripPassword),
// and wraps ErrNotFound, ErrReadOnly or ErrUnsupported where those apply. Every store is
// safe for concurrent use, and bounds what it reads by MaxBlockSize.
package store

import (
	"github.com/zosfs/zosfs-agent/flist"

	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Sentinel errors; test them with errors.Is.
var (
	// ErrNotFound: the store does not hold the block.
	ErrNotFound = flist.NotFound("block not found")
	// ErrReadOnly: Put on a store that cannot be written.
	ErrReadOnly = errors.New("store is read-only")
	// ErrUnsupported: a URL with an unknown scheme, or one that cannot name a store.
	ErrUnsupported = errors.New("unsupported store URL")
)

// MaxBlockSize bounds the size of one stored block, in bytes. A plain block is at most
// 512 KiB (decoders accept up to 4 MiB); compressed and encrypted it may grow a little
// (flist.MaxBlockStored is the bound). Stores refuse to read (and to
// write) anything larger, so a hostile or broken store cannot make a reader use
// unbounded memory.
const MaxBlockSize = flist.MaxBlockStored

// Store is a block store. Implementations are safe for concurrent use.
type Store interface {
	// Get returns the block with the given id, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id flist.BlockID) ([]byte, error)
	// Has reports whether the store holds the block.
	Has(ctx context.Context, id flist.BlockID) (bool, error)
	// Put stores a block. Storing a block the store already has is not an error.
	Put(ctx context.Context, id flist.BlockID, data []byte) error
	// String returns the store's URL with any password stripped.
	String() string
	// Close releases the store's connections.
	Close() error
}

// Open returns the store named by rawURL, by its scheme (dir, http, https, zdb, s3, s3s).
// It does not connect: a store that cannot be reached fails on first use. An unknown
// scheme or a malformed URL gives an error wrapping ErrUnsupported.
func Open(ctx context.Context, rawURL string) (Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "dir":
		p, err := dirPath(u, rawURL)
		if err != nil {
			return nil, err
		}
		return NewDir(p)
	case "http", "https":
		return NewHTTP(rawURL, nil)
	case "zdb":
		cfg, err := ParseZdbURL(rawURL)
		if err != nil {
			return nil, err
		}
		return NewZdb(cfg)
	case "s3", "s3s":
		cfg, err := ParseS3URL(rawURL)
		if err != nil {
			return nil, err
		}
		return NewS3(cfg)
	}
	return nil, fmt.Errorf("%w: unknown scheme %q in %s", ErrUnsupported, u.Scheme, StripPassword(rawURL))
}

// knownScheme reports whether Open can open URLs of this (lower-case) scheme.
func knownScheme(s string) bool {
	switch s {
	case "dir", "http", "https", "zdb", "s3", "s3s":
		return true
	}
	return false
}

// parseURL parses rawURL and lower-cases its scheme; errors wrap ErrUnsupported and never
// show the password.
func parseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the URL it could not parse: do not show it.
		return nil, fmt.Errorf("%w: %s: malformed URL", ErrUnsupported, StripPassword(rawURL))
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("%w: %s: no scheme", ErrUnsupported, StripPassword(rawURL))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u, nil
}

// dirPath returns the directory a dir: URL names: dir:///abs/path or dir://rel/path.
func dirPath(u *url.URL, rawURL string) (string, error) {
	var p string
	switch {
	case u.Opaque != "": // dir:rel/path
		p = u.Opaque
	default:
		p = u.Host + u.Path
	}
	if p == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: %s: want dir:///path", ErrUnsupported, StripPassword(rawURL))
	}
	return p, nil
}

// StripPassword returns rawURL without the password (or S3 secret) of its user info:
// zdb://user:pass@h:1/ns -> zdb://user@h:1/ns, s3://key:secret@h:9000/b -> s3://key@h:9000/b,
// zdb://:pass@h -> zdb://h. The rest of the URL is kept byte for byte. Routes are written
// into flists through it.
func StripPassword(rawURL string) string {
	i := strings.Index(rawURL, "://")
	if i < 0 {
		return rawURL
	}
	start := i + 3
	end := len(rawURL)
	if j := strings.IndexAny(rawURL[start:], "/?#"); j >= 0 {
		end = start + j
	}
	authority := rawURL[start:end]
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return rawURL
	}
	userinfo, hostport := authority[:at], authority[at+1:]
	if c := strings.IndexByte(userinfo, ':'); c >= 0 {
		userinfo = userinfo[:c]
	}
	var b strings.Builder
	b.WriteString(rawURL[:start])
	if userinfo != "" {
		b.WriteString(userinfo)
		b.WriteByte('@')
	}
	b.WriteString(hostport)
	b.WriteString(rawURL[end:])
	return b.String()
}

// begin checks ctx and id before an operation on a store; the error names the store.
func begin(ctx context.Context, s fmt.Stringer, op string, id flist.BlockID) error {
	if !id.Valid() {
		return fmt.Errorf("%s: %s: no block id", s, op)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %s %x: %w", s, op, id, err)
	}
	return nil
}

// checkPut checks a block before it is written.
func checkPut(s fmt.Stringer, id flist.BlockID, data []byte) error {
	if len(data) > MaxBlockSize {
		return fmt.Errorf("%s: put %x: block of %d bytes exceeds the maximum of %d", s, id, len(data), MaxBlockSize)
	}
	return nil
}

// tooLarge is the error for a block bigger than MaxBlockSize.
func tooLarge(n int64) error {
	if n < 0 {
		return fmt.Errorf("block larger than the maximum of %d bytes", MaxBlockSize)
	}
	return fmt.Errorf("block of %d bytes exceeds the maximum of %d", n, MaxBlockSize)
}
