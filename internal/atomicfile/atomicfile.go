// Package atomicfile writes files that readers never see half written, fast enough for
// block stores that write thousands of small files, and makes them durable in bulk.
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// TmpPrefix starts the names of the temporary files the rename fallback makes: a
// directory scan after a crash can remove any it finds.
const TmpPrefix = ".tmp-"

// Write writes data to name (mode 0644), replacing any file there, so that a reader sees
// either the old file or the whole new one. The data goes into an unnamed O_TMPFILE inode
// linked into place once complete, or, where the filesystem has no O_TMPFILE, into a
// named temporary file renamed into place (three times slower on ext4: the extra
// directory entries dominate). Nothing is fsynced: see Syncfs.
func Write(name string, data []byte) error {
	err := WriteTmpfile(name, data)
	if errors.Is(err, errNoTmpfile) {
		err = WriteRename(name, data)
	}
	return err
}

var errNoTmpfile = errors.New("O_TMPFILE not supported")

// WriteTmpfile is Write through O_TMPFILE; it fails where that is not supported.
func WriteTmpfile(name string, data []byte) error {
	fd, err := unix.Open(filepath.Dir(name), unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return err // no directory: the caller may create it and try again
		}
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

// WriteRename is Write through a named temporary file and a rename.
func WriteRename(name string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), TmpPrefix+filepath.Base(name)+"-*")
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

// Syncfs makes everything written to the filesystem holding dir durable: one call after
// many Writes instead of an fsync each (which made packing ten times slower).
func Syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
