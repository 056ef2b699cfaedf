package store_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/store"
)

func TestStripPassword(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"zdb://user:pass@h:1/ns", "zdb://user@h:1/ns"},
		{"zdb://user@h:1/ns", "zdb://user@h:1/ns"},
		{"zdb://:pass@h:1/ns", "zdb://h:1/ns"},
		{"zdb://h:1/ns", "zdb://h:1/ns"},
		{"zdb://h", "zdb://h"},
		{"zdb://user:p@ss:w@rd@h:1", "zdb://user@h:1"},
		{"s3://key:secret@host:9000/bucket", "s3://key@host:9000/bucket"},
		{"s3s://key:secret@host:9000/bucket?region=eu", "s3s://key@host:9000/bucket?region=eu"},
		{"https://u:p@hub.example/blocks?x=a@b", "https://u@hub.example/blocks?x=a@b"},
		{"http://hub.example/a@b/c", "http://hub.example/a@b/c"},
		{"http://u:p@[::1]:8080/", "http://u@[::1]:8080/"},
		{"dir:///tmp/store", "dir:///tmp/store"},
		{"dir:///tmp/a:b@c", "dir:///tmp/a:b@c"},
		{"zdb://u:p%40x@h:1/ns", "zdb://u@h:1/ns"},
		{"not a url", "not a url"},
		{"", ""},
	} {
		if got := store.StripPassword(tc.in); got != tc.want {
			t.Errorf("StripPassword(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseRouteSpec(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want flist.Route
		err  error // nil: must succeed
	}{
		{"dir:///tmp/s", flist.Route{Start: 0, End: 0xff, URL: "dir:///tmp/s"}, nil},
		{"00-7f=dir:///tmp/s", flist.Route{Start: 0, End: 0x7f, URL: "dir:///tmp/s"}, nil},
		{"80-FF=zdb://h:9900/ns", flist.Route{Start: 0x80, End: 0xff, URL: "zdb://h:9900/ns"}, nil},
		{"aa-aa=s3://k:s@h:9000/b", flist.Route{Start: 0xaa, End: 0xaa, URL: "s3://k:s@h:9000/b"}, nil},
		{"https://hub.example/x?a=b", flist.Route{Start: 0, End: 0xff, URL: "https://hub.example/x?a=b"}, nil},
		{"00-ff=http://h/p=q", flist.Route{Start: 0, End: 0xff, URL: "http://h/p=q"}, nil},
		{"7f-00=dir:///tmp/s", flist.Route{}, store.ErrUnsupported},           // inverted
		{"0-ff=dir:///tmp/s", flist.Route{}, store.ErrUnsupported},            // one hex digit: no range, bad URL
		{"00-ff=ftp://h/x", flist.Route{}, store.ErrUnsupported},              // unknown scheme
		{"00-ff=", flist.Route{}, store.ErrUnsupported},                       // no URL
		{"", flist.Route{}, store.ErrUnsupported},                             // nothing
		{"/tmp/store", flist.Route{}, store.ErrUnsupported},                   // no scheme
		{"gg-hh=dir:///tmp/s", flist.Route{}, store.ErrUnsupported},           // not hex
		{"00-ff=zdb://u:secret@h:%zz/x", flist.Route{}, store.ErrUnsupported}, // malformed
	} {
		got, err := store.ParseRouteSpec(tc.spec)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseRouteSpec(%q): err = %v, want %v", tc.spec, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("ParseRouteSpec(%q): error shows the password: %v", tc.spec, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRouteSpec(%q): %v", tc.spec, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseRouteSpec(%q) = %+v, want %+v", tc.spec, got, tc.want)
		}
	}
}

func TestRouteSpec(t *testing.T) {
	got := store.RouteSpec(flist.Route{Start: 0x0a, End: 0xf0, URL: "zdb://u:p@h:1/ns"})
	if want := "0a-f0=zdb://u@h:1/ns"; got != want {
		t.Errorf("RouteSpec = %q, want %q", got, want)
	}
	r, err := store.ParseRouteSpec(got)
	if err != nil || r.Start != 0x0a || r.End != 0xf0 {
		t.Errorf("ParseRouteSpec(RouteSpec) = %+v, %v", r, err)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		url, typ, str string
	}{
		{"dir://" + dir, "*store.Dir", "dir://" + dir},
		{"DIR://" + dir, "*store.Dir", "dir://" + dir},
		{"http://u:pw@hub.example/blocks/", "*store.HTTP", "http://u@hub.example/blocks"},
		{"https://hub.example", "*store.HTTP", "https://hub.example"},
		{"zdb://u:pw@h/ns", "*store.Zdb", "zdb://u@h:9900/ns"},
		{"zdb://:pw@127.0.0.1:1234", "*store.Zdb", "zdb://127.0.0.1:1234"},
		{"zdb://[::1]:1/x", "*store.Zdb", "zdb://[::1]:1/x"},
		{"s3://key:pw@h:9000/bucket", "*store.S3", "s3://key@h:9000/bucket"},
		{"s3s://key:pw@h:9000/bucket/", "*store.S3", "s3s://key@h:9000/bucket"},
		{"s3://h:9000/bucket?region=eu-west-1", "*store.S3", "s3://h:9000/bucket?region=eu-west-1"},
	} {
		s, err := store.Open(t.Context(), tc.url)
		if err != nil {
			t.Errorf("Open(%q): %v", tc.url, err)
			continue
		}
		if typ := reflect.TypeOf(s).String(); typ != tc.typ {
			t.Errorf("Open(%q) is a %s, want %s", tc.url, typ, tc.typ)
		}
		if s.String() != tc.str {
			t.Errorf("Open(%q).String() = %q, want %q", tc.url, s.String(), tc.str)
		}
		s.Close()
	}

	for _, bad := range []string{
		"", "/tmp/x", "ftp://h/x", "dir://", "dir:///x?y=1", "http://", "http:///path",
		"zdb://", "zdb://pw:secret@h:99999/ns", "zdb://h/a/b", "zdb://h?x=1",
		"s3://k:secret@h:9000", "s3://k:secret@h:9000/b/c", "s3://k:secret@h:9000/b?x=1",
		"s3:///bucket", "zdb://u:secret@h:%zz/x",
	} {
		s, err := store.Open(t.Context(), bad)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q): no error", bad)
			continue
		}
		if !errors.Is(err, store.ErrUnsupported) {
			t.Errorf("Open(%q): err = %v, want ErrUnsupported", bad, err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q): error shows the password: %v", bad, err)
		}
	}
}

func TestParseZdbURL(t *testing.T) {
	cfg, err := store.ParseZdbURL("zdb://user:pass@example.org/myns")
	if err != nil {
		t.Fatal(err)
	}
	want := store.ZdbConfig{Addr: "example.org:9900", Namespace: "myns", Username: "user", Password: "pass"}
	if cfg != want {
		t.Errorf("ParseZdbURL = %+v, want %+v", cfg, want)
	}
}

func TestParseS3URL(t *testing.T) {
	cfg, err := store.ParseS3URL("s3s://AK:SK@s3.example.org:443/blocks?region=eu-central-1")
	if err != nil {
		t.Fatal(err)
	}
	want := store.S3Config{Endpoint: "s3.example.org:443", TLS: true, Bucket: "blocks", AccessKey: "AK", SecretKey: "SK", Region: "eu-central-1"}
	if cfg != want {
		t.Errorf("ParseS3URL = %+v, want %+v", cfg, want)
	}
}
