package mount

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxStacked bounds how many stale mounts stacked on one path ClearStale removes.
const maxStacked = 16

// ErrForeign: a path holds a filesystem that is not a stale zosfs mount (a live mount, an
// admin's tmpfs, anything mounted below it). ClearStale leaves it as it is.
var ErrForeign = errors.New("a filesystem that is not a stale zosfs mount is there")

// ClearStale removes the mounts a killed zosfs process left at path: dead fuse.zosfs
// mounts ("transport endpoint is not connected"), each with the overlay of a writable
// mount over it, and the private directories Run had created for them. It touches
// nothing else: a filesystem on top that is not such a mount, or anything mounted below
// path, stops it with ErrForeign, because detaching path would take that filesystem
// (and its data) with it. Nothing mounted at path is not an error.
func ClearStale(path string) error {
	p, err := canonical(path)
	if err != nil {
		return err
	}
	for range maxStacked {
		mounts, err := readMountinfo()
		if err != nil {
			return err
		}
		top := topMountAt(mounts, p)
		if top == nil {
			return nil
		}
		if err := checkStale(mounts, p, top); err != nil {
			return err
		}
		// Lazily: a dead mount may still be some process's working directory.
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !notMounted(err) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
		if top.fsType == "overlay" {
			cleanOverlay(mounts, top)
		}
	}
	return fmt.Errorf("unmount %s: more than %d stale mounts stacked on it", p, maxStacked)
}

// checkStale returns nil if top, the mount on top at p, is ours to remove: a dead zosfs
// FUSE mount, or an overlay over one, with nothing mounted below p.
func checkStale(mounts []mountEntry, p string, top *mountEntry) error {
	for _, m := range mounts {
		if strings.HasPrefix(m.mountPoint, p+"/") {
			return fmt.Errorf("%w: %s is mounted under %s", ErrForeign, m.mountPoint, p)
		}
	}
	switch top.fsType {
	case "fuse." + fsType:
		if deadFUSE(p) {
			return nil
		}
		return fmt.Errorf("%w: a live zosfs mount is at %s", ErrForeign, p)
	case "overlay":
		for _, lower := range overlayLowers(top) {
			if m := topMountAt(mounts, lower); m != nil && m.fsType == "fuse."+fsType && isPrivateLower(lower) && deadFUSE(lower) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s (%s) is mounted at %s", ErrForeign, top.fsType, top.source, p)
}

// deadFUSE reports whether the FUSE mount at path has lost its server: the kernel then
// answers every request with ENOTCONN (or ECONNABORTED once the connection was aborted).
// statfs always asks the server, where stat may be answered from cached attributes.
func deadFUSE(path string) bool {
	var st unix.Statfs_t
	err := unix.Statfs(path, &st)
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// isPrivateLower reports whether dir is named as Run names the private lower directory
// of a writable mount.
func isPrivateLower(dir string) bool {
	return filepath.Base(dir) == "lower" && strings.HasPrefix(filepath.Base(filepath.Dir(dir)), "zosfs-mount-")
}

// overlayLowers returns the lower directories of an overlay mount.
func overlayLowers(ovl *mountEntry) []string {
	var out []string
	for _, opt := range splitOptions(ovl.superOpts) {
		if key, val, _ := strings.Cut(opt, "="); key == "lowerdir" {
			out = append(out, strings.Split(val, ":")...)
		}
	}
	return out
}

// cleanOverlay removes what a writable zosfs mount had under its overlay: the FUSE mount
// at its private lower directory, that private directory (with the temporary upper
// directory, if any), and the overlay's work directory next to a user's upper directory.
// It touches only directories named as Run names them.
func cleanOverlay(mounts []mountEntry, ovl *mountEntry) {
	for _, lower := range overlayLowers(ovl) {
		m := topMountAt(mounts, lower)
		if m == nil || m.fsType != "fuse."+fsType || !isPrivateLower(lower) {
			continue
		}
		if err := unix.Unmount(lower, unix.MNT_DETACH); err != nil && !notMounted(err) {
			continue
		}
		state := filepath.Dir(lower)
		if busy, err := mountedUnder(state); err == nil && !busy {
			_ = os.RemoveAll(state)
		}
	}
	for _, opt := range splitOptions(ovl.superOpts) {
		if key, val, _ := strings.Cut(opt, "="); key == "workdir" && strings.HasSuffix(val, ".zosfs-work") {
			if busy, err := mountedUnder(val); err == nil && !busy {
				_ = os.RemoveAll(val)
			}
		}
	}
}

// IsMountpoint reports whether something is mounted at path (per /proc/self/mountinfo;
// a dead FUSE mount counts). path itself is not resolved, so a dead mount does not make
// it fail.
func IsMountpoint(path string) (bool, error) {
	p, err := canonical(path)
	if err != nil {
		return false, err
	}
	mounts, err := readMountinfo()
	if err != nil {
		return false, err
	}
	return topMountAt(mounts, p) != nil, nil
}

// unmountOne unmounts the mount at path, lazily if it is busy. Nothing mounted there
// is not an error.
func unmountOne(path string) error {
	err := unix.Unmount(path, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = unix.Unmount(path, unix.MNT_DETACH)
	}
	if err != nil && !notMounted(err) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}

// mountedUnder reports whether anything is mounted at dir or below it.
func mountedUnder(dir string) (bool, error) {
	p, err := canonical(dir)
	if err != nil {
		return false, err
	}
	mounts, err := readMountinfo()
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m.mountPoint == p || strings.HasPrefix(m.mountPoint, p+"/") {
			return true, nil
		}
	}
	return false, nil
}

// canonical makes path absolute and resolves symlinks in its parent, not in its last
// component (which may be a dead mount that cannot be stat'ed).
func canonical(path string) (string, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if p == "/" {
		return p, nil
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(p))
	if errors.Is(err, os.ErrNotExist) {
		return p, nil // nothing can be mounted there; compare the path as it is
	} else if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.Base(p)), nil
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	mountPoint string
	fsType     string
	source     string
	superOpts  string
}

// topMountAt returns the mount at p that is on top (the last one listed), or nil.
func topMountAt(mounts []mountEntry, p string) *mountEntry {
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].mountPoint == p {
			return &mounts[i]
		}
	}
	return nil
}

func readMountinfo() ([]mountEntry, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountinfo(data)
}

// parseMountinfo parses the mountinfo format (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
func parseMountinfo(data []byte) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("mountinfo: malformed line %q", sc.Text())
		}
		e := mountEntry{
			mountPoint: unescapeMountinfo(fields[4]),
			fsType:     unescapeMountinfo(fields[sep+1]),
			source:     unescapeMountinfo(fields[sep+2]),
		}
		if sep+3 < len(fields) {
			e.superOpts = unescapeMountinfo(fields[sep+3])
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space, ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitOptions splits a comma-separated option list, honouring backslash escapes.
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}
