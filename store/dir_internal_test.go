package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteAtomicBothWays: both ways of writing a block (O_TMPFILE + link, and the
// named temporary file + rename used where O_TMPFILE is missing) leave exactly the block
// and nothing else, and a second write of the same name is harmless.
func TestWriteAtomicBothWays(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(string, []byte) error
	}{
		{"tmpfile", writeTmpfile},
		{"rename", writeRename},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "block")
			data := bytes.Repeat([]byte("zosfs"), 1000)
			for range 2 {
				if err := tc.write(p, data); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, %v", len(got), err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the block", len(entries))
			}
			if fi, _ := os.Stat(p); fi.Mode().Perm()&0o444 != 0o444 {
				t.Errorf("block mode %v is not readable by all", fi.Mode())
			}
		})
	}
}
