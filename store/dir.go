package store

import (
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/atomicfile"

	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// flushEvery is how many bytes Put writes before it starts flushing them to disk in the
// background, so that the disk works while the caller goes on, and Sync at the end has
// little left to wait for.
const flushEvery = 128 << 20

// Dir is a store in a local directory: block id X (hex) lives at <root>/<X[0:2]>/<X>.
// Reads fall back to the flat layout <root>/<X>. Writes are atomic (see writeAtomic), so
// a reader never sees a partial block, and durable once Sync returns.
type Dir struct {
	root     string
	dirs     sync.Map     // fan-out directories known to exist
	unsynced atomic.Int64 // bytes written since the last background flush began
	flushing sync.Mutex   // held by the background flush
}

var _ Store = (*Dir)(nil)

// NewDir returns the store in directory root (made absolute). The directory need not
// exist yet: Put creates it.
func NewDir(root string) (*Dir, error) {
	if root == "" {
		return nil, fmt.Errorf("%w: empty directory for dir store", ErrUnsupported)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("dir store %s: %w", root, err)
	}
	return &Dir{root: abs}, nil
}

// Root returns the store's directory.
func (d *Dir) Root() string { return d.root }

// String returns the store's URL, dir:///root.
func (d *Dir) String() string { return "dir://" + filepath.ToSlash(d.root) }

// Close does nothing.
func (d *Dir) Close() error { return nil }

func (d *Dir) paths(id flist.BlockID) (nested, flat string) {
	h := id.String()
	return filepath.Join(d.root, h[:2], h), filepath.Join(d.root, h)
}

// Get reads a block.
func (d *Dir) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if err := begin(ctx, d, "get", id); err != nil {
		return nil, err
	}
	nested, flat := d.paths(id)
	data, err := readBlockFile(nested)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = readBlockFile(flat)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: get %x: %w", d, id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: get %x: %w", d, id, err)
	}
	return data, nil
}

// readBlockFile reads a regular file of at most MaxBlockSize bytes.
func readBlockFile(name string) ([]byte, error) {
	f, size, err := openBlockFile(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One buffer of the file's size, and one byte more to see a file that grew.
	data := make([]byte, size+1)
	n, err := io.ReadFull(f, data)
	switch {
	case err == nil:
		return nil, fmt.Errorf("%s: grew while read", name)
	case err != io.ErrUnexpectedEOF && err != io.EOF:
		return nil, err
	case int64(n) != size:
		return nil, fmt.Errorf("%s: shrank while read", name)
	}
	return data[:n], nil
}

// openBlockFile opens a regular file of at most MaxBlockSize bytes and returns its size.
func openBlockFile(name string) (*os.File, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s: not a regular file", name)
	case fi.Size() > MaxBlockSize:
		err = tooLarge(fi.Size())
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// Open returns the file of block id, open for reading, and its size, for servers that
// send it as it is (the hub, with sendfile). The bytes are not verified. The caller
// closes the file.
func (d *Dir) Open(ctx context.Context, id flist.BlockID) (*os.File, int64, error) {
	if err := begin(ctx, d, "open", id); err != nil {
		return nil, 0, err
	}
	nested, flat := d.paths(id)
	f, size, err := openBlockFile(nested)
	if errors.Is(err, fs.ErrNotExist) {
		f, size, err = openBlockFile(flat)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%s: open %x: %w", d, id, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: open %x: %w", d, id, err)
	}
	return f, size, nil
}

func (d *Dir) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	if err := begin(ctx, d, "has", id); err != nil {
		return false, err
	}
	nested, flat := d.paths(id)
	for _, p := range []string{nested, flat} {
		fi, err := os.Stat(p)
		if err == nil {
			return fi.Mode().IsRegular(), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("%s: has %x: %w", d, id, err)
		}
	}
	return false, nil
}

// Put writes a block at <root>/<hex[0:2]>/<hex>, atomically, unless the store has it.
func (d *Dir) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	if err := begin(ctx, d, "put", id); err != nil {
		return err
	}
	if err := checkPut(d, id, data); err != nil {
		return err
	}
	if ok, err := d.Has(ctx, id); err != nil {
		return err
	} else if ok {
		return nil
	}
	nested, _ := d.paths(id)
	if err := d.mkdir(filepath.Dir(nested)); err != nil {
		return fmt.Errorf("%s: put %x: %w", d, id, err)
	}
	if err := atomicfile.Write(nested, data); err != nil {
		return fmt.Errorf("%s: put %x: %w", d, id, err)
	}
	if d.unsynced.Add(int64(len(data))) >= flushEvery && d.flushing.TryLock() {
		d.unsynced.Store(0)
		go func() {
			defer d.flushing.Unlock()
			_ = d.syncfs() // an error here shows again in Sync
		}()
	}
	return nil
}

// mkdir creates a fan-out directory once per store lifetime.
func (d *Dir) mkdir(dir string) error {
	if _, ok := d.dirs.Load(dir); ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d.dirs.Store(dir, struct{}{})
	return nil
}

// Sync makes every block written so far durable (one syncfs of the store's filesystem,
// after any background flush).
func (d *Dir) Sync(ctx context.Context) error {
	d.flushing.Lock()
	defer d.flushing.Unlock()
	d.unsynced.Store(0)
	if err := d.syncfs(); err != nil {
		return fmt.Errorf("%s: sync: %w", d, err)
	}
	return nil
}

func (d *Dir) syncfs() error { return atomicfile.Syncfs(d.root) }
