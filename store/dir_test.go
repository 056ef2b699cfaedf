package store_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

func newDir(t *testing.T) *store.Dir {
	t.Helper()
	d, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDirConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return newDir(t) })
}

func TestDirOpenConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.Open(t.Context(), "dir://"+filepath.Join(t.TempDir(), "not", "yet"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestDirLayout(t *testing.T) {
	d := newDir(t)
	id, data := storetest.ID(32, 0xab), []byte("block")
	if err := d.Put(t.Context(), id, data); err != nil {
		t.Fatal(err)
	}
	x := id.String()
	got, err := os.ReadFile(filepath.Join(d.Root(), "ab", x))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("block not at <root>/ab/<hex>: %v", err)
	}
	// No temporary file is left behind.
	ents, _ := os.ReadDir(filepath.Join(d.Root(), "ab"))
	if len(ents) != 1 {
		t.Errorf("<root>/ab holds %d entries, want 1", len(ents))
	}
	// Put of an existing id is a no-op: it does not rewrite the file.
	if err := d.Put(t.Context(), id, []byte("other")); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Get(t.Context(), id); !bytes.Equal(got, data) {
		t.Errorf("second Put rewrote the block")
	}
}

func TestDirFlatFallback(t *testing.T) {
	d := newDir(t)
	id, data := storetest.ID(16, -1), []byte("flat block")
	if err := os.WriteFile(filepath.Join(d.Root(), id.String()), data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := d.Get(t.Context(), id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get of a flat block = %q, %v", got, err)
	}
	if ok, err := d.Has(t.Context(), id); !ok || err != nil {
		t.Errorf("Has of a flat block = %v, %v", ok, err)
	}
	// Put does not duplicate it.
	if err := d.Put(t.Context(), id, data); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Root(), id.String()[:2])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Put of a block present in the flat layout wrote it again: %v", err)
	}
}

func TestDirRefusesOversizedFile(t *testing.T) {
	d := newDir(t)
	id := storetest.ID(32, -1)
	x := id.String()
	p := filepath.Join(d.Root(), x[:2], x)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, store.MaxBlockSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := d.Get(t.Context(), id)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of an oversized block: err = %v, want a size error", err)
	}
	if !strings.Contains(err.Error(), d.String()) {
		t.Errorf("error does not name the store: %v", err)
	}
}

func TestDirErrorsNameStore(t *testing.T) {
	d := newDir(t)
	_, err := d.Get(t.Context(), storetest.ID(32, -1))
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), d.String()) {
		t.Errorf("Get missing: err = %v, want ErrNotFound naming %s", err, d)
	}
}
