package bloom

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
)

// key is the i-th test key of a series: a uniform hash, as block ids are.
func key(series string, i int) []byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	s := sha256.Sum256(append([]byte(series), b[:]...))
	return s[:]
}

// TestRate: every key added is found, and keys never added are found at about the rate
// the filter was sized for (binomial spread over 100 k tries is ±0.1 %).
func TestRate(t *testing.T) {
	for _, fp := range []float64{0.01, 0.001} {
		const n = 100_000
		f := New(n, fp)
		for i := range n {
			f.Add(key("in", i))
		}
		for i := range n {
			if !f.Has(key("in", i)) {
				t.Fatalf("fp %v: key %d added but not found", fp, i)
			}
		}
		false_ := 0
		for i := range n {
			if f.Has(key("out", i)) {
				false_++
			}
		}
		rate := float64(false_) / n
		t.Logf("fp %v: %d bytes for %d keys (%.2f bytes/key), measured rate %.4f", fp, f.Size(), n, float64(f.Size())/n, rate)
		if rate > fp*1.3 || rate < fp/3 {
			t.Errorf("fp %v: measured false-positive rate %.4f", fp, rate)
		}
	}
}

// TestSize: about 1.2 MB per million keys at 1 %, as the design counts.
func TestSize(t *testing.T) {
	f := New(1_000_000, 0.01)
	if s := f.Size(); s < 1_150_000 || s > 1_250_000 {
		t.Errorf("a filter for 1 M keys at 1 %% is %d bytes", s)
	}
}

func TestRoundTrip(t *testing.T) {
	f := New(1000, 0.01)
	for i := range 500 {
		f.Add(key("in", i))
	}
	data, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	g, err := Unmarshal(data, len(data))
	if err != nil {
		t.Fatal(err)
	}
	if g.Len() != 500 || g.Size() != f.Size() {
		t.Fatalf("decoded: %d keys, %d bytes; want 500, %d", g.Len(), g.Size(), f.Size())
	}
	for i := range 500 {
		if !g.Has(key("in", i)) {
			t.Fatalf("decoded filter lost key %d", i)
		}
	}
	// The decoded filter takes more keys like the original.
	g.Add(key("more", 0))
	if !g.Has(key("more", 0)) {
		t.Fatal("key added to the decoded filter not found")
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	good, _ := New(1000, 0.01).MarshalBinary()
	badK := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(badK, 0)
	manyK := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(manyK, maxK+1)
	badN := append([]byte(nil), good...)
	binary.LittleEndian.PutUint64(badN[4:], 1<<40)
	for name, c := range map[string]struct {
		data []byte
		max  int
	}{
		"empty":        {nil, 1 << 20},
		"header only":  {good[:headerLen], 1 << 20},
		"torn word":    {good[:len(good)-3], 1 << 20},
		"zero k":       {badK, 1 << 20},
		"k too large":  {manyK, 1 << 20},
		"keys > bits":  {badN, 1 << 20},
		"over the max": {good, len(good) - headerLen - 8},
	} {
		if _, err := Unmarshal(c.data, c.max); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: got %v, want ErrFormat", name, err)
		}
	}
}

func TestShortKeyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a 15-byte key was taken")
		}
	}()
	New(10, 0.01).Add(make([]byte, KeyMin-1))
}

// FuzzUnmarshal: a peer's bytes never crash the decoder, and what decodes encodes back
// to the same bytes.
func FuzzUnmarshal(f *testing.F) {
	g := New(100, 0.01)
	g.Add(key("in", 1))
	seed, _ := g.MarshalBinary()
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Unmarshal(data, 1<<16)
		if err != nil {
			return
		}
		h.Has(key("in", 1))
		again, _ := h.MarshalBinary()
		if string(again) != string(data) {
			t.Fatal("decode then encode changed the bytes")
		}
	})
}
