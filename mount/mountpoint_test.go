package mount_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosfs/zosfs-agent/mount"
)

// TestCheckMountpoint (issue 13, 8): "/", the kernel's filesystems and (without force)
// directories that are not empty are refused; an empty directory is fine.
func TestCheckMountpoint(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		force  bool
		refuse bool
	}{
		{"/", false, true},
		{"/", true, true},
		{"/proc", true, true},
		{"/proc/sys", true, true},
		{"/sys/kernel", true, true},
		{"/dev", true, true},
		{"/etc", false, true},
		{full, false, true},
		{full, true, false},
		{t.TempDir(), false, false},
	} {
		err := mount.CheckMountpoint(tc.path, tc.force)
		if tc.refuse && !errors.Is(err, mount.ErrMountpoint) {
			t.Errorf("CheckMountpoint(%s, force=%v) = %v, want ErrMountpoint", tc.path, tc.force, err)
		}
		if !tc.refuse && err != nil {
			t.Errorf("CheckMountpoint(%s, force=%v) = %v, want nil", tc.path, tc.force, err)
		}
	}
}
