package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrMountpoint: a mountpoint that a mount must not hide (see CheckMountpoint).
var ErrMountpoint = errors.New("refused mountpoint")

// kernelFS are the filesystems of the kernel's own interfaces: a mount over them (or
// under them) breaks the system, whatever the user asked.
var kernelFS = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "devpts": true, "cgroup": true, "cgroup2": true,
	"debugfs": true, "tracefs": true, "securityfs": true, "bpf": true, "pstore": true,
	"configfs": true, "fusectl": true, "hugetlbfs": true, "mqueue": true, "efivarfs": true,
	"binfmt_misc": true, "selinuxfs": true, "autofs": true, "nsfs": true,
}

// CheckMountpoint refuses a mountpoint a mount would do harm at: "/" (a mount there
// takes the whole namespace), a directory on one of the kernel's own filesystems (/proc,
// /sys, /dev), and, unless force is set, a directory that is not empty (a mount hides
// its files: /etc, /usr). The errors wrap ErrMountpoint.
func CheckMountpoint(path string, force bool) error {
	p, err := canonical(path)
	if err != nil {
		return err
	}
	if p == "/" {
		return fmt.Errorf("%w: / would cover the whole filesystem", ErrMountpoint)
	}
	mounts, err := readMountinfo()
	if err != nil {
		return err
	}
	if m := mountOf(mounts, p); m != nil && kernelFS[m.fsType] {
		return fmt.Errorf("%w: %s is on the kernel's %s filesystem at %s", ErrMountpoint, p, m.fsType, m.mountPoint)
	}
	if force {
		return nil
	}
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	if names, err := d.Readdirnames(1); err == nil {
		return fmt.Errorf("%w: %s is not empty (it holds %s): a mount would hide its files; use --force to mount there anyway", ErrMountpoint, p, names[0])
	} else if err != io.EOF {
		return err
	}
	return nil
}

// mountOf returns the mount that holds p: the last listed at the longest mountpoint
// that is p or one of its parents.
func mountOf(mounts []mountEntry, p string) *mountEntry {
	var best *mountEntry
	for i := range mounts {
		m := &mounts[i]
		if m.mountPoint == p || m.mountPoint == "/" || strings.HasPrefix(p, m.mountPoint+"/") {
			if best == nil || len(m.mountPoint) >= len(best.mountPoint) {
				best = m
			}
		}
	}
	return best
}
