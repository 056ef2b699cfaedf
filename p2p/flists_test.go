package p2p_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"golang.org/x/crypto/blake2b"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/p2p"
)

// memFlists is a FlistStore in memory, keyed by digest. extra makes it serve every
// file with that many bytes appended (so that it no longer hashes to its digest); err,
// if set, is what OpenFlist returns.
type memFlists struct {
	mu    sync.Mutex
	m     map[string][]byte
	extra int
	err   error
}

func newFlists(files ...[]byte) *memFlists {
	s := &memFlists{m: map[string][]byte{}}
	for _, f := range files {
		d := blake2b.Sum256(f)
		s.m[string(d[:])] = f
	}
	return s
}

func (s *memFlists) OpenFlist(ctx context.Context, digest []byte) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, 0, s.err
	}
	data, ok := s.m[string(digest)]
	if !ok {
		return nil, 0, fmt.Errorf("flist %x: %w", digest, fs.ErrNotExist)
	}
	if s.extra > 0 {
		data = append(bytes.Clone(data), make([]byte, s.extra)...)
	}
	return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
}

// randomFlist is size pseudo-random bytes standing in for an flist file (the p2p layer
// only hashes it), and its digest.
func randomFlist(size int, seed uint64) ([]byte, []byte) {
	data := make([]byte, size)
	mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(data)
	d := blake2b.Sum256(data)
	return data, d[:]
}

// tempFlistFile is a new empty file for GetFlist, removed at cleanup.
func tempFlistFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "flist"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func fileBytes(t *testing.T, f *os.File) []byte {
	t.Helper()
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestGetFlist: a 12 MiB flist (far above flist.MaxBlockStored) comes whole and verified
// from a neighbour; an flist no one has is "not found" at once; a size bound below the
// flist's refuses it without banning the peer.
func TestGetFlist(t *testing.T) {
	const maxFlist = 512 << 20
	data, digest := randomFlist(12<<20, 1)
	if len(data) <= flist.MaxBlockStored {
		t.Fatal("test flist not larger than a block")
	}
	a := startNode(t, p2p.Config{}, p2p.Service{Flists: newFlists(data)})
	b := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "b to connect to a", 5*time.Second, func() bool { return connected(b, a.ID()) })
	ctx := ctxTimeout(t, 30*time.Second)

	f := tempFlistFile(t)
	start := time.Now()
	if err := b.GetFlist(ctx, digest, f, maxFlist); err != nil {
		t.Fatalf("GetFlist: %v", err)
	}
	t.Logf("12 MiB flist from a neighbour in %v", time.Since(start).Round(time.Millisecond))
	if got := fileBytes(t, f); !bytes.Equal(got, data) {
		t.Fatalf("GetFlist wrote %d bytes, not the flist's %d", len(got), len(data))
	}
	if as, bs := a.Stats(), b.Stats(); as.ServedFlists != 1 || bs.FetchedFlists != 1 || bs.Rejected != 0 {
		t.Errorf("a served %d flists, b fetched %d and rejected %d; want 1, 1, 0", as.ServedFlists, bs.FetchedFlists, bs.Rejected)
	}

	// An flist no one has.
	start = time.Now()
	_, missing := randomFlist(10, 2)
	if err := b.GetFlist(ctx, missing, tempFlistFile(t), maxFlist); !errors.Is(err, p2p.ErrNotFound) {
		t.Errorf("GetFlist of a missing flist: %v, want ErrNotFound", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a missing flist took %v to report", d)
	}

	// Larger than the caller accepts: refused, the peer is not at fault.
	err := b.GetFlist(ctx, digest, tempFlistFile(t), int64(len(data))-1)
	if err == nil || errors.Is(err, flist.ErrBlockCorrupt) || b.Banned(a.ID()) {
		t.Errorf("GetFlist with a bound below the size: %v, banned %v; want an error, no ban", err, b.Banned(a.ID()))
	}
	// Bad arguments.
	if err := b.GetFlist(ctx, digest[:16], tempFlistFile(t), maxFlist); err == nil {
		t.Error("GetFlist of a 16-byte digest succeeded")
	}
	// A store that fails (not "not found") answers an error; the client moves on.
	a2 := startNode(t, p2p.Config{}, p2p.Service{Flists: &memFlists{err: errors.New("disk on fire")}})
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a2)}}, p2p.Service{})
	testkit.WaitFor(t, "c to connect", 5*time.Second, func() bool { return connected(c, a2.ID()) })
	if err := c.GetFlist(ctx, digest, tempFlistFile(t), maxFlist); !errors.Is(err, p2p.ErrNotFound) || c.Banned(a2.ID()) {
		t.Errorf("GetFlist from a failing store: %v (banned %v)", err, c.Banned(a2.ID()))
	}
}

// TestGetFlistPoisoned: a peer that serves other bytes (here: the flist with junk
// appended) is banned and the error wraps flist.ErrBlockCorrupt; the next GetFlist into
// the same file, from a good peer, leaves exactly the flist in it.
func TestGetFlistPoisoned(t *testing.T) {
	data, digest := randomFlist(6<<20, 3)
	poisoned := newFlists(data)
	poisoned.extra = 1 << 20
	bad := startNode(t, p2p.Config{}, p2p.Service{Flists: poisoned})
	good := startNode(t, p2p.Config{}, p2p.Service{Flists: newFlists(data)})
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, bad)}}, p2p.Service{})
	testkit.WaitFor(t, "c to connect to the bad peer", 5*time.Second, func() bool { return connected(c, bad.ID()) })
	ctx := ctxTimeout(t, 30*time.Second)

	f := tempFlistFile(t)
	err := c.GetFlist(ctx, digest, f, 512<<20)
	if !errors.Is(err, flist.ErrBlockCorrupt) {
		t.Fatalf("GetFlist from a poisoned peer: %v, want flist.ErrBlockCorrupt", err)
	}
	if !c.Banned(bad.ID()) || c.Stats().Rejected != 1 || c.Stats().FetchedFlists != 0 {
		t.Errorf("after a wrong flist: banned %v, stats %+v", c.Banned(bad.ID()), c.Stats())
	}
	testkit.WaitFor(t, "the bad peer to be disconnected", 5*time.Second, func() bool { return !connected(c, bad.ID()) })

	if err := c.Connect(ctx, loopAddr(t, good)); err != nil {
		t.Fatal(err)
	}
	if err := c.GetFlist(ctx, digest, f, 512<<20); err != nil {
		t.Fatalf("GetFlist from the good peer: %v", err)
	}
	if got := fileBytes(t, f); !bytes.Equal(got, data) {
		t.Fatalf("the file holds %d bytes, want the flist's %d", len(got), len(data))
	}
}

// TestGetFlistThroughDHT: c is connected to b only; a, which b knows, announced the flist
// under its CID: c finds a as a provider and fetches from it.
func TestGetFlistThroughDHT(t *testing.T) {
	data, digest := randomFlist(1<<20, 4)
	a := startNode(t, p2p.Config{}, p2p.Service{Flists: newFlists(data)})
	b := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	c := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, b)}}, p2p.Service{})
	testkit.WaitFor(t, "b-a and c-b connections", 5*time.Second, func() bool {
		return connected(b, a.ID()) && connected(c, b.ID())
	})
	provideFlist(t, a, digest)
	if a.Stats().DHTMessages == 0 {
		t.Errorf("a provided an flist and counted no DHT message")
	}
	ctx := ctxTimeout(t, 30*time.Second)
	testkit.WaitFor(t, "c to find a as a provider", 10*time.Second, func() bool {
		provs, err := c.FindFlistProviders(ctx, digest, 4)
		return err == nil && slices.Contains(provs, a.ID())
	})
	// Each FindProviders above is a lookup in which c's DHT dials a (b names it as the
	// closest peer and the provider). On a loaded machine such a dial may fail (its
	// 5 s local dial timeout), and the swarm then refuses every dial of a for its
	// backoff (5 s and growing) with "dial backoff" — GetFlist's own dial included, which
	// is what this test is about: forget that backoff.
	p2p.ClearDialBackoff(c, a.ID())
	f := tempFlistFile(t)
	if err := c.GetFlist(ctx, digest, f, 512<<20); err != nil {
		t.Fatalf("GetFlist through the DHT: %v", err)
	}
	if !bytes.Equal(fileBytes(t, f), data) {
		t.Fatal("bytes differ")
	}
}

// TestGetFlistPrivateNetwork: flists flow within a private network and not to outsiders.
func TestGetFlistPrivateNetwork(t *testing.T) {
	data, digest := randomFlist(64<<10, 5)
	psk := pskFile()
	a := startNode(t, p2p.Config{PSK: psk}, p2p.Service{Flists: newFlists(data)})
	b := startNode(t, p2p.Config{PSK: psk, Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	o := startNode(t, p2p.Config{Bootstrap: []string{loopAddr(t, a)}}, p2p.Service{})
	testkit.WaitFor(t, "b to connect to a", 5*time.Second, func() bool { return connected(b, a.ID()) })
	ctx := ctxTimeout(t, 20*time.Second)
	if err := b.GetFlist(ctx, digest, tempFlistFile(t), 1<<20); err != nil {
		t.Fatalf("GetFlist within the private network: %v", err)
	}
	if err := o.GetFlist(ctx, digest, tempFlistFile(t), 1<<20); !errors.Is(err, p2p.ErrNotFound) {
		t.Errorf("GetFlist by an outsider: %v, want ErrNotFound", err)
	}
	if got := a.Stats().ServedFlists; got != 1 {
		t.Errorf("a served %d flists, want 1", got)
	}
}

// TestFlistBadResponses runs fake peers that break the flist format: the client fails,
// bans the peer for provable faults only, and never hangs.
func TestFlistBadResponses(t *testing.T) {
	data, digest := randomFlist(100<<10, 6)
	header := func(status byte, n int) []byte { return binary.AppendUvarint([]byte{status}, uint64(n)) }
	cases := []struct {
		name    string
		respond func(w *bufio.Writer)
		ban     bool
		corrupt bool
	}{
		{"longer than announced", func(w *bufio.Writer) {
			w.Write(header(0, len(data)))
			w.Write(data)
			w.Write([]byte("junk"))
		}, true, false},
		{"wrong bytes", func(w *bufio.Writer) {
			w.Write(header(0, len(data)))
			w.Write(make([]byte, len(data)))
		}, true, true},
		{"unknown status", func(w *bufio.Writer) { w.Write(header(9, 0)) }, true, false},
		{"oversized error", func(w *bufio.Writer) { w.Write(header(2, 10000)) }, true, false},
		{"varint overflow", func(w *bufio.Writer) { w.Write(append([]byte{0}, bytes.Repeat([]byte{0xff}, 11)...)) }, true, false},
		// Not provable faults: no ban.
		{"truncated", func(w *bufio.Writer) {
			w.Write(header(0, len(data)))
			w.Write(data[:1000])
		}, false, false},
		{"too large", func(w *bufio.Writer) { w.Write(header(0, 1<<40)) }, false, false},
		{"error", func(w *bufio.Writer) {
			w.Write(header(2, 4))
			w.Write([]byte("busy"))
		}, false, false},
		{"silent", func(w *bufio.Writer) {}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			h.SetStreamHandler(p2p.FlistProtocolID, func(s network.Stream) {
				var req [32]byte
				if _, err := io.ReadFull(s, req[:]); err != nil {
					s.Reset()
					return
				}
				w := bufio.NewWriter(s)
				tc.respond(w)
				w.Flush()
				s.Close()
			})
			c := startNode(t, p2p.Config{}, p2p.Service{})
			ctx := ctxTimeout(t, 10*time.Second)
			if err := c.Connect(ctx, h.Addrs()[0].String()+"/p2p/"+h.ID().String()); err != nil {
				t.Fatal(err)
			}
			err = c.GetFlist(ctx, digest, tempFlistFile(t), 1<<20)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("GetFlist from a broken peer: %v (ctx %v)", err, ctx.Err())
			}
			if c.Banned(h.ID()) != tc.ban {
				t.Errorf("banned %v, want %v: %v", c.Banned(h.ID()), tc.ban, err)
			}
			if errors.Is(err, flist.ErrBlockCorrupt) != tc.corrupt {
				t.Errorf("error %v: wraps flist.ErrBlockCorrupt %v, want %v", err, !tc.corrupt, tc.corrupt)
			}
		})
	}
}
