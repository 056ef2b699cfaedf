package hub_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2b"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

const token = "s3cret-token"

// testHub is a hub served by httptest on loopback, over a dir store in its data dir.
type testHub struct {
	URL    string
	Dir    string
	Client *hub.Client
}

// startHub serves a hub with cfg; an empty cfg.Dir gets a temp dir, a nil cfg.Blocks a dir
// store in Dir/blocks.
func startHub(t *testing.T, cfg hub.Config) *testHub {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Blocks == nil {
		d, err := store.NewDir(filepath.Join(cfg.Dir, "blocks"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Blocks = d
	}
	if cfg.Logger == nil && !testing.Verbose() {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	c, err := hub.NewClient(ts.URL, cfg.Token, ts.Client())
	if err != nil {
		t.Fatal(err)
	}
	return &testHub{URL: ts.URL, Dir: cfg.Dir, Client: c}
}

// packTree makes a generated tree and packs it into an flist, with sink (may be nil)
// receiving the blocks. It returns the flist's path and the tree's.
func packTree(t *testing.T, seed uint64, sink flist.BlockSink, routes []flist.Route) (string, string) {
	t.Helper()
	src := t.TempDir()
	flisttest.MakeTree(t, src, seed, flisttest.TreeOptions{})
	out := filepath.Join(t.TempDir(), "tree.fl")
	if _, err := flist.PackDir(t.Context(), src, out, flist.PackConfig{Sink: sink, Routes: routes}); err != nil {
		t.Fatal(err)
	}
	return out, src
}

func fileCID(t *testing.T, path string) string {
	t.Helper()
	c, err := flist.FileCIDPath(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}

func upload(t *testing.T, c *hub.Client, path, name string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cid, err := c.UploadFlist(t.Context(), f, name)
	if err != nil {
		t.Fatalf("upload %s: %v", path, err)
	}
	return cid
}

// get does a plain request and returns the status and body.
func get(t *testing.T, method, url string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body, resp.Header
}

// blockID is the id whose bytes are b, which must be a valid length.
func blockID(t *testing.T, b []byte) flist.BlockID {
	t.Helper()
	id, err := flist.ParseBlockID(b)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// randomID is a random v2 block id.
func randomID(t *testing.T) flist.BlockID {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return blockID(t, b)
}

// legacyBlock returns random bytes and their BLAKE2b-128 id, as a legacy block.
func legacyBlock(t *testing.T, n int) (flist.BlockID, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	h, _ := blake2b.New(16, nil)
	h.Write(data)
	return blockID(t, h.Sum(nil)), data
}

func TestBlocks(t *testing.T) {
	ctx := t.Context()
	h := startHub(t, hub.Config{Token: token})
	type blk struct {
		id   flist.BlockID
		data []byte
	}
	var blocks []blk
	for _, n := range []int{0, 1, 1000, flist.BlockSize} {
		plain := make([]byte, n)
		rand.Read(plain[:n/2])
		b, data := flist.EncodeBlock(plain)
		blocks = append(blocks, blk{b.ID, bytes.Clone(data)})
	}
	id, data := legacyBlock(t, 5000)
	blocks = append(blocks, blk{id, data})

	httpStore, err := store.NewHTTP(h.URL+"/blocks", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if ok, err := h.Client.HasBlock(ctx, b.id); err != nil || ok {
			t.Fatalf("has %x before put: %v %v", b.id, ok, err)
		}
		if err := h.Client.PutBlock(ctx, b.id, b.data); err != nil {
			t.Fatalf("put %x: %v", b.id, err)
		}
		if err := h.Client.PutBlock(ctx, b.id, b.data); err != nil { // again: not an error
			t.Fatalf("put %x again: %v", b.id, err)
		}
		if ok, err := h.Client.HasBlock(ctx, b.id); err != nil || !ok {
			t.Fatalf("has %x: %v %v", b.id, ok, err)
		}
		if got, err := h.Client.GetBlock(ctx, b.id); err != nil || !bytes.Equal(got, b.data) {
			t.Fatalf("client get %x: %d bytes, %v", b.id, len(got), err)
		}
		// The rfs http-store layout, as store.NewHTTP (and upstream rfs) read it.
		if got, err := httpStore.Get(ctx, b.id); err != nil || !bytes.Equal(got, b.data) {
			t.Fatalf("http store get %x: %d bytes, %v", b.id, len(got), err)
		}
		if ok, err := httpStore.Has(ctx, b.id); err != nil || !ok {
			t.Fatalf("http store has %x: %v %v", b.id, ok, err)
		}
		x := b.id.String()
		if code, got, _ := get(t, http.MethodGet, h.URL+"/blocks/"+x); code != 200 || !bytes.Equal(got, b.data) {
			t.Fatalf("flat GET /blocks/%s: %d, %d bytes", x, code, len(got))
		}
		if _, err := os.Stat(filepath.Join(h.Dir, "blocks", x[:2], x)); err != nil {
			t.Fatalf("block not in the dir store's layout: %v", err)
		}
	}

	absent, _ := flist.EncodeBlock([]byte("never stored"))
	if ok, err := h.Client.HasBlock(ctx, absent.ID); err != nil || ok {
		t.Errorf("has absent block: %v %v", ok, err)
	}
	if _, err := h.Client.GetBlock(ctx, absent.ID); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("get absent block: %v, want ErrNotFound", err)
	}
	if _, err := httpStore.Get(ctx, absent.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("http store get absent block: %v, want store.ErrNotFound", err)
	}
	var sse *hub.StatusError
	if _, err := h.Client.GetBlock(ctx, absent.ID); !errors.As(err, &sse) || sse.Code != 404 {
		t.Errorf("get absent block: %v, want a StatusError 404", err)
	}

	// Missing: more ids than one request takes, present ones mixed in; the answer keeps
	// the order of the question.
	var ids, want []flist.BlockID
	for i := range hub.MaxMissingIDs + 10 {
		if i%3000 == 0 && i/3000 < len(blocks) {
			ids = append(ids, blocks[i/3000].id)
		}
		id := randomID(t)
		ids = append(ids, id)
		want = append(want, id)
	}
	got, err := h.Client.Missing(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("missing: %d ids, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("missing[%d] = %x, want %x", i, got[i], want[i])
		}
	}
	if got, err := h.Client.Missing(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("missing of nothing: %v %v", got, err)
	}
}

func TestFlists(t *testing.T) {
	ctx := t.Context()
	h := startHub(t, hub.Config{Token: token})
	fl, src := packTree(t, 1, h.Client, []flist.Route{{Start: 0, End: 0xff, URL: h.URL + "/blocks"}})
	want := fileCID(t, fl)
	flBytes, _ := os.ReadFile(fl)

	cid := upload(t, h.Client, fl, "alice/tree")
	if cid != want {
		t.Fatalf("hub CID %s, file CID %s", cid, want)
	}
	if again := upload(t, h.Client, fl, ""); again != cid {
		t.Fatalf("second upload gives %s", again)
	}
	var buf bytes.Buffer
	if err := h.Client.GetFlist(ctx, cid, &buf); err != nil || !bytes.Equal(buf.Bytes(), flBytes) {
		t.Fatalf("GetFlist: %v (%d bytes, want %d)", err, buf.Len(), len(flBytes))
	}
	if code, _, hdr := get(t, http.MethodHead, h.URL+"/flists/"+cid); code != 200 || hdr.Get("Content-Length") != strconv.Itoa(len(flBytes)) {
		t.Errorf("HEAD /flists/cid: %d, length %s", code, hdr.Get("Content-Length"))
	}
	if code, body, hdr := get(t, http.MethodGet, h.URL+"/alice/tree.fl"); code != 200 || !bytes.Equal(body, flBytes) || hdr.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET /alice/tree.fl: %d, %d bytes, %s", code, len(body), hdr.Get("Content-Type"))
	}
	sum := md5.Sum(flBytes)
	if code, body, _ := get(t, http.MethodGet, h.URL+"/alice/tree.fl.md5"); code != 200 || strings.TrimSpace(string(body)) != hex.EncodeToString(sum[:]) {
		t.Errorf("GET /alice/tree.fl.md5: %d %q, want %x", code, body, sum)
	}
	if got, err := h.Client.Resolve(ctx, "alice/tree"); err != nil || got != cid {
		t.Errorf("resolve: %s %v", got, err)
	}
	if _, err := h.Client.Resolve(ctx, "alice/nope"); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("resolve of an unknown name: %v", err)
	}

	// The flist's blocks came through the pack: every file reads back through the hub.
	f, err := flist.Open(ctx, fl)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	httpStore, _ := store.NewHTTP(h.URL+"/blocks", nil)
	var all []flist.BlockID
	err = flist.Walk(ctx, f, func(p string, e flist.Entry) error {
		if e.Type != flist.TypeFile {
			return nil
		}
		var got bytes.Buffer
		if err := flist.WriteFile(ctx, &got, f, e, httpStore); err != nil {
			return err
		}
		wantData, err := os.ReadFile(filepath.Join(src, p))
		if err != nil || !bytes.Equal(got.Bytes(), wantData) {
			return fmt.Errorf("%s differs from the source (%v)", p, err)
		}
		bl, _ := f.Blocks(ctx, e.Ino)
		for _, b := range bl {
			all = append(all, b.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := h.Client.Missing(ctx, all); err != nil || len(m) != 0 {
		t.Errorf("after the pack the hub lacks %d blocks (%v)", len(m), err)
	}

	// A second flist, unnamed, then the name moved to it.
	fl2, _ := packTree(t, 2, nil, nil)
	cid2 := upload(t, h.Client, fl2, "")
	list, err := h.Client.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alice/tree" || list[0].CID != cid || list[0].Size != int64(len(flBytes)) ||
		list[1].Name != "" || list[1].CID != cid2 || list[0].Updated.IsZero() {
		t.Fatalf("listing: %+v", list)
	}
	if err := h.Client.SetName(ctx, "alice/tree", cid2); err != nil {
		t.Fatal(err)
	}
	if err := h.Client.SetName(ctx, "bob/other.v1", cid); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.Client.Resolve(ctx, "alice/tree"); got != cid2 {
		t.Errorf("after SetName, alice/tree -> %s, want %s", got, cid2)
	}

	// A new hub over the same data directory knows the same.
	h2 := startHub(t, hub.Config{Dir: h.Dir})
	list2, err := h2.Client.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, _ = h.Client.List(ctx)
	if fmt.Sprint(list) != fmt.Sprint(list2) || len(list) != 2 || list[1].Name != "bob/other.v1" {
		t.Errorf("listing after restart:\n%+v\nbefore:\n%+v", list2, list)
	}
}

// TestFlistParts: an flist larger than a part is stored as several verified parts; a
// damaged part is not served as the flist.
func TestFlistParts(t *testing.T) {
	ctx := t.Context()
	h := startHub(t, hub.Config{Token: token, PartSize: 4096})
	fl, _ := packTree(t, 3, nil, nil)
	data, _ := os.ReadFile(fl)
	cid := upload(t, h.Client, fl, "p/parts")
	var buf bytes.Buffer
	if err := h.Client.GetFlist(ctx, cid, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("GetFlist: %v", err)
	}
	// Every part of 4096 bytes is stored once, under its hash (equal parts once).
	want := map[string]bool{}
	for off := 0; off < len(data); off += 4096 {
		sum := blake2b.Sum256(data[off:min(off+4096, len(data))])
		x := hex.EncodeToString(sum[:])
		want[filepath.Join(x[:2], x)] = true
	}
	parts := storedFiles(t, filepath.Join(h.Dir, "blocks"))
	if len(parts) != len(want) || len(want) < 2 {
		t.Fatalf("%d parts stored for %d bytes, want %d", len(parts), len(data), len(want))
	}
	for p := range parts {
		if !want[p] {
			t.Fatalf("unexpected object %s in the store", p)
		}
	}
	// Damage the second part (in file order: the listing holds them).
	var rec map[string]struct{ Parts []string }
	raw, _ := os.ReadFile(filepath.Join(h.Dir, "flists.json"))
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	p := rec[cid].Parts[1]
	if err := os.WriteFile(filepath.Join(h.Dir, "blocks", p[:2], p), []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := h.Client.GetFlist(ctx, cid, &buf); err == nil {
		t.Fatal("a damaged part was served")
	}
}

// storedFiles lists the regular files under dir with a hash of their content.
func storedFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == dir {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBadRequests: each bad request gets its status and changes nothing on disk.
func TestBadRequests(t *testing.T) {
	fl, _ := packTree(t, 4, nil, nil)
	flBytes, _ := os.ReadFile(fl)
	const maxFlist = 1 << 20
	if len(flBytes) >= maxFlist {
		t.Fatalf("test flist of %d bytes is too big", len(flBytes))
	}
	good, goodData := flist.EncodeBlock([]byte("a good block"))
	goodData = bytes.Clone(goodData)
	gx := good.ID.String()
	big := make([]byte, hub.MaxBlockSize+1)
	bx := flist.HashBlock(big).String()
	other := strings.Repeat("ab", 32)
	unknownCID, _ := flist.FileCID(strings.NewReader("no such flist"))
	blockCID, err := flist.BlockCID(blockID(t, make([]byte, 16)))
	if err != nil {
		t.Fatal(err)
	}
	manyIDs, _ := json.Marshal(map[string][]string{"ids": make([]string, hub.MaxMissingIDs+1)})
	many := bytes.Replace(manyIDs, []byte(`""`), []byte(`"`+gx+`"`), -1)
	wrongTok := "wrong"
	flCID, _ := flist.FileCID(bytes.NewReader(flBytes))

	cases := []struct {
		name         string
		readOnly     bool
		method, path string
		tok          *string // nil: none
		body         []byte
		want         int
	}{
		{"block too big", false, "PUT", "/blocks/" + bx[:2] + "/" + bx, ptr(token), big, 413},
		{"block wrong hash", false, "PUT", "/blocks/" + other[:2] + "/" + other, ptr(token), goodData, 400},
		{"block wrong hash flat", false, "PUT", "/blocks/" + other, ptr(token), goodData, 400},
		{"block no token", false, "PUT", "/blocks/" + gx[:2] + "/" + gx, nil, goodData, 401},
		{"block wrong token", false, "PUT", "/blocks/" + gx[:2] + "/" + gx, &wrongTok, goodData, 403},
		{"block read-only hub", true, "PUT", "/blocks/" + gx[:2] + "/" + gx, ptr(token), goodData, 403},
		{"block id not hex", false, "PUT", "/blocks/zz/zz" + gx[4:], ptr(token), goodData, 400},
		{"block id short", false, "PUT", "/blocks/" + gx[:20], ptr(token), goodData, 400},
		{"block prefix mismatch", false, "PUT", "/blocks/00/" + gx, ptr(token), goodData, 400},
		{"block traversal", false, "PUT", "/blocks/../" + gx, ptr(token), goodData, 400},
		{"block encoded traversal", false, "PUT", "/blocks/%2e%2e/" + gx, ptr(token), goodData, 400},
		{"block delete", false, "DELETE", "/blocks/" + gx[:2] + "/" + gx, ptr(token), nil, 405},
		{"get block bad id", false, "GET", "/blocks/xyz", nil, nil, 400},
		{"flist garbage", false, "POST", "/flists", ptr(token), []byte("this is not an flist"), 400},
		{"flist truncated", false, "POST", "/flists", ptr(token), flBytes[:len(flBytes)/2], 400},
		{"flist gzip garbage", false, "POST", "/flists", ptr(token), []byte{0x1f, 0x8b, 8, 0, 0, 0}, 400},
		{"flist empty", false, "POST", "/flists", ptr(token), nil, 400},
		{"flist too big", false, "POST", "/flists", ptr(token), make([]byte, maxFlist+1), 413},
		{"flist no token", false, "POST", "/flists", nil, flBytes, 401},
		{"flist wrong token", false, "POST", "/flists", &wrongTok, flBytes, 403},
		{"flist read-only hub", true, "POST", "/flists?name=a/b", ptr(token), flBytes, 403},
		{"name ../x", false, "POST", "/flists?name=../x", ptr(token), flBytes, 400},
		{"name a/..", false, "POST", "/flists?name=a/..", ptr(token), flBytes, 400},
		{"name %2e%2e/x", false, "POST", "/flists?name=%2e%2e/x", ptr(token), flBytes, 400},
		{"name a/b/c", false, "POST", "/flists?name=a/b/c", ptr(token), flBytes, 400},
		{"name empty", false, "POST", "/flists?name=", ptr(token), flBytes, 400},
		{"name without user", false, "POST", "/flists?name=tree", ptr(token), flBytes, 400},
		{"name NUL", false, "POST", "/flists?name=a/b%00", ptr(token), flBytes, 400},
		{"name too long", false, "POST", "/flists?name=a/" + strings.Repeat("x", 129), ptr(token), flBytes, 400},
		{"name reserved user", false, "POST", "/flists?name=blocks/x", ptr(token), flBytes, 400},
		{"put name ../x", false, "PUT", "/names/../x", ptr(token), nil, 400},
		{"put name %2e%2e/x", false, "PUT", "/names/%2e%2e/x", ptr(token), nil, 400},
		{"put name a/..", false, "PUT", "/names/a/..", ptr(token), nil, 400},
		{"put name a/b/c", false, "PUT", "/names/a/b/c", ptr(token), []byte(`{"cid":"` + unknownCID.String() + `"}`), 400},
		{"put name a", false, "PUT", "/names/a", ptr(token), []byte(`{"cid":"` + unknownCID.String() + `"}`), 400},
		{"put name bad cid", false, "PUT", "/names/alice/x", ptr(token), []byte(`{"cid":"bafynot"}`), 400},
		{"put name block cid", false, "PUT", "/names/alice/x", ptr(token), []byte(`{"cid":"` + blockCID.String() + `"}`), 400},
		{"put name unknown cid", false, "PUT", "/names/alice/x", ptr(token), []byte(`{"cid":"` + unknownCID.String() + `"}`), 404},
		{"put name bad json", false, "PUT", "/names/alice/x", ptr(token), []byte(`{"cid":`), 400},
		{"put name trailing data", false, "PUT", "/names/alice/x", ptr(token), []byte(`{"cid":"` + flCID.String() + `"} {"cid":"x"}`), 400},
		{"put name trailing garbage", false, "PUT", "/names/alice/x", ptr(token), []byte(`{"cid":"` + flCID.String() + `"}garbage`), 400},
		{"put name big body", false, "PUT", "/names/alice/x", ptr(token), bytes.Repeat([]byte(" "), 10<<10), 413},
		{"put name no token", false, "PUT", "/names/alice/tree", nil, []byte(`{"cid":"x"}`), 401},
		{"put name read-only hub", true, "PUT", "/names/alice/tree", ptr(token), []byte(`{"cid":"x"}`), 403},
		{"get flist bad cid", false, "GET", "/flists/notacid", nil, nil, 400},
		{"get flist block cid", false, "GET", "/flists/" + blockCID.String(), nil, nil, 400},
		{"get flist unknown", false, "GET", "/flists/" + unknownCID.String(), nil, nil, 404},
		{"get name traversal", false, "GET", "/x/../alice/tree.fl", nil, nil, 400},
		{"get name double slash", false, "GET", "//alice/tree.fl", nil, nil, 400},
		{"get name unknown", false, "GET", "/alice/nope.fl", nil, nil, 404},
		{"get name not .fl", false, "GET", "/alice/tree.tar", nil, nil, 404},
		{"get name bad", false, "GET", "/-alice/tree.fl", nil, nil, 400},
		{"missing bad id", false, "POST", "/blocks/missing", nil, []byte(`{"ids":["nothex"]}`), 400},
		{"missing bad json", false, "POST", "/blocks/missing", nil, []byte(`{"ids":`), 400},
		{"missing trailing data", false, "POST", "/blocks/missing", nil, []byte(`{"ids":[]}]`), 400},
		{"missing too many", false, "POST", "/blocks/missing", nil, many, 400},
		{"missing too big", false, "POST", "/blocks/missing", nil, bytes.Repeat([]byte(" "), 2<<20), 413},
		{"unknown route", false, "GET", "/nope", nil, nil, 404},
		{"unknown deep route", false, "GET", "/a/b/c", nil, nil, 404},
		{"health wrong method", false, "POST", "/health", nil, nil, 405},
		{"listing wrong method", false, "DELETE", "/flists", ptr(token), nil, 405},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Each case gets a hub holding one named flist and one block.
			dir := t.TempDir()
			seed := startHub(t, hub.Config{Dir: dir, Token: token})
			upload(t, seed.Client, fl, "alice/tree")
			if err := seed.Client.PutBlock(t.Context(), good.ID, goodData); err != nil {
				t.Fatal(err)
			}
			cfg := hub.Config{Dir: dir, Token: token, MaxFlistSize: maxFlist}
			if tc.readOnly {
				cfg.Token = ""
			}
			h := startHub(t, cfg)
			before := storedFiles(t, dir)

			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			req, err := http.NewRequestWithContext(t.Context(), tc.method, h.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tok != nil {
				req.Header.Set("Authorization", "Bearer "+*tc.tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s: %d %q, want %d", tc.method, tc.path, resp.StatusCode, msg, tc.want)
			}
			if resp.StatusCode >= 400 && len(bytes.TrimSpace(msg)) == 0 {
				t.Errorf("no message with status %d", resp.StatusCode)
			}
			if after := storedFiles(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("the request changed the data directory:\nbefore %v\nafter  %v", before, after)
			}
			if tc.readOnly && resp.StatusCode == 403 && !strings.Contains(string(msg), "read-only") {
				t.Errorf("read-only refusal does not say so: %q", msg)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// TestClientErrors: the client reports a refusal with the status and the hub's message.
func TestClientErrors(t *testing.T) {
	ctx := t.Context()
	ro := startHub(t, hub.Config{})
	b, data := flist.EncodeBlock([]byte("x"))
	err := ro.Client.PutBlock(ctx, b.ID, data)
	var se *hub.StatusError
	if !errors.As(err, &se) || se.Code != 403 || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("put to a read-only hub: %v", err)
	}
	h := startHub(t, hub.Config{Token: token})
	bad, _ := hub.NewClient(h.URL, "wrong", nil)
	if _, err := bad.UploadFlist(ctx, strings.NewReader("x"), ""); !errors.As(err, &se) || se.Code != 403 {
		t.Errorf("upload with a wrong token: %v", err)
	}
	if _, err := h.Client.UploadFlist(ctx, strings.NewReader("not an flist"), ""); !errors.As(err, &se) || se.Code != 400 ||
		!strings.Contains(se.Message, "not a readable flist") {
		t.Errorf("upload of garbage: %v", err)
	}
	if err := h.Client.GetFlist(ctx, "nope", io.Discard); err == nil {
		t.Error("GetFlist of a bad CID succeeded")
	}
	for _, u := range []string{"", "ftp://x", "http://", "http://h/?q=1", "::"} {
		if _, err := hub.NewClient(u, "", nil); err == nil {
			t.Errorf("NewClient(%q) succeeded", u)
		}
	}
}

// TestServeShutdown: Serve answers until its context ends, then returns nil promptly.
func TestServeShutdown(t *testing.T) {
	d, _ := store.NewDir(filepath.Join(t.TempDir(), "blocks"))
	srv, err := hub.New(hub.Config{Dir: t.TempDir(), Blocks: d})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	if code, body, _ := get(t, http.MethodGet, "http://"+ln.Addr().String()+"/health"); code != 200 {
		t.Fatalf("health: %d %s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("still listening after shutdown")
	}
	srv2, _ := hub.New(hub.Config{Dir: t.TempDir(), Blocks: d, Listen: "256.0.0.1:1"})
	if err := srv2.Run(t.Context()); err == nil {
		t.Error("Run on a bad address succeeded")
	}
	if _, err := hub.New(hub.Config{Blocks: d}); err == nil {
		t.Error("New without a directory succeeded")
	}
	if _, err := hub.New(hub.Config{Dir: t.TempDir()}); err == nil {
		t.Error("New without a store succeeded")
	}
}

// TestS3 runs the basic round trip with the blocks and flists in a real S3 server.
func TestS3(t *testing.T) {
	ctx := t.Context()
	s3, err := store.Open(ctx, storetest.StartS3(t))
	if err != nil {
		t.Fatal(err)
	}
	h := startHub(t, hub.Config{Token: token, Blocks: s3, PartSize: 64 << 10})
	fl, src := packTree(t, 5, h.Client, []flist.Route{{Start: 0, End: 0xff, URL: h.URL + "/blocks"}})
	cid := upload(t, h.Client, fl, "s3/tree")
	if cid != fileCID(t, fl) {
		t.Fatalf("hub CID %s, file CID %s", cid, fileCID(t, fl))
	}
	data, _ := os.ReadFile(fl)
	var buf bytes.Buffer
	if err := h.Client.GetFlist(ctx, cid, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("GetFlist: %v", err)
	}
	if code, body, _ := get(t, http.MethodGet, h.URL+"/s3/tree.fl"); code != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET /s3/tree.fl: %d", code)
	}
	f, err := flist.Open(ctx, fl)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := flist.LookupPath(ctx, f, "sub/multi")
	if err != nil {
		t.Fatal(err)
	}
	httpStore, _ := store.NewHTTP(h.URL+"/blocks", nil)
	var got bytes.Buffer
	if err := flist.WriteFile(ctx, &got, f, e, httpStore); err != nil {
		t.Fatal(err)
	}
	if want, _ := os.ReadFile(filepath.Join(src, "sub/multi")); !bytes.Equal(got.Bytes(), want) {
		t.Fatal("sub/multi read through the hub differs")
	}
	blocks, _ := f.Blocks(ctx, e.Ino)
	absent := blockID(t, make([]byte, 32))
	if m, err := h.Client.Missing(ctx, []flist.BlockID{blocks[0].ID, absent}); err != nil || len(m) != 1 || m[0] != absent {
		t.Errorf("missing: %x %v", m, err)
	}
	wrong := bytes.Clone(data[:100])
	if err := h.Client.PutBlock(ctx, absent, wrong); err == nil {
		t.Error("a block with the wrong hash was accepted")
	}
	if ok, err := s3.Has(ctx, absent); err != nil || ok {
		t.Errorf("the refused block in the bucket: %v, %v", ok, err)
	}
}

// TestClientConformance runs the block store conformance suite against the hub client
// talking to a real hub (which checks every block it is given against its id).
func TestClientConformance(t *testing.T) {
	storetest.RunVerified(t, func(t *testing.T) store.Store {
		return clientStore{startHub(t, hub.Config{Token: token}).Client}
	})
}

// clientStore is the hub client as a store.Store.
type clientStore struct{ *hub.Client }

func (c clientStore) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	data, err := c.GetBlock(ctx, id)
	if errors.Is(err, hub.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return data, err
}

func (c clientStore) Close() error { return nil }
