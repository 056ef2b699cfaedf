package e2e

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/hub"
)

// uploadedRE finds the count of uploaded blocks in push's summary line.
var uploadedRE = regexp.MustCompile(`(\d+) blocks uploaded`)

// push runs `zosfs-agent push` and returns the printed CID and the number of blocks the
// summary says were uploaded.
func push(t *testing.T, stdin []byte, args ...string) (cid string, uploaded int) {
	t.Helper()
	out, errOut, err := agentResult(t, stdin, append([]string{"push"}, args...)...)
	if err != nil {
		t.Fatalf("push %v: %v\n%s", args, err, errOut)
	}
	m := uploadedRE.FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("push %v: no upload count in %q", args, errOut)
	}
	n, _ := strconv.Atoi(m[1])
	return lastLine(out), n
}

// hubListing is GET /flists decoded.
func hubListing(t *testing.T, url string) []hub.FlistInfo {
	t.Helper()
	resp, err := http.Get(url + "/flists")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []hub.FlistInfo
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /flists: %d %v", resp.StatusCode, err)
	}
	return list
}

// fetchFlist downloads an flist from the hub into a file.
func fetchFlist(t *testing.T, url, cid string) string {
	t.Helper()
	c, err := hub.NewClient(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fetched.fl")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.GetFlist(t.Context(), cid, f); err != nil {
		t.Fatal(err)
	}
	return p
}

// blockIDs returns the distinct block ids of an flist.
func blockIDs(t *testing.T, path string) map[flist.BlockID]bool {
	t.Helper()
	ctx := t.Context()
	f, err := flist.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[flist.BlockID]bool{}
	err = flist.Walk(ctx, f, func(_ string, e flist.Entry) error {
		bl, err := f.Blocks(ctx, e.Ino)
		for _, b := range bl {
			ids[b.ID] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestHubPushTree: a tree pushed to a real hub process is listed under its name, reads
// back file by file through the hub, and a second push uploads no block.
func TestHubPushTree(t *testing.T) {
	h := runHub(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(h.Token+"\n"), 0o600)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 21, flisttest.DefaultTreeOptions())

	cid, uploaded := push(t, nil, "--hub", h.URL, "--token-file", tokenFile, "--name", "alice/tree", src)
	if uploaded == 0 {
		t.Fatal("the first push uploaded no block")
	}
	list := hubListing(t, h.URL)
	if len(list) != 1 || list[0].Name != "alice/tree" || list[0].CID != cid {
		t.Fatalf("listing %+v, pushed %s", list, cid)
	}
	fl := fetchFlist(t, h.URL, cid)
	if got := agent(t, "manifest", fl); got != flisttest.DiskManifest(t, src) {
		t.Errorf("manifest of the pushed flist disagrees with the source:\n%s", got)
	}
	if n := len(blockIDs(t, fl)); n != uploaded {
		t.Errorf("uploaded %d blocks, the flist has %d distinct", uploaded, n)
	}
	checkCatAll(t, fl, src, []string{"--hub", h.URL})

	// Again, with the token from the environment (runHub sets it): nothing to upload.
	again, uploaded := push(t, nil, "--hub", h.URL, "--name", "alice/tree", src)
	if again != cid || uploaded != 0 {
		t.Errorf("second push: CID %s (first %s), %d blocks uploaded", again, cid, uploaded)
	}

	// A tar on standard input packs to the same flist as the directory.
	tarSrc := t.TempDir()
	opt := flisttest.DefaultTreeOptions()
	opt.Sockets = false // tar cannot carry sockets
	flisttest.MakeTree(t, tarSrc, 22, opt)
	dirCID, _ := push(t, nil, "--hub", h.URL, tarSrc)
	tarball, err := exec.Command("tar", "--numeric-owner", "-C", tarSrc, "-cf", "-", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	if tarCID, uploaded := push(t, tarball, "--hub", h.URL, "--name", "alice/tar", "-"); tarCID != dirCID || uploaded != 0 {
		t.Errorf("push - gives %s with %d blocks uploaded; the directory gave %s", tarCID, uploaded, dirCID)
	}

	// SIGTERM stops the hub cleanly.
	h.stop(syscall.SIGTERM)
	if code := h.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("hub exited with %d after SIGTERM", code)
	}
}

// TestHubPushExisting: pushing an existing .fl whose blocks are in a dir store uploads only
// the blocks the hub lacks, read from the flist's routes or from --store.
func TestHubPushExisting(t *testing.T) {
	for _, tc := range []struct {
		name     string
		useStore bool // move the blocks away from the route and name them with --store
	}{
		{"from the flist's routes", false},
		{"from --store", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := runHub(t)
			opt := flisttest.TreeOptions{}
			srcA := t.TempDir()
			flisttest.MakeTree(t, srcA, 23, opt)
			cidA, _ := push(t, nil, "--hub", h.URL, srcA)

			// B: the same tree plus a new file of three blocks.
			srcB := t.TempDir()
			flisttest.MakeTree(t, srcB, 23, opt)
			extra := make([]byte, 3*flist.BlockSize)
			rand.Read(extra)
			if err := os.WriteFile(filepath.Join(srcB, "extra"), extra, 0o644); err != nil {
				t.Fatal(err)
			}
			storeDir := filepath.Join(t.TempDir(), "blocks")
			flB := filepath.Join(t.TempDir(), "b.fl")
			agent(t, "pack", "-o", flB, "--store", "dir://"+storeDir, srcB)
			args := []string{"--hub", h.URL, "--name", "bob/b"}
			if tc.useStore {
				moved := filepath.Join(t.TempDir(), "moved")
				if err := os.Rename(storeDir, moved); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--store", "dir://"+moved)
			}

			idsA, idsB := blockIDs(t, fetchFlist(t, h.URL, cidA)), blockIDs(t, flB)
			want := 0
			var all []flist.BlockID
			for id := range idsB {
				all = append(all, id)
				if !idsA[id] {
					want++
				}
			}
			cidB, uploaded := push(t, nil, append(args, flB)...)
			if uploaded != want || want != 3 {
				t.Errorf("uploaded %d blocks; the hub lacked %d of the %d", uploaded, want, len(idsB))
			}
			if c, _ := flist.FileCIDPath(flB); c.String() != cidB {
				t.Errorf("push printed %s, the file's CID is %s", cidB, c)
			}
			client, _ := hub.NewClient(h.URL, "", nil)
			if missing, err := client.Missing(t.Context(), all); err != nil || len(missing) != 0 {
				t.Errorf("after the push the hub lacks %d blocks (%v)", len(missing), err)
			}
			if got, err := client.Resolve(t.Context(), "bob/b"); err != nil || got != cidB {
				t.Errorf("bob/b -> %s (%v), want %s", got, err, cidB)
			}
			checkCatAll(t, flB, srcB, []string{"--hub", h.URL})
		})
	}
}

// TestHubPushErrors: a push the hub refuses, or that cannot start, fails with one line on
// stderr and leaves the hub as it was.
func TestHubPushErrors(t *testing.T) {
	h := runHub(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 24, flisttest.TreeOptions{})
	dir := t.TempDir()
	wrongToken := filepath.Join(dir, "wrong")
	os.WriteFile(wrongToken, []byte("not-the-token\n"), 0o600)
	emptyToken := filepath.Join(dir, "empty")
	os.WriteFile(emptyToken, nil, 0o600)
	garbage := filepath.Join(dir, "bad.fl")
	os.WriteFile(garbage, []byte("SQLite format 3\x00 but not really"), 0o644)
	for _, tc := range []struct {
		name string
		env  string // ZOSFS_HUB_TOKEN
		args []string
		want string // in the error line
	}{
		{"wrong token", h.Token, []string{"--token-file", wrongToken, src}, "403"},
		{"empty token file", h.Token, []string{"--token-file", emptyToken, src}, "token"},
		{"no token", "", []string{src}, "no token"},
		{"bad name", h.Token, []string{"--name", "../x", src}, "name"},
		{"garbage flist", h.Token, []string{garbage}, "bad.fl"},
		{"missing source", h.Token, []string{"/does/not/exist"}, "exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("ZOSFS_HUB_TOKEN", tc.env)
			_, errOut, err := agentResult(t, nil, append([]string{"push", "--hub", h.URL}, tc.args...)...)
			if err == nil {
				t.Fatal("push succeeded")
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n") + 1; lines != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("want one line mentioning %q, got %q", tc.want, errOut)
			}
			if list := hubListing(t, h.URL); len(list) != 0 {
				t.Errorf("the hub lists %+v", list)
			}
		})
	}
	if _, errOut, err := agentResult(t, nil, "push", "--hub", "http://127.0.0.1:1", src); err == nil || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Errorf("push to no hub: %v %q", err, errOut)
	}
}
