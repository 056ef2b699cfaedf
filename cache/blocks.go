package cache

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/syndtr/goleveldb/leveldb"
	"golang.org/x/sys/unix"

	"github.com/zosfs/zosfs-agent/flist"
)

// tmpPrefix starts the names of the temporary files writeRename makes; Open removes any
// it finds (left by a crash).
const tmpPrefix = ".tmp-"

// hexID returns the lower-case hex form of id.
func hexID(id []byte) string { return hex.EncodeToString(id) }

// parseName returns the id a block file name stands for, if it is one: the lower-case
// hex of a 32- or 16-byte id.
func parseName(name string) ([]byte, bool) {
	if len(name) != 64 && len(name) != 32 {
		return nil, false
	}
	id, err := hex.DecodeString(name)
	if err != nil || hexID(id) != name {
		return nil, false
	}
	return id, true
}

// parseFanout returns the first id byte a blocks/<hh> directory name stands for, if it
// is one.
func parseFanout(name string) (byte, bool) {
	if len(name) != 2 {
		return 0, false
	}
	b, err := hex.DecodeString(name)
	if err != nil || hexID(b) != name {
		return 0, false
	}
	return b[0], true
}

// writeBlock writes the file of block id, then records it in the index with access
// sequence seq. On failure it leaves neither.
func (c *Cache) writeBlock(id, data []byte, seq uint64) error {
	p := c.path(id)
	mkdir := func() error {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		c.dirMade[id[0]].Store(true)
		return nil
	}
	if !c.dirMade[id[0]].Load() {
		if err := mkdir(); err != nil {
			return err
		}
	}
	err := writeAtomic(p, data)
	if errors.Is(err, os.ErrNotExist) { // the directory was removed behind our back
		if err = mkdir(); err == nil {
			err = writeAtomic(p, data)
		}
	}
	if err != nil {
		return err
	}
	b := new(leveldb.Batch)
	b.Put(blockKey(id), encodeUint(uint64(len(data))))
	b.Put(recencyKey(id), encodeUint(seq))
	if err := c.db.Write(b, nil); err != nil {
		os.Remove(p)
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

// readBlock reads the file of a block that the index says is size bytes long. A file of
// another size gives an error wrapping flist.ErrBlockCorrupt; a missing one, an error
// wrapping os.ErrNotExist.
func readBlock(name string, size int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != size {
		return nil, fmt.Errorf("%w: %s: %v of %d bytes, the index says %d", flist.ErrBlockCorrupt, name, fi.Mode().Type(), fi.Size(), size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: shorter than %d bytes", flist.ErrBlockCorrupt, name, size)
		}
		return nil, err
	}
	return data, nil
}

// writeAtomic writes data to name so that no reader ever sees it partial, even if the
// process dies midway: into an unnamed O_TMPFILE inode linked into place once complete
// (a crash leaves nothing behind), or, where the filesystem has no O_TMPFILE, into a
// named temporary file renamed into place (a crash may leave the temporary file, which
// Open removes). An existing file of that name is replaced: the caller owns the name (its
// block is neither cached nor being written by anyone else), so such a file is a leftover.
// Nothing is fsynced (see the package documentation).
func writeAtomic(name string, data []byte) error {
	err := writeTmpfile(name, data)
	if errors.Is(err, errNoTmpfile) {
		err = writeRename(name, data)
	}
	return err
}

var errNoTmpfile = errors.New("O_TMPFILE not supported")

func writeTmpfile(name string, data []byte) error {
	fd, err := unix.Open(filepath.Dir(name), unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return errNoTmpfile
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	// Linking through /proc needs no privilege, unlike linkat's AT_EMPTY_PATH.
	link := func() error {
		return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
	}
	err = link()
	if errors.Is(err, unix.EEXIST) {
		if err = os.Remove(name); err == nil || errors.Is(err, os.ErrNotExist) {
			err = link()
		}
	}
	if errors.Is(err, unix.ENOENT) { // no /proc
		return errNoTmpfile
	}
	return err
}

func writeRename(name string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), tmpPrefix+filepath.Base(name)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// syncfs makes everything written to the filesystem holding dir durable.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
