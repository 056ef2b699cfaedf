// Package storetest is a conformance suite for store.Store implementations: every store,
// whatever its backend, must pass it.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/crypto/blake2b"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/store"
)

// Putter writes blocks; it seeds a read-only store (e.g. the store behind an HTTP server).
type Putter interface {
	Put(ctx context.Context, id flist.BlockID, data []byte) error
}

// Run runs the suite on a writable store. newStore is called once per subtest and must
// return a fresh, empty store (it may share a server; ids are random).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	run(t, func(t *testing.T) (store.Store, Putter) {
		s := newStore(t)
		return s, s
	}, false, false)
}

// RunReadOnly runs the suite on a read-only store: newStore returns the store and a
// Putter whose blocks the store then serves. Put on the store must fail with
// store.ErrReadOnly.
func RunReadOnly(t *testing.T, newStore func(t *testing.T) (s store.Store, seed Putter)) {
	run(t, newStore, true, false)
}

// RunVerified is Run for stores that check every block against its id (a hub): every
// block the suite puts is content-addressed (see RunVerifiedReadOnly).
func RunVerified(t *testing.T, newStore func(t *testing.T) store.Store) {
	run(t, func(t *testing.T) (store.Store, Putter) {
		s := newStore(t)
		return s, s
	}, false, true)
}

// RunVerifiedReadOnly is RunReadOnly for sources that check every block against its id
// (the site's peers): every block the suite seeds is content-addressed (its id is the
// BLAKE2b of its bytes, 256 bits or 128 for a legacy id), as flist.VerifyBlock wants.
func RunVerifiedReadOnly(t *testing.T, newStore func(t *testing.T) (s store.Store, seed Putter)) {
	run(t, newStore, true, true)
}

// ID returns a random block id of n bytes (32, or 16 for a legacy id) whose first byte
// is first (if first >= 0).
func ID(n int, first int) flist.BlockID {
	b := Bytes(n)
	if first >= 0 {
		b[0] = byte(first)
	}
	return mustParse(b)
}

func mustParse(b []byte) flist.BlockID {
	id, err := flist.ParseBlockID(b)
	if err != nil {
		panic(err) // the suite makes only ids of valid lengths
	}
	return id
}

// Bytes returns n random bytes.
func Bytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// contentID is the id of a content-addressed block of data: its BLAKE2b of n bytes.
func contentID(n int, data []byte) flist.BlockID {
	h, _ := blake2b.New(n, nil)
	h.Write(data)
	return mustParse(h.Sum(nil))
}

func run(t *testing.T, newStore func(t *testing.T) (store.Store, Putter), readOnly, content bool) {
	// block returns a block of size random bytes with an id of n bytes whose first byte
	// is first (if first >= 0): random, or content-addressed (then found by trying).
	block := func(n, size, first int) (id flist.BlockID, data []byte) {
		for {
			data = Bytes(size)
			if !content {
				return ID(n, first), data
			}
			if id = contentID(n, data); first < 0 || int(id.Bytes()[0]) == first {
				return id, data
			}
		}
	}
	open := func(t *testing.T) (store.Store, Putter) {
		t.Helper()
		s, p := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s, p
	}
	put := func(t *testing.T, p Putter, id flist.BlockID, data []byte) {
		t.Helper()
		if err := p.Put(t.Context(), id, data); err != nil {
			t.Fatalf("Put %x: %v", id, err)
		}
	}
	get := func(t *testing.T, s store.Store, id flist.BlockID, want []byte) {
		t.Helper()
		got, err := s.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get %x: %v", id, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Get %x: got %d bytes, want %d (contents differ: %v)", id, len(got), len(want), len(got) == len(want))
		}
	}
	has := func(t *testing.T, s store.Store, id flist.BlockID, want bool) {
		t.Helper()
		ok, err := s.Has(t.Context(), id)
		if err != nil {
			t.Fatalf("Has %x: %v", id, err)
		}
		if ok != want {
			t.Fatalf("Has %x = %v, want %v", id, ok, want)
		}
	}

	t.Run("RoundTrip", func(t *testing.T) {
		s, p := open(t)
		for _, n := range []int{32, 16} { // v2 and legacy ids
			id, data := block(n, 1000, -1)
			put(t, p, id, data)
			get(t, s, id, data)
			has(t, s, id, true)
		}
	})

	t.Run("AllFirstBytes", func(t *testing.T) {
		s, p := open(t)
		for _, first := range []int{0x00, 0x7f, 0x80, 0xff} {
			id, data := block(32, 100, first)
			put(t, p, id, data)
			get(t, s, id, data)
		}
	})

	t.Run("GetMissing", func(t *testing.T) {
		s, _ := open(t)
		_, err := s.Get(t.Context(), ID(32, -1))
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of a missing block: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("HasMissing", func(t *testing.T) {
		s, _ := open(t)
		has(t, s, ID(32, -1), false)
		has(t, s, ID(16, -1), false)
	})

	t.Run("PutTwice", func(t *testing.T) {
		s, p := open(t)
		id, data := block(32, 4096, -1)
		put(t, p, id, data)
		put(t, p, id, data)
		get(t, s, id, data)
		has(t, s, id, true)
	})

	t.Run("LargeBlock", func(t *testing.T) {
		s, p := open(t)
		id, data := block(32, 600<<10, -1)
		put(t, p, id, data)
		get(t, s, id, data)
	})

	t.Run("ConcurrentGets", func(t *testing.T) {
		s, p := open(t)
		const nBlocks, nWorkers, rounds = 8, 16, 4
		ids, datas := make([]flist.BlockID, nBlocks), make([][]byte, nBlocks)
		for i := range ids {
			ids[i], datas[i] = block(32, 20<<10+i, -1)
			put(t, p, ids[i], datas[i])
		}
		errs := make(chan error, nWorkers*rounds*nBlocks)
		var wg sync.WaitGroup
		for w := range nWorkers {
			wg.Go(func() {
				for r := range rounds {
					for k := range nBlocks {
						i := (w + r + k) % nBlocks
						got, err := s.Get(t.Context(), ids[i])
						if err != nil {
							errs <- err
						} else if !bytes.Equal(got, datas[i]) {
							errs <- fmt.Errorf("block %d: wrong data", i)
						}
						if _, err := s.Get(t.Context(), ID(32, -1)); !errors.Is(err, store.ErrNotFound) {
							errs <- fmt.Errorf("missing block: err = %v, want ErrNotFound", err)
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		s, p := open(t)
		id, data := block(32, 100, -1)
		put(t, p, id, data)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.Get(ctx, id); !errors.Is(err, context.Canceled) {
			t.Errorf("Get with a cancelled context: err = %v, want context.Canceled", err)
		}
		if _, err := s.Has(ctx, id); !errors.Is(err, context.Canceled) {
			t.Errorf("Has with a cancelled context: err = %v, want context.Canceled", err)
		}
		if err := s.Put(ctx, ID(32, -1), Bytes(10)); err == nil {
			t.Errorf("Put with a cancelled context: no error")
		}
		// The store still works afterwards.
		if _, err := s.Get(t.Context(), id); err != nil {
			t.Errorf("Get after a cancelled call: %v", err)
		}
	})

	t.Run("BadID", func(t *testing.T) {
		s, _ := open(t)
		if _, err := s.Get(t.Context(), flist.BlockID{}); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(zero id): err = %v, want a non-NotFound error", err)
		}
		if _, err := s.Has(t.Context(), flist.BlockID{}); err == nil {
			t.Errorf("Has(zero id): no error")
		}
		if err := s.Put(t.Context(), flist.BlockID{}, []byte("x")); err == nil {
			t.Errorf("Put(zero id): no error")
		}
	})

	t.Run("String", func(t *testing.T) {
		s, _ := open(t)
		if s.String() == "" {
			t.Errorf("String() is empty")
		}
	})

	if readOnly {
		t.Run("PutReadOnly", func(t *testing.T) {
			s, _ := open(t)
			id := ID(32, -1)
			if err := s.Put(t.Context(), id, Bytes(10)); !errors.Is(err, store.ErrReadOnly) {
				t.Fatalf("Put on a read-only store: err = %v, want ErrReadOnly", err)
			}
			has(t, s, id, false)
		})
		return
	}

	t.Run("PutTooLarge", func(t *testing.T) {
		s, _ := open(t)
		id := ID(32, -1)
		if err := s.Put(t.Context(), id, make([]byte, store.MaxBlockSize+1)); err == nil {
			t.Fatalf("Put of a block larger than MaxBlockSize: no error")
		}
		has(t, s, id, false)
	})
}
