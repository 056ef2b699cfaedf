package flist_test

import (
	"bytes"
	"fmt"
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
				t.Errorf("manifest differs from %s:\n%s", golden, firstDiff(got.String(), string(want)))
			}
		})
	}
}

// firstDiff describes the first differing line of two listings.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got  %q\n want %q", i+1, gl, wl)
		}
	}
	return "(no line differs; lengths differ)"
}
