package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// FlistInfo is one entry of the GET /flists listing, and the answer of GET /names/USER/NAME.
// Name is empty for an flist no name points at; Updated is when the name was last set, or
// when an unnamed flist was uploaded.
type FlistInfo struct {
	Name    string    `json:"name,omitempty"`
	CID     string    `json:"cid"`
	Size    int64     `json:"size"`
	Updated time.Time `json:"updated"`
}

// UploadResult is the answer of POST /flists.
type UploadResult struct {
	CID  string `json:"cid"`
	Name string `json:"name,omitempty"`
	Size int64  `json:"size"`
}

// maxNamePart bounds each of the two parts of a name, in bytes.
const maxNamePart = 128

var namePart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// reservedUsers cannot own names: their paths are the hub's own routes.
var reservedUsers = map[string]bool{"blocks": true, "flists": true, "names": true, "health": true}

// ValidName reports an error unless name is USER/NAME, each part matching
// [A-Za-z0-9][A-Za-z0-9._-]* and at most 128 bytes long, USER not a reserved route.
// Such a name holds no '/' beyond the one separator, no "..", no NUL.
func ValidName(name string) error {
	user, base, ok := strings.Cut(name, "/")
	if !ok {
		return fmt.Errorf("name %q: want USER/NAME", name)
	}
	for _, p := range []string{user, base} {
		if len(p) > maxNamePart || !namePart.MatchString(p) {
			return fmt.Errorf("name %q: each part must match [A-Za-z0-9][A-Za-z0-9._-]* and be at most %d bytes", name, maxNamePart)
		}
	}
	if reservedUsers[user] {
		return fmt.Errorf("name %q: user %q is reserved", name, user)
	}
	return nil
}

// ParseCID parses an flist CID (CIDv1, codec raw, BLAKE2b-256) and returns its canonical
// string form.
func ParseCID(s string) (string, error) {
	key, _, err := parseCID(s)
	return key, err
}

// parseCID returns the canonical form of an flist CID and its digest (the BLAKE2b-256 of
// the file).
func parseCID(s string) (string, []byte, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return "", nil, fmt.Errorf("cid %.80q: %w", s, err)
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return "", nil, fmt.Errorf("cid %.80q: %w", s, err)
	}
	if c.Version() != 1 || c.Prefix().Codec != cid.Raw || d.Code != mh.BLAKE2B_MIN+31 || d.Length != 32 {
		return "", nil, fmt.Errorf("cid %.80q: not an flist CID (want CIDv1, raw, blake2b-256)", s)
	}
	return c.String(), d.Digest, nil
}

// flistRecord is what the hub knows of an flist it holds.
type flistRecord struct {
	Size    int64     `json:"size"`
	MD5     string    `json:"md5"`   // hex, for the 0-hub .md5 files
	Parts   []string  `json:"parts"` // hex BLAKE2b-256 of each stored part, in file order
	Created time.Time `json:"created"`
}

// nameRecord is where a name points.
type nameRecord struct {
	CID     string    `json:"cid"`
	Updated time.Time `json:"updated"`
}

// catalog is the hub's small mutable state, kept in memory and saved to two JSON files.
type catalog struct {
	dir    string
	mu     sync.Mutex
	flists map[string]flistRecord // CID -> record
	names  map[string]nameRecord  // USER/NAME -> CID
}

const (
	flistsFile = "flists.json"
	namesFile  = "names.json"
)

func loadCatalog(dir string) (*catalog, error) {
	c := &catalog{dir: dir, flists: map[string]flistRecord{}, names: map[string]nameRecord{}}
	if err := loadJSON(filepath.Join(dir, flistsFile), &c.flists); err != nil {
		return nil, err
	}
	if err := loadJSON(filepath.Join(dir, namesFile), &c.names); err != nil {
		return nil, err
	}
	for k := range c.flists {
		if _, err := ParseCID(k); err != nil {
			return nil, fmt.Errorf("%s: %w", flistsFile, err)
		}
	}
	for k, v := range c.names {
		if err := ValidName(k); err != nil {
			return nil, fmt.Errorf("%s: %w", namesFile, err)
		}
		if _, ok := c.flists[v.CID]; !ok {
			return nil, fmt.Errorf("%s: %s points at %s, which %s does not hold", namesFile, k, v.CID, flistsFile)
		}
	}
	return c, nil
}

func loadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// saveJSON writes v to dir/name atomically and durably.
func saveJSON(dir, name string, v any) (err error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(append(data, '\n')); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (c *catalog) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flists)
}

func (c *catalog) flist(cid string) (flistRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.flists[cid]
	return r, ok
}

// name returns where name points and that flist's record.
func (c *catalog) name(name string) (nameRecord, flistRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.names[name]
	if !ok {
		return nameRecord{}, flistRecord{}, false
	}
	r, ok := c.flists[n.CID]
	return n, r, ok
}

// addFlist records an flist whose parts are stored, uploaded by client.
func (c *catalog) addFlist(cid string, r flistRecord, client string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.flists[cid]; ok {
		return nil
	}
	if err := appendAudit(c.dir, auditRecord{Time: r.Created, Action: "flist", CID: cid, Size: r.Size, Client: client}); err != nil {
		return err
	}
	c.flists[cid] = r
	if err := saveJSON(c.dir, flistsFile, c.flists); err != nil {
		delete(c.flists, cid)
		return fmt.Errorf("save %s: %w", flistsFile, err)
	}
	return nil
}

// setName points name at cid, which must be held (else ErrNotFound), on behalf of
// client, and returns the CID it pointed at before ("" if none). The change is in the
// audit file before it is answered: one that cannot be recorded is undone.
func (c *catalog) setName(name, cid string, now time.Time, client string) (info FlistInfo, prev string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.flists[cid]
	if !ok {
		return FlistInfo{}, "", fmt.Errorf("flist %s: %w on this hub", cid, ErrNotFound)
	}
	old, had := c.names[name]
	undo := func() {
		if had {
			c.names[name] = old
		} else {
			delete(c.names, name)
		}
	}
	c.names[name] = nameRecord{CID: cid, Updated: now}
	if err := saveJSON(c.dir, namesFile, c.names); err != nil {
		undo()
		return FlistInfo{}, "", fmt.Errorf("save %s: %w", namesFile, err)
	}
	if err := appendAudit(c.dir, auditRecord{Time: now, Action: "name", Name: name, Old: old.CID, CID: cid, Client: client}); err != nil {
		undo()
		if serr := saveJSON(c.dir, namesFile, c.names); serr != nil {
			err = errors.Join(err, fmt.Errorf("save %s: %w", namesFile, serr))
		}
		return FlistInfo{}, "", err
	}
	return FlistInfo{Name: name, CID: cid, Size: r.Size, Updated: now}, old.CID, nil
}

// list returns every name (sorted), then every flist no name points at (by CID).
func (c *catalog) list() []FlistInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []FlistInfo{}
	named := map[string]bool{}
	for n, v := range c.names {
		out = append(out, FlistInfo{Name: n, CID: v.CID, Size: c.flists[v.CID].Size, Updated: v.Updated})
		named[v.CID] = true
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	var unnamed []FlistInfo
	for k, r := range c.flists {
		if !named[k] {
			unnamed = append(unnamed, FlistInfo{CID: k, Size: r.Size, Updated: r.Created})
		}
	}
	sort.Slice(unnamed, func(i, j int) bool { return unnamed[i].CID < unnamed[j].CID })
	return append(out, unnamed...)
}
