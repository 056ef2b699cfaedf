package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/p2p"
)

// maxFlistSize bounds an flist file fetched from a URL, a hub or a neighbour.
const maxFlistSize = 512 << 20

// hubName matches USER/NAME references to flists named on a hub.
var hubName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)

// flistStore keeps flist files in the data directory, named by CID, so that a mount
// survives the source going away and restarts need no network.
type flistStore struct {
	dir  string
	hubs []*hub.Client
	http *http.Client
	// peers, if set, is asked for flists no hub has: neighbours serve the flists they
	// hold, of any size, under their CID's digest (p2p.FlistProtocolID).
	peers flistPeers
	// added, if set, is told the digest of each flist stored, to announce it.
	added func(digest []byte)
	// peerFirst bounds the try of the neighbours before the hubs (Config.PeerTimeout);
	// 0 asks the hubs first.
	peerFirst time.Duration
}

// flistPeers fetches flist files from neighbours (the p2p node).
type flistPeers interface {
	GetFlist(ctx context.Context, digest []byte, f p2p.FlistFile, max int64) error
}

func (s *flistStore) path(c cid.Cid) string { return filepath.Join(s.dir, c.String()) }

// resolve turns a reference (CID, path, URL, USER/NAME) into the CID of a local copy.
func (s *flistStore) resolve(ctx context.Context, ref string) (cid.Cid, error) {
	ref = strings.TrimSpace(ref)
	switch {
	case ref == "":
		return cid.Undef, fmt.Errorf("%w: empty flist reference", api.ErrBadRequest)
	case strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://"):
		return s.fetchURL(ctx, ref)
	case filepath.IsAbs(ref):
		f, err := os.Open(ref)
		if err != nil {
			return cid.Undef, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		defer f.Close()
		return s.add(f)
	}
	if c, err := cid.Decode(ref); err == nil {
		return s.byCID(ctx, c)
	}
	if hubName.MatchString(ref) {
		return s.byName(ctx, ref)
	}
	return cid.Undef, fmt.Errorf("%w: %q is not a CID, an absolute path, a URL or USER/NAME", api.ErrBadRequest, ref)
}

// add copies an flist into the store, checking it opens, and returns its CID.
func (s *flistStore) add(r io.Reader) (cid.Cid, error) {
	return s.addWith(cid.Undef, copyFrom(r))
}

// copyFrom is an addWith filler copying r, at most maxFlistSize bytes.
func copyFrom(r io.Reader) func(tmp *os.File) error {
	return func(tmp *os.File) error {
		n, err := io.Copy(tmp, io.LimitReader(r, maxFlistSize+1))
		if err == nil && n > maxFlistSize {
			err = fmt.Errorf("%w: flist larger than %d bytes", api.ErrBadRequest, maxFlistSize)
		}
		return err
	}
}

// addWith stores the flist fill writes into a temporary file, once whole: named by the
// CID of its bytes (which must be want, unless want is cid.Undef), checked to open,
// renamed into place (never a partial or unwanted file under a CID), announced. It
// returns the CID.
func (s *flistStore) addWith(want cid.Cid, fill func(tmp *os.File) error) (cid.Cid, error) {
	tmp, err := os.CreateTemp(s.dir, ".incoming-*")
	if err != nil {
		return cid.Undef, err
	}
	defer os.Remove(tmp.Name())
	err = fill(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return cid.Undef, err
	}
	c, err := flist.FileCIDPath(tmp.Name())
	if err != nil {
		return cid.Undef, err
	}
	if want.Defined() && !c.Equals(want) {
		return cid.Undef, fmt.Errorf("got an flist whose CID is %s, want %s", c, want)
	}
	if err := checkFlist(tmp.Name()); err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if err := os.Rename(tmp.Name(), s.path(c)); err != nil {
		return cid.Undef, err
	}
	if digest, err := flist.FileDigest(c); err == nil && s.added != nil {
		s.added(digest)
	}
	return c, nil
}

// OpenFlist implements p2p.FlistStore: the stored flist whose CID digest is digest, for
// a neighbour. Files are named by the CID of their bytes when stored, so they hash to
// digest. One the store lacks is an error wrapping fs.ErrNotExist.
func (s *flistStore) OpenFlist(ctx context.Context, digest []byte) (io.ReadCloser, int64, error) {
	c, err := flist.FileCIDOf(digest)
	if err != nil {
		return nil, 0, fmt.Errorf("flist digest %x: %w", digest, fs.ErrNotExist)
	}
	f, err := os.Open(s.path(c))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// has reports whether the store holds the flist whose CID digest is digest.
func (s *flistStore) has(digest []byte) bool {
	c, err := flist.FileCIDOf(digest)
	if err != nil {
		return false
	}
	_, err = os.Stat(s.path(c))
	return err == nil
}

// digests calls fn with the CID digest of each flist stored, until it returns false.
func (s *flistStore) digests(fn func(digest []byte) bool) {
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		c, err := cid.Decode(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // .incoming-* files, strays
		}
		if d, err := flist.FileDigest(c); err == nil && !fn(d) {
			return
		}
	}
}

// checkFlist opens an flist to make sure it is one.
func checkFlist(path string) error {
	f, err := flist.Open(context.Background(), path)
	if err != nil {
		return err
	}
	return f.Close()
}

func (s *flistStore) byCID(ctx context.Context, c cid.Cid) (cid.Cid, error) {
	if _, err := os.Stat(s.path(c)); err == nil {
		return c, nil
	}
	var errs []error
	// Neighbours first, for at most peerFirst when there are hubs to fall back on: an
	// flist a neighbour holds costs the uplink nothing.
	if s.peers != nil && len(s.hubs) > 0 && s.peerFirst > 0 {
		pctx, cancel := context.WithTimeout(ctx, s.peerFirst)
		_, err := s.fromPeers(pctx, c)
		cancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("neighbours, within %v: %w", s.peerFirst, err))
	}
	for _, h := range s.hubs {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(h.GetFlist(ctx, c.String(), pw)) }()
		_, err := s.addWith(c, copyFrom(pr))
		pr.Close()
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("hub %s: %w", h, err))
	}
	if s.peers != nil { // the hubs failed (or there are none): the neighbours, unhurried
		if _, err := s.fromPeers(ctx, c); err == nil {
			return c, nil
		} else {
			errs = append(errs, fmt.Errorf("neighbours: %w", err))
		}
	}
	err := errors.Join(errs...)
	if errors.Is(err, syscall.ENOSPC) { // found, but it cannot be kept: not "not found"
		return cid.Undef, fmt.Errorf("flist %s cannot be stored in %s: the disk is full: %w", c, s.dir, err)
	}
	return cid.Undef, fmt.Errorf("%w: flist %s: not here, and no hub or neighbour has it: %w", api.ErrNotFound, c, err)
}

// fromPeers fetches flist c from the neighbours, straight into a temporary file
// (verified against its digest by the p2p layer, and again here by its CID).
func (s *flistStore) fromPeers(ctx context.Context, c cid.Cid) (cid.Cid, error) {
	digest, err := flist.FileDigest(c)
	if err != nil {
		return cid.Undef, fmt.Errorf("neighbours: %w", err)
	}
	return s.addWith(c, func(tmp *os.File) error {
		return s.peers.GetFlist(ctx, digest, tmp, maxFlistSize)
	})
}

func (s *flistStore) byName(ctx context.Context, name string) (cid.Cid, error) {
	var errs []error
	for _, h := range s.hubs {
		ref, err := h.Resolve(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := cid.Decode(ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("hub %s: bad CID %q for %s", h, ref, name))
			continue
		}
		return s.byCID(ctx, c)
	}
	if len(errs) == 0 {
		return cid.Undef, fmt.Errorf("%w: %s names an flist on a hub, and no hub is configured (--hub)", api.ErrBadRequest, name)
	}
	return cid.Undef, fmt.Errorf("%s: %w", name, errors.Join(errs...))
}

func (s *flistStore) fetchURL(ctx context.Context, u string) (cid.Cid, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return cid.Undef, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cid.Undef, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return s.add(resp.Body)
}

// open opens the local copy of flist c.
func (s *flistStore) open(ctx context.Context, c cid.Cid) (flist.Flist, error) {
	return flist.Open(ctx, s.path(c))
}

// joinFlist opens the node's session with the holders of flist c (p2p.Node.JoinFlist)
// for as long as it is in use; the returned func ends it.
func (d *Daemon) joinFlist(c cid.Cid) (leave func()) {
	digest, err := flist.FileDigest(c)
	if err != nil {
		return func() {}
	}
	return d.node.JoinFlist(digest)
}
