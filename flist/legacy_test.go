package flist

import (
	"github.com/zosfs/zosfs-agent/internal/fixtures"

	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// legacyManifestLines lists f as WriteManifest does, one line per entry.
func legacyManifestLines(ctx context.Context, f Flist) ([]string, error) {
	var b bytes.Buffer
	if err := WriteManifest(ctx, &b, f); err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"), nil
}

// TestLegacyFunk: the real legacy fixture opens as the legacy format with no routes or
// tags (its metadata table is empty). Its listing is checked by TestManifestGolden.
func TestLegacyFunk(t *testing.T) {
	flistPath, _ := fixtures.Flist(t, "funk-latest.flist")
	l, err := OpenLegacy(t.Context(), flistPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Format() != FormatLegacy {
		t.Errorf("Format() = %q", l.Format())
	}
	if r, err := l.Routes(t.Context()); err != nil || len(r) != 0 {
		t.Errorf("Routes() = %v, %v", r, err)
	}
	if tags, err := l.Tags(t.Context()); err != nil || len(tags) != 0 {
		t.Errorf("Tags() = %v, %v", tags, err)
	}
}

// A tiny capnp encoder (one segment) for hand-made legacy flists.

type legacyCapB struct{ w []uint64 }

func (b *legacyCapB) alloc(n int) int {
	i := len(b.w)
	b.w = append(b.w, make([]uint64, n)...)
	return i
}

func (b *legacyCapB) setStruct(at, target, dw, pc int) {
	b.w[at] = uint64(uint32(int32(target-at-1)<<2)) | uint64(dw)<<32 | uint64(pc)<<48
}

func (b *legacyCapB) setList(at, target, esz int, n uint64) {
	b.w[at] = uint64(uint32(int32(target-at-1)<<2)) | 1 | uint64(esz)<<32 | n<<35
}

// newStruct allocates a struct, points the pointer at word at to it, and returns its start.
func (b *legacyCapB) newStruct(at, dw, pc int) int {
	s := b.alloc(dw + pc)
	b.setStruct(at, s, dw, pc)
	return s
}

// newStructList allocates a composite list and returns the start of its first element.
func (b *legacyCapB) newStructList(at, n, dw, pc int) int {
	t := b.alloc(1 + n*(dw+pc))
	b.w[t] = uint64(uint32(n)<<2) | uint64(dw)<<32 | uint64(pc)<<48
	b.setList(at, t, 7, uint64(n*(dw+pc)))
	return t + 1
}

func (b *legacyCapB) setBytes(at int, d []byte) {
	if d == nil {
		return
	}
	s := b.alloc((len(d) + 7) / 8)
	buf := make([]byte, 8*((len(d)+7)/8))
	copy(buf, d)
	for i := range len(buf) / 8 {
		b.w[s+i] = binary.LittleEndian.Uint64(buf[8*i:])
	}
	b.setList(at, s, 2, uint64(len(d)))
}

func (b *legacyCapB) setText(at int, s string) { b.setBytes(at, append([]byte(s), 0)) }

// put stores the low size bytes of v at byte offset off of the data section at word s.
func (b *legacyCapB) put(s, off, size int, v uint64) {
	for i := range size {
		w, sh := s+(off+i)/8, 8*((off+i)%8)
		b.w[w] = b.w[w]&^(0xff<<sh) | (v>>(8*i)&0xff)<<sh
	}
}

func (b *legacyCapB) bytes() []byte {
	out := make([]byte, 8+8*len(b.w))
	binary.LittleEndian.PutUint32(out[4:], uint32(len(b.w)))
	for i, w := range b.w {
		binary.LittleEndian.PutUint64(out[8+8*i:], w)
	}
	return out
}

type legacyTInode struct {
	name   string
	kind   uint16 // 0 dir, 1 file, 2 link, 3 special
	size   uint64
	acl    string
	mtime  uint32
	sub    string  // dir: key; "" for the hash of its path, "none" for no key
	target string  // link
	blocks []Block // file
	// badID, when set, is written as the first block's id: a length no BlockID can hold.
	badID []byte
	stype uint16 // special
	sdata string // special
}

type legacyTDir struct {
	acl    string
	mtime  uint32
	inodes []legacyTInode
}

func legacyEncodeDir(rel string, d legacyTDir) []byte {
	b := &legacyCapB{}
	b.alloc(1)
	r := b.newStruct(0, 2, 5)
	b.setText(r+2+0, path.Base("/"+rel))
	b.setText(r+2+1, rel)
	b.setText(r+2+4, d.acl)
	b.put(r, 0, 8, 4096)
	b.put(r, 8, 4, uint64(d.mtime))
	e := b.newStructList(r+2+2, len(d.inodes), 3, 3)
	for i, in := range d.inodes {
		s := e + 6*i
		b.setText(s+3, in.name)
		b.setText(s+5, in.acl)
		b.put(s, 0, 8, in.size)
		b.put(s, 8, 2, uint64(in.kind))
		b.put(s, 12, 4, uint64(in.mtime))
		switch in.kind {
		case 0:
			key := in.sub
			if key == "none" {
				b.newStruct(s+4, 0, 1)
				break
			}
			if key == "" {
				key = legacyDirKey(strings.TrimPrefix(rel+"/"+in.name, "/"))
			}
			a := b.newStruct(s+4, 0, 1)
			b.setText(a, key)
		case 1:
			a := b.newStruct(s+4, 1, 1)
			b.put(a, 0, 2, 128)
			if len(in.blocks) > 0 {
				l := b.newStructList(a+1, len(in.blocks), 0, 2)
				for j, blk := range in.blocks {
					id := blk.ID.Bytes()
					if j == 0 && in.badID != nil {
						id = in.badID
					}
					b.setBytes(l+2*j, id)
					b.setBytes(l+2*j+1, blk.Key)
				}
			}
		case 2:
			a := b.newStruct(s+4, 0, 1)
			b.setText(a, in.target)
		default:
			a := b.newStruct(s+4, 1, 1)
			b.put(a, 0, 2, uint64(in.stype))
			b.setBytes(a+1, []byte(in.sdata))
		}
	}
	return b.bytes()
}

// legacyEncodeACI encodes an ACI; an id of -1 is "not set", as upstream's default.
func legacyEncodeACI(uname, gname string, mode uint16, uid, gid int64) []byte {
	b := &legacyCapB{}
	b.alloc(1)
	r := b.newStruct(0, 3, 3)
	b.setText(r+3, uname)
	b.setText(r+4, gname)
	b.put(r, 0, 2, uint64(mode))
	b.put(r, 8, 8, uint64(uid)^^uint64(0))
	b.put(r, 16, 8, uint64(gid)^^uint64(0))
	return b.bytes()
}

func legacyTestBlock(seed string) Block {
	b, _ := encodeLegacyBlock([]byte(seed))
	return b
}

// legacyTree is a small, valid legacy flist: every kind of entry, owners set by id and
// by name, permission bits beyond 0777.
func legacyTree() (dirs map[string]*legacyTDir, acis map[string][]byte) {
	acis = map[string][]byte{
		"aaaaaaaaaaaaaaaa": legacyEncodeACI("root", "root", 0o755, 0, 0),
		"bbbbbbbbbbbbbbbb": legacyEncodeACI("1000", "staff", 0o644, -1, -1),
		"cccccccccccccccc": legacyEncodeACI("www-data", "www-data", 0o4755, 33, 33),
		"dddddddddddddddd": legacyEncodeACI("root", "disk", 0o660|0o060000, -1, 6),
	}
	big := []Block{legacyTestBlock("one"), legacyTestBlock("two")}
	dirs = map[string]*legacyTDir{
		"": {acl: "aaaaaaaaaaaaaaaa", mtime: 100, inodes: []legacyTInode{
			{name: "etc", kind: 0, acl: "aaaaaaaaaaaaaaaa", mtime: 101},
			{name: "bin", kind: 0, acl: "aaaaaaaaaaaaaaaa", mtime: 102},
			{name: "hello", kind: 1, size: 600000, acl: "cccccccccccccccc", mtime: 103, blocks: big},
			{name: "link", kind: 2, size: 6, acl: "aaaaaaaaaaaaaaaa", mtime: 104, target: "bin/sh"},
			{name: "dev", kind: 0, acl: "aaaaaaaaaaaaaaaa", mtime: 105},
			{name: "empty", kind: 1, acl: "bbbbbbbbbbbbbbbb", mtime: 106},
			{name: "tab\tname", kind: 1, size: 3, acl: "bbbbbbbbbbbbbbbb", mtime: 107, blocks: []Block{legacyTestBlock("tab")}},
		}},
		"etc": {acl: "aaaaaaaaaaaaaaaa", mtime: 101, inodes: []legacyTInode{
			{name: "passwd", kind: 1, size: 5, acl: "bbbbbbbbbbbbbbbb", mtime: 201, blocks: []Block{legacyTestBlock("passwd")}},
		}},
		"bin": {acl: "aaaaaaaaaaaaaaaa", mtime: 102, inodes: []legacyTInode{
			{name: "sh", kind: 1, size: 10, acl: "cccccccccccccccc", mtime: 301, blocks: []Block{legacyTestBlock("sh")}},
		}},
		"dev": {acl: "aaaaaaaaaaaaaaaa", mtime: 105, inodes: []legacyTInode{
			{name: "null", kind: 3, stype: 2, sdata: "1,3", acl: "dddddddddddddddd", mtime: 401},
			{name: "sda", kind: 3, stype: 1, sdata: "8,0", acl: "dddddddddddddddd", mtime: 402},
			{name: "big", kind: 3, stype: 2, sdata: "4095,1048575", acl: "dddddddddddddddd", mtime: 403},
			{name: "fifo", kind: 3, stype: 3, sdata: "(nothing)", acl: "bbbbbbbbbbbbbbbb", mtime: 404},
			{name: "sock", kind: 3, stype: 0, sdata: "(nothing)", acl: "bbbbbbbbbbbbbbbb", mtime: 405},
		}},
	}
	return dirs, acis
}

func legacyTreeManifest() []string {
	blk := func(seed string) string {
		b := legacyTestBlock(seed)
		return b.ID.String() + ":" + hex.EncodeToString(b.Key)
	}
	return []string{
		"d\t/\t0755\t0\t0\t0\t100\t0\t-\t-",
		"d\t/bin\t0755\t0\t0\t0\t102\t0\t-\t-",
		"f\t/bin/sh\t4755\t33\t33\t10\t301\t1\t" + blk("sh") + "\t-",
		"d\t/dev\t0755\t0\t0\t0\t105\t0\t-\t-",
		"c\t/dev/big\t0660\t0\t6\t0\t403\t0\t-\t4095,1048575",
		"p\t/dev/fifo\t0644\t1000\t65534\t0\t404\t0\t-\t-",
		"c\t/dev/null\t0660\t0\t6\t0\t401\t0\t-\t1,3",
		"b\t/dev/sda\t0660\t0\t6\t0\t402\t0\t-\t8,0",
		"s\t/dev/sock\t0644\t1000\t65534\t0\t405\t0\t-\t-",
		"f\t/empty\t0644\t1000\t65534\t0\t106\t0\t-\t-",
		"d\t/etc\t0755\t0\t0\t0\t101\t0\t-\t-",
		"f\t/etc/passwd\t0644\t1000\t65534\t5\t201\t1\t" + blk("passwd") + "\t-",
		"f\t/hello\t4755\t33\t33\t600000\t103\t2\t" + blk("one") + "\t-",
		"l\t/link\t0755\t0\t0\t6\t104\t0\t-\tbin/sh",
		"f\t\"/tab\\tname\"\t0644\t1000\t65534\t3\t107\t1\t" + blk("tab") + "\t-",
	}
}

func legacyEntries(dirs map[string]*legacyTDir, acis map[string][]byte) map[string][]byte {
	e := map[string][]byte{}
	for k, v := range acis {
		e[k] = v
	}
	for rel, d := range dirs {
		e[legacyDirKey(rel)] = legacyEncodeDir(rel, *d)
	}
	return e
}

// legacyDB writes a legacy flistdb.sqlite3 and returns its bytes; meta nil means no
// metadata table at all.
func legacyDB(t testing.TB, entries map[string][]byte, meta map[string]string) []byte {
	t.Helper()
	return legacyDBSchema(t, "CREATE TABLE entries (key VARCHAR(64) PRIMARY KEY, value BLOB)", entries, meta)
}

func legacyDBSchema(t testing.TB, schema string, entries map[string][]byte, meta map[string]string, extra ...string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "flistdb.sqlite3")
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts := []string{schema}
	if meta != nil {
		stmts = append(stmts, "CREATE TABLE metadata (key VARCHAR(64) PRIMARY KEY, value TEXT)")
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range entries {
		if _, err := db.Exec("INSERT INTO entries (key, value) VALUES (?, ?)", k, v); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range meta {
		if _, err := db.Exec("INSERT INTO metadata (key, value) VALUES (?, ?)", k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range extra {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type legacyMember struct {
	name string
	data []byte
}

func legacyTarGz(t testing.TB, members ...legacyMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700}); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		hdr := &tar.Header{Name: m.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(m.data))}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func legacyTarGzHeaders(t testing.TB, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func legacyWriteFile(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "test.flist")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func legacyFlistFile(t testing.TB, entries map[string][]byte, meta map[string]string) string {
	t.Helper()
	return legacyWriteFile(t, legacyTarGz(t, legacyMember{"./flistdb.sqlite3", legacyDB(t, entries, meta)}))
}

func TestLegacySmall(t *testing.T) {
	ctx := t.Context()
	dirs, acis := legacyTree()
	meta := map[string]string{
		"backend":    `{"host": "hub.grid.tf", "port": 9900, "namespace": "default"}`,
		"entrypoint": "/bin/sh",
	}
	l, err := OpenLegacy(ctx, legacyFlistFile(t, legacyEntries(dirs, acis), meta))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	got, err := legacyManifestLines(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	fixtures.CompareLines(t, got, legacyTreeManifest())

	routes, err := l.Routes(ctx)
	if err != nil || !slices.Equal(routes, []Route{{0, 0xff, "zdb://hub.grid.tf:9900/default"}}) {
		t.Errorf("Routes() = %v, %v", routes, err)
	}
	tags, err := l.Tags(ctx)
	if err != nil || len(tags) != 2 || tags["entrypoint"] != "/bin/sh" || tags["backend"] != meta["backend"] {
		t.Errorf("Tags() = %v, %v", tags, err)
	}
	tags["entrypoint"] = "changed"
	if tags, _ := l.Tags(ctx); tags["entrypoint"] != "/bin/sh" {
		t.Errorf("Tags() shares its map with the caller")
	}

	// Inode numbers: the root is 1, the root's children follow in name order.
	root, err := l.ReadDir(ctx, RootIno)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range root {
		if e.Ino != uint64(i)+2 {
			t.Errorf("%s: ino %d, want %d", e.Name, e.Ino, i+2)
		}
	}

	hello, err := l.Lookup(ctx, RootIno, "hello")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := l.Blocks(ctx, hello.Ino)
	if err != nil || len(blocks) != 2 {
		t.Fatalf("Blocks = %v, %v", blocks, err)
	}
	for i, seed := range []string{"one", "two"} {
		want := legacyTestBlock(seed)
		if blocks[i].ID != want.ID || !bytes.Equal(blocks[i].Key, want.Key) {
			t.Errorf("block %d = %s:%x, want %s:%x", i, blocks[i].ID, blocks[i].Key, want.ID, want.Key)
		}
	}
	blocks[0].Key[0] ^= 0xff
	if again, _ := l.Blocks(ctx, hello.Ino); again[0].Key[0] == blocks[0].Key[0] {
		t.Errorf("Blocks() shares its bytes with the caller")
	}

	errTests := []struct {
		name string
		err  error
		call func() error
	}{
		{"Get 0", ErrNotFound, func() error { _, err := l.Get(ctx, 0); return err }},
		{"Get past the end", ErrNotFound, func() error { _, err := l.Get(ctx, 1000); return err }},
		{"Lookup missing", ErrNotFound, func() error { _, err := l.Lookup(ctx, RootIno, "nope"); return err }},
		{"Lookup in a file", ErrNotDir, func() error { _, err := l.Lookup(ctx, hello.Ino, "x"); return err }},
		{"ReadDir of a file", ErrNotDir, func() error { _, err := l.ReadDir(ctx, hello.Ino); return err }},
		{"ReadDir missing", ErrNotFound, func() error { _, err := l.ReadDir(ctx, 1000); return err }},
		{"Blocks missing", ErrNotFound, func() error { _, err := l.Blocks(ctx, 1000); return err }},
	}
	for _, tt := range errTests {
		if err := tt.call(); !errors.Is(err, tt.err) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.err)
		}
	}
}

// Without an index on key, the entries are read in one scan instead of one query each.
func TestLegacyUnindexedEntries(t *testing.T) {
	dirs, acis := legacyTree()
	entries := legacyEntries(dirs, acis)
	db := legacyDBSchema(t, "CREATE TABLE entries (key, value)", entries, map[string]string{})
	l, err := OpenLegacy(t.Context(), legacyWriteFile(t, legacyTarGz(t, legacyMember{"flistdb.sqlite3", db})))
	if err != nil {
		t.Fatal(err)
	}
	got, err := legacyManifestLines(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	fixtures.CompareLines(t, got, legacyTreeManifest())

	dup := legacyDBSchema(t, "CREATE TABLE entries (key, value)", entries, map[string]string{},
		fmt.Sprintf("INSERT INTO entries VALUES ('%s', x'00')", legacyDirKey("etc")))
	_, err = OpenLegacy(t.Context(), legacyWriteFile(t, legacyTarGz(t, legacyMember{"flistdb.sqlite3", dup})))
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("duplicate key: %v, want ErrCorrupt", err)
	}
}

func TestLegacyNoMetadataTable(t *testing.T) {
	dirs, acis := legacyTree()
	l, err := OpenLegacy(t.Context(), legacyFlistFile(t, legacyEntries(dirs, acis), nil))
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := l.Routes(t.Context()); len(r) != 0 {
		t.Errorf("Routes() = %v", r)
	}
	if tags, _ := l.Tags(t.Context()); len(tags) != 0 {
		t.Errorf("Tags() = %v", tags)
	}
}

func TestLegacyBackendRoute(t *testing.T) {
	tests := []struct {
		backend, want string
	}{
		{`{"host":"10.0.0.1","port":9900,"namespace":"ns"}`, "zdb://10.0.0.1:9900/ns"},
		{`{"host":"hub","port":"9900"}`, "zdb://hub:9900"},
		{`{"host":"hub"}`, "zdb://hub"},
		{`{"host":"2001:db8::1","port":9900,"namespace":"ns"}`, "zdb://[2001:db8::1]:9900/ns"},
		{`{"host":"2001:db8::1"}`, "zdb://[2001:db8::1]"},
		{`{"host":"hub","port":9900,"namespace":"ns","password":"p@ss"}`, "zdb://:p%40ss@hub:9900/ns"},
		{`not json`, ""},
		{`{"port":9900}`, ""},
		{`{"host":"a/b"}`, ""},
		{`{"host":"a@b"}`, ""},
		{`{"host":"hub","port":70000}`, ""},
		{`{"host":"hub","port":-1}`, ""},
		{`{"host":"hub","namespace":"a/b"}`, ""},
	}
	for _, tt := range tests {
		r, err := legacyBackendRoute(tt.backend)
		switch {
		case tt.want == "" && !errors.Is(err, ErrCorrupt):
			t.Errorf("%s: %v, %v; want an error wrapping ErrCorrupt", tt.backend, r, err)
		case tt.want != "" && (err != nil || r != Route{0, 0xff, tt.want}):
			t.Errorf("%s: %v, %v; want %s", tt.backend, r, err, tt.want)
		}
	}
}

// legacyPtrWord is a raw capnp pointer word for hand-broken messages.
func legacyPtrWord(kind uint64, offset int32, hi uint32) uint64 {
	return kind | uint64(uint32(offset)<<2) | uint64(hi)<<32
}

func TestLegacyHostile(t *testing.T) {
	root := func(d map[string]*legacyTDir) *legacyTDir { return d[""] }
	type mut struct {
		dirs    func(map[string]*legacyTDir)
		entries func(map[string][]byte)
		meta    map[string]string
	}
	setRootValue := func(b []byte) func(map[string][]byte) {
		return func(e map[string][]byte) { e[legacyDirKey("")] = b }
	}
	// A directory of 1000 entries whose acl keys all point at one 8000-byte text:
	// reading it would copy far more than the message holds.
	bomb := func() []byte {
		b := &legacyCapB{}
		b.alloc(1)
		r := b.newStruct(0, 2, 5)
		b.setText(r+2+4, "aaaaaaaaaaaaaaaa")
		e := b.newStructList(r+2+2, 1000, 3, 3)
		b.setText(e+5, strings.Repeat("x", 8000))
		for i := range 1000 {
			s := e + 6*i
			b.setText(s+3, fmt.Sprintf("f%d", i))
			if i > 0 {
				b.w[s+5] = legacyPtrWord(1, int32(int(int32(uint32(b.w[e+5]))>>2)+(e+5)-(s+5)), 2|8001<<3)
			}
		}
		return b.bytes()
	}
	// A composite list that claims 2^29-1 zero-sized elements.
	zeroSized := func() []byte {
		b := &legacyCapB{}
		b.alloc(1)
		r := b.newStruct(0, 2, 5)
		t := b.alloc(1)
		b.w[t] = uint64(uint32(1<<29-1) << 2)
		b.setList(r+2+2, t, 7, 0)
		return b.bytes()
	}
	withRootWord := func(w uint64) []byte {
		b := &legacyCapB{}
		b.alloc(1)
		b.newStruct(0, 2, 5)
		b.w[0] = w
		return b.bytes()
	}
	farMissing := func() []byte {
		return withRootWord(2 | 0<<3 | 7<<32)
	}

	tests := []struct {
		name string
		m    mut
	}{
		{"name with slash", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].name = "a/b" }}},
		{"name dot-dot", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].name = ".." }}},
		{"name dot", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].name = "." }}},
		{"name with NUL", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].name = "a\x00b" }}},
		{"empty name", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].name = "" }}},
		{"name too long", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].name = strings.Repeat("n", 256) }}},
		{"duplicate name", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].name = "link" }}},
		{"subdir cycle to the root", mut{dirs: func(d map[string]*legacyTDir) {
			d["bin"].inodes = append(d["bin"].inodes, legacyTInode{name: "loop", kind: 0, acl: "aaaaaaaaaaaaaaaa", sub: legacyDirKey("")})
		}}},
		{"subdir cycle to itself", mut{dirs: func(d map[string]*legacyTDir) {
			d["bin"].inodes = append(d["bin"].inodes, legacyTInode{name: "self", kind: 0, acl: "aaaaaaaaaaaaaaaa", sub: legacyDirKey("bin")})
		}}},
		{"directory referenced twice", mut{dirs: func(d map[string]*legacyTDir) {
			root(d).inodes = append(root(d).inodes, legacyTInode{name: "bin2", kind: 0, acl: "aaaaaaaaaaaaaaaa", sub: legacyDirKey("bin")})
		}}},
		{"missing subdirectory", mut{entries: func(e map[string][]byte) { delete(e, legacyDirKey("etc")) }}},
		{"missing root", mut{entries: func(e map[string][]byte) { delete(e, legacyDirKey("")) }}},
		{"empty subdirectory key", mut{dirs: func(d map[string]*legacyTDir) {
			root(d).inodes = append(root(d).inodes, legacyTInode{name: "nokey", kind: 0, acl: "aaaaaaaaaaaaaaaa", sub: "none"})
		}}},
		{"missing acl", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].acl = "eeeeeeeeeeeeeeee" }}},
		{"uid out of range", mut{entries: func(e map[string][]byte) {
			e["bbbbbbbbbbbbbbbb"] = legacyEncodeACI("x", "y", 0o644, -5, 0)
		}}},
		{"uid too large", mut{entries: func(e map[string][]byte) {
			e["bbbbbbbbbbbbbbbb"] = legacyEncodeACI("x", "y", 0o644, 1<<32, 0)
		}}},
		{"size larger than blocks", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].size = 2*512<<10 + 1 }}},
		{"content without blocks", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[5].size = 1 }}},
		{"block id of 15 bytes", mut{dirs: func(d map[string]*legacyTDir) {
			root(d).inodes[2].blocks = []Block{{Key: make([]byte, 16)}, legacyTestBlock("x")}
			root(d).inodes[2].badID = make([]byte, 15)
		}}},
		{"block key missing", mut{dirs: func(d map[string]*legacyTDir) {
			root(d).inodes[2].blocks = []Block{{ID: mustID(t, make([]byte, 16))}, legacyTestBlock("x")}
		}}},
		{"unknown inode kind", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[2].kind = 7 }}},
		{"special of unknown type", mut{dirs: func(d map[string]*legacyTDir) { d["dev"].inodes[0].stype = 4 }}},
		{"device without numbers", mut{dirs: func(d map[string]*legacyTDir) { d["dev"].inodes[0].sdata = "(nothing)" }}},
		{"device number too large", mut{dirs: func(d map[string]*legacyTDir) { d["dev"].inodes[0].sdata = "1,4294967296" }}},
		{"empty symlink target", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[3].target = "" }}},
		{"symlink target too long", mut{dirs: func(d map[string]*legacyTDir) { root(d).inodes[3].target = strings.Repeat("t/", 2048) }}},
		{"truncated message", mut{entries: func(e map[string][]byte) {
			k := legacyDirKey("")
			e[k] = e[k][:len(e[k])-8]
		}}},
		{"message cut in the segment table", mut{entries: setRootValue([]byte{3, 0, 0, 0, 1, 0, 0, 0})}},
		{"too many segments", mut{entries: setRootValue(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 1<<31), 1))}},
		{"trailing bytes", mut{entries: func(e map[string][]byte) {
			k := legacyDirKey("")
			e[k] = append(e[k], 0, 0, 0, 0, 0, 0, 0, 0)
		}}},
		{"empty value", mut{entries: setRootValue([]byte{})}},
		{"null root pointer", mut{entries: setRootValue(withRootWord(0))}},
		{"root pointer out of bounds", mut{entries: setRootValue(withRootWord(legacyPtrWord(0, 1000, 2|5<<16)))}},
		{"root pointer before the segment", mut{entries: setRootValue(withRootWord(legacyPtrWord(0, -10, 2|5<<16)))}},
		{"root is a list", mut{entries: setRootValue(withRootWord(legacyPtrWord(1, 0, 2)))}},
		{"capability pointer", mut{entries: setRootValue(withRootWord(3))}},
		{"far pointer to a missing segment", mut{entries: setRootValue(farMissing())}},
		{"shared text bomb", mut{entries: setRootValue(bomb())}},
		{"zero-sized elements", mut{entries: setRootValue(zeroSized())}},
		{"backend not json", mut{meta: map[string]string{"backend": "{"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dirs, acis := legacyTree()
			if tt.m.dirs != nil {
				tt.m.dirs(dirs)
			}
			entries := legacyEntries(dirs, acis)
			if tt.m.entries != nil {
				tt.m.entries(entries)
			}
			meta := tt.m.meta
			if meta == nil {
				meta = map[string]string{}
			}
			l, err := OpenLegacy(t.Context(), legacyFlistFile(t, entries, meta))
			if err == nil {
				l.Close()
				t.Fatal("opened; want an error")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %v does not wrap ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
}

func TestLegacyArchive(t *testing.T) {
	dirs, acis := legacyTree()
	db := legacyDB(t, legacyEntries(dirs, acis), map[string]string{})
	good := legacyTarGz(t, legacyMember{"flistdb.sqlite3", db})

	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name string
		data []byte
		err  error // nil: opens
	}{
		{"plain member name", good, nil},
		{"member under ./", legacyTarGz(t, legacyMember{"./flistdb.sqlite3", db}), nil},
		{"other members first", legacyTarGz(t, legacyMember{"README", []byte("hi")}, legacyMember{"flistdb.sqlite3", db}), nil},
		{"empty file", nil, ErrFormat},
		{"not gzip", []byte("SQLite format 3\x00 and more"), ErrFormat},
		{"gzip of garbage", gz([]byte("this is not a tar archive at all")), ErrFormat},
		{"gzip without the db", legacyTarGz(t, legacyMember{"other.sqlite3", db}), ErrFormat},
		{"empty tar", legacyTarGz(t), ErrFormat},
		{"db is not sqlite", legacyTarGz(t, legacyMember{"flistdb.sqlite3", bytes.Repeat([]byte("garbage!"), 1000)}), ErrCorrupt},
		{"db is empty", legacyTarGz(t, legacyMember{"flistdb.sqlite3", nil}), ErrCorrupt},
		{"truncated archive", good[:len(good)/2], ErrCorrupt},
		{"archive without its gzip trailer", good[:len(good)-8], ErrCorrupt},
		{"bad gzip checksum", func() []byte {
			b := bytes.Clone(good)
			b[len(b)-8] ^= 1
			return b
		}(), ErrCorrupt},
		{"db is a directory", legacyTarGzHeaders(t, &tar.Header{Name: "flistdb.sqlite3/", Typeflag: tar.TypeDir, Mode: 0o755}), ErrCorrupt},
		{"db is a symlink", legacyTarGzHeaders(t, &tar.Header{Name: "flistdb.sqlite3", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}), ErrCorrupt},
		{"db of the wrong schema", legacyTarGz(t, legacyMember{"flistdb.sqlite3", func() []byte {
			p := filepath.Join(t.TempDir(), "x.db")
			d, _ := sql.Open("sqlite", p)
			d.Exec("CREATE TABLE foo (a)")
			d.Close()
			b, _ := os.ReadFile(p)
			return b
		}()}), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := OpenLegacy(t.Context(), legacyWriteFile(t, tt.data))
			if tt.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("opened; want %v", tt.err)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("error %v does not wrap %v", err, tt.err)
			}
		})
	}

	if _, err := OpenLegacy(t.Context(), filepath.Join(t.TempDir(), "missing.flist")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := OpenLegacy(ctx, legacyWriteFile(t, good)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// legacyWalk reads everything an flist offers; fuzz targets use it to reach every path.
func legacyWalk(ctx context.Context, f Flist) error {
	if _, err := legacyManifestLines(ctx, f); err != nil {
		return err
	}
	if _, err := f.Routes(ctx); err != nil {
		return err
	}
	_, err := f.Tags(ctx)
	return err
}

// The fuzz targets of whole flists are seeded with tiny databases (smallLegacyDB), not with
// legacyTree's or the real fixture: Go's minimizer spends up to -fuzzminimizetime (60 s by
// default) on every input that finds new coverage, removing bytes one at a time, and on
// inputs of many kilobytes it never finishes, so the fuzzer would do little else. The
// ordinary tests open the larger ones. Even these seeds are kilobytes, hence
// limitFuzzMinimize.

// smallLegacyTree is a tiny valid legacy tree: a root holding a file of one block and a
// directory holding a symlink, all owned by one ACI. With loop, the directory also holds
// a directory that is the root again.
func smallLegacyTree(loop bool) map[string][]byte {
	const acl = "aaaaaaaaaaaaaaaa"
	d := legacyTDir{acl: acl, inodes: []legacyTInode{{name: "l", kind: 2, acl: acl, target: "../f"}}}
	if loop {
		d.inodes = append(d.inodes, legacyTInode{name: "loop", kind: 0, acl: acl, sub: legacyDirKey("")})
	}
	return map[string][]byte{
		legacyDirKey(""): legacyEncodeDir("", legacyTDir{acl: acl, inodes: []legacyTInode{
			{name: "d", kind: 0, acl: acl},
			{name: "f", kind: 1, size: 1, acl: acl, blocks: []Block{legacyTestBlock("f")}},
		}}),
		legacyDirKey("d"): legacyEncodeDir("d", d),
		acl:               legacyEncodeACI("root", "root", 0o755, -1, -1),
	}
}

// smallLegacyDB writes entries as a flistdb.sqlite3 of 512-byte pages; indexed gives the
// entries table its usual primary key, meta a metadata table naming a backend.
func smallLegacyDB(t testing.TB, entries map[string][]byte, indexed, meta bool) []byte {
	t.Helper()
	schema := "CREATE TABLE entries (key VARCHAR(64), value BLOB)"
	if indexed {
		schema = "CREATE TABLE entries (key VARCHAR(64) PRIMARY KEY, value BLOB)"
	}
	var m map[string]string
	if meta {
		m = map[string]string{"backend": `{"host":"h","port":1}`}
	}
	return legacyDBSchema(t, schema, entries, m, "PRAGMA page_size = 512", "VACUUM")
}

// TestSmallLegacy: the fuzz seeds are valid legacy flists (or, with the loop, corrupt ones).
func TestSmallLegacy(t *testing.T) {
	for _, indexed := range []bool{true, false} {
		db := smallLegacyDB(t, smallLegacyTree(false), indexed, indexed)
		l, err := OpenLegacy(t.Context(), legacyWriteFile(t, legacyTarGz(t, legacyMember{"flistdb.sqlite3", db})))
		if err != nil {
			t.Fatalf("indexed %v: %v", indexed, err)
		}
		if err := legacyWalk(t.Context(), l); err != nil {
			t.Errorf("indexed %v: %v", indexed, err)
		}
		if n := len(l.nodes); n != 4 {
			t.Errorf("indexed %v: %d entries, want 4", indexed, n)
		}
		t.Logf("indexed %v: %d bytes", indexed, len(db))
	}
	db := smallLegacyDB(t, smallLegacyTree(true), true, false)
	if _, err := OpenLegacy(t.Context(), legacyWriteFile(t, legacyTarGz(t, legacyMember{"flistdb.sqlite3", db}))); !errors.Is(err, ErrCorrupt) {
		t.Errorf("loop: %v, want ErrCorrupt", err)
	}
}

func FuzzOpenLegacy(f *testing.F) {
	limitFuzzMinimize(f)
	f.Add(legacyTarGz(f, legacyMember{"./flistdb.sqlite3", smallLegacyDB(f, smallLegacyTree(false), true, true)}))
	f.Add(legacyTarGz(f, legacyMember{"flistdb.sqlite3", smallLegacyDB(f, map[string][]byte{
		legacyDirKey(""):   legacyEncodeDir("", legacyTDir{acl: "aaaaaaaaaaaaaaaa"}),
		"aaaaaaaaaaaaaaaa": legacyEncodeACI("root", "root", 0o755, 0, 0),
	}, false, false)}))
	f.Add(legacyTarGz(f, legacyMember{"README", []byte("no db")}))
	f.Add([]byte("not gzip"))
	// One file per worker process, rewritten for each input.
	p := filepath.Join(f.TempDir(), "fuzz.flist")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := OpenLegacy(t.Context(), p)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v wraps neither ErrFormat nor ErrCorrupt", err)
			}
			return
		}
		defer l.Close()
		if err := legacyWalk(t.Context(), l); err != nil {
			t.Fatalf("opened, but walking fails: %v", err)
		}
	})
}

// FuzzOpenLegacyDB fuzzes the database inside the archive: the input is flistdb.sqlite3
// itself, so that mutations reach SQLite, the capnp values and the tree building without
// having to survive gzip first.
func FuzzOpenLegacyDB(f *testing.F) {
	limitFuzzMinimize(f)
	f.Add(smallLegacyDB(f, smallLegacyTree(false), true, true))
	f.Add(smallLegacyDB(f, smallLegacyTree(false), false, false))
	f.Add(smallLegacyDB(f, smallLegacyTree(true), true, false))
	// One file per worker process, rewritten for each input.
	p := filepath.Join(f.TempDir(), "fuzz.flist")
	f.Fuzz(func(t *testing.T, db []byte) {
		if err := os.WriteFile(p, legacyTarGz(t, legacyMember{"flistdb.sqlite3", db}), 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := OpenLegacy(t.Context(), p)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		defer l.Close()
		if err := legacyWalk(t.Context(), l); err != nil {
			t.Fatalf("opened, but walking fails: %v", err)
		}
	})
}

// FuzzDecodeLegacyDir fuzzes the capnp decoding of directory and ACI messages directly,
// where the fuzzer does not have to get through gzip, tar and SQLite first.
func FuzzDecodeLegacyDir(f *testing.F) {
	dirs, acis := legacyTree()
	for rel, d := range dirs {
		f.Add(legacyEncodeDir(rel, *d))
	}
	for _, a := range acis {
		f.Add(a)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeLegacyDir(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
		} else {
			for _, in := range d.contents {
				if ValidName(in.name) != nil || len(in.blocks)%(2*legacyHashSize) != 0 {
					t.Fatalf("accepted inode %+v", in)
				}
			}
		}
		if _, err := decodeLegacyACI(data); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
	})
}

// legacyMultiSegment frames segments (given as words) into one capnp message.
func legacyMultiSegment(segs ...[]uint64) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(segs)-1))
	for _, s := range segs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(s)))
	}
	if len(out)%8 != 0 {
		out = append(out, 0, 0, 0, 0)
	}
	for _, s := range segs {
		for _, w := range s {
			out = binary.LittleEndian.AppendUint64(out, w)
		}
	}
	return out
}

// Upstream writes single-segment messages, but far pointers are valid capnp and are read.
func TestLegacyCapnpFarPointers(t *testing.T) {
	text := binary.LittleEndian.Uint64([]byte("1000\x00\x00\x00\x00"))
	textPtr := func(at, target int) uint64 { return legacyPtrWord(1, int32(target-at-1), 2|5<<3) }
	aci := func(base int) []uint64 { // struct of 3 data + 3 pointer words at base, then the text
		return []uint64{0o640, ^uint64(7), ^uint64(8), textPtr(base+3, base+6), 0, 0, text}
	}
	structTag := legacyPtrWord(0, 0, 3|3<<16)

	single := legacyMultiSegment(
		[]uint64{2 | 0<<3 | 1<<32}, // far pointer: segment 1, landing pad at word 0
		append([]uint64{structTag}, aci(1)...),
	)
	double := legacyMultiSegment(
		[]uint64{2 | 4 | 1<<3 | 1<<32}, // double-far: segment 1, pad at word 1
		[]uint64{0, 2 | 0<<3 | 2<<32, structTag},
		aci(0),
	)
	for name, msg := range map[string][]byte{"single far": single, "double far": double} {
		a, err := decodeLegacyACI(msg)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if a != (legacyACI{uid: 7, gid: 8, mode: 0o640}) {
			t.Errorf("%s: %+v", name, a)
		}
	}

	bad := map[string][]byte{
		"far to far":             legacyMultiSegment([]uint64{2 | 1<<32}, []uint64{2 | 1<<32}),
		"far out of the segment": legacyMultiSegment([]uint64{2 | 5<<3 | 1<<32}, []uint64{structTag}),
		"double-far pad not far": legacyMultiSegment([]uint64{2 | 4 | 1<<32}, []uint64{structTag, structTag}),
		"double-far pad cut":     legacyMultiSegment([]uint64{2 | 4 | 1<<32}, []uint64{2 | 1<<32}),
		"double-far to nowhere":  legacyMultiSegment([]uint64{2 | 4 | 1<<32}, []uint64{2 | 9<<32, structTag}),
		"text not bytes":         legacyMultiSegment([]uint64{legacyPtrWord(0, 0, 3|3<<16), 0, 0, 0, legacyPtrWord(1, 2, 4|1<<3), 0, 0, 0}),
		"struct list of bits": func() []byte {
			b := &legacyCapB{}
			b.alloc(1)
			r := b.newStruct(0, 2, 5)
			b.w[r+2+2] = legacyPtrWord(1, 0, 1|64<<3)
			b.alloc(1)
			return b.bytes()
		}(),
	}
	for name, msg := range bad {
		_, err1 := decodeLegacyACI(msg)
		_, err2 := decodeLegacyDir(msg)
		if !errors.Is(err1, ErrCorrupt) && !errors.Is(err2, ErrCorrupt) {
			t.Errorf("%s: %v / %v, want ErrCorrupt", name, err1, err2)
		}
	}
}

// Capnp allows a list of structs to be encoded with a smaller element size; fields
// outside it read as their defaults.
func TestLegacyCapnpSmallStructs(t *testing.T) {
	b := &legacyCapB{}
	b.alloc(1)
	r := b.newStruct(0, 2, 5)
	b.setText(r+2+4, "aaaaaaaaaaaaaaaa")
	l := b.alloc(1)
	b.setList(r+2+2, l, 6, 1) // one Inode as a single pointer: its name
	b.setText(l, "x")
	d, err := decodeLegacyDir(b.bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(d.contents) != 1 || d.contents[0].name != "x" || d.contents[0].typ != TypeDir {
		t.Errorf("%+v", d.contents)
	}
}
