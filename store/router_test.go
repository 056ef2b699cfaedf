package store_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

func newRouter(t *testing.T, specs ...string) *store.Router {
	t.Helper()
	var routes []flist.Route
	for _, s := range specs {
		r, err := store.ParseRouteSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, r)
	}
	rt, err := store.NewRouter(t.Context(), routes)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// brokenURLs returns URLs of stores that fail every call: a zdb where nothing listens,
// and an HTTP server that answers 500.
func brokenURLs(t *testing.T) (zdb, web string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return "zdb://:zdbpass@127.0.0.1:" + strconv.Itoa(storetest.FreePort(t)), srv.URL
}

func TestRouterSplitConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return newRouter(t, "00-7f=dir://"+t.TempDir(), "80-ff=dir://"+t.TempDir())
	})
}

func TestRouterOverlapConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return newRouter(t, "dir://"+t.TempDir(), "00-ff=dir://"+t.TempDir())
	})
}

func TestRouterSplitPlacesBlocks(t *testing.T) {
	lo, hi := newDir(t), newDir(t)
	rt := newRouter(t, "00-7f=dir://"+lo.Root(), "80-ff=dir://"+hi.Root())
	defer rt.Close()
	for _, first := range []int{0x00, 0x7f, 0x80, 0xff} {
		id := storetest.ID(32, first)
		if err := rt.Put(t.Context(), id, []byte("x")); err != nil {
			t.Fatal(err)
		}
		inLo, _ := lo.Has(t.Context(), id)
		inHi, _ := hi.Has(t.Context(), id)
		if inLo != (first < 0x80) || inHi != (first >= 0x80) {
			t.Errorf("id %02x..: in low store %v, in high store %v", first, inLo, inHi)
		}
	}
}

func TestRouterOverlapWritesAll(t *testing.T) {
	a, b := newDir(t), newDir(t)
	rt := newRouter(t, "dir://"+a.Root(), "10-20=dir://"+b.Root())
	defer rt.Close()
	id := storetest.ID(32, 0x15)
	if err := rt.Put(t.Context(), id, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*store.Dir{a, b} {
		if ok, _ := d.Has(t.Context(), id); !ok {
			t.Errorf("block not written to %s", d)
		}
	}
}

// TestRouterWriteSinkFillsEveryStore: to a packer, a block is present only when every
// matching store has it; writing it then fills the store that lacked it.
func TestRouterWriteSinkFillsEveryStore(t *testing.T) {
	a, b := newDir(t), newDir(t)
	rt := newRouter(t, "dir://"+a.Root(), "dir://"+b.Root())
	defer rt.Close()
	sink := rt.WriteSink()
	id := storetest.ID(32, 0x42)
	if err := a.Put(t.Context(), id, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if ok, err := rt.Has(t.Context(), id); !ok || err != nil {
		t.Fatalf("router Has = %v, %v; want true (a has it)", ok, err)
	}
	if ok, err := sink.Has(t.Context(), id); ok || err != nil {
		t.Fatalf("sink Has = %v, %v; want false (b lacks it)", ok, err)
	}
	if err := sink.Put(t.Context(), id, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := sink.Has(t.Context(), id); !ok {
		t.Error("after Put, a store still lacks the block")
	}
}

// Reads fall back from a broken store to a working one, whatever the random order.
func TestRouterFallback(t *testing.T) {
	good := newDir(t)
	zdb, web := brokenURLs(t)
	rt := newRouter(t, "00-ff="+zdb, "dir://"+good.Root(), web)
	defer rt.Close()

	id, data := storetest.ID(32, -1), []byte("available in one store")
	if err := good.Put(t.Context(), id, data); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		got, err := rt.Get(t.Context(), id)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get = %q, %v", got, err)
		}
		if ok, err := rt.Has(t.Context(), id); !ok || err != nil {
			t.Fatalf("Has = %v, %v", ok, err)
		}
	}

	// A missing block: some stores failed, so it is an error, but not ErrNotFound.
	_, err := rt.Get(t.Context(), storetest.ID(32, -1))
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get missing with broken stores: err = %v, want a non-NotFound error", err)
	}
	for _, name := range []string{store.StripPassword(zdb), web} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name the failing store %s: %v", name, err)
		}
	}
	if strings.Contains(err.Error(), "zdbpass") {
		t.Errorf("error shows a password: %v", err)
	}
	if ok, err := rt.Has(t.Context(), storetest.ID(32, -1)); ok || err == nil {
		t.Errorf("Has missing with broken stores = %v, %v; want an error", ok, err)
	}

	// Put must reach every matching store: it fails (zdb unreachable, http read-only),
	// but still writes the working one.
	id2 := storetest.ID(32, -1)
	err = rt.Put(t.Context(), id2, data)
	if err == nil || !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Put with a broken and a read-only store: err = %v", err)
	}
	if ok, _ := good.Has(t.Context(), id2); !ok {
		t.Errorf("Put did not write the working store")
	}
}

func TestRouterNotFoundEverywhere(t *testing.T) {
	rt := newRouter(t, "dir://"+t.TempDir(), "dir://"+t.TempDir())
	defer rt.Close()
	if _, err := rt.Get(t.Context(), storetest.ID(32, -1)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound", err)
	}
}

func TestRouterNoMatchingRoute(t *testing.T) {
	rt := newRouter(t, "00-0f=dir://"+t.TempDir())
	defer rt.Close()
	id := storetest.ID(32, 0x10)
	if _, err := rt.Get(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get: err = %v, want ErrNotFound", err)
	}
	if ok, err := rt.Has(t.Context(), id); ok || err != nil {
		t.Errorf("Has = %v, %v", ok, err)
	}
	if err := rt.Put(t.Context(), id, []byte("x")); err == nil {
		t.Errorf("Put with no matching route: no error")
	}
}

func TestRouterRoutesAndString(t *testing.T) {
	dir := t.TempDir()
	rt := newRouter(t, "00-7f=zdb://u:pw1@h:1/ns", "80-ff=s3://key:pw2@h:9000/b", "dir://"+dir)
	defer rt.Close()
	want := []flist.Route{
		{Start: 0x00, End: 0x7f, URL: "zdb://u@h:1/ns"},
		{Start: 0x80, End: 0xff, URL: "s3://key@h:9000/b"},
		{Start: 0x00, End: 0xff, URL: "dir://" + dir},
	}
	got := rt.Routes()
	if len(got) != len(want) {
		t.Fatalf("Routes() = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("route %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	s := rt.String()
	if strings.Contains(s, "pw1") || strings.Contains(s, "pw2") {
		t.Errorf("String() shows a password: %s", s)
	}
	for _, part := range []string{"00-7f=zdb://u@h:1/ns", "80-ff=s3://key@h:9000/b", "00-ff=dir://" + dir} {
		if !strings.Contains(s, part) {
			t.Errorf("String() = %s, lacks %s", s, part)
		}
	}
}

func TestNewRouterErrors(t *testing.T) {
	for _, routes := range [][]flist.Route{
		nil,
		{{Start: 0x80, End: 0x10, URL: "dir:///tmp/x"}},
		{{Start: 0, End: 0xff, URL: "ftp://u:secretpw@h/x"}},
		{{Start: 0, End: 0xff, URL: "dir:///tmp/x"}, {Start: 0, End: 0xff, URL: "zdb://"}},
	} {
		rt, err := store.NewRouter(t.Context(), routes)
		if err == nil {
			rt.Close()
			t.Errorf("NewRouter(%+v): no error", routes)
			continue
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("error shows a password: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := store.NewRouter(ctx, []flist.Route{{Start: 0, End: 0xff, URL: "dir:///tmp/x"}}); err == nil {
		t.Errorf("NewRouter with a cancelled context: no error")
	}
}
