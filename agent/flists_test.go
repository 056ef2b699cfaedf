package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/p2p"
)

// fakeFlistPeers answers GetFlist with get.
type fakeFlistPeers struct {
	get func(digest []byte, f p2p.FlistFile) error
}

func (p fakeFlistPeers) GetFlist(ctx context.Context, digest []byte, f p2p.FlistFile, max int64) error {
	return p.get(digest, f)
}

// packedFlist packs a small tree holding one file with content and returns the flist's
// bytes and CID.
func packedFlist(t *testing.T, content string) ([]byte, cid.Cid) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.fl")
	if _, err := flist.PackDir(t.Context(), src, out, flist.PackConfig{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	c, err := flist.FileCID(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return data, c
}

// TestFlistsFromPeers: an flist a neighbour sends lands in the store under its CID and is
// announced and served; a failed or wrong transfer leaves nothing behind.
func TestFlistsFromPeers(t *testing.T) {
	data, c := packedFlist(t, "one")
	other, otherCID := packedFlist(t, "two")
	digest, _ := flist.FileDigest(c)
	var send func(f p2p.FlistFile) error
	var announced [][]byte
	s := &flistStore{
		dir:   t.TempDir(),
		peers: fakeFlistPeers{func(d []byte, f p2p.FlistFile) error { return send(f) }},
		added: func(d []byte) { announced = append(announced, d) },
	}
	left := func() []string {
		ents, _ := os.ReadDir(s.dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}

	// Half a file, then a failure: an error, nothing stored.
	send = func(f p2p.FlistFile) error {
		f.Write(data[:len(data)/2])
		return p2p.ErrNotFound
	}
	if _, err := s.resolve(t.Context(), c.String()); err == nil {
		t.Fatal("resolve succeeded with a failed transfer")
	}
	// Another flist (a neighbour's p2p layer would have caught it): refused.
	send = func(f p2p.FlistFile) error { _, err := f.Write(other); return err }
	if _, err := s.resolve(t.Context(), c.String()); err == nil {
		t.Fatal("resolve accepted another flist")
	}
	if names := left(); len(names) != 0 {
		t.Fatalf("failed transfers left %v", names)
	}
	if _, err := os.Stat(s.path(otherCID)); err == nil {
		t.Fatal("the wrong flist was kept")
	}

	// The right one.
	send = func(f p2p.FlistFile) error { _, err := f.Write(data); return err }
	got, err := s.resolve(t.Context(), c.String())
	if err != nil || !got.Equals(c) {
		t.Fatalf("resolve: %v, %v", got, err)
	}
	if len(announced) != 1 || !bytes.Equal(announced[0], digest) || !s.has(digest) {
		t.Errorf("announced %x, has %v; want the flist's digest", announced, s.has(digest))
	}
	rc, size, err := s.OpenFlist(t.Context(), digest)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(rc)
	rc.Close()
	if size != int64(len(data)) || !bytes.Equal(served, data) {
		t.Errorf("OpenFlist serves %d bytes (size %d), want the flist's %d", len(served), size, len(data))
	}
	var listed [][]byte
	s.digests(func(d []byte) bool { listed = append(listed, d); return true })
	if len(listed) != 1 || !bytes.Equal(listed[0], digest) {
		t.Errorf("digests lists %x", listed)
	}
	otherDigest, _ := flist.FileDigest(otherCID)
	if _, _, err := s.OpenFlist(t.Context(), otherDigest); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFlist of an flist not held: %v, want fs.ErrNotExist", err)
	}
	if _, _, err := s.OpenFlist(t.Context(), digest[:16]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFlist of a 16-byte digest: %v, want fs.ErrNotExist", err)
	}
}
