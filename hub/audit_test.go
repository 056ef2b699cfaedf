package hub_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/hub"
)

// TestAudit (issue 13, 10): every accepted write leaves a line in audit.jsonl: the
// flists stored, and each name change with the CID it pointed at before, the client and
// the time.
func TestAudit(t *testing.T) {
	dir := t.TempDir()
	h := startHub(t, hub.Config{Dir: dir, Token: "tok"})
	c, err := hub.NewClient(h.URL, "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	fl1, _ := packTree(t, 1, nil, nil)
	fl2, _ := packTree(t, 2, nil, nil)
	cid1 := upload(t, c, fl1, "alice/small")
	cid2 := upload(t, c, fl2, "")
	if err := c.SetName(t.Context(), "alice/small", cid2); err != nil {
		t.Fatal(err)
	}
	if err := c.SetName(t.Context(), "alice/small", "bafynotacid"); err == nil {
		t.Fatal("a bad CID was accepted")
	}

	f, err := os.Open(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Time                           string
			Action, Name, Old, CID, Client string
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if rec.Time == "" || !strings.HasPrefix(rec.Client, "127.0.0.1:") {
			t.Errorf("audit line without time or client: %s", sc.Text())
		}
		got = append(got, strings.Join([]string{rec.Action, rec.Name, rec.Old, rec.CID}, " "))
	}
	want := []string{
		"flist   " + cid1,
		"name alice/small  " + cid1,
		"flist   " + cid2,
		"name alice/small " + cid1 + " " + cid2,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
