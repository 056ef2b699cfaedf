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

// maxStacked bounds how many mounts stacked on one path Unmount removes.
const maxStacked = 16

// Unmount removes what is mounted at path, for stale mounts left by a killed process
// (whose FUSE connection is dead: "transport endpoint is not connected"). Each mount is
// detached lazily (umount -l), so a busy or dead mount goes too. If it was the overlay of
// a writable mount, the zosfs FUSE mount under it is removed as well, with the private
// directories Run had created for it. Nothing mounted at path is not an error.
func Unmount(path string) error {
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
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !notMounted(err) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
		if top.fsType == "overlay" {
			cleanOverlay(mounts, top)
		}
	}
	return fmt.Errorf("unmount %s: more than %d mounts stacked on it", p, maxStacked)
}

// cleanOverlay removes what a writable zosfs mount had under its overlay: the FUSE mount
// at its private lower directory, that private directory (with the temporary upper
// directory, if any), and the overlay's work directory next to a user's upper directory.
// It touches only directories named as Run names them.
func cleanOverlay(mounts []mountEntry, ovl *mountEntry) {
	for _, opt := range splitOptions(ovl.superOpts) {
		key, val, _ := strings.Cut(opt, "=")
		switch key {
		case "lowerdir":
			for _, lower := range strings.Split(val, ":") {
				m := topMountAt(mounts, lower)
				if m == nil || m.fsType != "fuse."+fsType {
					continue
				}
				if err := unix.Unmount(lower, unix.MNT_DETACH); err != nil && !notMounted(err) {
					continue
				}
				state := filepath.Dir(lower)
				if filepath.Base(lower) == "lower" && strings.HasPrefix(filepath.Base(state), "zosfs-mount-") {
					if busy, err := mountedUnder(state); err == nil && !busy {
						_ = os.RemoveAll(state)
					}
				}
			}
		case "workdir":
			if strings.HasSuffix(val, ".zosfs-work") {
				if busy, err := mountedUnder(val); err == nil && !busy {
					_ = os.RemoveAll(val)
				}
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
