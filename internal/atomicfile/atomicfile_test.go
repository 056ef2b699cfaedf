package atomicfile_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosfs/zosfs-agent/internal/atomicfile"
)

// TestWriteBothWays: both ways of writing leave exactly the file with the new bytes,
// readable by all, replacing a leftover of that name, with no temporary file behind.
func TestWriteBothWays(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(string, []byte) error
	}{
		{"tmpfile", atomicfile.WriteTmpfile},
		{"rename", atomicfile.WriteRename},
		{"default", atomicfile.Write},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "block")
			if err := os.WriteFile(p, []byte("leftover"), 0o600); err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("zosfs"), 1000)
			for range 2 {
				if err := tc.write(p, data); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, %v", len(got), err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the file", len(entries))
			}
			if fi, _ := os.Stat(p); fi.Mode().Perm()&0o444 != 0o444 {
				t.Errorf("mode %v is not readable by all", fi.Mode())
			}
			if err := atomicfile.Syncfs(dir); err != nil {
				t.Errorf("syncfs: %v", err)
			}
		})
	}
	if err := atomicfile.Write(filepath.Join(t.TempDir(), "missing-dir", "x"), nil); !os.IsNotExist(err) {
		t.Errorf("write into a missing directory: %v, want not-exist", err)
	}
}
