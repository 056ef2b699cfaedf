package agent

import (
	"bytes"

	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/hub"
)

// maxFlistSize bounds an flist file fetched from a URL or a hub.
const maxFlistSize = 512 << 20

// hubName matches USER/NAME references to flists named on a hub.
var hubName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)

// flistStore keeps flist files in the data directory, named by CID, so that a mount
// survives the source going away and restarts need no network.
type flistStore struct {
	dir  string
	hubs []*hub.Client
	http *http.Client
	// peers, if set, is asked for flists no hub has: an flist small enough to be one
	// block (flist.MaxBlockStored) is served by its holders under its CID's digest.
	peers Source
	// added, if set, is told the digest of each flist stored, to announce it.
	added func(digest []byte)
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
	tmp, err := os.CreateTemp(s.dir, ".incoming-*")
	if err != nil {
		return cid.Undef, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(r, maxFlistSize+1))
	if err == nil && n > maxFlistSize {
		err = fmt.Errorf("%w: flist larger than %d bytes", api.ErrBadRequest, maxFlistSize)
	}
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
	if err := checkFlist(tmp.Name()); err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if err := os.Rename(tmp.Name(), s.path(c)); err != nil {
		return cid.Undef, err
	}
	if digest, err := flist.BlockID(c); err == nil && s.added != nil && n <= flist.MaxBlockStored {
		s.added(digest)
	}
	return c, nil
}

// byDigest returns the bytes of a stored flist whose CID digest is id, if it is small
// enough to be served as one block.
func (s *flistStore) byDigest(id []byte) ([]byte, bool) {
	if len(id) != 32 {
		return nil, false
	}
	c, err := flist.BlockCID(id)
	if err != nil {
		return nil, false
	}
	fi, err := os.Stat(s.path(c))
	if err != nil || fi.Size() > flist.MaxBlockStored {
		return nil, false
	}
	data, err := os.ReadFile(s.path(c))
	return data, err == nil
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
	for _, h := range s.hubs {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(h.GetFlist(ctx, c.String(), pw)) }()
		got, err := s.add(pr)
		pr.Close()
		if err == nil && !got.Equals(c) {
			os.Remove(s.path(got))
			err = fmt.Errorf("hub %s sent an flist whose CID is %s", h, got)
		}
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	if s.peers != nil {
		if got, err := s.fromPeers(ctx, c); err == nil {
			return got, nil
		} else {
			errs = append(errs, err)
		}
	}
	return cid.Undef, fmt.Errorf("%w: flist %s: not here, and no hub or neighbour has it: %w", api.ErrNotFound, c, errors.Join(errs...))
}

// fromPeers fetches flist c from the neighbours (verified against its digest by the p2p
// layer, and again here by its CID).
func (s *flistStore) fromPeers(ctx context.Context, c cid.Cid) (cid.Cid, error) {
	digest, err := flist.BlockID(c)
	if err != nil {
		return cid.Undef, err
	}
	data, err := s.peers.Get(ctx, digest)
	if err != nil {
		return cid.Undef, fmt.Errorf("neighbours: %w", err)
	}
	got, err := s.add(bytes.NewReader(data))
	if err == nil && !got.Equals(c) {
		os.Remove(s.path(got))
		err = fmt.Errorf("a neighbour sent an flist whose CID is %s", got)
	}
	return got, err
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
