package flist_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/fixtures"
)

// TestManifestGolden: the manifest of every real upstream flist equals its golden listing
// byte for byte.
func TestManifestGolden(t *testing.T) {
	for _, name := range fixtures.Flists {
		t.Run(name, func(t *testing.T) {
			path, golden := fixtures.Flist(t, name)
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			f, err := flist.Open(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var got bytes.Buffer
			if err := flist.WriteManifest(t.Context(), &got, f); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("manifest differs from %s", golden)
				fixtures.CompareLines(t, strings.Split(got.String(), "\n"), strings.Split(string(want), "\n"))
			}
		})
	}
}
