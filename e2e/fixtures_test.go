package e2e

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/fixtures"
)

// TestFixturesCLI: `manifest` of every real upstream flist equals its golden listing byte
// for byte, and `inspect --json` agrees with it.
func TestFixturesCLI(t *testing.T) {
	for _, name := range fixtures.Flists {
		t.Run(name, func(t *testing.T) {
			path, golden := fixtures.Flist(t, name)
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := agent(t, "manifest", path); got != string(want) {
				t.Fatalf("manifest of %s differs from its golden listing", name)
			}
			var in struct {
				CID     string         `json:"cid"`
				Format  string         `json:"format"`
				Entries int            `json:"entries"`
				ByType  map[string]int `json:"by_type"`
				Blocks  int            `json:"blocks"`
			}
			if err := json.Unmarshal([]byte(agent(t, "inspect", "--json", path)), &in); err != nil {
				t.Fatal(err)
			}
			c, err := flist.FileCIDPath(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(want), "\n"), "\n")
			byType, blocks := map[string]int{}, 0
			for _, l := range lines {
				cols := strings.Split(l, "\t")
				byType[cols[0]]++
				if cols[0] == "f" {
					n, err := strconv.Atoi(cols[7])
					if err != nil {
						t.Fatalf("golden block count %q: %v", cols[7], err)
					}
					blocks += n
				}
			}
			if in.CID != c.String() || in.Entries != len(lines) || in.Blocks != blocks {
				t.Errorf("inspect = %+v; want cid %s, %d entries, %d blocks", in, c, len(lines), blocks)
			}
			for typ, n := range byType {
				if in.ByType[typ] != n {
					t.Errorf("inspect counts %d of type %s, golden has %d", in.ByType[typ], typ, n)
				}
			}
			wantFormat := "fl"
			if strings.HasSuffix(name, ".flist") {
				wantFormat = "flist"
			}
			if in.Format != wantFormat {
				t.Errorf("format = %q, want %q", in.Format, wantFormat)
			}
		})
	}
}
