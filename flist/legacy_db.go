package flist

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

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
	indexed, err := legacyEntriesIndexed(ctx, conn, q)
	if err != nil {
		return nil, err
	}
	if indexed {
		if s.stmt, err = conn.PrepareContext(ctx, q); err != nil {
			return nil, legacySQLError(ctx, err)
		}
		return s, nil
	}
	if err := s.loadAll(ctx, conn); err != nil {
		return nil, err
	}
	return s, nil
}

// legacyEntriesIndexed reports whether SQLite plans q, the lookup of one key of the entries
// table, as a search of an index rather than a scan of the table.
func legacyEntriesIndexed(ctx context.Context, conn *sql.Conn, q string) (bool, error) {
	indexed := false
	rows, err := conn.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, maxLegacyValue, "")
	if err != nil {
		return false, fmt.Errorf("no entries table: %w", legacySQLError(ctx, err))
	}
	for rows.Next() {
		var id, parent, unused any
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			rows.Close()
			return false, legacySQLError(ctx, err)
		}
		indexed = indexed || strings.HasPrefix(detail, "SEARCH")
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, legacySQLError(ctx, err)
	}
	return indexed, nil
}

// loadAll fills s.all with every entry, in one scan of the table.
func (s *legacyStore) loadAll(ctx context.Context, conn *sql.Conn) error {
	rows, err := conn.QueryContext(ctx, `SELECT CAST(key AS BLOB), `+legacyValueColumns+` FROM entries`, maxLegacyValue)
	if err != nil {
		return legacySQLError(ctx, err)
	}
	defer rows.Close()
	s.all = map[string][]byte{}
	for rows.Next() {
		var key []byte
		var n sql.NullInt64
		var b []byte
		if err := rows.Scan(&key, &n, &b); err != nil {
			return legacySQLError(ctx, err)
		}
		if _, dup := s.all[string(key)]; dup {
			return fmt.Errorf("%w: key %q appears twice", ErrCorrupt, key)
		}
		if err := checkLegacyValue(string(key), n); err != nil {
			return err
		}
		s.all[string(key)] = b
	}
	if err := rows.Err(); err != nil {
		return legacySQLError(ctx, err)
	}
	return nil
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
