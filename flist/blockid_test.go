package flist

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// mustID is the block id whose bytes are b, for tests that know them to be valid.
func mustID(t testing.TB, b []byte) BlockID {
	t.Helper()
	id, err := ParseBlockID(b)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestParseBlockID(t *testing.T) {
	for _, n := range []int{32, 16} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i + 1)
		}
		id, err := ParseBlockID(b)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !id.Valid() || id.Len() != n || id.Legacy() != (n == 16) {
			t.Errorf("%d bytes: Valid %v, Len %d, Legacy %v", n, id.Valid(), id.Len(), id.Legacy())
		}
		if !bytes.Equal(id.Bytes(), b) {
			t.Errorf("%d bytes: Bytes() = %x, want %x", n, id.Bytes(), b)
		}
		b[0] = 0xff // the id keeps a copy
		if id.Bytes()[0] != 1 {
			t.Errorf("%d bytes: the id changed with the slice it was parsed from", n)
		}
		id.Bytes()[1] = 0xff // and hands out copies
		if id.Bytes()[1] != 2 {
			t.Errorf("%d bytes: the id changed through Bytes()", n)
		}
	}
	for _, n := range []int{0, 1, 15, 17, 31, 33, 64} {
		if id, err := ParseBlockID(make([]byte, n)); err == nil || id.Valid() {
			t.Errorf("ParseBlockID accepted %d bytes (err %v)", n, err)
		} else if !strings.Contains(err.Error(), "block id") {
			t.Errorf("%d bytes: unclear error %q", n, err)
		}
	}
}

func TestParseBlockIDHex(t *testing.T) {
	for _, s := range []string{vectorID, "5f523a27ab70cb3b6efb21a56c544823"} {
		id, err := ParseBlockIDHex(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if id.String() != s {
			t.Errorf("String() = %s, want %s", id, s)
		}
		if up, err := ParseBlockIDHex(strings.ToUpper(s)); err != nil || up != id {
			t.Errorf("upper-case %s: %v, %v", s, up, err)
		}
	}
	for _, s := range []string{"", "ab", vectorID[:62], vectorID + "00", "x" + vectorID[1:], vectorID[:31]} {
		if _, err := ParseBlockIDHex(s); err == nil {
			t.Errorf("ParseBlockIDHex accepted %q", s)
		}
	}
}

// TestBlockIDComparable: ids are map keys; equal bytes make equal ids, and a legacy id
// never equals a v2 one that starts with its bytes.
func TestBlockIDComparable(t *testing.T) {
	long := unhex(t, vectorID)
	a, b := mustID(t, long), mustID(t, bytes.Clone(long))
	short := mustID(t, long[:16])
	m := map[BlockID]int{a: 1}
	m[b]++
	m[short]++
	if len(m) != 2 || m[a] != 2 || m[short] != 1 {
		t.Errorf("map = %v", m)
	}
	if a != HashBlock(unhex(t, vectorData)) {
		t.Errorf("HashBlock of the vector's bytes is not its id")
	}
}

func TestBlockIDZero(t *testing.T) {
	var z BlockID
	if z.Valid() || z.Len() != 0 || z.Legacy() || z.Bytes() != nil || z.String() != "" {
		t.Errorf("zero id: Valid %v, Len %d, Legacy %v, Bytes %x, String %q", z.Valid(), z.Len(), z.Legacy(), z.Bytes(), z)
	}
	if err := VerifyBlock(z, nil); err == nil {
		t.Error("VerifyBlock accepted the zero id")
	}
	if _, err := BlockCID(z); err == nil {
		t.Error("BlockCID accepted the zero id")
	}
}

// TestBlockIDFormat: %x, %s and %v all print the id's hex, never the hex of the hex.
func TestBlockIDFormat(t *testing.T) {
	id := mustID(t, unhex(t, vectorID))
	for _, f := range []string{"%x", "%s", "%v"} {
		if got := fmt.Sprintf(f, id); got != vectorID {
			t.Errorf("%s = %s, want %s", f, got, vectorID)
		}
	}
	if got := fmt.Sprintf("%X", id); got != strings.ToUpper(vectorID) {
		t.Errorf("%%X = %s", got)
	}
	if got := fmt.Sprintf("%q", id); got != `"`+vectorID+`"` {
		t.Errorf("%%q = %s", got)
	}
}
