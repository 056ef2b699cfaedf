package flist

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

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
		if in.blocks, err = decodeLegacyBlocks(attr, in.name); err != nil {
			return in, err
		}
	case 2:
		in.typ = TypeSymlink
		if in.target, err = attr.text(0); err != nil {
			return in, err
		}
	case 3:
		if err := decodeLegacySpecial(attr, &in); err != nil {
			return in, err
		}
	default:
		return in, fmt.Errorf("%w: %q: unknown inode kind %d", ErrCorrupt, in.name, which)
	}
	return in, nil
}

// decodeLegacyBlocks reads the blocks of File attributes as (16-byte id, 16-byte key)
// pairs; name is the file's, for errors.
func decodeLegacyBlocks(attr capStruct, name string) ([]byte, error) {
	list, err := attr.list(0)
	if err != nil {
		return nil, err
	}
	blocks := make([]byte, 0, min(list.n, 1<<12)*2*legacyHashSize)
	for i := range list.n {
		fb, err := list.elem(i)
		if err != nil {
			return nil, err
		}
		id, err := fb.bytes(0)
		if err != nil {
			return nil, err
		}
		key, err := fb.bytes(1)
		if err != nil {
			return nil, err
		}
		if len(id) != legacyHashSize || len(key) != legacyHashSize {
			return nil, fmt.Errorf("%w: %q: block %d has an id of %d bytes and a key of %d, want %d",
				ErrCorrupt, name, i, len(id), len(key), legacyHashSize)
		}
		blocks = append(append(blocks, id...), key...)
	}
	return blocks, nil
}

// decodeLegacySpecial sets the type, and for devices the device number, of special file
// in from its Special attributes.
func decodeLegacySpecial(attr capStruct, in *legacyInode) error {
	data, err := attr.bytes(0)
	if err != nil {
		return err
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
			return fmt.Errorf("%w: %q: device number %q is not major,minor", ErrCorrupt, in.name, data)
		}
		in.rdev = Mkdev(uint32(major), uint32(minor))
	default:
		return fmt.Errorf("%w: %q: special file of unknown type %d", ErrCorrupt, in.name, t)
	}
	return nil
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
