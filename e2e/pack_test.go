package e2e

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// TestPackThroughEachStore: a generated tree with every entry type packs through each
// store type; the manifest agrees with lstat and cat of every file gives identical bytes.
func TestPackThroughEachStore(t *testing.T) {
	src := t.TempDir()
	flisttest.MakeTree(t, src, 7, flisttest.DefaultTreeOptions())
	want := flisttest.DiskManifest(t, src)

	dirStore := t.TempDir()
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) (packURL, catURL string)
	}{
		{"dir", func(t *testing.T) (string, string) { return "dir://" + dirStore, "" }},
		{"zdb", func(t *testing.T) (string, string) { return "zdb://" + storetest.StartRedis(t, ""), "" }},
		// The flist's route carries no secret, so reading needs the full URL.
		{"s3", func(t *testing.T) (string, string) { u := storetest.StartS3(t); return u, u }},
		{"split ranges", func(t *testing.T) (string, string) {
			return "00-7f=dir://" + t.TempDir() + "\x0080-ff=dir://" + t.TempDir(), ""
		}},
		{"http (read)", func(t *testing.T) (string, string) {
			d := t.TempDir()
			srv := httptest.NewServer(http.FileServer(http.Dir(d)))
			t.Cleanup(srv.Close)
			return "dir://" + d, srv.URL
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			packURL, catURL := tc.store(t)
			out := filepath.Join(t.TempDir(), "tree.fl")
			args := []string{"pack", "-o", out}
			for _, u := range strings.Split(packURL, "\x00") {
				args = append(args, "--store", u)
			}
			cid := lastLine(agent(t, append(args, src)...))
			if c, err := flist.FileCIDPath(out); err != nil || c.String() != cid {
				t.Fatalf("printed CID %q, file's CID %v (%v)", cid, c, err)
			}
			if got := agent(t, "manifest", out); got != want {
				t.Fatalf("manifest disagrees with lstat:\ngot:\n%s\nwant:\n%s", got, want)
			}
			catArgs := []string{}
			if catURL != "" {
				catArgs = append(catArgs, "--store", catURL)
			}
			checkCatAll(t, out, src, catArgs)
		})
	}
}

// checkCatAll cats every regular file of the flist and compares it with the source tree.
func checkCatAll(t *testing.T, fl, src string, extra []string) {
	t.Helper()
	files := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		got := agent(t, append(append([]string{"cat"}, extra...), fl, "/"+rel)...)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal([]byte(got), want) {
			t.Errorf("cat %s: %d bytes differ from the %d of the source", rel, len(got), len(want))
		}
		files++
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walk: %v (%d files)", err, files)
	}
}

// TestPackTwiceAndTarSameCID: the CLI gives the same CID for a tree packed twice, for a
// tar of it on stdin and for a tar file.
func TestPackTwiceAndTarSameCID(t *testing.T) {
	src := t.TempDir()
	opt := flisttest.DefaultTreeOptions()
	opt.Sockets = false // tar cannot carry sockets
	flisttest.MakeTree(t, src, 8, opt)
	st := "dir://" + t.TempDir()
	tmp := t.TempDir()
	first := lastLine(agent(t, "pack", "-o", filepath.Join(tmp, "1.fl"), "--store", st, src))
	second := lastLine(agent(t, "pack", "-o", filepath.Join(tmp, "2.fl"), "--store", st, src))
	if first != second {
		t.Fatalf("packing twice: %s then %s", first, second)
	}
	tarball, err := exec.Command("tar", "--numeric-owner", "-C", src, "-cf", "-", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, err := agentResult(t, tarball, "pack", "-o", filepath.Join(tmp, "3.fl"), "--store", st, "-")
	if err != nil {
		t.Fatalf("pack -: %v\n%s", err, errOut)
	}
	if got := lastLine(out); got != first {
		t.Errorf("tar on stdin gives %s, directory %s", got, first)
	}
	tarFile := filepath.Join(tmp, "tree.tar")
	if err := os.WriteFile(tarFile, tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := lastLine(agent(t, "pack", "-o", filepath.Join(tmp, "4.fl"), "--store", st, tarFile)); got != first {
		t.Errorf("tar file gives %s, directory %s", got, first)
	}
}

// TestCatBadBlocks: a truncated, altered or missing block makes cat fail with a clear
// error.
func TestCatBadBlocks(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), bytes.Repeat([]byte("zosfs "), 200000), 0o644); err != nil {
		t.Fatal(err)
	}
	// One damage per run, so that each must be detected on its own.
	for _, damage := range []struct {
		name string
		do   func(path string) error
	}{
		{"truncated", func(p string) error {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(p, data[:len(data)/2], 0o644)
		}},
		{"flipped", func(p string) error {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			data[len(data)/2] ^= 0x40
			return os.WriteFile(p, data, 0o644)
		}},
		{"missing", os.Remove},
	} {
		t.Run(damage.name, func(t *testing.T) {
			storeDir := t.TempDir()
			fl := filepath.Join(t.TempDir(), "x.fl")
			agent(t, "pack", "-o", fl, "--store", "dir://"+storeDir, src)
			agent(t, "cat", fl, "/f") // whole, it reads
			var blocks []string
			filepath.Walk(storeDir, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					blocks = append(blocks, p)
				}
				return err
			})
			if len(blocks) < 2 {
				t.Fatalf("want at least 2 blocks, have %d", len(blocks))
			}
			if err := damage.do(blocks[len(blocks)-1]); err != nil {
				t.Fatal(err)
			}
			_, errOut, err := agentResult(t, nil, "cat", fl, "/f")
			if err == nil {
				t.Fatalf("cat succeeded with a %s block", damage.name)
			}
			if !strings.Contains(errOut, "block") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("want one clear line about the block, got %q", errOut)
			}
		})
	}
}

// TestCLIErrors: bad command lines and bad files give one line on stderr and a non-zero exit.
func TestCLIErrors(t *testing.T) {
	notFlist := filepath.Join(t.TempDir(), "x.fl")
	os.WriteFile(notFlist, []byte("not an flist"), 0o644)
	for _, args := range [][]string{
		{"pack", t.TempDir()},
		{"pack", "--store", "ftp://x", t.TempDir()},
		{"pack", "--store", "dir:///tmp/x", "/does/not/exist"},
		{"manifest", notFlist},
		{"manifest", "/does/not/exist.fl"},
		{"inspect", notFlist},
		{"cat", notFlist, "/x"},
	} {
		_, errOut, err := agentResult(t, nil, args...)
		if err == nil {
			t.Errorf("%v: succeeded", args)
			continue
		}
		if lines := strings.Count(strings.TrimSpace(errOut), "\n") + 1; lines != 1 || !strings.HasPrefix(errOut, "zosfs-agent: ") {
			t.Errorf("%v: want one line on stderr, got %q", args, errOut)
		}
	}
}
